#!/usr/bin/env bash
# Starts Debian's memtest86+ (a 64-bit Linux-boot-protocol image, not Multiboot) in QEMU TCG
# from guest RAM prepared by Lamina's Linux loader (bzImage entry) and memory map, and checks
# that it runs its first test over the memory our e820 describes.
#   qemu_memtest_boot.sh TOOL    (exits 77, "skipped", without the memtest86+ package)
set -euo pipefail
tool=$1
image=/boot/memtest86+x64.bin
[[ -f $image ]] || { echo "no $image (package memtest86+)"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mapfile -t args < <("$tool" linux "$image" - 256 1 "$work" "console=ttyS0,115200" bzimage)
[[ ${#args[@]} -gt 2 ]] || { echo "FAIL: qemu_boot_image produced nothing"; exit 1; }
log=$work/console.log
timeout 120 qemu-system-x86_64 -accel tcg -machine q35 -m 256 -display none -monitor none \
  -serial stdio -no-reboot "${args[@]}" </dev/null >"$log" 2>&1 &
qemu=$!
for _ in $(seq 120); do
  grep -aq "Address test" "$log" 2>/dev/null && break
  kill -0 $qemu 2>/dev/null || break
  sleep 1
done
kill $qemu 2>/dev/null || true
wait $qemu 2>/dev/null || true
fail() { echo "FAIL: $*"; strings "$log" | head -40; exit 1; }
grep -aq "Memtest86+ v" "$log" || fail "memtest86+ did not start"
grep -aq "Memory  :  256MB" "$log" || fail "memtest86+ did not see 256 MB from our e820"
grep -aq "Address test" "$log" || fail "memtest86+ did not start testing"
echo "ok: memtest86+ runs from Lamina's loader"
