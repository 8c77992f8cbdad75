#!/usr/bin/env bash
# Runs one of our own Multiboot test kernels under `lamina run` and checks what it prints and
# how lamina exits.
#   test_kernel.sh LAMINA KERNEL_DIR SCENARIO [KERNEL]
#   SCENARIO: debug_exit, no_debug_exit, triple_fault, file_serial, reset_exit, reset_restart,
#   low_load, or
#   conformance KERNEL (a kernel built on harness.inc: prints PASS, debug-exit status 0x55).
set -euo pipefail
lamina=$1 kernels=$2 scenario=$3
out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
fail() { echo "FAIL: $*"; echo "--- stdout"; cat "$out"; echo "--- stderr"; cat "$err"; exit 1; }
# Every scenario starts lamina here: `run_lamina TIMEOUT ARGS...` runs `lamina run ARGS` with
# stdout and stderr in $out and $err, and sets $code to its exit status; `run_kernel` does the
# same with --debug-exit.
run_lamina() {
  local limit=$1
  shift
  set +e
  timeout "$limit" "$lamina" run "$@" </dev/null >"$out" 2>"$err"
  code=$?
  set -e
}
# Test kernels end through the debug-exit port, which only --debug-exit maps.
run_kernel() {
  local limit=$1
  shift
  run_lamina "$limit" --debug-exit "$@"
}

case $scenario in
  debug_exit)
    # Status and message are random, so no hard-coded output can pass.
    status=$((RANDOM % 120 + 1))
    message="hello-from-test-kernel-$RANDOM"
    run_kernel 60 --kernel "$kernels/hello_multiboot.elf" --cmdline "$status $message"
    [[ $code -eq $(( (status << 1) | 1 )) ]] || fail "exit status $code, expected $(( (status << 1) | 1 ))"
    grep -qx "$message" "$out" || fail "the kernel's message is missing from the console"
    [[ ! -s $err ]] || fail "unexpected stderr"
    ;;
  no_debug_exit)
    # Without --debug-exit the guest cannot pick the status, not even 3 ("KVM unusable"):
    # status 1 would make (1 << 1) | 1 = 3. The kernel goes on and triple-faults instead.
    run_lamina 60 --kernel "$kernels/hello_multiboot.elf" --cmdline "1 wants-status-3"
    [[ $code -eq 1 ]] || fail "exit status $code, expected 1 (the port must be absent)"
    grep -qx "wants-status-3" "$out" || fail "the kernel did not run"
    grep -qx "debug-exit ignored" "$out" || fail "the kernel did not go on past the port"
    grep -q "^lamina run: .*triple fault" "$err" || fail "expected the triple fault as the reason"
    ;;
  triple_fault)
    run_kernel 60 --kernel "$kernels/triple_fault_multiboot.elf"
    [[ $code -ne 0 && $code -ne 124 ]] || fail "exit status $code, expected a failure"
    grep -q "about to triple-fault" "$out" || fail "the kernel did not run"
    [[ $(wc -l <"$err") -eq 1 ]] || fail "expected exactly one line on stderr"
    grep -q "^lamina run: .*triple fault" "$err" || fail "the reason does not name the triple fault"
    ;;
  file_serial)
    # --serial file:PATH takes the console; stdout stays empty.
    console=$(mktemp)
    trap 'rm -f "$out" "$err" "$console"' EXIT
    run_kernel 60 --kernel "$kernels/hello_multiboot.elf" --cmdline "0 to-a-file" \
      --serial "file:$console"
    [[ $code -eq 1 ]] || fail "exit status $code, expected 1 (debug-exit 0)"
    grep -qx "to-a-file" "$console" || fail "the message is not in the serial file"
    [[ ! -s $out ]] || fail "console output leaked to stdout"
    ;;
  reset_exit)
    run_kernel 60 --kernel "$kernels/reset_multiboot.elf"
    [[ $code -eq 1 ]] || fail "exit status $code, expected 1"
    [[ $(grep -c booting "$out") -eq 1 ]] || fail "expected one boot"
    [[ $(wc -l <"$err") -eq 1 ]] && grep -q "^lamina run: .*reboot" "$err" || fail "expected one line about the reboot"
    ;;
  reset_restart)
    # Each reset boots the kernel again, so it keeps printing until the timeout stops it.
    run_kernel 5 --on-reboot restart --kernel "$kernels/reset_multiboot.elf"
    [[ $code -eq 124 ]] || fail "exit status $code, expected the timeout's 124"
    [[ $(grep -c booting "$out") -ge 3 ]] || fail "expected the kernel to boot again after each reset"
    ;;
  low_load)
    # A kernel linked at 0x8000, over the area Lamina's boot data uses for other kernels.
    status=$((RANDOM % 120 + 1))
    message="loaded-low-$RANDOM"
    run_kernel 60 --kernel "$kernels/low_multiboot.elf" --cmdline "$status $message"
    [[ $code -eq $(( (status << 1) | 1 )) ]] || fail "exit status $code, expected $(( (status << 1) | 1 ))"
    grep -qx "$message" "$out" || fail "the kernel's message is missing from the console"
    [[ ! -s $err ]] || fail "unexpected stderr"
    ;;
  conformance)
    kernel=${4:?conformance needs a kernel name}
    run_kernel 60 --kernel "$kernels/$kernel.elf"
    [[ $code -eq $(( (0x55 << 1) | 1 )) ]] || fail "$kernel: exit status $code, expected $(( (0x55 << 1) | 1 ))"
    grep -qx PASS "$out" || fail "$kernel did not print PASS"
    [[ ! -s $err ]] || fail "unexpected stderr"
    ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
echo "ok: $scenario"
