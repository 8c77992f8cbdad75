#!/usr/bin/env bash
# Several partitions at once under laminad: six VMs of the default guest on one virtual switch,
# each in its own sandboxed worker, ping their neighbours in a ring (each must answer and be
# pinged); then one worker is killed with SIGKILL: the five others keep running and laminad
# reports the dead one's reason.
#   laminad_six_vms_test.sh LAMINA LAMINAD GUEST_DIR
set -euo pipefail
lamina=$1 laminad=$2 guest=$3
[[ -f $guest/vmlinuz ]] || { echo "no default guest in $guest"; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/laminad_lib.sh"
laminad_setup
start_laminad

count=6
switch=ring6-$$
for i in $(seq 1 $count); do
  peer=$((i % count + 1))
  # Configure the NIC, ping the next VM until it answers and this one has been pinged (the
  # kernel's Icmp InEchos counter), then stay up. No double quotes: it is a quoted parameter.
  command="nic=\$(ls /sys/class/net | grep -v '^lo\$' | head -n1); ip link set \$nic up && ip addr add 10.6.0.$i/24 dev \$nic || exit 3; "
  command+="echoes() { awk '/^Icmp:/ { if (!c) { for (n = 1; n <= NF; n++) if (\$n ~ /^InEchos\$/) c = n } else print \$c }' /proc/net/snmp; }; "
  command+="r=0; n=0; while [ \$n -lt 400 ]; do n=\$((n + 1)); "
  command+="if [ \$r = 0 ]; then ping -c 1 -W 1 10.6.0.$peer >/dev/null 2>&1 && r=1; else sleep 1; fi; "
  command+="e=\$(echoes); if [ \$r = 1 ] && [ \${e:-0} -gt 0 ]; then echo ring-ok-\$((40+2)); sleep 900; fi; done; echo ring-failed"
  "$lamina" vm create "vm$i" --memory 192M --rng none --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img" \
    --net "switch:$switch,mac=52:54:00:66:00:0$i" \
    --cmdline "console=ttyS0 quiet no_timer_check panic=-1 lamina_run=\"$command\"" >/dev/null || fail "create vm$i"
done
for i in $(seq 1 $count); do "$lamina" vm start "vm$i" >/dev/null || fail "start vm$i"; done

# Every VM answered its neighbour and was pinged by the other one.
deadline=$((SECONDS + 420))
for i in $(seq 1 $count); do
  until grep -q "ring-ok-42" "$work/state/vms/vm$i/console.log" 2>/dev/null; do
    grep -q "ring-failed" "$work/state/vms/vm$i/console.log" 2>/dev/null && fail "vm$i could not reach its peers"
    (( SECONDS < deadline )) || fail "vm$i did not finish its pings"
    sleep 2
  done
done
"$lamina" switch show "$switch" | awk '$3 ~ /^vm[0-9]$/' | wc -l | grep -qx "$count" ||
  fail "the switch does not list $count ports: $("$lamina" switch show "$switch")"

# The API lists the switch with the six ports too.
curl -sS --unix-socket "$sock" "http://laminad/v1/switches/$switch" >"$work/switch.json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d["ports"]) == int(sys.argv[2]), d' \
  "$work/switch.json" "$count" || fail "GET /v1/switches/$switch: $(cat "$work/switch.json")"

# The metrics count each card's frames.
curl -sS --unix-socket "$sock" http://laminad/metrics >"$work/metrics"
for i in $(seq 1 $count); do
  grep -Eq "^lamina_vm_network_frames_total\\{vm=\"vm$i\",nic=\"0\",direction=\"rx\"\\} [1-9]" "$work/metrics" ||
    fail "no received frames for vm$i in the metrics: $(grep "vm$i" "$work/metrics" | grep frames)"
done

# One worker dies: only its VM goes.
kill -9 "$(pid_of vm3)"
for _ in $(seq 50); do "$lamina" vm list | grep -q "^vm3 .*stopped" && break; sleep 0.2; done
"$lamina" vm show vm3 | grep -q "last stop:.*SIGKILL" || fail "no reason for vm3: $("$lamina" vm show vm3)"
sleep 1
for i in 1 2 4 5 6; do
  "$lamina" vm list | grep -q "^vm$i .*running" || fail "vm$i went down with vm3"
  kill -0 "$(pid_of "vm$i")" || fail "vm$i's worker is gone"
done
for i in $(seq 1 $count); do
  "$lamina" vm stop "vm$i" --force >/dev/null 2>&1 || true
  "$lamina" vm delete "vm$i" >/dev/null || fail "delete vm$i"
done
echo "PASS"
