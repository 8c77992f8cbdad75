#!/usr/bin/env bash
# Boot and shell-loop time of the default guest on Lamina's built-in CPU (the JIT, and the
# interpreter: --cpu-engine interp) against qemu-system-x86_64 -accel tcg, same kernel, initrd,
# command line, memory and vCPUs, in one run. Prints seconds (best of N) and the ratios
# lamina/qemu (below 1: Lamina is faster). Where KVM
# runs guest kernels in hardware, also `lamina run --accel kvm` against qemu -accel kvm -cpu host
# (kvm columns; "n/a" otherwise: no usable /dev/kvm, or KVM's PVM flavour without hardware
# virtualization, which cannot boot an unmodified kernel).
#   bench/boot_bench.sh [build/lamina] [runs=3] [cpus=1] [interp=yes|no]
# (interp=no skips the interpreter's column, the slowest by far)
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lamina=${1:-$top/build/lamina}
runs=${2:-3}
cpus=${3:-1}
with_interp=${4:-yes}
guest=$("$top/scripts/make-guest")
loop='i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done'

# seconds VMM COMMAND: wall time of one boot that runs COMMAND and powers off.
seconds() {
  local vmm=$1 command=$2 cmdline start end
  cmdline="console=ttyS0 quiet lamina_run=\"$command\""
  start=$(date +%s.%N)
  case $vmm in
    lamina | lamina-interp | lamina-kvm)
      "$lamina" run --accel "$([[ $vmm == lamina-kvm ]] && echo kvm || echo emu)" --cpus "$cpus" \
        --cpu-engine "$([[ $vmm == lamina-interp ]] && echo interp || echo jit)" \
        --memory 512M --kernel "$guest/vmlinuz" --initrd "$guest/initrd.img" \
        --cmdline "$cmdline" </dev/null >/dev/null ;;
    qemu | qemu-kvm)
      qemu-system-x86_64 $([[ $vmm == qemu ]] && echo "-accel tcg" || echo "-accel kvm -cpu host") \
        -m 512 -smp "$cpus" -display none -monitor none \
        -serial null -no-reboot -kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" \
        -append "$cmdline" </dev/null >/dev/null ;;
  esac
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

best() {  # best VMM COMMAND: the fastest of $runs boots, runs alternating with the peer
  local vmm=$1 command=$2 fastest="" t
  for _ in $(seq "$runs"); do
    t=$(seconds "$vmm" "$command")
    if [[ -z $fastest ]] || (( $(echo "$t < $fastest" | bc -l) )); then fastest=$t; fi
  done
  echo "$fastest"
}

# KVM that runs guest kernels in hardware: a usable /dev/kvm that is not PVM-only.
kvm=no
if [[ -r /dev/kvm && -w /dev/kvm ]] &&
   ! [[ -d /sys/module/kvm_pvm && ! -d /sys/module/kvm_intel && ! -d /sys/module/kvm_amd ]]; then
  kvm=yes
fi

printf '%-28s %10s %10s %10s %8s %8s %12s %12s %10s\n' "workload ($cpus vCPU)" "jit s" "interp s" \
  "qemu s" "jit/q" "intp/q" "lamina kvm s" "qemu kvm s" "kvm ratio"
for row in "boot to init and poweroff|true" "boot + shell loop 30000|$loop"; do
  name=${row%%|*} command=${row#*|}
  l=$(best lamina "$command")
  if [[ $with_interp == yes ]]; then li=$(best lamina-interp "$command"); else li=nan; fi
  q=$(best qemu "$command")
  if [[ $kvm == yes ]]; then
    lk=$(best lamina-kvm "$command")
    qk=$(best qemu-kvm "$command")
    kvm_columns=$(printf '%12.2f %12.2f %10.2f' "$lk" "$qk" "$(echo "$lk / $qk" | bc -l)")
  else
    kvm_columns=$(printf '%12s %12s %10s' n/a n/a n/a)
  fi
  printf '%-28s %10.2f %10.2f %10.2f %8.2f %8.2f %s\n' "$name" "$l" "$li" "$q" \
    "$(echo "$l / $q" | bc -l)" "$(if [[ $li == nan ]]; then echo nan; else echo "$li / $q" | bc -l; fi)" \
    "$kvm_columns"
done
[[ $kvm == yes ]] || echo "kvm: not measured (no /dev/kvm that runs guest kernels in hardware here)"
