#!/usr/bin/env bash
# Boots the default guest in a VMM and checks what it prints.
#   --vmm qemu       qemu-system-x86_64 -accel tcg (proves the image itself)
#   --vmm lamina     `lamina run` on the built-in CPU (--lamina PATH names the binary)
#   --cpus N         vCPUs (default 2)
#   --guest DIR      folder with vmlinuz, initrd.img and modules (from scripts/make-guest)
#   --scenario S     parallel_workload: one pinned job per vCPU must compute the right sum;
#                    command_line: run a command from the kernel command line, check its output,
#                    its exit status line and every virtio module loaded;
#                    interactive_shell: type into the console shell and power off from it.
set -euo pipefail
vmm="" guest="" scenario="" lamina="" cpus=2
while [[ $# -gt 0 ]]; do
  case $1 in
    --vmm) vmm=$2; shift 2 ;;
    --guest) guest=$2; shift 2 ;;
    --scenario) scenario=$2; shift 2 ;;
    --lamina) lamina=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -f $guest/vmlinuz && -f $guest/initrd.img ]] || { echo "no default guest in '$guest'"; exit 1; }
[[ $vmm != lamina || -x $lamina ]] || { echo "--vmm lamina needs --lamina PATH"; exit 2; }

# Starts the VMM with the guest console on stdin/stdout and the given kernel command line.
start_vmm() {
  case $vmm in
    lamina) exec "$lamina" run --cpus "$cpus" --memory 512M --kernel "$guest/vmlinuz" \
            --initrd "$guest/initrd.img" --cmdline "$1" ;;
    qemu) exec qemu-system-x86_64 -accel tcg -m 512 -smp "$cpus" -display none -monitor none \
            -serial stdio -no-reboot -kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" \
            -append "$1" ;;
    *) echo "unknown VMM '$vmm'" >&2; exit 2 ;;
  esac
}

fail() { echo "FAIL: $*"; echo "---- guest console ----"; cat "$log"; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT

case $scenario in
  command_line)
    # The status is chosen at random so a hard-coded line cannot pass.
    status=$((RANDOM % 200 + 3))
    command="echo guest-says-\$((6*7)); cut -d' ' -f1 /proc/modules | sort | tr '\\n' ' '; echo; nproc; exit $status"
    timeout 240 bash -c "$(declare -f start_vmm); vmm=$vmm guest=$guest lamina=$lamina cpus=$cpus start_vmm \"\$1\"" _ \
      "console=ttyS0 quiet no_timer_check panic=-1 lamina_run=\"$command\"" </dev/null >"$log" 2>&1 ||
      fail "the VMM did not exit cleanly (status $?)"
    sed -i 's/\r$//' "$log"
    grep -q "guest-says-42" "$log" || fail "the command's output is missing"
    grep -q "^LAMINA-EXIT-STATUS: $status" "$log" || fail "no 'LAMINA-EXIT-STATUS: $status' line"
    loaded=$(grep -E '^[a-z_ ]*virtio[a-z_ ]*$' "$log" | tail -1)
    while read -r module; do
      [[ " $loaded " == *" $module "* ]] || fail "module $module is not loaded (loaded: $loaded)"
    done < "$guest/modules"
    grep -qx "$cpus" "$log" || fail "nproc did not print $cpus"
    ;;
  parallel_workload)
    # One job pinned to each vCPU computes a sum of squares; every vCPU must report the right
    # sum from itself (field 39 of /proc/self/stat is the CPU a process last ran on).
    command='for c in $(seq 0 $(($(nproc)-1))); do taskset -c $c sh -c '"'"'i=0; s=0; while [ $i -lt 3000 ]; do s=$((s+i*i)); i=$((i+1)); done; set -- $(cat /proc/self/stat); echo job-${39}-$s'"'"' & done; wait'
    timeout 240 bash -c "$(declare -f start_vmm); vmm=$vmm guest=$guest lamina=$lamina cpus=$cpus start_vmm \"\$1\"" _ \
      "console=ttyS0 quiet no_timer_check panic=-1 lamina_run=\"$command\"" </dev/null >"$log" 2>&1 ||
      fail "the VMM did not exit cleanly (status $?)"
    sed -i 's/\r$//' "$log"
    expected=$(( 2999 * 3000 * 5999 / 6 ))
    for ((c = 0; c < cpus; c++)); do
      grep -qx "job-$c-$expected" "$log" || fail "vCPU $c did not report the sum $expected"
    done
    [[ $(grep -c '^job-' "$log") -eq $cpus ]] || fail "expected $cpus job lines"
    grep -q "^LAMINA-EXIT-STATUS: 0" "$log" || fail "the workload did not exit 0"
    ;;
  interactive_shell)
    # Talk to the shell like a person: wait for the prompt, type, wait for the answer.
    coproc VMM { timeout 240 bash -c "$(declare -f start_vmm); vmm=$vmm guest=$guest lamina=$lamina cpus=$cpus start_vmm \"\$1\"" _ \
      "console=ttyS0 quiet no_timer_check panic=-1" 2>&1; }
    wait_for() {  # wait_for PATTERN: read console output into the log until PATTERN shows
      local line
      while IFS= read -r -t 200 line <&"${VMM[0]}"; do
        line=${line%$'\r'}
        printf '%s\n' "$line" >>"$log"
        [[ $line == *"$1"* ]] && return 0
      done
      return 1
    }
    wait_for "poweroff' stops the VM" || fail "no shell banner"
    echo 'echo typed-$((40+2))' >&"${VMM[1]}"
    wait_for "typed-42" || fail "the shell did not run a typed command"
    echo 'poweroff' >&"${VMM[1]}"
    wait_for "reboot: Power down" || fail "poweroff from the shell did not power the VM off"
    wait "$VMM_PID" || fail "the VMM did not exit cleanly"
    ;;
  *) echo "unknown scenario '$scenario'" >&2; exit 2 ;;
esac
echo "ok: $scenario on $vmm"
