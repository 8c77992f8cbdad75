#!/usr/bin/env bash
# A saved and restored default guest (issue 11): `lamina run --state-file` saves it mid-run on
# SIGUSR1 (a background job counting, a file in its RAM, a block written to its virtio disk),
# and a fresh `lamina run --restore` continues it: the shell answers typed commands, the file
# and the disk block are there, the job counts on, the guest's clock went on from where it was
# (uptime never back, and not ahead by the time the VM was saved away) and the kernel logged no
# unstable-clocksource, skew, lockup, stall or hung-task complaint after the restore.
#   checkpoint_guest.sh LAMINA GUEST_DIR [CPUS]
set -euo pipefail
lamina=$1 guest=$2 cpus=${3:-2}
[[ -f $guest/vmlinuz && -f $guest/initrd.img ]] || { echo "no default guest in '$guest'"; exit 1; }
work=$(mktemp -d)
log=$work/console.log
trap 'kill "${VMM_PID:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; echo "---- guest console ----"; cat "$log"; exit 1; }

"$lamina" disk create "$work/disk.vhd" --size 16M >/dev/null
common=(--cpus "$cpus" --memory 256M --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img"
        --cmdline "console=ttyS0 quiet panic=-1" --disk "$work/disk.vhd" --serial stdio)

# wait_for PATTERN: reads console output into the log until a line shows PATTERN.
wait_for() {
  local line
  while IFS= read -r -t 150 line <&"${VMM[0]}"; do
    line=${line%$'\r'}
    printf '%s\n' "$line" >>"$log"
    [[ $line == *"$1"* ]] && return 0
  done
  return 1
}
# The dmesg lines that would mean the guest saw time misbehave: the clocksource watchdog
# marking a clock unstable or measuring skew, soft/hard lockups, RCU stalls, hung tasks. Not
# counted: "Long readout interval, skipping watchdog check", which the kernel prints when its
# own watchdog timer ran late (timer softirqs delayed on a starved vCPU; cs_nsec and wd_nsec
# agree) and which a fresh boot on a loaded host prints too; such lines are shown, not failed.
complaints='unstable|skew|Marking clocksource|soft lockup|hard lockup|rcu.*stall|hung_task'

coproc VMM { exec "$lamina" run "${common[@]}" --state-file "$work/state" 2>&1; }
wait_for "poweroff' stops the VM" || fail "no shell banner"
# The count goes to a new file renamed over the old one: a reader never sees it empty (`echo
# >/tmp/count` truncates first, and a read in between came back empty in a CI run).
echo '(i=0; while :; do i=$((i+1)); echo $i >/tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done) &' >&"${VMM[1]}"
echo 'echo ram-$((6*7)) >/tmp/file; echo disk-$((7*8)) | dd of=/dev/vda bs=512 conv=sync 2>/dev/null; sync' >&"${VMM[1]}"
echo 'sleep 1; echo before-$((1+1)) $(cut -d" " -f1 /proc/uptime) $(dmesg | grep -ciE "'"$complaints"'") $(cat /tmp/count)' >&"${VMM[1]}"
wait_for "before-2 " || fail "the guest did not report its uptime"
before_seen=$(date +%s.%N)
read -r _ uptime_before complaints_before count_before < <(grep '^before-2 ' "$log" | tail -1)
kill -USR1 "$VMM_PID"
wait "$VMM_PID" || fail "lamina run did not exit 0 after saving"
[[ -s $work/state ]] || fail "no state file"
[[ -z $(find "$work" -name '.*lamina-*') ]] || fail "a temporary file was left behind"
echo "saved: $(stat -c %s "$work/state") bytes, $(du -k "$work/state" | cut -f1) KiB on disk"
# A state restored into another shape, or a file that is no state, is refused with the reason.
other=("${common[@]}"); other[1]=$((cpus == 1 ? 2 : 1))
"$lamina" run "${other[@]}" --restore "$work/state" </dev/null >"$work/out" 2>&1 &&
  fail "a state restored into a VM with other vCPUs ran"
grep -q "saved machine had $cpus vCPUs" "$work/out" || fail "a wrong shape said: $(cat "$work/out")"
"$lamina" run "${common[@]}" --restore "$work/disk.vhd" </dev/null >"$work/out" 2>&1 &&
  fail "a disk image restored as a state ran"
grep -q "not a Lamina machine state file" "$work/out" || fail "a non-state said: $(cat "$work/out")"
sleep 4  # the VM is away; its clock must not count this

echo "---- restored ----" >>"$log"
coproc VMM { exec "$lamina" run "${common[@]}" --restore "$work/state" 2>&1; }
echo 'echo restored-$((5*5)); cat /tmp/file; dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 7; echo' >&"${VMM[1]}"
wait_for "restored-25" || fail "the restored guest did not answer"
wait_for "ram-42" || fail "the file in guest RAM is gone"
wait_for "disk-56" || fail "the block written to the virtio disk is gone"
echo 'sleep 1; echo after-$((1+1)) $(cut -d" " -f1 /proc/uptime) $(dmesg | grep -ciE "'"$complaints"'") $(cat /tmp/count)' >&"${VMM[1]}"
wait_for "after-2 " || fail "the restored guest did not report its uptime"
after_seen=$(date +%s.%N)
read -r _ uptime_after complaints_after count_after < <(grep '^after-2 ' "$log" | tail -1)
echo 'dmesg | grep -iE "clocksource|watchdog" | tail -3; dmesg | tail -3; poweroff' >&"${VMM[1]}"
wait_for "reboot: Power down" || fail "the restored guest did not power off"
wait "$VMM_PID" || fail "the restored lamina run did not exit 0"

(( count_after > count_before )) || fail "the background job did not count on ($count_before -> $count_after)"
[[ $complaints_after == "$complaints_before" ]] ||
  fail "the kernel complained about time after the restore ($complaints_before -> $complaints_after lines)"
# Uptime goes on from the saved instant: it advanced by at least the 1 s slept after the
# restore, and by less than the host's time between the two reports minus most of the 4 s the
# VM was saved away (a clock that jumped by the absence, or ran from the restore's own start,
# fails). The host sees each report up to a poll late, so 1.5 s of the absence is slack (with
# 2 s away and 0.5 s of slack, a loaded host failed it).
wall=$(echo "$after_seen - $before_seen" | bc)
awk -v a="$uptime_after" -v b="$uptime_before" -v wall="$wall" 'BEGIN {
  d = a - b; printf "guest uptime advanced %.2f s; the host saw %.2f s (4 s of it saved away)\n", d, wall
  exit !(d >= 1 && d <= wall - 2.5) }' ||
  fail "guest uptime went from $uptime_before to $uptime_after over $wall s"
echo "---- guest console after the restore ----"; sed -n "/^---- restored/,\$p" "$log" | tail -12
echo "ok: checkpoint of the default guest ($cpus vCPUs)"
