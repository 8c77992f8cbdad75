#!/usr/bin/env bash
# Image conversion: `lamina disk convert` against `qemu-img convert`, same inputs, same run.
# Scenarios: raw -> VHD dynamic, raw -> VHD fixed, VMDK (monolithicSparse, made by qemu-img) ->
# VHD dynamic, VHD (dynamic) -> raw, each on a 2 GiB image
# full of random data and on one with 10% of its MiB allocated (a sparse raw file). Prints the
# time of each tool and the ratio lamina/qemu (below 1 means Lamina is faster).
#
#   bench/convert_bench.sh [build/lamina] [work folder, default a temp folder]
# Needs about 12 GiB free in the work folder. Not part of ctest: benchmarks report, not judge.
set -eu
lamina=$(realpath "${1:-build/lamina}")
work=${2:-$(mktemp -d)}
size_mib=${LAMINA_BENCH_SIZE_MIB:-2048}
mkdir -p "$work"
trap 'rm -rf "$work"/bench-*' EXIT
command -v qemu-img >/dev/null || { echo "qemu-img is not installed (Debian: qemu-utils)"; exit 1; }

now() { date +%s.%N; }
# run_once COMMAND...: seconds for one run, output removed before, sync included.
run_once() {
  rm -f "$work/bench-out"
  sync
  local start end
  start=$(now)
  "$@" >/dev/null
  sync
  end=$(now)
  awk -v a="$end" -v b="$start" 'BEGIN { printf "%.3f", a - b }'
}
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (b == "" || a < b) ? a : b }'; }

echo "making inputs (${size_mib} MiB each) in $work"
head -c $((size_mib << 20)) /dev/urandom > "$work/bench-random.raw"
truncate -s $((size_mib << 20)) "$work/bench-sparse.raw"
for ((mib = 0; mib < size_mib; mib += 10)); do
  head -c $((1 << 20)) /dev/urandom |
    dd of="$work/bench-sparse.raw" bs=1M seek=$mib conv=notrunc status=none
done
for input in random sparse; do
  "$lamina" disk convert "$work/bench-$input.raw" "$work/bench-$input.vhd" --force
  qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse "$work/bench-$input.raw" \
    "$work/bench-$input.vmdk"
done

printf '%-30s %10s %10s %8s\n' "scenario" "lamina s" "qemu s" "ratio"
for input in random sparse; do
  raw="$work/bench-$input.raw"
  vhd="$work/bench-$input.vhd"
  vmdk="$work/bench-$input.vmdk"
  cat "$raw" "$vhd" "$vmdk" >/dev/null  # both tools start from a warm page cache
  declare -A lamina_cmd qemu_cmd
  lamina_cmd[dynamic]="$lamina disk convert $raw $work/bench-out --type dynamic"
  qemu_cmd[dynamic]="qemu-img convert -f raw -O vpc -o subformat=dynamic $raw $work/bench-out"
  lamina_cmd[fixed]="$lamina disk convert $raw $work/bench-out --type fixed"
  qemu_cmd[fixed]="qemu-img convert -f raw -O vpc -o subformat=fixed $raw $work/bench-out"
  lamina_cmd[vmdk]="$lamina disk convert $vmdk $work/bench-out --type dynamic"
  qemu_cmd[vmdk]="qemu-img convert -f vmdk -O vpc -o subformat=dynamic $vmdk $work/bench-out"
  lamina_cmd[to-raw]="$lamina disk convert $vhd $work/bench-out --format raw"
  qemu_cmd[to-raw]="qemu-img convert -f vpc -O raw $vhd $work/bench-out"
  for scenario in dynamic fixed vmdk to-raw; do
    # The tools take turns (three runs each, best kept) so neither always follows the other.
    lamina_time=""
    qemu_time=""
    for _ in 1 2 3; do
      # shellcheck disable=SC2086
      lamina_time=$(min "$(run_once ${lamina_cmd[$scenario]})" "$lamina_time")
      # shellcheck disable=SC2086
      qemu_time=$(min "$(run_once ${qemu_cmd[$scenario]})" "$qemu_time")
    done
    case $scenario in
      dynamic) label="raw->vhd dynamic" ;;
      fixed) label="raw->vhd fixed" ;;
      vmdk) label="vmdk->vhd dynamic" ;;
      to-raw) label="vhd->raw" ;;
    esac
    printf '%-30s %10.3f %10.3f %8.2f\n' "$label ($input)" "$lamina_time" "$qemu_time" \
      "$(awk -v a="$lamina_time" -v b="$qemu_time" 'BEGIN { printf "%.3f", a / b }')"
  done
done
