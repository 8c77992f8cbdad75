#!/usr/bin/env bash
# Boots through SeaBIOS (`lamina run --firmware bios`, issue 15) and checks the serial console,
# where SeaBIOS mirrors its screen (fw_cfg etc/sercon-port).
#   firmware_boot_guest.sh --lamina PATH --guest DIR --scenario S [--vmm lamina|qemu]
#   banner:    no disk: SeaBIOS prints its banner, finds nothing to boot and resets the machine,
#              which ends the run;
#   grub_vhd:  a VHD made by make_bios_disk.sh (MBR, FAT32, GRUB 2) and `lamina disk convert`
#              boots on virtio-blk with no --firmware given (the default for a disk without a
#              kernel): SeaBIOS, GRUB's menu, Linux, the default guest runs a command and
#              powers off, exit 0; a line it writes to /dev/tty0 is on the VGA text screen
#              (Linux's vgacon) when the run ends. --vmm qemu boots the same raw disk in QEMU TCG (the oracle);
#   sata_vhd:  the same VHD on the AHCI SATA controller (--disk PATH,bus=sata) with an ISOLINUX
#              CD (make_iso.sh) on the next port and --boot disk: SeaBIOS boots the disk through
#              its AHCI driver, as the fw_cfg boot order says, not the CD it would try first;
#   cdrom_iso: an El Torito ISOLINUX CD on --cdrom (an ATAPI CD-ROM on the AHCI controller)
#              beside the bootable GRUB disk on SATA, no --boot: the CD boots (SeaBIOS's AHCI
#              ATAPI path and El Torito), ISOLINUX's console reaches the serial port, and the
#              default guest runs its command and powers off;
#   installer_iso: Debian 12's netboot installer on an ISOLINUX CD (--cdrom, 1 GiB of RAM)
#              reaches its first screen, "Select a language", on the serial console (minutes:
#              not in the default test set, see tests/guest/CMakeLists.txt);
#   memtest:   a GRUB 2 disk boots Debian's memtest86+ (linux16) through SeaBIOS with its
#              console on ttyS0; it must see the RAM and reach its third test with no errors
#              (a short check, not a full pass).
#   memtest_smp: the same on two vCPUs with memtest86+'s smp option: both CPUs test in
#              parallel;
#   memtest_pass: a whole pass of memtest86+ on 64 MiB with no errors (minutes);
#   memtest_pass_smp: the same on two vCPUs with the smp option, both CPUs testing.
set -euo pipefail
vmm=lamina lamina="" guest="" scenario=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --vmm) vmm=$2; shift 2 ;;
    --lamina) lamina=$2; shift 2 ;;
    --guest) guest=$2; shift 2 ;;
    --scenario) scenario=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x $lamina ]] || { echo "--lamina PATH is needed"; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log=$work/console.log
fail() { echo "FAIL: $*"; echo "---- console ----"; sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g' "$log" | tr -d '\r' | tail -60; exit 1; }
# Matched on the console as fail() shows it, escape sequences and CRs out (a firmware's or
# bootloader's screen codes can fall inside a line); captured first, then matched (grep -q
# closing a pipe fails under pipefail).
has() {
  local text
  text=$(sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g' "$log" | tr -d '\r')
  grep -aq -- "$1" <<<"$text"
}
# run_until PATTERN SECONDS COMMAND...: runs COMMAND (console in $log) until PATTERN shows,
# it exits or SECONDS pass, then stops it.
run_until() {
  local pattern=$1 seconds=$2
  shift 2
  "$@" </dev/null >"$log" 2>&1 &
  local vm=$!
  for _ in $(seq "$seconds"); do
    grep -aq -- "$pattern" "$log" 2>/dev/null && break
    kill -0 $vm 2>/dev/null || break
    sleep 1
  done
  kill $vm 2>/dev/null || true
  wait $vm 2>/dev/null || true
}

case $scenario in
  banner)
    status=0
    timeout 120 "$lamina" run --firmware bios --memory 64M --rng none </dev/null >"$log" 2>&1 ||
      status=$?
    has "SeaBIOS (version" || fail "no SeaBIOS banner on the serial console"
    has "No bootable device" || fail "SeaBIOS did not report that nothing boots"
    # boot-fail-wait: SeaBIOS resets after 5 s, and --on-reboot exit ends the run.
    [[ $status -eq 1 ]] && has "the guest rebooted" || fail "the run did not end at the reset (status $status)"
    ;;
  grub_vhd)
    [[ -f $guest/vmlinuz && -f $guest/initrd.img ]] || { echo "no default guest in '$guest'"; exit 1; }
    code=$((RANDOM % 200 + 3))
    bash "$(dirname "$0")/make_bios_disk.sh" guest "$guest" "$work/disk.raw" \
      "echo guest-says-\$((6*7)); echo vga-says-\$((6*8)) >/dev/tty0; exit $code" >/dev/null
    status=0
    if [[ $vmm == qemu ]]; then
      timeout 300 qemu-system-x86_64 -accel tcg -m 256 -display none -monitor none -serial stdio \
        -no-reboot -drive file="$work/disk.raw",format=raw,if=virtio </dev/null >"$log" 2>&1 ||
        status=$?
    else
      "$lamina" disk convert "$work/disk.raw" "$work/disk.vhd" >/dev/null
      rm "$work/disk.raw"
      timeout 300 "$lamina" run --memory 256M --disk "$work/disk.vhd" \
        --screen-text-on-exit "$work/screen.txt" </dev/null >"$log" 2>&1 || status=$?
      has "SeaBIOS (version" || fail "no SeaBIOS banner"
      # Linux's own console on the VGA adapter (vgacon, in the text mode GRUB left): what the
      # guest wrote to /dev/tty0 is on the screen when the run ends.
      grep -q "vga-says-48" "$work/screen.txt" 2>/dev/null ||
        fail "the guest's line on /dev/tty0 is not on the VGA screen: $(cat "$work/screen.txt" 2>&1)"
    fi
    [[ $status -eq 0 ]] || fail "the VMM exited with status $status"
    has "GNU GRUB" || fail "no GRUB menu"
    has "Booting \`Lamina default guest'" || fail "GRUB did not boot the menu entry"
    has "guest-says-42" || fail "the guest's command did not run"
    has "LAMINA-EXIT-STATUS: $code" || fail "no 'LAMINA-EXIT-STATUS: $code' line"
    ;;
  sata_vhd|cdrom_iso)
    [[ -f $guest/vmlinuz && -f $guest/initrd.img ]] || { echo "no default guest in '$guest'"; exit 1; }
    disk_code=$((RANDOM % 100 + 3)) cd_code=$((RANDOM % 100 + 103))
    bash "$(dirname "$0")/make_bios_disk.sh" guest "$guest" "$work/disk.raw" \
      "echo guest-says-from-disk; exit $disk_code" >/dev/null
    "$lamina" disk convert "$work/disk.raw" "$work/disk.vhd" >/dev/null
    rm "$work/disk.raw"
    bash "$(dirname "$0")/make_iso.sh" guest "$guest" "$work/cd.iso" \
      "echo guest-says-from-cd; exit $cd_code" >/dev/null
    boot=() code=$cd_code
    if [[ $scenario == sata_vhd ]]; then boot=(--boot disk) code=$disk_code; fi
    status=0
    timeout 300 "$lamina" run --memory 256M --rng none --disk "$work/disk.vhd,bus=sata" \
      --cdrom "$work/cd.iso" "${boot[@]}" </dev/null >"$log" 2>&1 || status=$?
    [[ $status -eq 0 ]] || fail "lamina exited with status $status"
    has "SeaBIOS (version" || fail "no SeaBIOS banner"
    if [[ $scenario == sata_vhd ]]; then
      has "Booting from Hard Disk" || fail "SeaBIOS did not boot the SATA disk"
      has "Booting \`Lamina default guest'" || fail "GRUB did not boot the menu entry"
      has "guest-says-from-disk" || fail "the guest's command did not run"
    else
      has "Booting from DVD/CD" || fail "SeaBIOS did not boot the CD"
      has "ISOLINUX 6" || fail "no ISOLINUX banner on the serial console"
      has "ISOLINUX: booting guest" || fail "ISOLINUX did not read its configuration"
      has "guest-says-from-cd" || fail "the guest's command did not run"
    fi
    has "LAMINA-EXIT-STATUS: $code" || fail "no 'LAMINA-EXIT-STATUS: $code' line"
    ;;
  installer_iso)
    bash "$(dirname "$0")/make_iso.sh" installer "$work/cd.iso" >/dev/null
    run_until "Select a language" 400 "$lamina" run --memory 1G --rng none --cdrom "$work/cd.iso"
    has "Booting from DVD/CD" || fail "SeaBIOS did not boot the CD"
    has "ISOLINUX: booting installer" || fail "ISOLINUX did not start"
    has "Run /init as init process" || fail "the installer's kernel did not start its init"
    has "Select a language" || fail "the installer's first screen did not appear in 400 s"
    ;;
  memtest|memtest_smp)
    # memtest_smp: two vCPUs, and memtest86+ told to use both (its SMP start-up of the second
    # through INIT/SIPI, then both testing in parallel).
    cpus=1 options=""
    [[ $scenario == memtest_smp ]] && cpus=2 options=smp
    bash "$(dirname "$0")/make_bios_disk.sh" memtest "$work/disk.raw" "$options" >/dev/null
    # Test #3 or any later one: the console shows memtest's screen every 2 s, and a fast CPU
    # can finish a short test between two of them.
    past_three='#\([3-9]\|1[0-9]\) \+\['
    run_until "$past_three" 240 "$lamina" run --cpus "$cpus" --memory 128M --rng none --disk "$work/disk.raw"
    has "Memtest86+ v6" || fail "memtest86+ did not start"
    has "Memory  :  128MB" || fail "memtest86+ did not see 128 MB"
    has "Address test" || fail "memtest86+ did not start testing"
    has "$past_three" || fail "memtest86+ did not reach test #3 in 4 minutes"
    ! grep -aq "Errors: *[1-9]" "$log" || fail "memtest86+ reported errors"
    if [[ $scenario == memtest_smp ]]; then
      has "SMP: 2T" || fail "memtest86+ did not run on both vCPUs"
    fi
    ;;
  memtest_pass|memtest_pass_smp)
    # A whole pass of memtest86+ on 64 MiB with no errors (about 260 s on a quiet host, QEMU
    # TCG 200 s); the screen's counters are read as the bench reads them, escape codes as line
    # breaks. memtest_pass_smp: on two vCPUs with memtest's smp option, both running (about
    # 216 s alone).
    cpus=1 options=""
    [[ $scenario == memtest_pass_smp ]] && cpus=2 options=smp
    bash "$(dirname "$0")/make_bios_disk.sh" memtest "$work/disk.raw" "$options" >/dev/null
    "$lamina" run --cpus "$cpus" --memory 64M --rng none --disk "$work/disk.raw" </dev/null >"$log" 2>&1 &
    vm=$!
    screen() { sed 's/\x1b\[[0-9;?]*[a-zA-Z]/\n/g' "$log" 2>/dev/null | tr -d '\r'; }
    passed=""
    for _ in $(seq 1100); do
      text=$(screen)
      if grep -aq "Pass: *[1-9]" <<<"$text"; then passed=yes; break; fi
      grep -aq "Errors: *[1-9]" <<<"$text" && break
      kill -0 $vm 2>/dev/null || break
      sleep 1
    done
    kill $vm 2>/dev/null || true
    wait $vm 2>/dev/null || true
    text=$(screen)
    errors=$(grep -ao "Errors: *[0-9]*" <<<"$text" | tail -1 | tr -dc 0-9 || true)
    [[ ${errors:-} == 0 ]] || fail "memtest86+ reported errors: '${errors:-none read}'"
    [[ -n $passed ]] || fail "memtest86+ did not complete a pass in 1100 s"
    if [[ $scenario == memtest_pass_smp ]]; then
      grep -aq "SMP: 2T" <<<"$text" || fail "memtest86+ did not run on both vCPUs"
    fi
    ;;
  *) echo "unknown scenario '$scenario'" >&2; exit 2 ;;
esac
echo "ok: $vmm $scenario"
