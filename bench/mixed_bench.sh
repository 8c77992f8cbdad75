#!/usr/bin/env bash
# A compile-like mixed workload in the default guest: generate ~2.7 MB of text, sha256sum and
# md5sum it, sort it in reverse, gzip it and unpack it again (busybox's tools), timed inside
# the guest with /proc/uptime (boot is out). Lamina's built-in CPU (the JIT, and the
# interpreter) against qemu-system-x86_64 -accel tcg, same kernel, initrd, memory and command,
# in one run; each guest's results must equal the host's (the same commands with coreutils).
# Prints seconds (best of N) and the ratios lamina/qemu (below 1: Lamina is faster).
#   bench/mixed_bench.sh [build/lamina] [runs=2] [lines=400000] [interp=yes|no]
# (interp=no skips the interpreter's column, the slowest by far)
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lamina=${1:-$top/build/lamina}
runs=${2:-2}
lines=${3:-400000}
with_interp=${4:-yes}
guest=$("$top/scripts/make-guest")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# No double quotes: the command travels in the kernel's lamina_run="..." parameter.
workload="read a _ </proc/uptime; seq 1 $lines >/tmp/t; s=\$(sha256sum /tmp/t | cut -c1-64); \
m=\$(md5sum /tmp/t | cut -c1-32); r=\$(sort -r /tmp/t | sha256sum | cut -c1-64); \
g=\$(gzip -c /tmp/t | gzip -dc | sha256sum | cut -c1-64); read b _ </proc/uptime; \
echo mixed-result \$s \$m \$r \$g; echo mixed-seconds \$(awk -v a=\$a -v b=\$b 'BEGIN { print b - a }')"

# The host's answers.
seq 1 "$lines" >"$work/t"
expected="$(sha256sum "$work/t" | cut -c1-64) $(md5sum "$work/t" | cut -c1-32) \
$(LC_ALL=C sort -r "$work/t" | sha256sum | cut -c1-64) $(sha256sum "$work/t" | cut -c1-64)"

# seconds VMM: one boot that runs the workload; prints the guest's seconds, or fails when its
# results differ from the host's.
seconds() {
  local vmm=$1 log=$work/$1.log cmdline
  cmdline="console=ttyS0 quiet lamina_run=\"$workload\""
  case $vmm in
    lamina | lamina-interp)
      "$lamina" run --cpu-engine "$([[ $vmm == lamina-interp ]] && echo interp || echo jit)" \
        --memory 512M --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img" --rng none \
        --cmdline "$cmdline" </dev/null >"$log" 2>&1 ;;
    qemu)
      qemu-system-x86_64 -accel tcg -m 512 -display none -monitor none -serial "file:$log" \
        -no-reboot -kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" -append "$cmdline" \
        </dev/null >/dev/null 2>&1 ;;
  esac
  local got
  got=$(tr -d '\r' <"$log" | sed -n 's/.*mixed-result \(.*\)$/\1/p' | tail -1)
  if [[ $got != "$expected" ]]; then
    echo "$vmm: the guest's results differ from the host's: '$got' vs '$expected'" >&2
    exit 1
  fi
  tr -d '\r' <"$log" | sed -n 's/.*mixed-seconds \([0-9.]*\).*/\1/p' | tail -1
}

best() {
  local fastest="" t
  for _ in $(seq "$runs"); do
    t=$(seconds "$1")
    if [[ -z $fastest ]] || (( $(echo "$t < $fastest" | bc -l) )); then fastest=$t; fi
  done
  echo "$fastest"
}

l=$(best lamina)
li=n/a
[[ $with_interp == yes ]] && li=$(best lamina-interp)
q=$(best qemu)
ratio() { [[ $1 == n/a ]] && echo n/a || printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
printf '%-34s %8s %10s %8s %8s %8s\n' workload "jit s" "interp s" "qemu s" jit/q intp/q
printf '%-34s %8s %10s %8s %8s %8s\n' "seq/sha256/md5/sort/gzip $lines" "$l" "$li" "$q" \
  "$(ratio "$l" "$q")" "$(ratio "$li" "$q")"
echo "results equal the host's on every run"
