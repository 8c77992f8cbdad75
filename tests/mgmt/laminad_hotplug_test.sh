#!/usr/bin/env bash
# Hotplug through laminad and `lamina vm` (issue 12), with a real daemon and the default guest
# (which onlines hot-added CPUs and memory itself, guest/hotplug), nothing typed in the guest
# but commands that watch and check:
#  * a VHD holding known data is attached to the running VM (ACPI PCI hotplug): the guest sees
#    /dev/vdb and reads the data; `lamina vm show` lists it with its id and the stored
#    definition keeps it; detach asks the guest, which lets go, and the image is closed (its
#    lock released, so `lamina disk check` opens it, with the guest's write in it);
#  * a network card on a virtual switch comes and goes the same way; while it is there the
#    guest pings a port of the test's own on that switch (switch_pinger.py) through it, and
#    again after the switch daemon was killed (laminad reconnects the card to a new one);
#  * vCPUs go from 1 to 3 (nproc says 3), a busy loop pinned to each runs, and back to 1;
#  * memory goes from 256 MiB to 512 MiB (virtio-mem): MemTotal grows, a checkpoint of the
#    grown VM (its disk, hot-added, in a slot past a hole a detach left) continues with it, the guest fills a pattern and checks it, and giving it back
#    lowers MemTotal and the worker's resident memory;
#  * a second guest that never releases a device keeps it: the detach times out with a clear
#    error and the image stays locked; while that detach waits, the worker still answers
#    laminad (the VM's metrics come from it);
#  * bad requests are refused with what is wrong and change nothing.
# Prints the time from the API call to the guest seeing the disk, the vCPUs and the memory.
#   laminad_hotplug_test.sh LAMINA LAMINAD GUEST_DIR
set -euo pipefail
lamina=$1 laminad=$2 guest=$3
[[ -f $guest/vmlinuz ]] || { echo "no default guest in $guest"; exit 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/laminad_lib.sh"
laminad_setup
start_laminad

console_log=$work/state/vms/hp/console.log
type_line() { console_send hp "$1"; }
refused() {
  local expected=$1; shift
  "$@" >/dev/null 2>"$work/err" && fail "'$*' was not refused"
  grep -q -- "$expected" "$work/err" || fail "'$*' said: $(cat "$work/err")"
}
definition() { "$lamina" vm --json show hp | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["definition"]))'; }

# A VHD whose first sector holds a known line.
head -c 8M /dev/zero >"$work/data.raw"
printf 'hotplug-data-4711\n' | dd of="$work/data.raw" conv=notrunc status=none
"$lamina" disk convert "$work/data.raw" "$work/data.vhd" >/dev/null

# The VM has a disk of its own (vda), so the attached one is vdb.
"$lamina" disk create "$work/boot.vhd" --size 4M >/dev/null
"$lamina" vm create hp --cpus 1,max=3 --memory 256M,max=512M --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img" \
  --cmdline "console=ttyS0 quiet panic=-1" --disk "$work/boot.vhd" >/dev/null || fail "create"
"$lamina" vm start hp >/dev/null || fail "start"
wait_console "lamina-guest:/#"
# The guest only watches; nothing it runs makes the disk appear. It waits for a read, not for
# the node: the guest kernel makes /dev/vdb before the disk opens (device_add comes before
# bdev_add), and a read in between fails with ENXIO.
type_line 'until head -c 17 /dev/vdb >/tmp/vdb 2>/dev/null; do usleep 10000; done; echo seen-$((40+2)) $(cat /tmp/vdb)'

# Refusals first: none of them changes the definition.
before=$(definition)
refused "data-missing.vhd" "$lamina" vm attach hp --disk "$work/data-missing.vhd"
refused "give one of --disk or --net" "$lamina" vm attach hp
refused "has no device disk7" "$lamina" vm detach hp disk7
refused "no VM named nothere" "$lamina" vm attach nothere --disk "$work/data.vhd"
refused "takes 1 to 3" "$lamina" vm set hp --cpus 4
refused "up to 512 MiB (its max)" "$lamina" vm set hp --memory 1G
[[ $(definition) == "$before" ]] || fail "a refused request changed the definition: $(definition)"

start_ms=$(date +%s%3N)
"$lamina" vm attach hp --disk "$work/data.vhd" >"$work/out" || fail "attach: $(cat "$work/out")"
api_ms=$(( $(date +%s%3N) - start_ms ))
grep -q "attached disk1 to hp" "$work/out" || fail "attach said: $(cat "$work/out")"
wait_console "seen-42 hotplug-data-4711"
seen_ms=$(( $(date +%s%3N) - start_ms ))
echo "hot-add of a disk on the built-in CPU: the API answered in $api_ms ms, the guest read it $seen_ms ms after the call"
"$lamina" vm show hp | grep -q "^disk1: *$work/data.vhd" || fail "show: $("$lamina" vm show hp)"
# The image is held: a second VM's writer cannot have it.
refused "is attached to hp already (as disk1)" "$lamina" vm attach hp --disk "$work/data.vhd"
"$lamina" disk check "$work/data.vhd" >/dev/null 2>&1 && fail "the attached image was not locked"

# The guest writes to it, then it goes; the written data is flushed and the lock released.
type_line 'echo written-by-guest | dd of=/dev/vdb bs=512 seek=1 conv=sync 2>/dev/null; sync; echo wrote-$((3+4))'
wait_console "wrote-7"
type_line 'while [ -b /dev/vdb ]; do usleep 10000; done; echo vdb-gone-$((5+5))'
"$lamina" vm detach hp "$work/data.vhd" >"$work/out" || fail "detach: $(cat "$work/out")"
grep -q "detached disk1 from hp" "$work/out" || fail "detach said: $(cat "$work/out")"
wait_console "vdb-gone-10" 10
"$lamina" disk check "$work/data.vhd" >"$work/out" 2>&1 || fail "disk check after detach: $(cat "$work/out")"
"$lamina" disk convert --format raw "$work/data.vhd" "$work/back.raw" >/dev/null
[[ $(dd if="$work/back.raw" bs=512 skip=1 count=1 status=none | head -c 16) == written-by-guest ]] ||
  fail "the guest's write did not reach the image"
[[ $(definition) == "$before" ]] || fail "the definition still names the disk: $(definition)"
grep -q '"detached"' <("$lamina" vm --json events hp) || fail "no detached event"

# A network card on a virtual switch comes and goes.
type_line 'while [ ! -e /sys/class/net/eth0 ]; do usleep 10000; done; echo nic-$((6+6)); ip link set eth0 up; ip addr add 10.0.9.2/24 dev eth0; ping -c 5 -W 5 10.0.9.1 >/dev/null && echo nic-pinged-$((5*5))'
"$lamina" vm attach hp --net switch:hpnet >"$work/out" || fail "attach --net: $(cat "$work/out")"
python3 "$here/switch_pinger.py" "$XDG_RUNTIME_DIR/lamina/switch/hpnet.sock" "$work/pings" \
  2>"$work/pinger.log" &
pinger=$!
wait_console "nic-12" 20
wait_console "nic-pinged-25" 20
kill "$pinger"
[[ -s $work/pings ]] || fail "no echo request reached the switch: $(cat "$work/pinger.log")"
shown=$("$lamina" vm show hp)
# (captured first: grep -q would close the pipe early, and pipefail count that)
[[ $shown =~ net0:\ *switch:hpnet[^$'\n']*\(PCI\ 00:[0-9a-f]{2}\.0,\ link\ up\) ]] ||
  fail "show does not list the card with its slot and link: $shown"
# The card's switch daemon dies (surprise removal of its backend): laminad hears it from the
# worker, restarts the switch and hands the worker a new port; the card's link comes up again
# and the guest pings through it once more, with no command about it.
switch_pid=""
for pid in $(pgrep -f "switch serve hpnet" || true); do
  grep -q "$work" "/proc/$pid/environ" 2>/dev/null && switch_pid=$pid
done
[[ -n $switch_pid ]] || fail "no switch daemon serves hpnet"
kill -9 "$switch_pid"
events=""
for _ in $(seq 100); do
  events=$("$lamina" vm events hp)
  [[ $events == *net_reconnected* ]] && break
  sleep 0.1
done
[[ $events == *net_backend_failed* ]] || fail "laminad did not hear that the card's backend died: $events"
[[ $events == *net_reconnected* ]] || fail "the card was not reconnected: $events"
for _ in $(seq 50); do [[ -S $XDG_RUNTIME_DIR/lamina/switch/hpnet.sock ]] && break; sleep 0.1; done
: >"$work/pings"
python3 "$here/switch_pinger.py" "$XDG_RUNTIME_DIR/lamina/switch/hpnet.sock" "$work/pings" \
  2>"$work/pinger.log" &
pinger=$!
type_line 'ping -c 3 -W 5 10.0.9.1 >/dev/null && echo nic-again-$((6*6)) carrier=$(cat /sys/class/net/eth0/carrier)'
wait_console "nic-again-36 carrier=1" 20
shown=$("$lamina" vm show hp)
[[ $shown =~ net0:[^$'\n']*link\ up ]] || fail "show after the reconnection: $shown"
kill "$pinger"
[[ -s $work/pings ]] || fail "no echo request reached the restarted switch: $(cat "$work/pinger.log")"
type_line 'while [ -e /sys/class/net/eth0 ]; do usleep 10000; done; echo nic-gone-$((7+7))'
"$lamina" vm detach hp net0 >/dev/null || fail "detach net0"
wait_console "nic-gone-14" 10

# vCPUs: the guest only watches nproc; the new ones are started and onlined by the guest.
type_line 'while [ $(nproc) -lt 3 ]; do usleep 10000; done; echo cpus-up-$(nproc)'
start_ms=$(date +%s%3N)
"$lamina" vm set hp --cpus 3 >"$work/out" || fail "set --cpus 3: $(cat "$work/out")"
wait_console "cpus-up-3" 20
echo "hot-add of 2 vCPUs on the built-in CPU: nproc was 3 $(( $(date +%s%3N) - start_ms )) ms after the call"
"$lamina" vm show hp | grep -q "^cpus: *3 (max 3)" || fail "show: $("$lamina" vm show hp)"
# A parallel workload, one busy loop pinned to each vCPU, the new ones included.
type_line 'for c in 0 1 2; do taskset -c $c sh -c "i=0; while [ \$i -lt 2000 ]; do i=\$((i+1)); done; echo ran-on-$c-\$(taskset -p \$\$ | sed s/.*:.//)" & done; wait'
for c in 0 1 2; do wait_console "ran-on-$c-$((1 << c))" 20; done
type_line 'while [ $(nproc) -gt 1 ]; do usleep 10000; done; echo cpus-down-$(nproc)'
"$lamina" vm set hp --cpus 1 >"$work/out" || fail "set --cpus 1: $(cat "$work/out")"
wait_console "cpus-down-1" 20
"$lamina" vm show hp | grep -q "^cpus: *1 (max 3)" || fail "show: $("$lamina" vm show hp)"

# Memory: 256 MiB -> 512 MiB; the guest only watches MemTotal, then fills 48 MiB of tmpfs with
# a pattern and checks it (page cache goes to the new memory first: the guest onlines it
# movable, the highest zone) while a 200 MiB fill on the built-in CPU would take a minute;
# giving it back frees the host's pages.
type_line 'while [ $(awk "/MemTotal/ {print \$2}" /proc/meminfo) -lt 400000 ]; do usleep 20000; done; echo mem-up-$((9+9))'
start_ms=$(date +%s%3N)
"$lamina" vm set hp --memory 512M >"$work/out" || fail "set --memory 512M: $(cat "$work/out")"
wait_console "mem-up-18" 20
"$lamina" vm show hp | grep -q "^memory: *256M,max=512M (set to 512M)" || fail "show: $("$lamina" vm show hp)"
echo "hot-add of 256 MiB on the built-in CPU: MemTotal grew $(( $(date +%s%3N) - start_ms )) ms after the call"
# A checkpoint of the grown VM (the hotplug controllers, the CPUs present and the plugged
# memory are machine state) continues with the memory it had.
# Its disks in slots no fresh boot would give them: a second data disk attached after vda's
# slot, then vda detached, leaving a hole; the checkpoint's restore puts each back in its slot.
cp "$work/data.vhd" "$work/data2.vhd"
type_line 'until head -c 1 /dev/vdb >/dev/null 2>&1; do usleep 10000; done; echo again-$((20+1))'
"$lamina" vm attach hp --disk "$work/data2.vhd" >"$work/out" || fail "attach data2: $(cat "$work/out")"
wait_console "again-21" 20
type_line 'while [ -b /dev/vda ]; do usleep 10000; done; echo vda-gone-$((20+2))'
"$lamina" vm detach hp disk0 >"$work/out" || fail "detach disk0: $(cat "$work/out")"
wait_console "vda-gone-22" 20
"$lamina" vm checkpoint hp grown >"$work/out" || fail "checkpoint: $(cat "$work/out")"
type_line 'echo after-restore-$(awk "/MemTotal/ {print \$2}" /proc/meminfo)-$(nproc)-$(head -c 17 /dev/vdb)'
wait_console "after-restore-4[0-9][0-9][0-9][0-9][0-9]-1-hotplug-data-4711" 20
# 1 MiB of the pattern by doubling (few large writes: small ones are slow on the built-in CPU).
fill='printf lamina-pattern-0123456789abc >/tmp/b; for i in $(seq 15); do cat /tmp/b /tmp/b >/tmp/c; mv /tmp/c /tmp/b; done; for i in $(seq 48); do cat /tmp/b; done >/tmp/fill; rm /tmp/b'
expected=$(cd "$work" && bash -c "${fill//\/tmp/$work}; md5sum <$work/fill" | cut -d" " -f1)
rm -f "$work/fill"
type_line "mount -o remount,size=400M /tmp; $fill; echo sum-\$(md5sum </tmp/fill)"
wait_console "sum-$expected" 40
pid=$(pid_of hp)
rss_full=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
type_line 'rm /tmp/fill; while [ $(awk "/MemTotal/ {print \$2}" /proc/meminfo) -gt 300000 ]; do usleep 20000; done; echo mem-down-$((10+10))'
"$lamina" vm set hp --memory 256M >"$work/out" || fail "set --memory 256M: $(cat "$work/out")"
wait_console "mem-down-20" 20
sleep 0.5
rss_back=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "worker RSS with the memory filled: $rss_full kB, after giving it back: $rss_back kB"
(( rss_back + 24576 < rss_full )) || fail "the worker's RSS did not fall: $rss_full kB -> $rss_back kB"
"$lamina" vm show hp | grep -q "^memory: *256M,max=512M$" || fail "show: $("$lamina" vm show hp)"

# The guest still runs normally.
type_line 'echo alive-$((8+8))'
wait_console "alive-16" 10
"$lamina" vm stop hp --force >/dev/null

# A guest that never lets go (its ACPI PCI hotplug driver is off): the detach waits its
# timeout, says so, and the disk stays attached, its image still locked by the VM.
console_log=$work/state/vms/deaf/console.log
"$lamina" vm create deaf --memory 256M --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img" \
  --cmdline "console=ttyS0 quiet panic=-1 acpiphp.disable=1" >/dev/null || fail "create deaf"
"$lamina" vm start deaf >/dev/null || fail "start deaf"
wait_console "lamina-guest:/#"
"$lamina" vm attach deaf --disk "$work/data.vhd" >/dev/null || fail "attach to deaf"
start_ms=$(date +%s%3N)
refused "did not release disk0 within 4 s" "$lamina" vm detach deaf disk0 --timeout 4 &
detaching=$!
sleep 1
# The worker answers laminad while the detach waits for the guest.
[[ $(api http://laminad/metrics) == 200 ]] || fail "GET /metrics during the detach"
grep -q 'lamina_vm_guest_instructions_total{vm="deaf"}' "$work/body" ||
  fail "the worker did not answer during the detach: $(grep deaf "$work/body")"
wait "$detaching" || fail "the detach of a disk the guest keeps"
waited_ms=$(( $(date +%s%3N) - start_ms ))
(( waited_ms >= 4000 && waited_ms < 10000 )) || fail "the refused detach took $waited_ms ms"
"$lamina" vm show deaf | grep -q "^disk0: *$work/data.vhd" || fail "the kept disk left the definition"
"$lamina" disk check "$work/data.vhd" >/dev/null 2>&1 && fail "the kept disk's image was not locked"
"$lamina" vm stop deaf --force >/dev/null
"$lamina" disk check "$work/data.vhd" >/dev/null || fail "the image stayed locked after the VM stopped"
echo "PASS"
