#!/usr/bin/env bash
# Runs one hostile test kernel (tests/guest/kernels/*_multiboot.S) under `lamina run
# --debug-exit` and checks that lamina survives it: the run ends through the kernel's own
# debug-exit (status 0x21 -> 67), nothing crashed or aborted, the kernel's checks passed and
# lamina's peak RSS (GNU time's %M) stayed under a bound.
#   hostile_guest.sh LAMINA KERNEL_DIR console_flood|code_churn|irq_storm|register_fuzz|nop_sled
set -euo pipefail
lamina=$1 kernels=$2 scenario=$3
[[ -x /usr/bin/time ]] || { echo "FAIL: needs GNU time at /usr/bin/time (Debian package time)"; exit 1; }
folder=$(mktemp -d)
trap 'rm -rf "$folder"' EXIT
out=$folder/out err=$folder/err
fail() {
  echo "FAIL: $scenario: $*"
  echo "--- stdout (cut)"; head -c 4000 "$out" | tr -c '[:print:]\n' '.'; echo
  echo "--- stderr"; head -c 4000 "$err"; exit 1
}
# Peak RSS bound: lamina with 64 MiB of mostly untouched guest RAM stays near 10 MiB; a cache or
# buffer a guest can grow without end (300,000 rewritten code blocks, 2 MB of console output)
# would pass it.
max_rss_kib=$((48 * 1024))
extra=()
[[ $scenario == console_flood ]] && extra=(--console-port "socket:$folder/hvc.sock")
# With hotplug headroom the CPU hotplug block and a virtio-mem device exist for it to hit.
[[ $scenario == register_fuzz ]] && extra=(--cpus 1,max=2)
# The decoded-block and code-cache churn, with a code cache of 8 MiB: both caches' bounds
# (BlockCache's 256 Ki instructions, the code cache twice resident: two mappings) fit under the
# RSS bound only when they hold.
[[ $scenario == nop_sled ]] && extra=(--code-cache 8M --cpu-engine jit)
set +e
/usr/bin/time -o "$folder/rss" -f %M timeout 120 "$lamina" run --debug-exit --memory 64M \
  --rng none --kernel "$kernels/${scenario}_multiboot.elf" "${extra[@]}" </dev/null >"$out" 2>"$err"
code=$?
set -e
[[ $code -eq 67 ]] || fail "exit status $code, expected 67 (the kernel's debug-exit 0x21)"
grep -qi "abort\|sanitizer\|terminate called" "$err" && fail "lamina reported a crash"
rss=$(tail -n1 "$folder/rss")
((rss < max_rss_kib)) || fail "peak RSS $rss KiB, over the bound of $max_rss_kib KiB"
case $scenario in
  console_flood)
    grep -q "flood-done" "$out" || fail "the kernel did not finish its writes"
    # 2,000,000 emergency writes, 128 KiB kept for a client that never came: the rest dropped.
    expected=$((2000000 - 131072))
    grep -q "warning: --console-port: $expected bytes of guest output were dropped" "$err" ||
      fail "expected $expected dropped bytes to be reported"
    ;;
  code_churn) grep -q "churn-ok" "$out" || fail "stale code ran" ;;
  nop_sled) grep -q "sled-ok" "$out" || fail "the sled did not finish" ;;
  irq_storm) grep -q "storm-done ticks=" "$out" || fail "the storm did not finish" ;;
  register_fuzz) grep -q "seed=" "$out" || fail "the kernel did not start" ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
echo "ok: $scenario (peak RSS $rss KiB)"
