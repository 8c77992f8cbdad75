#!/usr/bin/env bash
# Makes an El Torito CD image that boots Linux through ISOLINUX, with xorriso: no-emulation
# boot of isolinux.bin (4 sectors loaded, boot info table patched in), ISOLINUX's console
# mirrored to the first serial port ("serial 0"), a kernel and initramfs beside it.
#   make_iso.sh guest GUEST_DIR OUTPUT.iso COMMAND
#   make_iso.sh installer OUTPUT.iso
# guest: the default guest, COMMAND as its lamina_run= parameter (no double quote in it: the
# append line quotes it for the kernel). installer: Debian 12's netboot installer (package
# debian-installer-12-netboot-amd64) with its console on ttyS0.
set -euo pipefail
kind=$1
case $kind in
  guest) guest=$2 output=$3 command=$4
         kernel=$guest/vmlinuz initrd=$guest/initrd.img
         append="console=ttyS0 quiet no_timer_check panic=-1 \"lamina_run=$command\"" ;;
  installer) output=$2
         images=/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64
         kernel=$images/linux initrd=$images/initrd.gz
         [[ -f $kernel && -f $initrd ]] ||
           { echo "make_iso: no $images (package debian-installer-12-netboot-amd64)"; exit 1; }
         append="console=ttyS0,115200n8 --- console=ttyS0,115200n8" ;;
  *) echo "make_iso: guest or installer, not '$kind'" >&2; exit 2 ;;
esac
isolinux=/usr/lib/ISOLINUX/isolinux.bin
ldlinux=/usr/lib/syslinux/modules/bios/ldlinux.c32
command -v xorriso >/dev/null || { echo "make_iso: xorriso is missing (scripts/setup)"; exit 1; }
[[ -f $isolinux && -f $ldlinux ]] || { echo "make_iso: isolinux/syslinux-common are missing (scripts/setup)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/iso/isolinux"
cp "$isolinux" "$ldlinux" "$work/iso/isolinux/"
cp "$kernel" "$work/iso/vmlinuz"
cp "$initrd" "$work/iso/initrd.img"
cat >"$work/iso/isolinux/isolinux.cfg" <<CFG
serial 0 115200
say ISOLINUX: booting $kind from the CD
default lamina
prompt 0
timeout 1
label lamina
  kernel /vmlinuz
  append initrd=/initrd.img $append
CFG
xorriso -as mkisofs -quiet -o "$output" -V LAMINA_CD -b isolinux/isolinux.bin \
  -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table "$work/iso" 2>/dev/null
echo "made $output: El Torito (no emulation) ISOLINUX CD, $(($(stat -c %s "$output") / 1024)) KiB"
