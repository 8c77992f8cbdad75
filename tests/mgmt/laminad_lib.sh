# Shared by laminad's system tests and bench/laminad_bench.sh (sourced, after `set -euo
# pipefail` and with $lamina and $laminad set):
#   laminad_setup           a work folder with a private runtime folder; LAMINA_CONNECT points
#                           at $sock; on exit this run's workers and laminad go and the folder
#                           is removed
#   start_laminad [ARGS]    laminad on $sock with its state in $work/state (log laminad.log)
#   fail MESSAGE            prints it with laminad's log and the VMs' last lines, exits 1
#   api CURL-ARGS...        a request on $sock; the status code printed, the body in $work/body
#   pid_of VM               its worker's pid (0 when it runs none)

laminad_setup() {
  work=$(mktemp -d)
  sock=$work/laminad.sock
  daemon=0
  export LAMINA_CONNECT=unix:$sock
  # A private runtime folder: switch daemons and their sockets are this run's own.
  export XDG_RUNTIME_DIR=$work/run
  mkdir -m 0700 "$XDG_RUNTIME_DIR"
  trap laminad_cleanup EXIT
}

laminad_cleanup() {
  [[ $daemon == 0 ]] || kill "$daemon" 2>/dev/null || true
  # Workers outlive laminad by design: this run's are the ones whose environment names $work.
  for pid in $(pgrep -f "lamina-vm --control-fd" || true); do
    grep -q "$work" "/proc/$pid/environ" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  done
  for pid in $(pgrep -f "switch serve" || true); do
    grep -q "$work" "/proc/$pid/environ" 2>/dev/null && kill "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}

start_laminad() {
  "$laminad" --state-dir "$work/state" --socket "$sock" "$@" 2>>"$work/laminad.log" &
  daemon=$!
  for _ in $(seq 100); do [[ -S $sock ]] && return 0; sleep 0.1; done
  fail "laminad did not listen"
}

fail() {
  echo "FAIL: $*"
  echo "---- laminad.log ----"; cat "$work/laminad.log" 2>/dev/null || true
  for f in "$work"/state/vms/*/worker.log "$work"/state/vms/*/console.log; do
    [[ -s $f ]] && { echo "---- $f ----"; tail -20 "$f"; }
  done
  exit 1
}

api() { curl -sS --unix-socket "$sock" -o "$work/body" -w '%{http_code}' "$@"; }

pid_of() {
  "$lamina" vm --json show "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("pid", 0))'
}
