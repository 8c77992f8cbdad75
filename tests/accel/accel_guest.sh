#!/usr/bin/env bash
# Boots guests on one accelerator through `lamina run --accel ACCEL` and checks what they print,
# how lamina exits, and that guest time follows host time.
#   accel_guest.sh LAMINA ACCEL SCENARIO CPUS KERNEL_OR_GUEST_DIR
#   debug_exit    hello_multiboot.elf: a random message and status come back
#   triple_fault  triple_fault_multiboot.elf: non-zero exit, one stderr line naming it
#   timer_smp     timer_smp_multiboot.elf (real mode + IVT): 200 APIC timer ticks at 100 Hz
#                 take ~2 s of host time; with 2+ vCPUs the AP starts through INIT-SIPI
#   register_fuzz register_fuzz_multiboot.elf with vCPU and memory headroom: random writes into
#                 every device register, the hotplug blocks included; the run ends through
#                 the kernel's debug-exit (status 67), lamina reports no crash
#   debian        the default guest runs a command (output, exit status, nproc, `sleep 2` ~2 s)
# Exit status 77 (ctest SKIP_RETURN_CODE) when ACCEL is kvm and /dev/kvm is unusable, and for the
# debian scenario when the host's KVM is PVM without a hardware backend (it emulates unmodified
# guest kernels and stops at protected-mode IRET and CMPXCHG16B; the test kernels avoid both).
set -euo pipefail
lamina=$1 accel=$2 scenario=$3 cpus=$4 input=$5
out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
fail() { echo "FAIL: $*"; echo "--- stdout"; cat "$out"; echo "--- stderr"; cat "$err"; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }

if [[ $accel == kvm ]]; then
  [[ -r ${LAMINA_KVM_DEVICE:-/dev/kvm} && -w ${LAMINA_KVM_DEVICE:-/dev/kvm} ]] ||
    skip "/dev/kvm is missing or not accessible"
  if [[ -d /sys/module/kvm_pvm && ! -d /sys/module/kvm_intel && ! -d /sys/module/kvm_amd &&
        $scenario == debian ]]; then
    skip "this host's KVM is PVM without hardware virtualization (it cannot boot an unmodified kernel)"
  fi
fi

# Runs lamina with the console on $out, stamping each line with host seconds since the start.
run_stamped() {
  local start
  start=$(date +%s.%N)
  set +e
  "$@" </dev/null 2>"$err" | while IFS= read -r line; do
    printf '%s %s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "${line%$'\r'}"
  done >"$out"
  code=${PIPESTATUS[0]}
  set -e
}
# Seconds between the first lines containing $1 and $2.
elapsed() {
  local a b
  a=$(grep -m1 -- "$1" "$out" | cut -d' ' -f1)
  b=$(grep -m1 -- "$2" "$out" | cut -d' ' -f1)
  [[ -n $a && -n $b ]] || fail "missing '$1' or '$2'"
  echo "$b - $a" | bc
}
# Fails unless $1 lies in [$2, $3].
within() { [[ $(echo "$1 >= $2 && $1 <= $3" | bc) -eq 1 ]] || fail "$4: $1 s is outside $2-$3 s"; }

case $scenario in
  debug_exit)
    status=$((RANDOM % 120 + 1))
    message="hello-from-$accel-$RANDOM"
    run_stamped timeout 60 "$lamina" run --debug-exit --accel "$accel" --cpus "$cpus" --memory 64M \
      --kernel "$input" --cmdline "$status $message"
    [[ $code -eq $(( (status << 1) | 1 )) ]] || fail "exit status $code, expected $(( (status << 1) | 1 ))"
    grep -q " $message\$" "$out" || fail "the kernel's message is missing"
    ;;
  triple_fault)
    run_stamped timeout 60 "$lamina" run --accel "$accel" --cpus "$cpus" --memory 64M --kernel "$input"
    [[ $code -ne 0 && $code -ne 124 ]] || fail "exit status $code, expected a failure"
    grep -q "about to triple-fault" "$out" || fail "the kernel did not run"
    [[ $(grep -vc "warning:" "$err") -eq 1 ]] || fail "expected exactly one line on stderr"
    grep -q "^lamina run: .*triple fault" "$err" || fail "the reason does not name the triple fault"
    ;;
  timer_smp)
    run_stamped timeout 60 "$lamina" run --debug-exit --accel "$accel" --cpus "$cpus" --memory 64M --kernel "$input"
    [[ $code -eq 11 ]] || fail "exit status $code, expected 11 (debug-exit 5)"
    within "$(elapsed ticks-start ticks-done)" 1.7 3.5 "200 ticks at 100 Hz"
    if ((cpus > 1)); then
      grep -q " ap-started$" "$out" || fail "the AP did not start"
    else
      grep -q " ap-missing$" "$out" || fail "an AP answered with one vCPU"
    fi
    ;;
  register_fuzz)
    run_stamped timeout 120 "$lamina" run --debug-exit --accel "$accel" --cpus "$cpus,max=$((cpus + 1))" \
      --memory 64M,max=192M --rng none --kernel "$input"
    [[ $code -eq 67 ]] || fail "exit status $code, expected 67 (the kernel's debug-exit 0x21)"
    grep -q " seed=" "$out" || fail "the kernel did not start"
    grep -qi "abort\|sanitizer\|terminate called" "$err" && fail "lamina reported a crash"
    ;;
  debian)
    [[ -f $input/vmlinuz && -f $input/initrd.img ]] || fail "no default guest in '$input'"
    status=$((RANDOM % 200 + 3))
    command="echo guest-says-\$((6*7)); nproc; echo before-sleep; sleep 2; echo after-sleep; exit $status"
    run_stamped timeout 280 "$lamina" run --accel "$accel" --cpus "$cpus" --memory 512M \
      --kernel "$input/vmlinuz" --initrd "$input/initrd.img" \
      --cmdline "console=ttyS0 quiet no_timer_check panic=-1 lamina_run=\"$command\""
    [[ $code -eq 0 ]] || fail "exit status $code, expected 0 (the guest powers off)"
    grep -q " guest-says-42$" "$out" || fail "the command's output is missing"
    grep -q " LAMINA-EXIT-STATUS: $status$" "$out" || fail "no 'LAMINA-EXIT-STATUS: $status' line"
    grep -q " $cpus$" "$out" || fail "nproc did not print $cpus"
    within "$(elapsed before-sleep after-sleep)" 1.7 3.5 "the guest's sleep 2"
    ;;
  *) echo "unknown scenario '$scenario'" >&2; exit 2 ;;
esac
echo "ok: $scenario on $accel with $cpus vCPU(s)"
