#!/usr/bin/env bash
# Checkpoints through laminad and `lamina vm` (issue 11), with a real daemon and the default
# guest on a VHDX disk: a checkpoint of the running VM (state saved, the disk gets a
# differencing child, the VM runs on); a second one of the paused VM (it stays paused); the
# guest changes a file in RAM and a block on its disk; deleting the second (refused while the
# VM runs) merges its disk; restoring the first (refused while the VM runs) brings back both
# old contents; deleting it merges the disk back into the original image. Every refusal names
# its cause. A VM with a SATA disk and a CD-ROM is checkpointed and restored with its AHCI
# controller's state, its guest driver reading and writing on after the restore.
#   laminad_checkpoint_test.sh LAMINA LAMINAD GUEST_DIR
set -euo pipefail
lamina=$1 laminad=$2 guest=$3
[[ -f $guest/vmlinuz ]] || { echo "no default guest in $guest"; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/laminad_lib.sh"
laminad_setup
start_laminad

console_log=$work/state/vms/cp/console.log
# type_line TEXT: one line typed into the VM's shell through `lamina vm console`.
type_line() { console_send cp "$1"; }
# refused EXPECTED-TEXT COMMAND...: the command fails and says EXPECTED-TEXT.
refused() {
  local expected=$1; shift
  "$@" >/dev/null 2>"$work/err" && fail "'$*' was not refused"
  grep -q -- "$expected" "$work/err" || fail "'$*' said: $(cat "$work/err")"
}

"$lamina" disk create "$work/disk.vhdx" --size 16M >/dev/null
"$lamina" vm create cp --memory 256M --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img" \
  --cmdline "console=ttyS0 quiet panic=-1" --disk "$work/disk.vhdx" >/dev/null || fail "create"
refused "no VM named nothere" "$lamina" vm checkpoint nothere
refused "no checkpoint named missing" "$lamina" vm restore cp missing
[[ $(api -X POST -d '{"name":"bad name"}' http://laminad/v1/vms/cp/checkpoints) == 400 ]] ||
  fail "a bad checkpoint name was accepted"
"$lamina" vm start cp >/dev/null || fail "start"
wait_console "lamina-guest:/#"
type_line 'echo v1-$((1+1)) >/tmp/file; echo disk-v1 | dd of=/dev/vda bs=512 conv=sync 2>/dev/null; sync; echo wrote-$((2+2))'
wait_console "wrote-4"

# The checkpoint: the VM is saved, its disk frozen under a new child, and it runs on.
start_ms=$(date +%s%3N)
"$lamina" vm checkpoint cp first >"$work/out" || fail "checkpoint: $(cat "$work/out")"
echo "checkpoint of a running 256 MiB VM: $(( $(date +%s%3N) - start_ms )) ms: $(cat "$work/out")"
grep -q "state saved" "$work/out" || fail "checkpoint said: $(cat "$work/out")"
[[ $("$lamina" vm --json show cp | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])') == running ]] ||
  fail "the VM does not run on after the checkpoint"
[[ -f $work/disk@first.vhdx ]] || fail "no differencing child disk@first.vhdx: $(ls "$work")"
"$lamina" vm --json show cp | grep -q 'disk@first.vhdx' || fail "the definition is not on the child"
"$lamina" disk info --force-share "$work/disk@first.vhdx" | grep -qi "disk.vhdx" || fail "the child's parent is not disk.vhdx"
"$lamina" vm checkpoints cp | grep -q "^first .* saved" || fail "checkpoints: $("$lamina" vm checkpoints cp)"
[[ -s $work/state/vms/cp/checkpoints/first.state ]] || fail "no state file"
[[ -z $(find "$work/state/vms/cp/checkpoints" -name '.*') ]] || fail "a temporary state file was left"
refused "has a checkpoint named first" "$lamina" vm checkpoint cp first
type_line 'echo after-checkpoint-$((3+3)) $(cat /tmp/file)'
wait_console "after-checkpoint-6 v1-2"

# A paused VM's checkpoint leaves it paused; deleting that checkpoint would merge the VM's
# disk, which is refused while it runs and done once it is stopped.
"$lamina" vm pause cp >/dev/null || fail "pause"
"$lamina" vm checkpoint cp second >/dev/null || fail "checkpoint of the paused VM"
[[ $("$lamina" vm --json show cp | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])') == paused ]] ||
  fail "the paused VM is not paused after its checkpoint"
"$lamina" vm resume cp >/dev/null || fail "resume"
refused "needs the VM stopped" "$lamina" vm checkpoint-delete cp second

# The guest changes both; a restore is refused while it runs.
type_line 'echo v2-$((2+2)) >/tmp/file; echo disk-v2 | dd of=/dev/vda bs=512 conv=sync 2>/dev/null; sync; echo changed-$((4+4))'
wait_console "changed-8"
refused "stop it before restoring" "$lamina" vm restore cp first
"$lamina" vm stop cp --force >/dev/null || fail "stop"
"$lamina" vm checkpoint-delete cp second >"$work/out" || fail "checkpoint-delete second: $(cat "$work/out")"
grep -q "1 disk(s) merged" "$work/out" || fail "deleting second said: $(cat "$work/out")"
"$lamina" vm --json show cp | grep -q 'disk@first.vhdx' || fail "the VM is not back on disk@first.vhdx"
[[ ! -e $work/disk@second.vhdx ]] || fail "disk@second.vhdx was left"

# The restore: the VM runs on from the checkpoint, with the old file and the old disk block.
start_ms=$(date +%s%3N)
"$lamina" vm restore cp first >"$work/out" || fail "restore: $(cat "$work/out")"
echo "restore (worker start + state) of a 256 MiB VM: $(( $(date +%s%3N) - start_ms )) ms"
type_line 'echo restored-$((5*5)) $(cat /tmp/file) $(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 7)'
wait_console "restored-25 v1-2 disk-v1"
grep -q "v2-4\|disk-v2" "$console_log" && fail "the restored VM shows the changes made after the checkpoint"
"$lamina" vm stop cp --force >/dev/null || fail "stop after restore"

# Deleting the checkpoint merges the VM's disk into the original image and removes the rest.
"$lamina" vm checkpoint-delete cp first >"$work/out" || fail "checkpoint-delete: $(cat "$work/out")"
grep -q "1 disk(s) merged" "$work/out" || fail "checkpoint-delete said: $(cat "$work/out")"
"$lamina" vm --json show cp | grep -q '"disks"' || fail "show"
"$lamina" vm --json show cp | grep -q '@' && fail "the definition still names a child: $("$lamina" vm --json show cp)"
[[ -z $(find "$work" -maxdepth 1 -name 'disk@*') ]] || fail "children left: $(ls "$work")"
[[ ! -e $work/state/vms/cp/checkpoints/first.state ]] || fail "the state file was left"
[[ -z $("$lamina" vm checkpoints cp | tail -n +2) ]] || fail "the checkpoint is still listed"
"$lamina" disk convert "$work/disk.vhdx" "$work/disk.raw" --format raw >/dev/null
[[ $(head -c 7 "$work/disk.raw") == disk-v1 ]] || fail "the merged disk holds '$(head -c 7 "$work/disk.raw")'"
refused "no checkpoint named first" "$lamina" vm checkpoint-delete cp first

# A stopped VM's checkpoint freezes its disks only; restoring it gives the VM a fresh child of
# the frozen image (the VM stays stopped) and removes the child it was on; deleting merges.
"$lamina" disk create "$work/cold.vhd" --size 1M >/dev/null
"$lamina" vm create cold --disk "$work/cold.vhd,serial=COLD" >/dev/null
"$lamina" vm checkpoint cold c1 >"$work/out" || fail "checkpoint of a stopped VM: $(cat "$work/out")"
grep -q "disks frozen (the VM was stopped)" "$work/out" || fail "stopped checkpoint said: $(cat "$work/out")"
"$lamina" vm --json show cold | grep -q 'cold@c1.vhd,serial=COLD' || fail "cold is not on its child"
"$lamina" vm restore cold c1 >/dev/null || fail "restore of a disk-only checkpoint"
[[ $("$lamina" vm --json show cold | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])') == stopped ]] ||
  fail "a disk-only restore started the VM"
"$lamina" vm --json show cold | grep -q 'cold@c1-2.vhd' || fail "cold is not on a fresh child"
[[ ! -e $work/cold@c1.vhd ]] || fail "the discarded child cold@c1.vhd was left"
"$lamina" vm checkpoint-delete cold c1 >/dev/null || fail "delete c1"
"$lamina" vm --json show cold | grep -q "$work/cold.vhd,serial=COLD" || fail "cold is not back on cold.vhd"
[[ -z $(find "$work" -maxdepth 1 -name 'cold@*') ]] || fail "cold's children left: $(ls "$work")"

# Disks without differencing children are refused before anything happens.
"$lamina" disk create "$work/plain.raw" --size 1M --format raw >/dev/null
"$lamina" vm create plain --disk "$work/plain.raw" >/dev/null
refused "checkpoints need VHD or VHDX disks" "$lamina" vm checkpoint plain
[[ -z $("$lamina" vm checkpoints plain | tail -n +2) ]] || fail "a refused checkpoint was recorded"
# SATA drives are part of the machine state: the guest's AHCI driver (interrupts on) reads a
# VHD on /dev/sda and the CD's volume descriptor on /dev/sr0, the running VM is checkpointed,
# the guest overwrites the disk's first sector, and after the restore (page cache dropped)
# the driver reads the checkpoint's sector and the CD again, and writes on.
printf 'sata-v1\n' | dd of="$work/sata.raw" bs=512 conv=sync status=none
truncate -s 8M "$work/sata.raw"
"$lamina" disk convert "$work/sata.raw" "$work/sata.vhd" >/dev/null || fail "convert the SATA disk"
mkdir "$work/cd" && echo cd-token >"$work/cd/token.txt"
xorriso -as mkisofs -quiet -o "$work/data.iso" "$work/cd" 2>/dev/null || fail "xorriso"
"$lamina" vm create sata --memory 192M --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img" \
  --cmdline "console=ttyS0 quiet panic=-1" --disk "$work/sata.vhd,bus=sata" \
  --cdrom "$work/data.iso" >/dev/null || fail "create sata"
"$lamina" vm start sata >/dev/null || fail "start sata"
console_log=$work/state/vms/sata/console.log
type_sata() { console_send sata "$1"; }
wait_console "lamina-guest:/#"
type_sata 'for m in $(cat /etc/modules.storage); do insmod /lib/modules/$m.ko; done; i=0; while ! dd if=/dev/sda of=/dev/null count=1 2>/dev/null || ! dd if=/dev/sr0 of=/dev/null bs=2048 count=1 2>/dev/null; do sleep 1; i=$((i+1)); [ $i -lt 60 ] || break; done; echo sata-up-$((3*3)) $(dd if=/dev/sda bs=512 count=1 2>/dev/null | head -c 7)'
wait_console "sata-up-9 sata-v1"
"$lamina" vm checkpoint sata s1 >"$work/out" || fail "checkpoint of a VM with SATA drives: $(cat "$work/out")"
grep -q "state saved" "$work/out" || fail "the SATA checkpoint said: $(cat "$work/out")"
type_sata 'echo sata-v2 | dd of=/dev/sda bs=512 conv=sync,fsync 2>/dev/null; echo sata-changed-$((2*5))'
wait_console "sata-changed-10"
"$lamina" vm stop sata --force >/dev/null || fail "stop sata"
"$lamina" vm restore sata s1 >"$work/out" || fail "restore of the SATA VM: $(cat "$work/out")"
type_sata 'echo 3 >/proc/sys/vm/drop_caches; echo sata-restored-$((4*4)) $(dd if=/dev/sda bs=512 count=1 2>/dev/null | head -c 7) $(dd if=/dev/sr0 bs=2048 skip=16 count=1 2>/dev/null | head -c 6 | tail -c 5)'
wait_console "sata-restored-16 sata-v1 CD001"
type_sata 'echo sata-v3 | dd of=/dev/sda bs=512 conv=sync,fsync 2>/dev/null; echo 3 >/proc/sys/vm/drop_caches; echo sata-wrote-$((5*5)) $(dd if=/dev/sda bs=512 count=1 2>/dev/null | head -c 7)'
wait_console "sata-wrote-25 sata-v3"
"$lamina" vm stop sata --force >/dev/null || fail "stop sata after the restore"
echo "ok: checkpoints through laminad"
