#!/bin/sh
# Guest MIPS of the built-in CPU (JIT and interpreter) against QEMU TCG on the same real-mode integer loop (a
# firmware image that runs the loop from RESET and exits through isa-debug-exit).
# Usage: bench/cpu/compare_qemu.sh [build-dir] [million-instructions]
set -eu
build=${1:-build}
millions=${2:-400}
bench="$build/bench/cpu/lamina_cpu_bench"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
iterations=$((millions * 1000000 / 8))

run_qemu() {  # prints wall seconds for one run of an image
  start=$(date +%s.%N)
  qemu-system-x86_64 -accel tcg -nodefaults -display none -bios "$1" \
    -device isa-debug-exit,iobase=0xf4,iosize=0x01 >/dev/null 2>&1 || true
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

"$bench" --write-bios "$work/loop.bin" "$iterations"
"$bench" --write-bios "$work/empty.bin" 1
empty=$(run_qemu "$work/empty.bin")
full=$(run_qemu "$work/loop.bin")
qemu_mips=$(echo "$iterations * 8 / ($full - $empty) / 1000000" | bc -l)
# Both engines of the built-in CPU in the same run as QEMU.
lamina_lines=$("$bench" "$millions" both)
mips_of() {  # the wall MIPS of the real-mode loop on engine $1
  echo "$lamina_lines" | grep -E "^realmode +$1 " | sed -E 's/.*: ([0-9.]+) MIPS wall.*/\1/'
}
jit_mips=$(mips_of jit)
interp_mips=$(mips_of interp)
printf 'QEMU TCG:      %.1f MIPS (%.3f s startup subtracted)\n' "$qemu_mips" "$empty"
printf 'Lamina jit:    %.1f MIPS\n' "$jit_mips"
printf 'Lamina interp: %.1f MIPS\n' "$interp_mips"
printf 'ratio jit/QEMU: %.2f\n' "$(echo "$jit_mips / $qemu_mips" | bc -l)"
printf 'ratio interp/QEMU: %.2f\n' "$(echo "$interp_mips / $qemu_mips" | bc -l)"
printf 'ratio jit/interp: %.2f\n' "$(echo "$jit_mips / $interp_mips" | bc -l)"
