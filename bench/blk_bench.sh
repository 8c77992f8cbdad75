#!/usr/bin/env bash
# Guest sequential disk throughput through virtio-blk on a VHD (dynamic) image: Lamina's
# built-in CPU against qemu-system-x86_64 -accel tcg with virtio-blk-pci, same kernel, initrd,
# images and guest commands, in one run. Prints MiB/s (best of N) and the ratio lamina/qemu
# (above 1: Lamina is faster).
#   bench/blk_bench.sh [build/lamina] [MiB=256] [runs=2]
# The guest reads MiB from a VHD filled with random data (dd iflag=direct, 1 MiB requests) and
# writes MiB of zeros to a fresh dynamic VHD (oflag=direct, then fsync), so every write also
# allocates VHD blocks. Timed inside the guest with /proc/uptime (10 ms), so boot time is out.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lamina=${1:-$top/build/lamina}
mib=${2:-256}
runs=${3:-2}
guest=$("$top/scripts/make-guest")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

head -c "${mib}M" /dev/urandom >"$work/source.raw"
"$lamina" disk convert "$work/source.raw" "$work/read.vhd" >/dev/null
"$lamina" disk create --size "$((mib + 16))M" "$work/empty.vhd" >/dev/null
rm "$work/source.raw"

command="a=\$(cut -d' ' -f1 /proc/uptime); dd if=/dev/vda of=/dev/null bs=1M count=$mib iflag=direct 2>/dev/null; b=\$(cut -d' ' -f1 /proc/uptime); dd if=/dev/zero of=/dev/vdb bs=1M count=$mib oflag=direct conv=fsync 2>/dev/null; c=\$(cut -d' ' -f1 /proc/uptime); echo BENCH \$a \$b \$c"

# run VMM: one boot; prints "read_seconds write_seconds".
run() {
  local vmm=$1 output
  cp "$work/empty.vhd" "$work/write.vhd"
  local cmdline="console=ttyS0 quiet lamina_run=\"$command\""
  case $vmm in
    lamina) output=$("$lamina" run --cpus 1 --memory 512M --kernel "$guest/vmlinuz" \
              --initrd "$guest/initrd.img" --cmdline "$cmdline" \
              --disk "$work/read.vhd,readonly" --disk "$work/write.vhd" </dev/null 2>&1) ;;
    qemu) output=$(qemu-system-x86_64 -accel tcg -m 512 -smp 1 -display none -monitor none \
            -serial stdio -no-reboot -kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" \
            -append "$cmdline" \
            -drive "file=$work/read.vhd,format=vpc,if=none,id=read,readonly=on" \
            -device virtio-blk-pci,drive=read \
            -drive "file=$work/write.vhd,format=vpc,if=none,id=write,cache=writeback" \
            -device virtio-blk-pci,drive=write </dev/null 2>&1) ;;
  esac
  local line
  line=$(grep -a "^BENCH " <<<"${output//$'\r'/}" | tail -1) ||
    { echo "$vmm: no result; console:" >&2; echo "$output" >&2; exit 1; }
  read -r _ a b c <<<"$line"
  echo "$(echo "$b - $a" | bc -l) $(echo "$c - $b" | bc -l)"
}

declare -A read_best write_best
for _ in $(seq "$runs"); do
  for vmm in lamina qemu; do
    read -r r w <<<"$(run $vmm)"
    if [[ -z ${read_best[$vmm]:-} ]] || (( $(echo "$r < ${read_best[$vmm]}" | bc -l) )); then read_best[$vmm]=$r; fi
    if [[ -z ${write_best[$vmm]:-} ]] || (( $(echo "$w < ${write_best[$vmm]}" | bc -l) )); then write_best[$vmm]=$w; fi
  done
done

# /proc/uptime ticks in 10 ms; a zero interval counts as one tick.
rate() { echo "$mib / (($1 > 0) * $1 + ($1 <= 0) * 0.01)" | bc -l; }
printf '%-34s %12s %12s %8s\n' "sequential ${mib} MiB, VHD dynamic" "lamina MiB/s" "qemu MiB/s" "ratio"
for row in read write; do
  if [[ $row == read ]]; then l=${read_best[lamina]} q=${read_best[qemu]}; else l=${write_best[lamina]} q=${write_best[qemu]}; fi
  lr=$(rate "$l") qr=$(rate "$q")
  printf '%-34s %12.1f %12.1f %8.2f\n' "$row (dd 1 MiB, O_DIRECT)" "$lr" "$qr" "$(echo "$lr / $qr" | bc -l)"
done
