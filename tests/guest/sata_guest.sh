#!/usr/bin/env bash
# Linux on Lamina's AHCI controller (a direct kernel boot of the default guest): its storage
# modules (scripts/make-guest: ahci, sd_mod, sr_mod, isofs) find a SATA disk (--disk
# PATH,bus=sata) as /dev/sda and an ATAPI CD-ROM (--cdrom) as /dev/sr0. The guest reads a token
# the host wrote into the disk image, mounts the ISO and reads a token from a file on it, and
# writes a third token to the disk, which the host finds in the image afterwards.
#   sata_guest.sh --lamina PATH --guest DIR [--vmm lamina|qemu]
# --vmm qemu runs the same guest on QEMU TCG's ich9-ahci with ide-hd and ide-cd (the oracle).
# Exit 77 (skipped) when the default guest was built without the storage modules.
set -euo pipefail
vmm=lamina lamina="" guest=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --vmm) vmm=$2; shift 2 ;;
    --lamina) lamina=$2; shift 2 ;;
    --guest) guest=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -f $guest/vmlinuz && -f $guest/initrd.img ]] || { echo "no default guest in '$guest'"; exit 1; }
[[ -s $guest/storage-modules ]] ||
  { echo "SKIP: the default guest has no storage modules (rebuild it: scripts/make-guest)"; exit 77; }
command -v xorriso >/dev/null || { echo "SKIP: xorriso is not installed"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log=$work/console.log
fail() { echo "FAIL: $*"; echo "---- guest console ----"; tr -d '\r' <"$log" | tail -60; exit 1; }
has() { grep -aq -- "$1" "$log"; }

disk_token=disk-$RANDOM$RANDOM cd_token=cd-$RANDOM$RANDOM guest_token=guest-$RANDOM$RANDOM
truncate -s 16M "$work/disk.raw"
printf '%s\n' "$disk_token" | dd of="$work/disk.raw" bs=512 seek=2048 conv=notrunc status=none
mkdir "$work/cd"
printf '%s\n' "$cd_token" >"$work/cd/token.txt"
xorriso -as mkisofs -quiet -o "$work/cd.iso" -V LAMINA_DATA "$work/cd" 2>/dev/null

command="for m in \$(cat /etc/modules.storage); do insmod /lib/modules/\$m.ko || exit 10; done
i=0; while ! dd if=/dev/sda of=/dev/null count=1 2>/dev/null || ! dd if=/dev/sr0 of=/dev/null bs=2048 count=1 2>/dev/null; do sleep 1; i=\$((i+1)); [ \$i -lt 60 ] || exit 11; done
echo model: \$(cat /sys/block/sda/device/model) / \$(cat /sys/block/sr0/device/model)
echo sr0-ro: \$(cat /sys/block/sr0/ro)
echo disk-read: \$(dd if=/dev/sda bs=512 skip=2048 count=1 2>/dev/null | head -n 1)
mkdir -p /tmp/cd && mount -t iso9660 -o ro /dev/sr0 /tmp/cd || exit 12
echo cd-read: \$(cat /tmp/cd/token.txt)
echo $guest_token | dd of=/dev/sda bs=512 seek=4096 conv=sync,fsync 2>/dev/null || exit 13"
cmdline="console=ttyS0 quiet no_timer_check panic=-1 lamina_run=\"$command\""
status=0
case $vmm in
  lamina)
    timeout 240 "$lamina" run --memory 256M --rng none --kernel "$guest/vmlinuz" \
      --initrd "$guest/initrd.img" --cmdline "$cmdline" --disk "$work/disk.raw,bus=sata" \
      --cdrom "$work/cd.iso" </dev/null >"$log" 2>&1 || status=$? ;;
  qemu)
    timeout 240 qemu-system-x86_64 -accel tcg -m 256 -display none -monitor none -serial stdio \
      -no-reboot -kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" -append "$cmdline" \
      -device ich9-ahci,id=sata -drive file="$work/disk.raw",format=raw,if=none,id=hd \
      -device ide-hd,drive=hd,bus=sata.0 -drive file="$work/cd.iso",format=raw,if=none,id=cd,media=cdrom \
      -device ide-cd,drive=cd,bus=sata.1 </dev/null >"$log" 2>&1 || status=$? ;;
  *) echo "unknown VMM '$vmm'" >&2; exit 2 ;;
esac
[[ $status -eq 0 ]] || fail "the VMM exited with status $status"
has "LAMINA-EXIT-STATUS: 0" || fail "the guest's command failed (10: a module, 11: no sda/sr0, 12: mount, 13: write)"
has "disk-read: $disk_token" || fail "the guest did not read the host's token from /dev/sda"
has "cd-read: $cd_token" || fail "the guest did not read the token file on the CD"
has "sr0-ro: 1" || fail "/dev/sr0 is not read-only"
dd if="$work/disk.raw" bs=512 skip=4096 count=1 status=none | grep -aq "^$guest_token" ||
  fail "the guest's write did not reach the disk image"
echo "ok: $vmm sata_linux ($(grep -a "^model:" "$log" | tr -d '\r'))"
