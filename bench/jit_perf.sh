#!/usr/bin/env bash
# Where the host's time goes in translated code, by guest block: runs a lamina command under
# `perf record` with LAMINA_JIT_PERF_MAP=1 (src/cpu/x86/jit/perf_map.h), then prints perf's
# top symbols (a translated block is "guest:<RIP>") and, for the hottest translated blocks,
# their guest instructions and their host code disassembled.
#   bench/jit_perf.sh [top=12] -- build/lamina run --kernel ... [--cmdline ...]
# Needs perf (Debian's linux-perf) and objdump; perf may need kernel.perf_event_paranoid <= 1.
set -euo pipefail
top=12
if [[ ${1:-} != -- ]]; then top=$1; shift; fi
[[ ${1:-} == -- ]] || { echo "usage: $0 [top] -- LAMINA-COMMAND..." >&2; exit 2; }
shift
work=$(mktemp -d)
[[ -n ${KEEP:-} ]] && echo "keeping $work" >&2 || trap 'rm -rf "$work"' EXIT

LAMINA_JIT_PERF_MAP=1 perf record -q -o "$work/perf.data" -- "$@" </dev/null >"$work/out" 2>&1 || true
perf report -i "$work/perf.data" --stdio --sort sym 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
pid=$(perf report -i "$work/perf.data" --stdio --sort pid 2>/dev/null | sed -n 's/.* \([0-9]\+\):lamina.*/\1/p' | head -1)
blocks=/tmp/lamina-jit-$pid.blocks
[[ -f $blocks ]] || { echo "no block file $blocks" >&2; exit 1; }
for symbol in $(perf report -i "$work/perf.data" --stdio --sort sym 2>/dev/null |
                grep -o 'guest:[0-9a-f]*' | head -"$top"); do
  echo
  # The newest translation of this RIP (a flush or a rewrite translates it again).
  awk -v want="block $symbol " 'index($0, want) == 1 { keep = $0 "\n"; on = 1; next }
       /^block / { on = 0 } on { keep = keep $0 "\n" } END { printf "%s", keep }' "$blocks" |
    grep -v '^  code' 
  awk -v want="block $symbol " 'index($0, want) == 1 { on = 1; next } /^block / { on = 0 }
       on && /^  code/ { line = $0 } END { print line }' "$blocks" |
    sed "s/^  code //" | xxd -r -p >"$work/code.bin"
  objdump -D -b binary -m i386:x86-64 -M intel "$work/code.bin" | sed -n '8,$p' | cut -f3 | sed 's/^/      /'
done
[[ -n ${KEEP:-} ]] || rm -f "/tmp/perf-$pid.map" "$blocks"
