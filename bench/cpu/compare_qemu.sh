#!/usr/bin/env bash
# Guest MIPS of the built-in CPU (JIT and interpreter) against QEMU TCG on the same real-mode integer loop (a
# firmware image that runs the loop from RESET and exits through isa-debug-exit).
# Wall-clock MIPS, and MIPS per CPU second (QEMU: its process's user+system time; Lamina: the
# vCPU thread's), which is steadier on a shared, loaded host.
# Usage: bench/cpu/compare_qemu.sh [build-dir] [million-instructions]
# The default runs 4000 million: both translators retire several billion per second on this
# loop, and with 400 million QEMU's run lasted ~0.06 s, so its startup's jitter moved the
# ratio between 0.8 and 1.6. The interpreter runs a tenth of that.
set -euo pipefail
build=${1:-build}
millions=${2:-4000}
bench="$build/bench/cpu/lamina_cpu_bench"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
iterations=$((millions * 1000000 / 8))

run_qemu() {  # prints "wall cpu" seconds for one run of an image
  local start end cpu
  start=$(date +%s.%N)
  /usr/bin/time -o "$work/time" -f '%U %S' qemu-system-x86_64 -accel tcg -nodefaults -display none \
    -bios "$1" -device isa-debug-exit,iobase=0xf4,iosize=0x01 >/dev/null 2>&1 || true
  cpu=$(tail -1 "$work/time")
  end=$(date +%s.%N)
  echo "$(echo "$end - $start" | bc -l) $(echo "${cpu% *} + ${cpu#* }" | bc -l)"
}

"$bench" --write-bios "$work/loop.bin" "$iterations"
"$bench" --write-bios "$work/empty.bin" 1
read -r empty empty_cpu < <(run_qemu "$work/empty.bin")
read -r full full_cpu < <(run_qemu "$work/loop.bin")
qemu_mips=$(echo "$iterations * 8 / ($full - $empty) / 1000000" | bc -l)
qemu_cpu_mips=$(echo "$iterations * 8 / ($full_cpu - $empty_cpu) / 1000000" | bc -l)
# Both engines of the built-in CPU in the same run as QEMU.
lamina_lines=$("$bench" "$millions" jit; "$bench" $((millions / 10 > 0 ? millions / 10 : 1)) interp)
mips_of() {  # the wall MIPS of the real-mode loop on engine $1
  echo "$lamina_lines" | grep -E "^realmode +$1 " | sed -E 's/.*: ([0-9.]+) MIPS wall.*/\1/'
}
cpu_mips_of() {  # its MIPS per CPU second
  echo "$lamina_lines" | grep -E "^realmode +$1 " | sed -E 's/.*, ([0-9.]+) MIPS per CPU second.*/\1/'
}
jit_mips=$(mips_of jit)
interp_mips=$(mips_of interp)
jit_cpu_mips=$(cpu_mips_of jit)
printf 'QEMU TCG:      %.1f MIPS wall, %.1f per CPU second (%.3f s startup subtracted)\n' "$qemu_mips" "$qemu_cpu_mips" "$empty"
printf 'Lamina jit:    %.1f MIPS wall, %.1f per CPU second\n' "$jit_mips" "$jit_cpu_mips"
printf 'Lamina interp: %.1f MIPS\n' "$interp_mips"
printf 'ratio jit/QEMU: %.2f wall, %.2f per CPU second\n' "$(echo "$jit_mips / $qemu_mips" | bc -l)" \
  "$(echo "$jit_cpu_mips / $qemu_cpu_mips" | bc -l)"
printf 'ratio interp/QEMU: %.2f\n' "$(echo "$interp_mips / $qemu_mips" | bc -l)"
printf 'ratio jit/interp: %.2f\n' "$(echo "$jit_mips / $interp_mips" | bc -l)"
