#!/usr/bin/env bash
# Live migration against QEMU's, same machine, same run: the default guest with 512 MiB, idle
# and then dirtying memory (a loop rewriting a tmpfs file, about 30 MiB/s), moved once between
# two laminads (loopback, mutual TLS) and once between two QEMU TCG processes (QEMU's own
# migration over TCP, its default settings). Prints total time and downtime of each and the
# ratios (lamina / qemu; below 1 is better for Lamina). Downtime is each VMM's own figure:
# Lamina's from source quiesce to the destination's "started", QEMU's "downtime" from
# query-migrate. The gap is what the guest saw: it pings a peer every 10 ms throughout (Lamina:
# a port of this script's on the VM's virtual switch, tests/mgmt/switch_pinger.py; QEMU: its
# user-mode network's gateway), and after the move counts the replies it missed; gap = missed
# x 10 ms.
#   bench/migration_bench.sh [BUILD_DIR]   (default build/; needs qemu-system-x86_64, openssl)
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
lamina=$build/lamina laminad=$build/laminad
guest=${LAMINA_GUEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lamina/guest}
[[ -f $guest/vmlinuz ]] || "$top/scripts/make-guest" >/dev/null
source "$top/tests/mgmt/laminad_lib.sh"
laminad_setup
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; laminad_cleanup' EXIT
cd "$work"
cmdline="console=ttyS0 quiet no_timer_check"
churn='while :; do yes 0123456789abcdef | head -c 3000000 >/tmp/churn; sleep 0.1; done &'
# ping_start PEER: a guest line that pings PEER every 10 ms in the background; ping_summary: the
# line that stops it and prints what it sent and got back.
ping_start() {
  echo "nic=\$(ls /sys/class/net | grep -v '^lo\$' | head -n1); ip link set \$nic up; ip addr add ${2:-10.0.9.2/24} dev \$nic 2>/dev/null; ping -i 0.01 $1 >/tmp/ping.log 2>&1 & echo \$! >/tmp/ping.pid"
}
ping_summary='kill -INT $(cat /tmp/ping.pid); sleep 1; echo ping-summary $(grep -o "[0-9]* packets transmitted, [0-9]* packets received" /tmp/ping.log)'

# ---- Lamina: two laminads, certificates from a CA made here.
make_loopback_tls
start_laminad "${tls[@]}"
"$laminad" --state-dir "$work/state-b" --socket "$work/b.sock" "${tls[@]}" 2>>"$work/b.log" &
pids+=($!)
port_a=$(tls_port_of "$work/laminad.log") port_b=$(tls_port_of "$work/b.log")
type_on() { # SOCKET VM LINE
  (printf '%s\n' "$3"; sleep 1) | LAMINA_CONNECT=unix:$1 timeout 3 "$lamina" vm console "$2" >/dev/null 2>&1 || true
}
pinger=0
lamina_case() { # NAME WORKLOAD (empty: idle) -> "total_ms downtime_ms gap_ms"
  local from=$work/state moved
  LAMINA_CONNECT=unix:$sock "$lamina" vm create "$1" --memory 512M --kernel "$guest/vmlinuz" \
    --initrd "$guest/initrd.img" --cmdline "$cmdline" --net switch:mbench >/dev/null
  LAMINA_CONNECT=unix:$sock "$lamina" vm start "$1" >/dev/null
  for _ in $(seq 240); do grep -q "lamina-guest:/#" "$from/vms/$1/console.log" 2>/dev/null && break; sleep 0.5; done
  if [[ $pinger == 0 ]]; then
    python3 "$top/tests/mgmt/switch_pinger.py" "$XDG_RUNTIME_DIR/lamina/switch/mbench.sock" "$work/pings" \
      2>/dev/null &
    pinger=$!
    pids+=($pinger)
  fi
  type_on "$sock" "$1" "$(ping_start 10.0.9.1)"
  if [[ -n $2 ]]; then
    type_on "$sock" "$1" "$2"
    sleep 3
  else
    sleep 2
  fi
  moved=$(LAMINA_CONNECT=unix:$sock "$lamina" vm migrate "$1" --to "127.0.0.1:$port_b" 2>/dev/null |
    sed -n 's/.* in \([0-9]*\) ms: downtime \([0-9]*\) ms.*/\1 \2/p')
  sleep 1
  type_on "$work/b.sock" "$1" "$ping_summary"
  for _ in $(seq 40); do grep -q "ping-summary [0-9]" "$work/state-b/vms/$1/console.log" 2>/dev/null && break; sleep 0.25; done
  echo "$moved $(sed -n 's/.*ping-summary \([0-9]*\) packets transmitted, \([0-9]*\) packets received.*/\1 \2/p' \
    "$work/state-b/vms/$1/console.log" | tail -1 | awk '{ print ($1 - $2) * 10 }')"
  LAMINA_CONNECT=unix:$work/b.sock "$lamina" vm stop "$1" --force >/dev/null 2>&1 || true
}

# ---- QEMU: a source with QMP and its serial on a socket, a destination with -incoming.
cat >qemu_case.py <<'PY'
import json, os, socket, subprocess, sys, time
guest, cmdline, workload, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ping_start, ping_summary = sys.argv[5], sys.argv[6]
common = ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-smp", "1", "-display", "none",
          "-no-reboot", "-kernel", f"{guest}/vmlinuz", "-initrd", f"{guest}/initrd.img",
          "-append", cmdline, "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]
def qmp(path):
    for _ in range(100):
        try:
            s = socket.socket(socket.AF_UNIX); s.connect(path); break
        except OSError:
            time.sleep(0.1)
    f = s.makefile("rw")
    f.readline()
    def call(command, **arguments):
        f.write(json.dumps({"execute": command, "arguments": arguments}) + "\n"); f.flush()
        while True:
            reply = json.loads(f.readline())
            if "return" in reply or "error" in reply:
                return reply
    call("qmp_capabilities")
    return call
source = subprocess.Popen(common + ["-qmp", "unix:src.qmp,server=on,wait=off", "-chardev",
                          "socket,id=serial,path=src.serial,server=on,wait=off", "-serial", "chardev:serial"])
destination = subprocess.Popen(common + ["-qmp", "unix:dst.qmp,server=on,wait=off", "-chardev",
                               "socket,id=serial,path=dst.serial,server=on,wait=off", "-serial", "chardev:serial",
                               "-incoming", f"tcp:127.0.0.1:{port}"])
def connect(path):
    for _ in range(100):
        try:
            s = socket.socket(socket.AF_UNIX); s.connect(path); s.settimeout(1); return s
        except OSError:
            time.sleep(0.1)
def wait_for(s, text, seconds):
    seen, deadline = b"", time.time() + seconds
    while text not in seen and time.time() < deadline:
        try:
            seen += s.recv(4096)
        except socket.timeout:
            pass
    return seen
try:
    serial = connect("src.serial")
    wait_for(serial, b"lamina-guest:/#", 240)
    serial.sendall(ping_start.encode() + b"\n")
    if workload:
        serial.sendall(workload.encode() + b"\n"); time.sleep(3)
    else:
        time.sleep(2)
    after = connect("dst.serial")
    call = qmp("src.qmp")
    call("migrate", uri=f"tcp:127.0.0.1:{port}")
    while True:
        state = call("query-migrate")["return"]
        if state.get("status") in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.05)
    time.sleep(1)
    after.sendall(ping_summary.encode() + b"\n")
    import re
    seen = wait_for(after, b"packets received", 15).decode(errors="replace")
    found = re.search(r"ping-summary (\d+) packets transmitted, (\d+) packets received", seen)
    gap = (int(found.group(1)) - int(found.group(2))) * 10 if found else "n/a"
    print(state.get("total-time", 0), state.get("downtime", 0), gap, state.get("status"))
finally:
    source.kill(); destination.kill()
PY
qemu_case() { python3 qemu_case.py "$guest" "$cmdline" "$1" 47123 "$(ping_start 10.0.2.2 10.0.2.15/24)" "$ping_summary"; }

ratio() {
  python3 -c "
import sys
try:
    a, b = float(sys.argv[1]), float(sys.argv[2])
    print(f'{a / b:.2f}' if b else 'n/a')
except ValueError:
    print('n/a')" "$1" "$2"
}
report() { # CASE LAMINA-"total down gap" QEMU-"total down gap status"
  read -r lt ld lg <<<"$2"; read -r qt qd qg qs <<<"$3"
  echo "$1: lamina total ${lt} ms, downtime ${ld} ms, ping gap ${lg:-n/a} ms | qemu total ${qt} ms," \
       "downtime ${qd} ms, ping gap ${qg} ms ($qs) | ratio total $(ratio "$lt" "$qt"), downtime" \
       "$(ratio "$ld" "$qd"), gap $(ratio "${lg:-0}" "$qg")"
}
report "idle 512 MiB" "$(lamina_case idle "")" "$(qemu_case "")"
report "dirtying ~30 MiB/s" "$(lamina_case busy "$churn")" "$(qemu_case "$churn")"
