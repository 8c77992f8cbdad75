#!/usr/bin/env bash
# A managed VM that boots through SeaBIOS (issue 15): `lamina vm create --disk` with no kernel
# gets the BIOS by default; laminad grants the firmware image to the sandboxed worker like a
# kernel; SeaBIOS boots memtest86+ from a GRUB disk, and the console log shows it testing.
# The same disk on the AHCI controller (bus=sata) beside a CD (--cdrom, --boot disk) boots too,
# both images granted to the worker, and that VM is checkpointed (its AHCI state saved).
#   laminad_firmware_test.sh LAMINA LAMINAD
set -euo pipefail
lamina=$1 laminad=$2
source "$(dirname "${BASH_SOURCE[0]}")/laminad_lib.sh"
laminad_setup
start_laminad

bash "$(dirname "${BASH_SOURCE[0]}")/../guest/make_bios_disk.sh" memtest "$work/memtest.raw" >/dev/null
"$lamina" vm create fw --memory 128M --rng none --disk "$work/memtest.raw" >/dev/null ||
  fail "create"
"$lamina" vm --json show fw >"$work/show"
grep -q '"firmware"' "$work/show" && fail "the definition should not name a firmware: $(cat "$work/show")"
"$lamina" vm start fw >/dev/null || fail "start"
log=$work/state/vms/fw/console.log
for _ in $(seq 120); do grep -aq "Address test" "$log" 2>/dev/null && break; sleep 1; done
grep -aq "SeaBIOS (version" "$log" || fail "no SeaBIOS banner in the console log"
grep -aq "Memtest86+ v6" "$log" || fail "memtest86+ did not start under laminad"
grep -aq "Address test" "$log" || fail "memtest86+ did not start testing"
"$lamina" vm stop fw --force >/dev/null 2>&1 || true

"$lamina" disk convert "$work/memtest.raw" "$work/memtest-sata.vhd" >/dev/null || fail "convert"
mkdir "$work/cd" && echo data >"$work/cd/data.txt"
xorriso -as mkisofs -quiet -o "$work/data.iso" "$work/cd" 2>/dev/null || fail "xorriso"
"$lamina" vm create sata --memory 128M --rng none --disk "$work/memtest-sata.vhd,bus=sata" \
  --cdrom "$work/data.iso" --boot disk >/dev/null || fail "create sata"
"$lamina" vm start sata >/dev/null || fail "start sata"
log=$work/state/vms/sata/console.log
for _ in $(seq 120); do grep -aq "Address test" "$log" 2>/dev/null && break; sleep 1; done
grep -aq "Booting from Hard Disk" "$log" || fail "SeaBIOS did not boot the SATA disk"
grep -aq "Address test" "$log" || fail "memtest86+ did not start testing from the SATA disk"
"$lamina" vm checkpoint sata first >"$work/out" 2>&1 || fail "checkpoint of the SATA VM: $(cat "$work/out")"
[[ $("$lamina" vm --json show sata | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])') == running ]] ||
  fail "the VM did not run on after its checkpoint"
"$lamina" vm checkpoints sata | grep -q first || fail "the checkpoint was not recorded"
"$lamina" vm stop sata --force >/dev/null 2>&1 || true
# An explicit firmware that is not a BIOS image is refused when the VM starts.
"$lamina" vm create bad --memory 64M --firmware "bios:$0" >/dev/null || fail "create bad"
"$lamina" vm start bad >"$work/out" 2>&1 && fail "a script started as a BIOS"
grep -q "not a BIOS image" "$work/out" "$work/state/vms/bad/worker.log" 2>/dev/null ||
  fail "the refusal did not say why: $(cat "$work/out")"
echo PASS
