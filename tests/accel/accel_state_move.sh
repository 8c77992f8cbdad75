#!/usr/bin/env bash
# Moves a running guest between accelerators by checkpoint and restore (issue 11): the
# state-check kernel (kernels/state_check_multiboot.S: counters in registers and RAM, LAPIC
# timer ticks, a TSC that must always move forward) starts on the built-in CPU, is saved by
# `lamina run --state-file` on SIGUSR1, continued by `--restore` on KVM, saved again, and
# finished on the built-in CPU. The kernel checks itself at every tick and fails loudly when a
# move disturbed it (its CPUID leaves included); the test also wants its progress to go on
# across each move. The emu legs present Lamina's CPU model as this host's KVM runs it
# (--cpu-model lamina-kvm), the model the KVM leg presents. Then the refusals: a state of the
# full model restored on a KVM that lacks some of it, and a --cpu-model host state restored on
# the built-in CPU, must be refused with the reason, before the guest runs.
#   accel_state_move.sh LAMINA KERNEL
# Exit status 77 when /dev/kvm is unusable here.
set -euo pipefail
lamina=$1 kernel=$2
work=$(mktemp -d)
pid=
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
# To stderr: leg's output is captured.
fail() {
  {
    echo "FAIL: $*"
    for log in "$work"/*.log; do echo "--- $log"; cat "$log"; done
  } >&2
  exit 1
}
skip() { echo "SKIP: $*"; exit 77; }

device=${LAMINA_KVM_DEVICE:-/dev/kvm}
[[ -r $device && -w $device ]] || skip "$device is missing or not accessible"

common=(--debug-exit --memory 64M --kernel "$kernel")
# PVM shows a guest the hardware's feature bits in CPUID leaves 1 and 7: the kernel leaves them
# out of its CPUID check there.
if [[ -e /sys/module/kvm_pvm && ! -e /sys/module/kvm_intel && ! -e /sys/module/kvm_amd ]]; then
  common+=(--cmdline pvm)
fi

# The last "progress TICKS COUNT" tick count of a log, as a number (0 without one).
last_ticks() {
  local line
  line=$(grep -a '^progress ' "$1" | tail -1)
  [[ -n $line ]] && echo $((16#$(echo "$line" | cut -d' ' -f2))) || echo 0
}

# Runs one leg on ACCEL (restoring FROM when given) until its progress passes AFTER ticks, then
# saves it to TO with SIGUSR1; MODEL is its --cpu-model.
leg() {
  local name=$1 accel=$2 from=$3 to=$4 after=$5 model=${6:-lamina}
  local log=$work/$name.log
  local restore=()
  [[ -n $from ]] && restore=(--restore "$from")
  "$lamina" run "${common[@]}" --accel "$accel" --cpu-model "$model" "${restore[@]}" \
    --state-file "$to" \
    </dev/null >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    (($(last_ticks "$log") > after)) && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q STATE-FAIL "$log" && fail "$name: the kernel found its state disturbed"
  (($(last_ticks "$log") > after)) || fail "$name: no progress past tick $after on $accel"
  kill -USR1 "$pid"
  wait "$pid" || fail "$name: lamina run did not exit 0 after saving"
  pid=
  [[ -s $to ]] || fail "$name: no state file"
  last_ticks "$log"
}

first=$(leg emu-start emu "" "$work/1.state" 60 lamina-kvm)
second=$(leg kvm-middle kvm "$work/1.state" "$work/2.state" "$first")
# The last leg runs to the end on the built-in CPU.
log=$work/emu-end.log
set +e
timeout 60 "$lamina" run "${common[@]}" --accel emu --cpu-model lamina-kvm \
  --restore "$work/2.state" </dev/null >"$log" 2>&1
code=$?
set -e
grep -q STATE-FAIL "$log" && fail "emu-end: the kernel found its state disturbed"
[[ $code -eq 15 ]] || fail "emu-end: exit status $code, expected 15 (debug-exit 7)"
grep -q '^state-ok ' "$log" || fail "emu-end: no state-ok line"
third=$(last_ticks "$log")
((first < second && second < third)) || fail "progress did not go on: $first, $second, $third ticks"
echo "ok: emu (to tick $first) -> kvm (to $second) -> emu (to $third, state-ok)"

# Restores LEG's state FROM on ACCEL with MODEL; it must fail before the guest runs, with WANT.
refused() {
  local name=$1 from=$2 accel=$3 model=$4 want=$5
  local log=$work/$name.log
  set +e
  timeout 60 "$lamina" run "${common[@]}" --accel "$accel" --cpu-model "$model" \
    --restore "$from" </dev/null >"$log" 2>&1
  local code=$?
  set -e
  [[ $code -eq 1 ]] || fail "$name: exit status $code, expected 1 (refused)"
  grep -q -- "$want" "$log" || fail "$name: no '$want' in its output"
  grep -a -q '^progress ' "$log" && fail "$name: the guest ran"
  grep -a -m1 -- "$want" "$log"
}
# What Lamina's model loses on this host's KVM ("" when nothing), as the KVM leg logged it.
dropped=$(grep -o -m1 'cannot run .* of Lamina' "$work/kvm-middle.log" || true)
full=$(leg emu-full emu "" "$work/full.state" 5 lamina)
if [[ -n $dropped ]]; then
  echo "this host's KVM $dropped's CPU model"
  refused kvm-lacks "$work/full.state" kvm lamina "are missing here"
else
  echo "this host's KVM runs all of Lamina's CPU model: no refusal to check"
fi
host=$(leg kvm-host kvm "" "$work/host.state" 5 host)
refused emu-host "$work/host.state" emu lamina "started with the host's CPU model"
echo "ok: refusals (full model at tick $full, host model at tick $host)"
