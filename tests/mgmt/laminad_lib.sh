# Shared by laminad's system tests and bench/laminad_bench.sh (sourced, after `set -euo
# pipefail` and with $lamina and $laminad set):
#   laminad_setup           a work folder with a private runtime folder; LAMINA_CONNECT points
#                           at $sock; on exit this run's workers and laminad go and the folder
#                           is removed
#   start_laminad [ARGS]    laminad on $sock with its state in $work/state (log laminad.log)
#   fail MESSAGE            prints it with laminad's log and the VMs' last lines, exits 1
#   api CURL-ARGS...        a request on $sock; the status code printed, the body in $work/body
#   pid_of VM               its worker's pid (0 when it runs none)
#   make_loopback_tls [IP...]  a CA and a host certificate for 127.0.0.1 (and each IP) in $work;
#                           tls_files=(--tls-cert/--tls-key/--tls-ca), tls=(--listen 127.0.0.1:0 ...)
#   make_host_namespaces    two network namespaces joined by a veth pair, as two hosts

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
  # The namespaces go last: killing what runs in them ends them (and their veth pair).
  # Workers outlive laminad by design: this run's are the ones whose environment names $work.
  for pid in $(pgrep -f "lamina-vm --control-fd" || true); do
    grep -q "$work" "/proc/$pid/environ" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  done
  for pid in $(pgrep -f "switch serve" || true); do
    grep -q "$work" "/proc/$pid/environ" 2>/dev/null && kill "$pid" 2>/dev/null || true
  done
  for namespace in ${ns_a:-} ${ns_b:-}; do ip netns del "$namespace" 2>/dev/null || true; done
  rm -rf "$work"
}

start_laminad() {
  # ${in_a[@]}: the command prefix that runs it on host A (a network namespace's ip netns exec).
  ${in_a[@]+"${in_a[@]}"} "$laminad" --state-dir "$work/state" --socket "$sock" "$@" 2>>"$work/laminad.log" &
  daemon=$!
  for _ in $(seq 100); do [[ -S $sock ]] && return 0; sleep 0.1; done
  fail "laminad did not listen"
}

# Two or more laminads that migrate VMs among themselves on loopback: a CA and one host
# certificate (for 127.0.0.1) made in $work, and in `tls` the options of a TLS endpoint on a
# free port that presents it and takes peers the CA signed (mutual TLS).
make_loopback_tls() {
  local names=IP:127.0.0.1 address
  for address in "$@"; do names+=",IP:$address"; done
  (
    cd "$work"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout host.key -out host.csr -subj "/CN=laminad" 2>/dev/null
    printf 'subjectAltName=%s\n' "$names" >host.ext
    openssl x509 -req -in host.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out host.crt -days 2 \
      -extfile host.ext 2>/dev/null
  )
  tls_files=(--tls-cert "$work/host.crt" --tls-key "$work/host.key" --tls-ca "$work/ca.crt")
  tls=(--listen 127.0.0.1:0 "${tls_files[@]}")
}

# make_host_namespaces: hosts A and B as two network namespaces joined by a veth pair, A at
# 10.77.0.1 and B at 10.77.0.2 (/24), loopback up in each; in_a/in_b are the command prefixes
# that run a program on each host, addr_a/addr_b their addresses. Needs root and ip(8); where
# namespaces cannot be made it returns 1 having made nothing (in_a/in_b empty, both addresses
# 127.0.0.1). The namespaces are removed on exit.
make_host_namespaces() {
  in_a=() in_b=() addr_a=127.0.0.1 addr_b=127.0.0.1
  [[ $(id -u) == 0 ]] && command -v ip >/dev/null || return 1
  ns_a=lamina-a-$$ ns_b=lamina-b-$$
  if ! ip netns add "$ns_a" 2>/dev/null; then ns_a=""; ns_b=""; return 1; fi
  if ! { ip netns add "$ns_b" &&
         ip link add "lma$$" type veth peer name "lmb$$" &&
         ip link set "lma$$" netns "$ns_a" && ip link set "lmb$$" netns "$ns_b" &&
         ip -n "$ns_a" addr add 10.77.0.1/24 dev "lma$$" && ip -n "$ns_b" addr add 10.77.0.2/24 dev "lmb$$" &&
         ip -n "$ns_a" link set "lma$$" up && ip -n "$ns_b" link set "lmb$$" up &&
         ip -n "$ns_a" link set lo up && ip -n "$ns_b" link set lo up; } 2>/dev/null; then
    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
    ip link del "lma$$" 2>/dev/null || true
    ns_a="" ns_b=""
    return 1
  fi
  in_a=(ip netns exec "$ns_a") in_b=(ip netns exec "$ns_b") addr_a=10.77.0.1 addr_b=10.77.0.2
}

# tls_port_of LOG: the port of the TLS endpoint the laminad logging to LOG serves (the first
# one it logged; fails after 10 s without one).
tls_port_of() {
  local port
  for _ in $(seq 100); do
    port=$(sed -n 's/.*serving https on .* port \([0-9]*\)/\1/p' "$1" | head -1)
    [[ -n $port ]] && { echo "$port"; return; }
    sleep 0.1
  done
  fail "no TLS endpoint in $1"
}

fail() {
  echo "FAIL: $*"
  echo "---- laminad.log ----"; cat "$work/laminad.log" 2>/dev/null || true
  for f in "$work"/state/vms/*/worker.log "$work"/state/vms/*/console.log; do
    [[ -s $f ]] && { echo "---- $f ----"; tail -20 "$f"; }
  done
  exit 1
}
# wait_console PATTERN [SECONDS] [COUNT]: until $console_log (the script sets it) holds COUNT
# (1) lines matching PATTERN, looked at every 0.05 s for SECONDS (120) at most; else fail.
wait_console() {
  local tries=$(( ${2:-120} * 20 ))
  for _ in $(seq "$tries"); do
    (( $(grep -c -- "$1" "$console_log" 2>/dev/null || true) >= ${3:-1} )) && return 0
    sleep 0.05
  done
  fail "the console never showed '$1'${3:+ $3 times}"
}

# console_send VM TEXT: types one line into VM's console (`lamina vm console --send`, through
# whatever LAMINA_CONNECT names). Retried for 2 s while the previous sender's session is still
# being closed (the input is one client's at a time); fails the test if it never gets in.
console_send() {
  for _ in $(seq 20); do
    "$lamina" vm console "$1" --send "$2" 2>"$work/send.err" && return 0
    grep -q "another client holds" "$work/send.err" || break
    sleep 0.1
  done
  fail "could not type into $1's console: $(cat "$work/send.err")"
}

api() { curl -sS --unix-socket "$sock" -o "$work/body" -w '%{http_code}' "$@"; }

pid_of() {
  "$lamina" vm --json show "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("pid", 0))'
}
