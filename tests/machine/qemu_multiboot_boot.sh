#!/usr/bin/env bash
# Runs the Multiboot probe kernel (multiboot_probe_kernel.h) twice in QEMU TCG: loaded by
# QEMU's own -kernel Multiboot loader (the reference), and from guest RAM prepared by Lamina's
# multiboot_loader, entered through a ROM that establishes our 32-bit BootState. The probe
# prints what it was handed; both runs must agree on it (the boot loader name and mem_upper
# differ by design and are checked separately).
#   qemu_multiboot_boot.sh TOOL
set -euo pipefail
tool=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'MODULEDATA-%s' "$RANDOM" >"$work/module.bin"
module_size=$(stat -c %s "$work/module.bin")
mapfile -t args < <("$tool" multiboot "$work" 64 "probe.bin hello world" "$work/module.bin" \
  "module.bin mod-arg=1")
[[ ${#args[@]} -gt 2 ]] || { echo "FAIL: qemu_boot_image produced nothing"; exit 1; }
run() {  # run OUTPUT ARGS...: the probe exits QEMU with status 0x21 through isa-debug-exit
  local output=$1 status=0
  shift
  (cd "$work" && timeout 60 qemu-system-x86_64 -accel tcg -m 64 -display none -monitor none -serial stdio \
    -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=4 "$@" </dev/null >"$output" 2>&1) ||
    status=$?
  [[ $status == 33 ]] || { echo "FAIL: QEMU exited with $status"; cat "$output"; exit 1; }
}
# QEMU passes the file names as given (first in each string); give the same relative names.
run "$work/qemu.log" -kernel probe.bin -append "hello world" -initrd "module.bin mod-arg=1"
run "$work/lamina.log" -machine q35 "${args[@]}"
reference=$(grep -o 'PROBE.*END' "$work/qemu.log") || { cat "$work/qemu.log"; exit 1; }
ours=$(grep -o 'PROBE.*END' "$work/lamina.log") || { cat "$work/lamina.log"; exit 1; }
echo "QEMU:   $reference"
echo "Lamina: $ours"
strip() { sed -E 's/ upper=[0-9a-f]+//; s/ loader=[^ ]+//' <<<"$1"; }
[[ $(strip "$reference") == "$(strip "$ours")" ]] || { echo "FAIL: the probe saw different things"; exit 1; }
# mem_upper: KiB from 1 MiB to the ACPI area at the top of 64 MiB (64 KiB).
[[ $ours == *" upper=$(printf '%08x' $(( (64 * 1024) - 1024 - 64 )))"* ]] ||
  { echo "FAIL: wrong mem_upper"; exit 1; }
[[ $ours == *" loader=Lamina"* ]] || { echo "FAIL: wrong boot loader name"; exit 1; }
[[ $ours == *"magic=2badb002"* && $ours == *" cs=00000008"* ]] ||
  { echo "FAIL: wrong entry state"; exit 1; }
[[ $ours == *" size=$(printf '%08x' "$module_size")"* ]] || { echo "FAIL: wrong module size"; exit 1; }
echo "ok: Multiboot probe agrees under QEMU's loader and Lamina's"
