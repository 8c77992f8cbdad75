#!/usr/bin/env bash
# memtest86+ through SeaBIOS and GRUB on Lamina's built-in CPU against QEMU TCG, same disk
# (tests/guest/make_bios_disk.sh memtest), same SeaBIOS (Debian's bios-256k.bin), memory and
# vCPUs, one after the other: the seconds from power-on to the start of each of memtest's
# tests, to the end of its first pass, and the errors each reported (must be 0). Prints the
# ratio lamina/qemu (below 1: Lamina is faster) for the last point both reached. A full pass
# takes minutes on QEMU and longer here: a soak and a benchmark, not a CI test.
#   bench/memtest_bench.sh [build/lamina] [memory=64M] [cpus=1] [cap-seconds=2400]
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lamina=${1:-$top/build/lamina}
memory=${2:-64M}
cpus=${3:-1}
cap=${4:-2400}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
options=""
if (( cpus > 1 )); then options=smp; fi
bash "$top/tests/guest/make_bios_disk.sh" memtest "$work/disk.raw" "$options" >/dev/null

# run VMM: boots the disk, logs "SECONDS EVENT" lines to $work/VMM.events until the first pass
# ends or the cap.
run() {
  local vmm=$1 log=$work/$1.console start pid seen=""
  start=$(date +%s.%N)
  case $vmm in
    lamina) "$lamina" run --cpus "$cpus" --memory "$memory" --rng none --disk "$work/disk.raw" \
              </dev/null >"$log" 2>&1 & ;;
    qemu) qemu-system-x86_64 -accel tcg -m "$memory" -smp "$cpus" -display none -monitor none \
            -serial "file:$log" -drive "file=$work/disk.raw,format=raw,if=virtio" -no-reboot \
            </dev/null >/dev/null 2>&1 & ;;
  esac
  pid=$!
  : >"$work/$vmm.events"
  while kill -0 "$pid" 2>/dev/null; do
    local now screen
    now=$(echo "$(date +%s.%N) - $start" | bc -l)
    screen=$(sed 's/\x1b\[[0-9;?]*[a-zA-Z]/\n/g' "$log" 2>/dev/null | tr -d '\r' || true)
    for test in $(grep -ao '#[0-9]\+  \[' <<<"$screen" | tr -d '#[ ' | sort -un); do
      [[ " $seen " == *" $test "* ]] && continue
      seen+=" $test"
      printf '%.1f test-%s\n' "$now" "$test" >>"$work/$vmm.events"
    done
    if grep -aq "Pass: *[1-9]" <<<"$screen"; then
      printf '%.1f pass\n' "$now" >>"$work/$vmm.events"
      break
    fi
    local whole=${now%.*}
    if (( ${whole:-0} >= cap )); then break; fi
    sleep 1
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  errors=$(sed 's/\x1b\[[0-9;?]*[a-zA-Z]/\n/g' "$log" | grep -ao "Errors: *[0-9]*" | tail -1 | tr -dc 0-9 || true)
  echo "${errors:-?}" >"$work/$vmm.errors"
}

run qemu
run lamina
printf '%-10s %12s %12s %8s\n' point qemu_s lamina_s ratio
last=""
# A test first seen at the end of the pass (sampled once a second, a fast test can be missed
# until the second pass starts) is left out.
qemu_pass=$(grep " pass\$" "$work/qemu.events" | cut -d' ' -f1 || true)
for point in $(cut -d' ' -f2 "$work/qemu.events"); do
  q=$(grep " $point\$" "$work/qemu.events" | cut -d' ' -f1)
  if [[ $point != pass && -n $qemu_pass ]] && (( $(echo "$q >= $qemu_pass" | bc -l) )); then continue; fi
  l=$(grep " $point\$" "$work/lamina.events" | cut -d' ' -f1 || true)
  if [[ -n $l ]]; then
    printf '%-10s %12s %12s %8.2f\n' "$point" "$q" "$l" "$(echo "$l / $q" | bc -l)"
    last=$point
  else
    printf '%-10s %12s %12s %8s\n' "$point" "$q" "-" "-"
  fi
done
echo "errors reported: qemu $(cat "$work/qemu.errors"), lamina $(cat "$work/lamina.errors")"
echo "last point both reached: ${last:-none} ($memory, $cpus vCPUs, cap ${cap} s)"
