#!/usr/bin/env bash
# Live migration across accelerators (issue 11): the state-check kernel
# (tests/accel/kernels/state_check_multiboot.S: counters in registers and RAM, LAPIC timer
# ticks, a TSC that must always move forward, each checked at every tick) starts on the
# built-in CPU under laminad A, moves to laminad B onto KVM (`lamina vm migrate --accel kvm`:
# KVM's dirty log tracks its RAM there), is checkpointed there (saved and continued on KVM),
# and goes back to A onto the built-in CPU (`--accel emu`), while it runs. Each console must show the kernel's progress going on from where the last one
# stopped and no STATE-FAIL line; the kernel reaches state-ok on A. Both laminads on loopback
# with mutual TLS. A destination that cannot run KVM refuses `--accel kvm` with the reason (a
# laminad C pointed at a missing KVM device), and the VM runs on; an unknown accelerator is a
# 400 naming the field. The VM presents Lamina's CPU model as this host's KVM runs it
# (cpu_model lamina-kvm) on both backends, and the kernel checks its CPUID leaves at every tick
# (on PVM without the feature words the hardware fills in there). A VM with the host's CPU
# model (cpu_model host) asked to move onto the built-in CPU is refused with the reason.
#   laminad_accel_migration_test.sh LAMINA LAMINAD KERNEL
# Exit status 77 when /dev/kvm is unusable here.
set -euo pipefail
lamina=$1 laminad=$2 kernel=$3
device=${LAMINA_KVM_DEVICE:-/dev/kvm}
[[ -r $device && -w $device ]] || { echo "SKIP: $device is missing or not accessible"; exit 77; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/laminad_lib.sh"
laminad_setup
# To stderr: wait_progress's output is captured.
fail() {
  {
    echo "FAIL: $*"
    for f in "$work"/laminad*.log "$work"/state*/vms/*/worker.log "$work"/state*/vms/*/console.log \
             "$work"/*.console; do
      [[ -s $f ]] && { echo "---- $f ----"; tail -20 "$f"; }
    done
    echo "---- events on B ----"; LAMINA_CONNECT=unix:$sock_b "$lamina" vm events mover 2>&1 | tail -5
  } >&2
  exit 1
}
daemon_b=0 daemon_c=0
trap 'for p in $daemon_b $daemon_c; do [[ $p == 0 ]] || kill "$p" 2>/dev/null || true; done; laminad_cleanup' EXIT

cd "$work"
make_loopback_tls
start_laminad "${tls[@]}"
sock_b=$work/b.sock sock_c=$work/c.sock
"$laminad" --state-dir "$work/state-b" --socket "$sock_b" "${tls[@]}" 2>>"$work/laminad-b.log" &
daemon_b=$!
# C: a host whose KVM is missing (the device path points nowhere).
LAMINA_KVM_DEVICE=$work/no-kvm "$laminad" --state-dir "$work/state-c" --socket "$sock_c" "${tls[@]}" \
  2>>"$work/laminad-c.log" &
daemon_c=$!
port_a=$(tls_port_of "$work/laminad.log")
port_b=$(tls_port_of "$work/laminad-b.log")
port_c=$(tls_port_of "$work/laminad-c.log")
on_a() { LAMINA_CONNECT=unix:$sock "$lamina" "$@"; }
on_b() { LAMINA_CONNECT=unix:$sock_b "$lamina" "$@"; }
state_of() { # HOST-FUNCTION: the VM's state there, or "absent"
  "$1" vm --json show mover 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null || echo absent
}
accel_of() { # HOST-FUNCTION: the accelerator in the VM's definition there
  "$1" vm --json show mover | python3 -c 'import json,sys; print(json.load(sys.stdin)["definition"].get("accel", "emu"))'
}
console() { echo "$work/$1/vms/mover/console.log"; }
# The last progress tick count in a console log (0 without one).
last_ticks() {
  local line
  line=$(grep -a '^progress ' "$1" 2>/dev/null | tail -1 || true)
  [[ -n $line ]] && echo $((16#$(echo "$line" | cut -d' ' -f2))) || echo 0
}
# Waits until the console in STATE-FOLDER shows progress past AFTER ticks; prints the count.
wait_progress() {
  local log ticks
  log=$(console "$1")
  for _ in $(seq 200); do
    grep -aq STATE-FAIL "$log" 2>/dev/null && fail "the kernel found its state disturbed ($1)"
    ticks=$(last_ticks "$log")
    ((ticks > $2)) && { echo "$ticks"; return; }
    sleep 0.1
  done
  fail "no progress past tick $2 in $1"
}

cmdline=()
if [[ -e /sys/module/kvm_pvm && ! -e /sys/module/kvm_intel && ! -e /sys/module/kvm_amd ]]; then
  cmdline=(--cmdline pvm)
fi
on_a vm create mover --memory 64M --kernel "$kernel" --accel emu --cpu-model lamina-kvm \
  "${cmdline[@]}" >/dev/null || fail "create"
on_a vm start mover >/dev/null || fail "start"
first=$(wait_progress state 0)

# An accelerator that does not exist is refused by the API with its field named.
code=$(api -X POST -H 'Content-Type: application/json' \
  -d "{\"to\": \"127.0.0.1:$port_b\", \"accel\": \"xen\"}" http://laminad/v1/vms/mover/migrate)
[[ $code == 400 ]] && grep -q "accel is emu, kvm or auto" "$work/body" ||
  fail "accel xen answered $code: $(cat "$work/body")"
# A destination without KVM refuses a VM that is to run on KVM there, and the VM runs on.
on_a vm migrate mover --to "127.0.0.1:$port_c" --accel kvm >/dev/null 2>"$work/err" &&
  fail "a destination without KVM took the VM"
grep -q "cannot run the VM on KVM" "$work/err" || fail "the refusal said: $(cat "$work/err")"
[[ $(state_of on_a) == running ]] || fail "the VM does not run on A after the refusal"

# A (emu) -> B (kvm).
on_a vm migrate mover --to "127.0.0.1:$port_b" --accel kvm >"$work/out" 2>"$work/progress" ||
  fail "migrate A->B: $(cat "$work/out" "$work/progress")"
cp "$(console state)" "$work/a1.console" 2>/dev/null || true
[[ $(state_of on_b) == running && $(state_of on_a) == absent ]] || fail "the VM did not move to B"
[[ $(accel_of on_b) == kvm ]] || fail "B's definition does not say kvm"
grep -q "kvm" "$work/state-b/vms/mover/worker.log" 2>/dev/null || true
second=$(wait_progress state-b "$first")
# What Lamina's CPU model loses on this host's KVM, as B's worker logged it ("" when nothing).
dropped=$(grep -o -m1 'cannot run .* of Lamina' "$work/state-b/vms/mover/worker.log" 2>/dev/null || true)
# A checkpoint of the VM running on KVM: saved by B's sandboxed worker, which a new worker
# continues on KVM from the state.
on_b vm checkpoint mover on-kvm >/dev/null 2>"$work/err" || fail "checkpoint on B: $(cat "$work/err")"
[[ $(state_of on_b) == running ]] || fail "the VM does not run on B after its checkpoint"
second=$(wait_progress state-b "$second")

# B (kvm) -> A (emu): KVM's dirty log carries what the guest wrote meanwhile.
on_b vm migrate mover --to "127.0.0.1:$port_a" --accel emu >"$work/out" 2>"$work/progress" ||
  fail "migrate B->A: $(cat "$work/out" "$work/progress")"
cp "$(console state-b)" "$work/b.console" 2>/dev/null || true
[[ $(state_of on_a) == running && $(state_of on_b) == absent ]] || fail "the VM did not move back to A"
[[ $(accel_of on_a) == emu ]] || fail "A's definition does not say emu"
third=$(wait_progress state "$second")
for _ in $(seq 200); do
  grep -aq '^state-ok ' "$(console state)" && break
  grep -aq STATE-FAIL "$(console state)" && fail "the kernel found its state disturbed (A, after the moves)"
  sleep 0.1
done
grep -aq '^state-ok ' "$(console state)" || fail "the kernel did not reach state-ok on A"
((first < second && second < third)) || fail "progress did not go on: $first, $second, $third ticks"
echo "ok: emu on A (tick $first) -> kvm on B (tick $second) -> emu on A (tick $third, state-ok)"

# refused_move VM ACCEL REASON WHAT CREATE-OPTIONS...: a VM created and started on A with the
# options, moved to B with --accel ACCEL, is refused with REASON in the error and runs on at A.
refused_move() {
  local vm=$1 accel=$2 reason=$3 what=$4
  shift 4
  on_a vm create "$vm" --memory 64M --kernel "$kernel" "$@" "${cmdline[@]}" >/dev/null ||
    fail "create $vm"
  on_a vm start "$vm" >/dev/null || fail "start $vm"
  on_a vm migrate "$vm" --to "127.0.0.1:$port_b" --accel "$accel" >/dev/null 2>"$work/err" &&
    fail "B took $what"
  grep -q "$reason" "$work/err" || fail "the refusal of $what said: $(cat "$work/err")"
  [[ $(on_a vm --json show "$vm" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])') == running ]] ||
    fail "$vm does not run on A after the refusal"
  echo "ok: refused $what: $(grep -o "$reason.*" "$work/err" | head -c 160)"
}
# The host's CPU model cannot move onto the built-in CPU: B refuses the offer.
refused_move hostcpu emu "cpu-model host" "a host-model VM onto the built-in CPU" \
  --accel kvm --cpu-model host
# A VM that saw all of Lamina's model on the built-in CPU cannot move onto a KVM that lacks some
# of it: B's restore refuses, naming the bits.
if [[ -n $dropped ]]; then
  refused_move fullcpu kvm "are missing here" "a VM whose CPU features its KVM ($dropped) lacks" \
    --accel emu
fi
