#!/usr/bin/env bash
# Boots the default guest's kernel in QEMU TCG from guest RAM prepared by Lamina's machine code
# (qemu_boot_image): our e820, ACPI tables, boot_params, GDT and page tables, and the kernel
# decompressed on the host and entered at its 64-bit entry point. QEMU's own firmware and
# kernel loader are not used. Passes when the guest runs a command from the command line.
#   qemu_native_boot.sh TOOL GUEST_DIR [native|bzimage]
# (bzimage: the bzImage's own 64-bit entry and in-guest decompressor instead)
set -euo pipefail
tool=$1 guest=$2 entry=${3:-native}
[[ -f $guest/vmlinuz && -f $guest/initrd.img ]] || { echo "no default guest in '$guest'"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=$((RANDOM % 200 + 3))
command="echo guest-says-\$((6*7)); nproc; exit $status"
mapfile -t args < <("$tool" linux "$guest/vmlinuz" "$guest/initrd.img" 512 2 "$work" \
  "console=ttyS0 panic=-1 lamina_run=\"$command\"" "$([[ $entry == bzimage ]] && echo bzimage)")
[[ ${#args[@]} -gt 2 ]] || { echo "FAIL: qemu_boot_image produced nothing"; exit 1; }
log=$work/console.log
# No poweroff without firmware enabling the PM device, so stop once the status line shows.
timeout 240 qemu-system-x86_64 -accel tcg -machine q35 -m 512 -smp 2 -display none \
  -monitor none -serial stdio -no-reboot "${args[@]}" </dev/null >"$log" 2>&1 &
qemu=$!
for _ in $(seq 240); do
  grep -q "LAMINA-EXIT-STATUS" "$log" 2>/dev/null && break
  kill -0 $qemu 2>/dev/null || break
  sleep 1
done
kill $qemu 2>/dev/null || true
wait $qemu 2>/dev/null || true
sed -i 's/\r$//' "$log"
fail() { echo "FAIL: $*"; echo "---- guest console ----"; cat "$log"; exit 1; }
grep -q "Linux version" "$log" || fail "the kernel printed nothing"
grep -q "ACPI: RSDP 0x00000000000E0000" "$log" || fail "the kernel did not find our RSDP"
grep -q "ACPI: PM: (supports S0 S5)" "$log" || fail "the kernel did not find \\_S5 in our DSDT"
grep -q "ACPI: PCI Root Bridge \[PCI0\]" "$log" || fail "the kernel did not find PCI0 in our DSDT"
grep -q "MMCONFIG for domain 0000 \[bus 00-ff\] at \[mem 0xb0000000" "$log" ||
  fail "the kernel did not take ECAM from our MCFG"
grep -q "_OSC: OS now controls \[PCIeHotplug SHPCHotplug PME AER PCIeCapability" "$log" ||
  fail "the kernel did not take PCIe control from our _OSC"
grep -q "root bus resource \[mem 0x8000000000-0x8fffffffff window\]" "$log" ||
  fail "the kernel did not take the 64-bit window from our _CRS"
grep -q "Brought up 1 node, 2 CPUs" "$log" || fail "the second CPU from our MADT did not come up"
grep -q "guest-says-42" "$log" || fail "the command's output is missing"
grep -q "^LAMINA-EXIT-STATUS: $status" "$log" || fail "no 'LAMINA-EXIT-STATUS: $status' line"
grep -qx "2" "$log" || fail "nproc did not print 2 (MADT CPUs)"
echo "ok: $entry-entry boot in QEMU"
