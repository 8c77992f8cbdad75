#!/usr/bin/env bash
# laminad's own costs, with an idle guest (a Multiboot kernel that halts at once, built here):
#   - API create+start latency: POST /v1/vms/NAME/start until the answer (the worker has opened
#     everything, sandboxed itself and is running the guest), median of N (target <= 50 ms);
#   - worker memory beyond guest RAM: the worker's resident memory outside the guest-RAM
#     mapping (target <= 16 MiB);
#   - laminad's CPU while N VMs idle, over 10 s.
# Reports numbers against the issue's targets; there is no peer management service here to
# run beside it. Not a pass/fail test.
#   bench/laminad_bench.sh [build] [vms=20]
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$top/build}
count=${2:-20}
lamina=$build/lamina laminad=$build/laminad
source "$top/tests/mgmt/laminad_lib.sh"
laminad_setup

# The idle guest: Multiboot header, then cli; hlt forever.
kernels=$top/tests/guest/kernels
cat >"$work/idle.S" <<'ASM'
        .include "multiboot_header.inc"
        .globl _start
_start: cli
1:      hlt
        jmp 1b
ASM
as --32 -I "$kernels" -o "$work/idle.o" "$work/idle.S"
ld -m elf_i386 -T "$kernels/link.ld" -o "$work/idle.elf" "$work/idle.o"

start_laminad

latencies=()
for i in $(seq 1 "$count"); do
  "$build/lamina" vm create "idle$i" --memory 64M --rng none --kernel "$work/idle.elf" >/dev/null
  seconds=$(curl -s -o /dev/null -w '%{time_total}' -X POST --unix-socket "$sock" \
    "http://laminad/v1/vms/idle$i/start")
  latencies+=("$seconds")
done
median=$(printf '%s\n' "${latencies[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] * 1000}')

# Resident memory of worker 1 outside its largest mapping (the guest's RAM).
pid=$("$build/lamina" vm --json show idle1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
sleep 1
beyond=$(python3 - "$pid" <<'PY'
import sys
# Sum Rss over every mapping but the 64 MiB guest-RAM one.
total = guest = size = 0
for line in open(f"/proc/{sys.argv[1]}/smaps"):
    fields = line.split()
    if "-" in fields[0] and len(fields) >= 5:
        start, end = (int(x, 16) for x in fields[0].split("-"))
        size = (end - start) // 1024
    elif fields[0] == "Rss:":
        total += int(fields[1])
        if size == 64 * 1024:
            guest = int(fields[1])
print(f"{(total - guest) / 1024:.1f}")
PY
)

ticks() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
before=$(ticks); sleep 10; after=$(ticks)
hz=$(getconf CLK_TCK)
idle_cpu=$(awk -v t=$((after - before)) -v hz="$hz" 'BEGIN {printf "%.2f", 100 * t / hz / 10}')

printf '%-44s %10s %10s\n' "measure" "value" "target"
printf '%-44s %8.1fms %8sms\n' "create+start to worker running (median)" "$median" "<=50"
printf '%-44s %7sMiB %7sMiB\n' "worker memory beyond guest RAM" "$beyond" "<=16"
printf '%-44s %9s%% %10s\n' "laminad CPU with $count idle VMs (10 s)" "$idle_cpu" "-"
