#!/usr/bin/env bash
# Booting the way a PC does: power-on to SeaBIOS's banner, to GRUB's menu and to the default
# guest's command having run (it then powers off), through SeaBIOS, GRUB 2 and Linux on a
# virtio-blk disk made by tests/guest/make_bios_disk.sh: Lamina's built-in CPU against
# qemu-system-x86_64 -accel tcg with the same SeaBIOS (Debian's bios-256k.bin), the same raw
# disk and devices, in one run. Each point is when its text first showed on the serial
# console, polled every 20 ms. Prints seconds (best of N per point) and lamina/qemu (below 1:
# Lamina is faster).
#   bench/firmware_bench.sh [build/lamina] [runs=2]
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lamina=${1:-$top/build/lamina}
runs=${2:-2}
guest=$("$top/scripts/make-guest")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bash "$top/tests/guest/make_bios_disk.sh" guest "$guest" "$work/disk.raw" "echo firmware-bench-done" >/dev/null
# SeaBIOS mirrors its screen to COM1 when fw_cfg's etc/sercon-port names it (Lamina sets it;
# QEMU is given the same value: 0x3f8, little-endian).
printf '\xf8\x03' >"$work/sercon-port"
points=("SeaBIOS (version|banner" "GNU GRUB|menu" "firmware-bench-done|command")

# once VMM: one boot; prints "banner menu command" seconds.
once() {
  local vmm=$1 log=$work/$1.log start pid
  : >"$log"
  start=$(date +%s%N)
  case $vmm in
    lamina) "$lamina" run --memory 256M --rng none --disk "$work/disk.raw" </dev/null >"$log" 2>&1 & ;;
    qemu) qemu-system-x86_64 -accel tcg -m 256 -display none -monitor none -serial "file:$log" \
            -fw_cfg "name=etc/sercon-port,file=$work/sercon-port" \
            -no-reboot -drive "file=$work/disk.raw,format=raw,if=virtio" </dev/null >/dev/null 2>&1 & ;;
  esac
  pid=$!
  local -A seen=()
  while kill -0 "$pid" 2>/dev/null && (( ${#seen[@]} < ${#points[@]} )); do
    for point in "${points[@]}"; do
      local text=${point%%|*} name=${point#*|}
      [[ -n ${seen[$name]:-} ]] && continue
      if grep -aq -- "$text" "$log"; then seen[$name]=$(( ($(date +%s%N) - start) / 1000000 )); fi
    done
    sleep 0.02
  done
  wait "$pid" 2>/dev/null || true
  for point in "${points[@]}"; do
    local name=${point#*|}
    [[ -n ${seen[$name]:-} ]] || { echo "$vmm: never saw the $name" >&2; exit 1; }
    printf '%s ' "${seen[$name]}"
  done
  echo
}

declare -A best=()
for _ in $(seq "$runs"); do
  for vmm in qemu lamina; do
    result=$(once "$vmm")
    read -r -a times <<<"$result"
    for i in "${!points[@]}"; do
      key="$vmm:$i"
      if [[ -z ${best[$key]:-} ]] || (( times[i] < best[$key] )); then best[$key]=${times[i]}; fi
    done
  done
done
printf '%-40s %10s %10s %8s\n' "power-on to ..." "lamina s" "qemu s" ratio
for i in "${!points[@]}"; do
  l=${best[lamina:$i]} q=${best[qemu:$i]}
  printf '%-40s %10.2f %10.2f %8.2f\n' "${points[i]#*|} ('${points[i]%%|*}')" \
    "$(echo "$l / 1000" | bc -l)" "$(echo "$q / 1000" | bc -l)" "$(echo "$l / $q" | bc -l)"
done
