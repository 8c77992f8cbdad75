#!/usr/bin/env bash
# Guest disks through virtio-blk: the default guest does I/O on /dev/vd*, the host checks the
# images with `lamina disk` and qemu-img afterwards.
#   --vmm lamina|qemu   `lamina run --disk ...` or qemu-system-x86_64 -accel tcg with
#                       virtio-blk-pci drives (proves the test itself)
#   --lamina PATH       the lamina binary (also used for `lamina disk` on the host)
#   --guest DIR         the default guest (scripts/make-guest)
#   --scenario S        vhd_pattern: the guest writes a known pattern to a VHD (across a block
#                         boundary), fsyncs and powers off; `lamina disk convert` and
#                         `qemu-img convert -f vpc` must both read the same bytes back; the
#                         serial given on the command line shows in /sys/block/vda/serial;
#                       readonly: /sys/block/vda/ro is 1, a write fails, the image is unchanged;
#                       formats: a qcow2 (read-only) and a VHDX disk read back in the guest;
#                       discard: blkdiscard in the guest frees the VHD's blocks;
#                       cli_errors: bad --disk (also bus=sata), --cdrom and --boot values stop
#                         `lamina run` before it boots, with
#                         exit status 2 and a line naming the problem (no guest needed).
set -euo pipefail
vmm="" lamina="" guest="" scenario=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --vmm) vmm=$2; shift 2 ;;
    --lamina) lamina=$2; shift 2 ;;
    --guest) guest=$2; shift 2 ;;
    --scenario) scenario=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $scenario == cli_errors || ( -f $guest/vmlinuz && -f $guest/initrd.img ) ]] ||
  { echo "no default guest in '$guest'"; exit 1; }
[[ -x $lamina ]] || { echo "--lamina PATH is needed (for lamina disk)"; exit 2; }
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img is not installed"; exit 0; }

work=$(mktemp -d)
log=$work/console.log
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; echo "---- guest console ----"; cat "$log" 2>/dev/null || true; exit 1; }

# disks: "PATH|QEMU_FORMAT|OPTIONS" entries; OPTIONS as `lamina run --disk` takes them
# (readonly, serial=S), translated for QEMU.
disks=()
boot() {  # boot COMMAND: runs the guest with $disks and the command on the kernel line
  local args=() entry path format options option drive device index=0
  for entry in "${disks[@]}"; do
    IFS='|' read -r path format options <<<"$entry"
    if [[ $vmm == lamina ]]; then
      args+=(--disk "$path${options:+,$options}")
    else
      drive="file=$path,format=$format,if=none,id=disk$index,cache=writeback"
      device="virtio-blk-pci,drive=disk$index"
      for option in ${options//,/ }; do
        case $option in
          readonly) drive+=",readonly=on" ;;
          serial=*) device+=",$option" ;;
        esac
      done
      args+=(-drive "$drive" -device "$device")
      index=$((index + 1))
    fi
  done
  local cmdline="console=ttyS0 quiet no_timer_check panic=-1 lamina_run=\"$1\""
  case $vmm in
    lamina) timeout 280 "$lamina" run --cpus 1 --memory 512M --kernel "$guest/vmlinuz" \
              --initrd "$guest/initrd.img" --cmdline "$cmdline" "${args[@]}" ;;
    qemu) timeout 280 qemu-system-x86_64 -accel tcg -m 512 -smp 1 -display none -monitor none \
            -serial stdio -no-reboot -kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" \
            -append "$cmdline" "${args[@]}" ;;
    *) echo "unknown VMM '$vmm'" >&2; exit 2 ;;
  esac </dev/null >"$log" 2>&1 || fail "the VMM did not exit cleanly (status $?)"
  sed -i 's/\r$//' "$log"
  grep -q "^LAMINA-EXIT-STATUS: 0" "$log" || fail "the guest command did not exit 0"
}

# A pattern no block of which repeats (decimal line numbers from a random start), made the
# same way on the host and in the guest (busybox seq): pattern FIRST BYTES.
pattern() { { seq "$1" $(($1 + $2)) || true; } | head -c "$2"; }

case $scenario in
  cli_errors)
    source "$(dirname "${BASH_SOURCE[0]}")/../lib/check.sh"
    truncate -s 1M "$work/disk.raw"
    qemu-img create -q -f qcow2 "$work/disk.qcow2" 1M
    # A kernel that is never booted: every check fails before anything starts.
    kernel=(--kernel "$work/disk.raw")
    set +e  # check() looks at each command's status itself
    check "missing image" 2 "--disk $work/none.vhd: no such file" -- \
      "$lamina" run "${kernel[@]}" --disk "$work/none.vhd"
    check "a folder" 2 "not a regular file" -- "$lamina" run "${kernel[@]}" --disk "$work"
    check "unknown option" 2 "unknown or repeated option 'ro'" -- \
      "$lamina" run "${kernel[@]}" --disk "$work/disk.raw,ro"
    check "serial too long" 2 "at most 20" -- \
      "$lamina" run "${kernel[@]}" --disk "$work/disk.raw,serial=ABCDEFGHIJKLMNOPQRSTU"
    check "qcow2 without readonly" 2 "qcow2 images are read-only in Lamina; add ',readonly'" -- \
      "$lamina" run "${kernel[@]}" --disk "$work/disk.qcow2"
    check "one image twice" 2 "attached twice" -- \
      "$lamina" run "${kernel[@]}" --disk "$work/disk.raw" --disk "$work/disk.raw,readonly"
    # SATA drives and the boot order (src/ahci).
    check "unknown bus" 2 "unknown or repeated option 'bus=ide'" -- \
      "$lamina" run "${kernel[@]}" --disk "$work/disk.raw,bus=ide"
    check "one image on both buses" 2 "attached twice" -- \
      "$lamina" run "${kernel[@]}" --disk "$work/disk.raw" --disk "$work/disk.raw,bus=sata"
    check "missing ISO" 2 "--cdrom: '$work/none.iso' is not a file" -- \
      "$lamina" run --cdrom "$work/none.iso"
    check "bad --boot" 2 "--boot: 'floppy' is not" -- "$lamina" run --cdrom "$work/disk.raw" --boot floppy
    check "--boot without firmware" 2 "--boot orders what the BIOS boots" -- \
      "$lamina" run "${kernel[@]}" --boot cdrom
    check "seven SATA drives" 2 "6 ports" -- "$lamina" run --cdrom "$work/disk.raw" \
      $(for i in 1 2 3 4 5 6; do echo --disk "$work/disk.raw,bus=sata,readonly"; done)
    [[ $failures -eq 0 ]] || exit 1
    ;;
  vhd_pattern)
    "$lamina" disk create --size 64M "$work/disk.vhd" >/dev/null
    first=$((RANDOM * 7 + 1000)) bytes=$((3 * 1024 * 1024)) sector=4000
    serial="LT-$RANDOM-$RANDOM"
    disks=("$work/disk.vhd|vpc|serial=$serial")
    # Sector 4000 + 3 MiB crosses the 2 MiB VHD block boundary at sector 4096.
    boot "seq $first $((first + bytes)) | head -c $bytes > /tmp/p && dd if=/tmp/p of=/dev/vda bs=512 seek=$sector conv=fsync 2>/dev/null && sync && echo guest-wrote-pattern; echo serial=\$(cat /sys/block/vda/serial)"
    grep -q "guest-wrote-pattern" "$log" || fail "the guest could not write /dev/vda"
    grep -qx "serial=$serial" "$log" || fail "the guest did not see serial $serial"
    pattern "$first" "$bytes" >"$work/expected"
    "$lamina" disk convert --format raw "$work/disk.vhd" "$work/lamina.raw" >/dev/null ||
      fail "lamina disk convert failed"
    qemu-img convert -f vpc -O raw "$work/disk.vhd" "$work/qemu.raw" || fail "qemu-img convert failed"
    for reader in lamina qemu; do
      dd if="$work/$reader.raw" bs=512 skip=$sector count=$((bytes / 512)) status=none |
        cmp -s - "$work/expected" || fail "$reader reads other bytes than the guest wrote"
      # Nothing outside the written range.
      [[ $(head -c $((sector * 512)) "$work/$reader.raw" | tr -d '\0' | wc -c) -eq 0 ]] ||
        fail "$reader finds data before the written range"
    done
    [[ $(stat -c %s "$work/lamina.raw") -eq $((64 * 1024 * 1024)) ]] || fail "wrong virtual size"
    ;;
  readonly)
    pattern 5000 $((1024 * 1024)) >"$work/source.raw"
    truncate -s 8M "$work/source.raw"
    "$lamina" disk convert "$work/source.raw" "$work/disk.vhd" >/dev/null
    before=$(sha256sum <"$work/disk.vhd")
    disks=("$work/disk.vhd|vpc|readonly")
    boot "echo ro=\$(cat /sys/block/vda/ro); if dd if=/dev/zero of=/dev/vda bs=512 count=1 conv=fsync 2>/dev/null; then echo write-accepted; else echo write-refused; fi; echo head=\$(dd if=/dev/vda bs=4096 count=256 2>/dev/null | md5sum | cut -d' ' -f1)"
    grep -qx "ro=1" "$log" || fail "/sys/block/vda/ro is not 1"
    grep -qx "write-refused" "$log" || fail "a write to the read-only disk did not fail"
    grep -qx "head=$(head -c $((1024 * 1024)) "$work/source.raw" | md5sum | cut -d' ' -f1)" "$log" ||
      fail "the guest read other bytes from the read-only disk"
    [[ $(sha256sum <"$work/disk.vhd") == "$before" ]] || fail "the read-only image changed"
    ;;
  formats)
    pattern 777 $((2 * 1024 * 1024)) >"$work/source.raw"
    truncate -s 16M "$work/source.raw"
    qemu-img convert -f raw -O qcow2 "$work/source.raw" "$work/disk.qcow2"
    qemu-img convert -f raw -O vhdx "$work/source.raw" "$work/disk.vhdx"
    disks=("$work/disk.qcow2|qcow2|readonly,serial=QCOW2-DISK" "$work/disk.vhdx|vhdx|serial=VHDX-DISK")
    boot "for d in /sys/block/vd*; do echo disk-\$(cat \$d/serial)=\$(dd if=/dev/\${d##*/} bs=4096 count=512 2>/dev/null | md5sum | cut -d' ' -f1); done"
    expected=$(head -c $((2 * 1024 * 1024)) "$work/source.raw" | md5sum | cut -d' ' -f1)
    grep -qx "disk-QCOW2-DISK=$expected" "$log" || fail "the qcow2 disk reads wrong in the guest"
    grep -qx "disk-VHDX-DISK=$expected" "$log" || fail "the VHDX disk reads wrong in the guest"
    ;;
  discard)
    "$lamina" disk create --size 8M "$work/disk.vhd" >/dev/null
    disks=("$work/disk.vhd|vpc|")
    boot "seq 1 1000000 | head -c 4194304 > /tmp/p && dd if=/tmp/p of=/dev/vda bs=1M conv=fsync 2>/dev/null && echo filled && echo discard-max=\$(cat /sys/block/vda/queue/discard_max_bytes) && blkdiscard /dev/vda && sync && echo discarded"
    grep -qx "filled" "$log" || fail "the guest could not fill the disk"
    grep -qx "discarded" "$log" || fail "blkdiscard failed in the guest"
    grep -q "^discard-max=[1-9]" "$log" || fail "the disk does not advertise discard"
    if [[ $vmm == qemu ]]; then
      # QEMU's vpc driver ignores discards, so its image keeps the blocks (the check below
      # fails there, which shows it can).
      echo "ok: discard on qemu (guest side only)"
      exit 0
    fi
    # Every block is unallocated again (the BAT says so; qemu's reader of it agrees), and the
    # whole disk reads as zeros.
    qemu-img map -f vpc --output=json "$work/disk.vhd" >"$work/map.json"
    if grep -q '"data": true' "$work/map.json"; then fail "blocks still allocated: $(cat "$work/map.json")"; fi
    "$lamina" disk convert --format raw "$work/disk.vhd" "$work/after.raw" >/dev/null
    [[ $(tr -d '\0' <"$work/after.raw" | wc -c) -eq 0 ]] || fail "discarded data still reads back"
    ;;
  *) echo "unknown scenario '$scenario'" >&2; exit 2 ;;
esac
echo "ok: $scenario on $vmm"
