#!/usr/bin/env bash
# Makes an El Torito CD image that boots the default guest through ISOLINUX, with xorriso:
# no-emulation boot of isolinux.bin (4 sectors loaded, boot info table patched in), ISOLINUX's
# console mirrored to the first serial port ("serial 0"), the default guest's kernel and
# initramfs beside it, and COMMAND as the guest's lamina_run= parameter.
#   make_iso.sh GUEST_DIR OUTPUT.iso COMMAND
# COMMAND must not hold a double quote (the append line quotes it for the kernel).
set -euo pipefail
guest=$1 output=$2 command=$3
isolinux=/usr/lib/ISOLINUX/isolinux.bin
ldlinux=/usr/lib/syslinux/modules/bios/ldlinux.c32
command -v xorriso >/dev/null || { echo "make_iso: xorriso is missing (scripts/setup)"; exit 1; }
[[ -f $isolinux && -f $ldlinux ]] || { echo "make_iso: isolinux/syslinux-common are missing (scripts/setup)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/iso/isolinux"
cp "$isolinux" "$ldlinux" "$work/iso/isolinux/"
cp "$guest/vmlinuz" "$guest/initrd.img" "$work/iso/"
cat >"$work/iso/isolinux/isolinux.cfg" <<CFG
serial 0 115200
say ISOLINUX: booting the Lamina guest from the CD
default lamina
prompt 0
timeout 1
label lamina
  kernel /vmlinuz
  append initrd=/initrd.img console=ttyS0 quiet no_timer_check panic=-1 "lamina_run=$command"
CFG
xorriso -as mkisofs -quiet -o "$output" -V LAMINA_CD -b isolinux/isolinux.bin \
  -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table "$work/iso" 2>/dev/null
echo "made $output: El Torito (no emulation) ISOLINUX CD, $(($(stat -c %s "$output") / 1024)) KiB"
