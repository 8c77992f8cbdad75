#!/usr/bin/env bash
# Live migration against QEMU's, same machine, same run: the default guest with 512 MiB, idle
# and then dirtying memory (a loop rewriting a tmpfs file, about 30 MiB/s), moved once between
# two laminads (loopback, mutual TLS; four connections, and idle once more on one) and once between two QEMU TCG processes (QEMU's own
# migration over TCP, its default settings). Prints total time and downtime of each and the
# ratios (lamina / qemu; below 1 is better for Lamina). Downtime is each VMM's own figure:
# Lamina's from source quiesce to the destination's "started" (its machine built and restored, the
# vCPUs about to run; a per-phase line for each move follows the figures), QEMU's "downtime" from
# query-migrate. The ping gap (Lamina only) is what the network saw: the guest pings a port of
# this script's on its virtual switch (tests/mgmt/switch_pinger.py) every 10 ms throughout, and
# the gap is the longest pause between two echo requests arriving there during the move. QEMU's
# guest has no such outside peer here (its user-mode network lives in the VMM), so its gap is
# not measured.
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
# The guest's ping stream to the pinger's address, every 10 ms.
ping_start="nic=\$(ls /sys/class/net | grep -v '^lo\$' | head -n1); ip link set \$nic up; ip addr add 10.0.9.2/24 dev \$nic; ping -i 0.01 10.0.9.1 >/dev/null 2>&1 &"

# ---- Lamina: two laminads, certificates from a CA made here.
make_loopback_tls
start_laminad "${tls[@]}"
"$laminad" --state-dir "$work/state-b" --socket "$work/b.sock" "${tls[@]}" 2>>"$work/b.log" &
pids+=($!)
port_a=$(tls_port_of "$work/laminad.log") port_b=$(tls_port_of "$work/b.log")
type_on() { # SOCKET VM LINE
  (printf '%s\n' "$3"; sleep 1) | LAMINA_CONNECT=unix:$1 timeout 3 "$lamina" vm console "$2" >/dev/null 2>&1 || true
}
# The guest's peer on its switch, once laminad A has started the switch (with the first VM).
(
  for _ in $(seq 600); do [[ -S $XDG_RUNTIME_DIR/lamina/switch/mbench.sock ]] && break; sleep 0.2; done
  exec python3 "$top/tests/mgmt/switch_pinger.py" "$XDG_RUNTIME_DIR/lamina/switch/mbench.sock" "$work/pings"
) >/dev/null 2>&1 &
pids+=($!)
lamina_case() { # NAME WORKLOAD (empty: idle) [CONNECTIONS, default 4] -> "total_ms downtime_ms gap_ms"
  local from=$work/state moved before
  LAMINA_CONNECT=unix:$sock "$lamina" vm create "$1" --memory 512M --kernel "$guest/vmlinuz" \
    --initrd "$guest/initrd.img" --cmdline "$cmdline" --net switch:mbench >/dev/null
  LAMINA_CONNECT=unix:$sock "$lamina" vm start "$1" >/dev/null
  for _ in $(seq 240); do grep -q "lamina-guest:/#" "$from/vms/$1/console.log" 2>/dev/null && break; sleep 0.5; done
  type_on "$sock" "$1" "$ping_start"
  if [[ -n $2 ]]; then
    type_on "$sock" "$1" "$2"
    sleep 3
  else
    sleep 2
  fi
  before=$(wc -l <"$work/pings" 2>/dev/null || echo 0)
  LAMINA_CONNECT=unix:$sock "$lamina" vm migrate "$1" --to "127.0.0.1:$port_b" \
    --connections "${3:-4}" >"$work/moved-$1" 2>/dev/null || true
  moved=$(sed -n 's/.* in \([0-9]*\) ms: downtime \([0-9]*\) ms.*/\1 \2/p' "$work/moved-$1")
  # Where Lamina's downtime went (lamina vm migrate's per-phase line), after the figures.
  sed -n 's/^switchover (ms): /  lamina switchover (ms): /p' "$work/moved-$1" >>"$work/phases"
  sleep 1
  # The longest pause between two requests that reached the pinger during the move (ms).
  echo "$moved $(tail -n +"$((before + 1))" "$work/pings" |
    awk 'NR > 1 && $2 - last > gap { gap = $2 - last } { last = $2 } END { printf "%d", gap * 1000 }')"
  LAMINA_CONNECT=unix:$work/b.sock "$lamina" vm stop "$1" --force >/dev/null 2>&1 || true
}

# ---- QEMU: a source with QMP and its serial on a socket, a destination with -incoming.
cat >qemu_case.py <<'PY'
import json, os, socket, subprocess, sys, time
guest, cmdline, workload, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
common = ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-smp", "1", "-display", "none",
          "-no-reboot", "-kernel", f"{guest}/vmlinuz", "-initrd", f"{guest}/initrd.img",
          "-append", cmdline]
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
destination = subprocess.Popen(common + ["-qmp", "unix:dst.qmp,server=on,wait=off", "-serial", "null",
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
    if workload:
        serial.sendall(workload.encode() + b"\n"); time.sleep(3)
    else:
        time.sleep(2)
    call = qmp("src.qmp")
    call("migrate", uri=f"tcp:127.0.0.1:{port}")
    while True:
        state = call("query-migrate")["return"]
        if state.get("status") in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.05)
    print(state.get("total-time", 0), state.get("downtime", 0), state.get("status"))
finally:
    source.kill(); destination.kill()
PY
qemu_case() { python3 qemu_case.py "$guest" "$cmdline" "$1" 47123; }

ratio() {
  python3 -c "
import sys
try:
    a, b = float(sys.argv[1]), float(sys.argv[2])
    print(f'{a / b:.2f}' if b else 'n/a')
except ValueError:
    print('n/a')" "$1" "$2"
}
report() { # CASE LAMINA-"total down gap" QEMU-"total down status"
  read -r lt ld lg <<<"$2"; read -r qt qd qs <<<"$3"
  echo "$1: lamina total ${lt} ms, downtime ${ld} ms, ping gap ${lg:-n/a} ms | qemu total ${qt} ms," \
       "downtime ${qd} ms ($qs) | ratio total $(ratio "$lt" "$qt"), downtime $(ratio "$ld" "$qd")"
}
qemu_idle=$(qemu_case "")
report "idle 512 MiB" "$(lamina_case idle "")" "$qemu_idle"
report "idle 512 MiB, Lamina on one connection" "$(lamina_case idle1 "" 1)" "$qemu_idle"
report "dirtying ~30 MiB/s" "$(lamina_case busy "$churn")" "$(qemu_case "$churn")"
echo "Lamina's switchover phases, one line per move above (source.*: the source worker;"
echo "destination.*: the destination laminad, destination.worker.*: its new worker):"
cat "$work/phases"
