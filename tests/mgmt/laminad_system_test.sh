#!/usr/bin/env bash
# laminad end to end, with a real daemon on a real socket and real guests: raw HTTP and the
# `lamina vm` CLI; three VMs of the default guest at once, each in a sandboxed worker checked
# from outside (/proc: seccomp, no_new_privs, uid, namespaces, empty root, open fds); the
# serial console over the WebSocket (a writer, a refused second writer, a reader); a laminad
# restart that re-adopts the running workers and starts an autostart VM; pause and resume; a
# worker killed with SIGKILL takes down only its own VM and laminad says why; stop, 409s,
# delete.
#   laminad_system_test.sh LAMINA LAMINAD GUEST_DIR
set -euo pipefail
lamina=$1 laminad=$2 guest=$3
[[ -f $guest/vmlinuz ]] || { echo "no default guest in $guest"; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/laminad_lib.sh"
laminad_setup
start_laminad

# The memory cgroup process $1 is in, as "FOLDER LIMIT_FILE USAGE_FILE": cgroup v1's memory
# hierarchy, else v2 with the memory controller; an empty line on a host with neither.
memory_cgroup() {
  local v1 v2
  v1=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' "/proc/$1/cgroup")
  v2=$(awk -F: '$1 == "0" {print $3}' "/proc/$1/cgroup")
  if [[ -n $v1 && -d /sys/fs/cgroup/memory ]]; then
    echo "/sys/fs/cgroup/memory$v1 memory.limit_in_bytes memory.usage_in_bytes"
  elif grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    echo "/sys/fs/cgroup$v2 memory.max memory.current"
  else
    echo
  fi
}

# Raw HTTP: the API answers, and refuses bad input with the field named, changing nothing.
[[ $(api http://laminad/v1/version) == 200 ]] || fail "GET /v1/version"
[[ $(api -X POST -d '{"name":"bad name"}' http://laminad/v1/vms) == 400 ]] || fail "bad name accepted"
grep -q '"field": "name"' "$work/body" || fail "the error does not name the field: $(cat "$work/body")"
[[ $(api -X POST -d '{"name":"x","definition":{"memory":"lots"}}' http://laminad/v1/vms) == 400 ]] ||
  fail "bad memory accepted"
grep -q '"field": "definition.memory"' "$work/body" || fail "memory error: $(cat "$work/body")"
[[ $(api -X POST -d '{"name":"x","colour":"red"}' http://laminad/v1/vms) == 400 ]] || fail "unknown field"
[[ $(api http://laminad/v1/vms/x) == 404 ]] || fail "a refused create left a VM"
[[ $(api http://laminad/openapi.json) == 200 ]] || fail "no OpenAPI document"

# Three VMs of the default guest through the CLI; each prints its name and waits, so the
# sandbox can be looked at while it runs.
# alpha gives a shell on its console; beta and gamma run a command.
"$lamina" vm create alpha --memory 256M --code-cache 32M --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img" \
  --cmdline "console=ttyS0 quiet no_timer_check panic=-1" >/dev/null || fail "create alpha"
# gamma's disk is a differencing VHD over a parent: laminad opens both (under the reference
# policy, locks taken) and hands the worker their descriptors.
mkdir -p "$work/images" "$work/elsewhere"
"$lamina" disk create "$work/images/base.vhd" --size 64M >/dev/null || fail "create base.vhd"
"$lamina" disk create "$work/images/gamma.vhd" --parent "$work/images/base.vhd" >/dev/null ||
  fail "create gamma.vhd"
# beta has a network card given without a MAC: laminad fixes one in the definition, so the
# grants it opens and the worker agree on it at every start.
for name in beta gamma; do
  disk=()
  [[ $name == gamma ]] && disk=(--disk "$work/images/gamma.vhd")
  [[ $name == beta ]] && disk=(--net switch:sysnet)
  "$lamina" vm create "$name" --memory 256M --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img" "${disk[@]}" \
    --cmdline "console=ttyS0 quiet no_timer_check panic=-1 lamina_run=\"echo hello-from-$name-\$((6*7)); sleep 600\"" >/dev/null ||
    fail "create $name"
done
# A parent outside the child's folder is refused at start (the worker never sees it), with
# the option that would allow it, and nothing is left running.
"$lamina" disk create "$work/elsewhere/remote-base.vhd" --size 64M >/dev/null || fail "create elsewhere/remote-base.vhd"
"$lamina" disk create "$work/images/stray.vhd" --parent "$work/elsewhere/remote-base.vhd" >/dev/null ||
  fail "create stray.vhd"
"$lamina" vm create stray --memory 256M --kernel "$guest/vmlinuz" --disk "$work/images/stray.vhd" >/dev/null ||
  fail "create stray"
"$lamina" vm start stray 2>"$work/err" && fail "a VM with a parent outside its disk's folder started"
grep -q "outside the image's folder.*allow-parent-dir" "$work/err" || fail "stray start said: $(cat "$work/err")"
"$lamina" vm list | grep -q "^stray .*stopped" || fail "stray is not stopped: $("$lamina" vm list)"
"$lamina" vm delete stray >/dev/null || fail "delete stray"
"$lamina" vm create alpha >/dev/null 2>"$work/err" && fail "a second VM named alpha was created"
grep -q "exists" "$work/err" || fail "duplicate create said: $(cat "$work/err")"
# beta's events as they happen, over Server-Sent Events, from before it starts.
curl -sN --unix-socket "$sock" "http://laminad/v1/events/stream?vm=beta" >"$work/stream.txt" 2>/dev/null &
streamer=$!
shown=$("$lamina" vm --json show beta)
[[ $shown =~ \"switch:sysnet,mac=[0-9a-f:]{17}\" ]] || fail "beta's card has no MAC in its definition: $shown"
for name in alpha beta gamma; do "$lamina" vm start "$name" || fail "start $name"; done
"$lamina" vm start alpha 2>"$work/err" && fail "a running VM started twice"
grep -q "alpha is running" "$work/err" || fail "double start said: $(cat "$work/err")"

for name in alpha beta gamma; do
  pid=$(pid_of "$name")
  [[ $pid -gt 0 ]] || fail "$name has no worker pid"
  status=/proc/$pid/status
  grep -q "^Seccomp:[[:space:]]*2" "$status" || fail "$name: seccomp filter not on ($(grep Seccomp "$status"))"
  grep -q "^NoNewPrivs:[[:space:]]*1" "$status" || fail "$name: no_new_privs not set"
  # The vCPU thread (and the device threads it started) stacked the guest-facing filter: two
  # filters there, one on the main thread (Seccomp_filters is in Linux 5.9 and later).
  if grep -q "^Seccomp_filters:" "$status"; then
    grep -q "^Seccomp_filters:[[:space:]]*1$" "$status" || fail "$name: main thread filters"
    # (the vCPU thread starts just after the worker answered the start request)
    for _ in $(seq 100); do
      grep -l "^Seccomp_filters:[[:space:]]*2$" /proc/$pid/task/*/status >/dev/null 2>&1 && break
      sleep 0.1
    done
    grep -l "^Seccomp_filters:[[:space:]]*2$" /proc/$pid/task/*/status >/dev/null 2>&1 ||
      fail "$name: no thread has the guest-facing filter"
  fi
  uid=$(awk '/^Uid:/ {print $2}' "$status")
  [[ $uid != 0 ]] || fail "$name: the worker runs as uid 0"
  grep -q "^CapEff:[[:space:]]*0000000000000000" "$status" || fail "$name: capabilities left"
  # Bounded: an address-space limit of guest RAM plus the VMM's room, and no core dumps.
  limit=$(awk '/^Max address space/ {print $4}' "/proc/$pid/limits")
  [[ $limit =~ ^[0-9]+$ && $limit -le $(( (256 + 1024 + 128) << 20 )) ]] ||
    fail "$name: address space limit '$limit'"
  [[ $(awk '/^Max core file size/ {print $5}' "/proc/$pid/limits") == 0 ]] || fail "$name: core dumps allowed"
  for ns in mnt net pid ipc uts; do
    [[ $(readlink "/proc/$pid/ns/$ns") != $(readlink "/proc/self/ns/$ns") ]] ||
      fail "$name: shares laminad's $ns namespace"
  done
  [[ -z $(ls -A "/proc/$pid/root/" 2>/dev/null) ]] || fail "$name: its root is not empty: $(ls -A /proc/$pid/root/)"
  # Open fds: stdio, the control channel, the serial log, the guest's own, and only gamma's
  # two images (no kernel or initrd once read, no host folders).
  images=""
  for fd in /proc/$pid/fd/*; do
    target=$(readlink "$fd" || true)
    case $target in
      /dev/null|socket:*|anon_inode:*|pipe:*|"$work"/state/vms/$name/*) ;;
      "$work"/images/gamma.vhd|"$work"/images/base.vhd)
        [[ $name == gamma ]] || fail "$name holds gamma's image $target"
        images+="${target##*/} " ;;
      *) fail "$name: unexpected open fd $fd -> $target" ;;
    esac
  done
  # The memory cgroup: guest RAM (256M) + 256M + 32M per vCPU, where the host has one.
  want=$(( (256 + 256 + 32) << 20 ))
  read -r dir limit_file _ <<<"$(memory_cgroup "$pid")"
  if [[ -n $dir ]]; then
    [[ $dir == */lamina/$name ]] || fail "$name: memory cgroup '$dir'"
    [[ $(cat "$dir/$limit_file") == "$want" ]] || fail "$name: cgroup limit ($dir/$limit_file)"
    cgroup_dir=$dir
  else
    "$lamina" vm events "$name" | grep -q "memory_cgroup.*none" || fail "$name: no word on its cgroup"
  fi
  if [[ $name == gamma ]]; then
    [[ $(tr ' ' '\n' <<<"$images" | sort -u | xargs) == "base.vhd gamma.vhd" ]] ||
      fail "gamma's worker holds images '$images', not its disk and parent"
  fi
done
# The locks laminad took came with the descriptors: the running VM's disk cannot be opened
# for writing by anyone else, and its parent only for reading.
"$lamina" disk check "$work/images/gamma.vhd" --repair 2>"$work/err" && fail "repaired a disk in use"
grep -q "in use by another process" "$work/err" || fail "disk in use said: $(cat "$work/err")"
"$lamina" disk info "$work/images/base.vhd" >/dev/null || fail "the parent cannot be read while in use"

# Every guest booted and ran its command.
for name in beta gamma; do
  for _ in $(seq 300); do grep -q "hello-from-$name-42" "$work/state/vms/$name/console.log" 2>/dev/null && break; sleep 1; done
  grep -q "hello-from-$name-42" "$work/state/vms/$name/console.log" || fail "$name did not boot"
done

# The metrics show what the built-in CPU's translator holds: alpha booted on it, its code
# within the 32 MiB it was given.
[[ $(api http://laminad/metrics) == 200 ]] || fail "GET /metrics"
grep -Eq '^lamina_vm_jit_translations_total\{vm="alpha"\} [1-9][0-9]*$' "$work/body" ||
  fail "no translations in the metrics: $(grep jit "$work/body")"
grep -q '^lamina_vm_jit_code_cache_limit_bytes{vm="alpha"} 33554432$' "$work/body" ||
  fail "alpha's code cache limit: $(grep jit "$work/body")"
used=$(sed -n 's/^lamina_vm_jit_code_cache_bytes{vm="alpha"} \([0-9]*\)$/\1/p' "$work/body")
[[ -n $used ]] && (( used > 0 && used <= 33554432 )) || fail "alpha's code cache holds '$used' bytes"
grep -q '^# TYPE lamina_vm_jit_code_cache_flushes_total counter$' "$work/body" || fail "no flush counter"

# The console over the WebSocket: alpha's shell answers a command typed through `lamina vm
# console`; a second writer is refused while the first is attached; a reader may watch; the
# recent output is also plain text at the same path.
for _ in $(seq 300); do grep -q "lamina-guest:/#" "$work/state/vms/alpha/console.log" 2>/dev/null && break; sleep 1; done
grep -q "lamina-guest:/#" "$work/state/vms/alpha/console.log" || fail "alpha's shell did not start"
(sleep 6) | timeout 8 "$lamina" vm console alpha --read-only >"$work/watch.txt" 2>&1 &
watcher=$!
(printf 'echo console-says-$((6*7))\n'; sleep 4) | timeout 6 "$lamina" vm console alpha >"$work/console.txt" 2>&1 &
writer=$!
sleep 1
echo x | "$lamina" vm console alpha 2>"$work/err" >/dev/null && fail "a second writer was let in"
grep -q "another client holds the console's input" "$work/err" || fail "second writer said: $(cat "$work/err")"
"$lamina" vm console alpha --send 'echo refused-send' 2>"$work/err" && fail "--send got past the writer"
grep -q "another client holds the console's input" "$work/err" || fail "--send said: $(cat "$work/err")"
wait $writer || true
wait $watcher || true
grep -q "console-says-42" "$work/console.txt" || fail "no answer on the console: $(tail -c 300 "$work/console.txt")"
grep -q "console-says-42" "$work/watch.txt" || fail "the reader did not see it: $(tail -c 300 "$work/watch.txt")"
# A script types one line and leaves at once.
console_send alpha 'echo sent-by-$((40+3))'
console_log=$work/state/vms/alpha/console.log
wait_console "sent-by-43" 20
grep -q "refused-send" "$console_log" && fail "a refused --send reached the guest"
[[ $(api http://laminad/v1/vms/alpha/console) == 200 ]] || fail "GET console"
grep -q "console-says-42" "$work/body" || fail "the console's text lacks the answer"
grep -q "console-says-42" "$work/state/vms/alpha/console.log" || fail "the console log lacks the answer"
"$lamina" vm console beta --read-only </dev/null >/dev/null 2>&1 &
reader=$!

# SIGKILL one worker: only its VM goes, and laminad says why.
kill -9 "$(pid_of beta)"
for _ in $(seq 50); do "$lamina" vm list | grep -q "^beta .*stopped" && break; sleep 0.2; done
"$lamina" vm list | grep -q "^beta .*stopped" || fail "beta's death was not noticed"
"$lamina" vm show beta | grep -q "last stop:.*SIGKILL" || fail "no reason for beta: $("$lamina" vm show beta)"
"$lamina" vm events beta | grep -q "crashed" || fail "no crashed event for beta"
for name in alpha gamma; do
  "$lamina" vm list | grep -q "^$name .*running" || fail "$name went down with beta"
done
# The stream saw beta start and crash, in order, each with its id and JSON; a client that
# reconnects with Last-Event-ID gets only what came after.
for _ in $(seq 50); do grep -q "^event: crashed" "$work/stream.txt" && break; sleep 0.2; done
kill $streamer 2>/dev/null || true
[[ $(grep "^event: " "$work/stream.txt" | xargs) == "event: created event: started event: crashed" ]] ||
  fail "the event stream said: $(cat "$work/stream.txt")"
grep -q '^data: {.*"vm":"beta".*"kind":"crashed"\|^data: {.*"kind":"crashed".*"vm":"beta"' "$work/stream.txt" ||
  fail "no crashed data line: $(cat "$work/stream.txt")"
started_id=$(grep -B1 "^event: started" "$work/stream.txt" | sed -n 's/^id: //p')
curl -sN --max-time 2 --unix-socket "$sock" -H "Last-Event-ID: $started_id" \
  "http://laminad/v1/events/stream?vm=beta" >"$work/resumed.txt" 2>/dev/null || true
[[ $(grep "^event: " "$work/resumed.txt" | xargs) == "event: crashed" ]] ||
  fail "resuming after $started_id gave: $(cat "$work/resumed.txt")"
# `lamina vm events --follow` reads the same stream (and keeps reading until stopped).
timeout 3 "$lamina" vm --json events beta --follow >"$work/follow.txt" 2>&1 && fail "--follow ended by itself"
[[ $(python3 -c 'import json,sys; print(" ".join(json.loads(l)["kind"] for l in sys.stdin))' <"$work/follow.txt") == \
   "created started crashed" ]] || fail "events --follow printed: $(cat "$work/follow.txt")"

# beta's console client ended when beta went away.
for _ in $(seq 50); do kill -0 $reader 2>/dev/null || break; sleep 0.2; done
kill -0 $reader 2>/dev/null && fail "a console client outlived its VM"

# Restarting laminad leaves the VMs running; the new one adopts them (same workers), links the
# console again, and starts the VMs marked autostart.
"$lamina" vm create delta --autostart --memory 256M --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img" \
  --cmdline "console=ttyS0 quiet no_timer_check panic=-1 lamina_run=\"sleep 600\"" >/dev/null || fail "create delta"
before=$(for name in alpha gamma; do pid_of "$name"; done)
kill -TERM "$daemon"
wait "$daemon" || true
grep -q "laminad: stopped" "$work/laminad.log" || fail "laminad did not stop cleanly"
for name in alpha gamma; do
  [[ -S $work/state/vms/$name/control.sock ]] || fail "$name's control socket is gone"
done
start_laminad
for _ in $(seq 100); do "$lamina" vm list >/dev/null 2>&1 && break; sleep 0.1; done
after=$(for name in alpha gamma; do pid_of "$name"; done)
[[ $before == "$after" ]] || fail "the workers changed across the restart: $before / $after"
"$lamina" vm events alpha | grep -q "adopted" || fail "no adopted event"
(printf 'echo after-restart-$((6*7))\n'; sleep 3) | timeout 5 "$lamina" vm console alpha >"$work/console2.txt" 2>&1 || true
grep -q "after-restart-42" "$work/console2.txt" || fail "no console after the restart: $(tail -c 300 "$work/console2.txt")"
"$lamina" vm list | grep -q "^delta .*running" || fail "delta (autostart) did not start: $("$lamina" vm list)"
"$lamina" vm kill delta >/dev/null || fail "kill delta"

# The kernel's OOM killer at a worker's memory cgroup limit (lowered here while the guest
# boots): only that VM goes, and laminad says it ran out of memory.
if [[ -n ${cgroup_dir:-} ]]; then
  "$lamina" vm create oomer --memory 256M --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img" \
    --cmdline "console=ttyS0 quiet no_timer_check panic=-1" >/dev/null || fail "create oomer"
  "$lamina" vm start oomer >/dev/null || fail "start oomer"
  pid=$(pid_of oomer)
  read -r dir limit_file usage_file <<<"$(memory_cgroup "$pid")"
  [[ $dir == */lamina/oomer ]] || fail "oomer: memory cgroup '$dir'"
  # Just above what it uses now: booting the guest needs more (a limit below the usage of
  # memory without swap would be refused).
  echo $(( $(cat "$dir/$usage_file") + (8 << 20) )) >"$dir/$limit_file" || fail "lowering oomer's limit"
  for _ in $(seq 300); do "$lamina" vm list | grep -q "^oomer .*stopped" && break; sleep 0.2; done
  "$lamina" vm show oomer | grep -q "last stop:.*out of memory" ||
    fail "no out-of-memory reason for oomer: $("$lamina" vm show oomer)"
  for name in alpha gamma; do
    "$lamina" vm list | grep -q "^$name .*running" || fail "$name went down with oomer"
  done
  "$lamina" vm delete oomer >/dev/null || fail "delete oomer"
fi

# Pause and resume.
"$lamina" vm pause gamma || fail "pause"
[[ $("$lamina" vm --json show gamma | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])') == paused ]] ||
  fail "gamma is not paused"
"$lamina" vm pause gamma 2>/dev/null && fail "paused twice"
"$lamina" vm resume gamma || fail "resume"

# Stop: the default guest answers the ACPI power button (its acpid powers it off).
"$lamina" vm stop alpha --timeout 60 | grep -q "stopped alpha (power button)" || fail "stop alpha"
"$lamina" vm events alpha | grep -q "stopped .*poweroff" || fail "alpha did not power off"
grep -q "power button: powering off" "$work/state/vms/alpha/console.log" || fail "no acpid in the guest"
"$lamina" vm stop gamma --force | grep -q "forced" || fail "stop --force gamma"
# Its memory cgroup went with it.
if [[ -n ${cgroup_dir:-} ]]; then
  for _ in $(seq 50); do [[ -d $cgroup_dir ]] || break; sleep 0.1; done
  [[ ! -d $cgroup_dir ]] || fail "gamma's cgroup $cgroup_dir is left"
fi
"$lamina" vm stop gamma 2>"$work/err" && fail "stopped a stopped VM"
grep -q "not running" "$work/err" || fail "stop of a stopped VM said: $(cat "$work/err")"

# Metrics list every VM.
[[ $(api http://laminad/metrics) == 200 ]] || fail "GET /metrics"
grep -q 'lamina_vm_running{vm="alpha"} 0' "$work/body" || fail "metrics: $(cat "$work/body")"

for _ in $(seq 50); do "$lamina" vm list | grep -q "^delta .*stopped" && break; sleep 0.2; done
for name in alpha beta gamma delta; do "$lamina" vm delete "$name" >/dev/null || fail "delete $name"; done
[[ $("$lamina" vm --json list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["vms"]))') == 0 ]] ||
  fail "VMs left after delete"
echo "PASS"
