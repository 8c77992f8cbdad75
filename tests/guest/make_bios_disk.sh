#!/usr/bin/env bash
# Makes a BIOS-bootable disk image from Debian packages, without root or loop devices:
# an MBR partition table (sfdisk on a file), one FAT32 partition at 1 MiB (mkfs.fat --offset,
# filled with mtools) holding the default guest's kernel and initramfs, and GRUB 2 installed by
# hand the way grub-bios-setup would: grub-mkimage builds core.img (with the partition, FAT and
# Linux modules and an embedded config), which goes into the gap after the MBR (sector 1 on,
# where boot.img's default kernel sector and diskboot.img's default blocklist point), and
# boot.img's code goes into the MBR before the partition table.
#   make_bios_disk.sh guest GUEST_DIR OUTPUT.raw COMMAND
#   make_bios_disk.sh memtest OUTPUT.raw [MEMTEST-OPTIONS]
#   make_bios_disk.sh menu|gfxmenu OUTPUT.raw
# guest: the menu entry boots the default guest on ttyS0 and COMMAND runs in it (its
# lamina_run= parameter). memtest: it boots Debian's memtest86+ (a 16-bit Linux boot protocol
# image for GRUB's linux16) with its console on ttyS0, and MEMTEST-OPTIONS (e.g. smp) after it.
# menu: GRUB's menu on the screen (the VGA BIOS's console), waiting for a key, with two
# entries: the first echoes, the second reboots. gfxmenu: the same menu in an 800x600 32-bit
# graphics mode GRUB sets through the VGA BIOS's VBE.
# COMMAND must not hold a single quote: GRUB takes the single-quoted word without expanding it
# and hands it to the kernel in double quotes (it has spaces), which the kernel strips.
set -euo pipefail
kind=$1
case $kind in
  guest) guest=$2 output=$3 command=$4 ;;
  menu|gfxmenu) output=$2 ;;
  memtest) output=$2 memtest=/boot/memtest86+x64.bin memtest_options=${3:-}
           [[ -f $memtest ]] || { echo "make_bios_disk: no $memtest (package memtest86+)"; exit 1; } ;;
  *) echo "make_bios_disk: guest or memtest, not '$kind'" >&2; exit 2 ;;
esac
grub=/usr/lib/grub/i386-pc
for tool in sfdisk mkfs.fat mcopy mmd grub-mkimage; do
  command -v "$tool" >/dev/null || { echo "make_bios_disk: $tool is missing (scripts/setup)"; exit 1; }
done
[[ -f $grub/boot.img ]] || { echo "make_bios_disk: grub-pc-bin is missing (scripts/setup)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

size_mib=64
truncate -s 0 "$output"
truncate -s "${size_mib}M" "$output"
# One bootable FAT32 (LBA) partition from 1 MiB to the end.
printf 'label: dos\nstart=2048, type=c, bootable\n' | sfdisk --quiet "$output"
offset=$((2048 * 512))
sectors=$(((size_mib * 1024 * 1024 - offset) / 512))
mkfs.fat -F 32 --offset 2048 -n LAMINA "$output" $((sectors / 2)) >/dev/null

# GRUB's menu goes to the serial port (SeaBIOS mirrors the screen there too; one copy is
# enough); the entry boots the default guest with its command.
if [[ $kind == menu || $kind == gfxmenu ]]; then
  if [[ $kind == gfxmenu ]]; then
    cat >"$work/grub.cfg" <<EOF
insmod vbe
insmod gfxterm
loadfont /boot/grub/ascii.pf2
set gfxmode=800x600x32
terminal_output gfxterm
EOF
  else
    echo "terminal_output console" >"$work/grub.cfg"
  fi
  cat >>"$work/grub.cfg" <<EOF
terminal_input console
set timeout=-1
set default=0
menuentry 'Lamina menu: first entry' {
  echo 'GRUB: first entry'
}
menuentry 'Lamina menu: reboot' {
  echo 'GRUB: rebooting now'
  reboot
}
EOF
else
  cat >"$work/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=1
set default=0
EOF
fi
if [[ $kind == guest ]]; then
  cat >>"$work/grub.cfg" <<EOF
menuentry 'Lamina default guest' {
  echo 'GRUB: loading the Lamina guest'
  linux /vmlinuz console=ttyS0 quiet no_timer_check panic=-1 'lamina_run=$command'
  initrd /initrd.img
}
EOF
elif [[ $kind == memtest ]]; then
  cat >>"$work/grub.cfg" <<EOF
menuentry 'memtest86+' {
  echo 'GRUB: loading memtest86+'
  linux16 /memtest.bin console=ttyS0,115200 $memtest_options
}
EOF
fi
# The embedded config finds the partition and reads the real one.
cat >"$work/early.cfg" <<'EOF'
set root=(hd0,msdos1)
set prefix=(hd0,msdos1)/boot/grub
configfile /boot/grub/grub.cfg
EOF
grub-mkimage -O i386-pc -o "$work/core.img" -c "$work/early.cfg" -p '(hd0,msdos1)/boot/grub' \
  biosdisk part_msdos fat normal configfile linux linux16 echo serial terminal test reboot \
  vbe gfxterm font
core_sectors=$((($(stat -c %s "$work/core.img") + 511) / 512))
((core_sectors < 2047)) || { echo "make_bios_disk: core.img does not fit before the partition"; exit 1; }

export MTOOLS_SKIP_CHECK=1
fat="$output@@$offset"
mmd -i "$fat" ::/boot ::/boot/grub
mcopy -i "$fat" "$work/grub.cfg" ::/boot/grub/grub.cfg
if [[ $kind == guest ]]; then
  mcopy -i "$fat" "$guest/vmlinuz" ::/vmlinuz
  mcopy -i "$fat" "$guest/initrd.img" ::/initrd.img
elif [[ $kind == memtest ]]; then
  mcopy -i "$fat" "$memtest" ::/memtest.bin
elif [[ $kind == gfxmenu ]]; then
  mcopy -i "$fat" /usr/share/grub/ascii.pf2 ::/boot/grub/ascii.pf2
fi

# boot.img's code (the first 440 bytes: the disk signature and partition table stay), then
# core.img from sector 1.
dd if="$grub/boot.img" of="$output" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$output" bs=512 seek=1 conv=notrunc status=none
echo "made $output: MBR, FAT32 at 1 MiB, GRUB core.img in $core_sectors sectors"
