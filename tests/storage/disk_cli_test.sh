#!/usr/bin/env bash
# Drives `lamina disk` from the outside: exit statuses, messages naming the problem and the
# file, --force, --json, and that failed commands leave nothing behind.
set -u
lamina=$(realpath "$1")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
source "$(dirname "${BASH_SOURCE[0]}")/../lib/check.sh"

flip_byte() {  # flip_byte FILE OFFSET
  local byte
  byte=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $(((byte + 1) % 256)))" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}

check "disk needs a subcommand" 2 'subcommand' -- "$lamina" disk
check "create dynamic" 0 'created d.vhd' -- "$lamina" disk create d.vhd --size 100M
check "info --json has the exact size" 0 '"virtual_size": 104857600' -- "$lamina" disk info --json d.vhd
check "info names the type" 0 'type: dynamic' -- "$lamina" disk info d.vhd
check "create refuses an existing file" 1 'd.vhd already exists.*--force' -- "$lamina" disk create d.vhd --size 1M
check "create --force replaces it" 0 'created' -- "$lamina" disk create d.vhd --size 2M --force
check "size over the VHD maximum" 1 '2040 GiB' -- "$lamina" disk create big.vhd --size 2041G
check "bad size" 1 "invalid size '10Q'" -- "$lamina" disk create x.vhd --size 10Q
check "unknown type is a usage error" 2 'sparse' -- "$lamina" disk create x.vhd --size 1M --type sparse
check "missing --size" 1 '--size is required' -- "$lamina" disk create x.vhd
check "block size must be a power of two" 1 'power of two' -- "$lamina" disk create x.vhd --size 4M --block-size 3M
check "--parent excludes --size" 1 '--size does not go with --parent' -- "$lamina" disk create c.vhd --parent d.vhd --size 1M
check "differencing over a missing parent" 1 'nothing.vhd' -- "$lamina" disk create c.vhd --parent nothing.vhd
check "differencing disk" 0 'differencing' -- "$lamina" disk create c.vhd --parent d.vhd
check "info shows the chain" 0 'backing file' -- "$lamina" disk info c.vhd
check "azure fixed disk" 0 'fixed' -- "$lamina" disk create a.vhd --size 1000K --azure
check "azure size is whole MiB" 0 '"virtual_size": 1048576' -- "$lamina" disk info --json a.vhd

head -c 3000000 /dev/urandom > in.raw
check "convert raw to vhd" 0 '' -- "$lamina" disk convert in.raw out.vhd
check "convert back to raw" 0 '' -- "$lamina" disk convert out.vhd back.raw --format raw
if cmp -s <(head -c 3000000 back.raw) in.raw; then echo "ok: round trip keeps the bytes"
else echo "FAIL: round trip changed the bytes"; failures=$((failures + 1)); fi
check "convert missing source" 1 'missing.raw' -- "$lamina" disk convert missing.raw new.vhd
cp out.vhd keep.vhd
check "convert refuses an existing destination" 1 'already exists.*--force' -- "$lamina" disk convert in.raw out.vhd
if cmp -s out.vhd keep.vhd; then echo "ok: refused convert left the destination alone"
else echo "FAIL: refused convert changed the destination"; failures=$((failures + 1)); fi
check "convert stderr is quiet when not a terminal" 0 '^$' -- "$lamina" disk convert in.raw quiet.vhd --force

check "check a clean image" 0 'no errors' -- "$lamina" disk check out.vhd
size=$(stat -c %s out.vhd)
flip_byte out.vhd $((size - 512 + 70))
check "check finds a damaged footer" 2 'footer at the end' -- "$lamina" disk check out.vhd
check "check --json says not clean" 2 '"clean": false' -- "$lamina" disk check --json out.vhd
check "check --repair fixes it" 0 'repaired' -- "$lamina" disk check --repair out.vhd
check "clean after repair" 0 'no errors' -- "$lamina" disk check out.vhd
flip_byte out.vhd 70
flip_byte out.vhd $((size - 512 + 70))
check "info on a corrupt image names the problem and file" 1 'out.vhd.*checksum' -- "$lamina" disk info out.vhd
check "check on an unreadable footer" 2 'checksum' -- "$lamina" disk check --repair out.vhd

check "resize refuses to shrink without --shrink" 1 '--shrink' -- "$lamina" disk resize d.vhd 1M
check "resize grows" 0 '' -- "$lamina" disk resize d.vhd 10M
check "resized size" 0 '"virtual_size": 10485760' -- "$lamina" disk info --json d.vhd
check "merge needs a differencing disk" 1 'not a differencing disk' -- "$lamina" disk merge keep.vhd
check "compact needs a dynamic VHD" 1 'compact works on' -- "$lamina" disk compact in.raw
check "compact" 0 'bytes' -- "$lamina" disk compact keep.vhd

# VHDX: differencing create, resize, compact and merge through the command line.
check "create vhdx" 0 'created v.vhdx \(vhdx dynamic' -- "$lamina" disk create v.vhdx --size 8M --format vhdx --block-size 1M
check "differencing vhdx takes the parent's format" 0 'vhdx differencing' -- "$lamina" disk create vc.vhdx --parent v.vhdx
check "info shows the vhdx chain" 0 'type: differencing' -- "$lamina" disk info vc.vhdx
check "a differencing vhd needs a vhd parent" 1 'v.vhdx is a vhdx image.*chains do not mix' -- "$lamina" disk create x.vhd --format vhd --parent v.vhdx
check "no differencing disk over raw" 1 'VHD or VHDX parent' -- "$lamina" disk create x.vhd --parent in.raw
check "differencing vhdx refuses an existing file" 1 'already exists.*--force' -- "$lamina" disk create vc.vhdx --parent v.vhdx
check "differencing vhdx refuses a resize" 1 'keeps its parent.s size' -- "$lamina" disk resize vc.vhdx 16M
check "merge an empty vhdx child" 0 'merged 0 bytes' -- "$lamina" disk merge vc.vhdx
check "vhdx child still opens after merge" 0 'type: differencing' -- "$lamina" disk info vc.vhdx
check "compact vhdx" 0 'bytes' -- "$lamina" disk compact v.vhdx
check "vhdx resize refuses to shrink without --shrink" 1 '--shrink' -- "$lamina" disk resize v.vhdx 4M
check "vhdx resize grows" 0 '' -- "$lamina" disk resize v.vhdx 12M
check "vhdx resized size" 0 '"virtual_size": 12582912' -- "$lamina" disk info --json v.vhdx
check "vhdx resize shrinks with --shrink" 0 '' -- "$lamina" disk resize v.vhdx 6M --shrink
check "vhdx new size must be whole sectors" 1 'multiple' -- "$lamina" disk resize v.vhdx 6000001
check "fixed vhdx is not compacted" 1 'fixed' -- bash -c "'$lamina' disk create f.vhdx --size 4M --format vhdx --type fixed >/dev/null && '$lamina' disk compact f.vhdx"


# The image reference policy: parents and backing files stay in the image's folder unless the
# user allows more; what an image names is never read otherwise, and never printed.
mkdir -p policy/sub
"$lamina" disk create policy/base.vhd --size 4M >/dev/null
check "create --parent in another folder" 0 'differencing' -- \
  "$lamina" disk create policy/sub/child.vhd --parent policy/base.vhd
check "info refuses a parent outside the folder" 1 "parent '.*base.vhd' lies outside the image's folder.*--allow-parent-dir" -- \
  "$lamina" disk info policy/sub/child.vhd
check "info --allow-parent-dir" 0 'backing file' -- "$lamina" disk info --allow-parent-dir policy/sub/child.vhd
check "info --allow-reference-dir" 0 'backing file' -- \
  "$lamina" disk info --allow-reference-dir "$work/policy" policy/sub/child.vhd
check "check --allow-parent-dir" 0 'no errors' -- "$lamina" disk check --allow-parent-dir policy/sub/child.vhd
# lamina run --disk: the same policy, allowed per disk; the "kernel" (this script) then fails.
check "run --disk refuses a parent outside the folder" 1 "parent '../base.vhd' lies outside" -- \
  "$lamina" run --kernel "$here/disk_cli_test.sh" --serial none --disk policy/sub/child.vhd
check "run --disk ...,allow-parent-dir opens it" 1 'HdrS' -- \
  "$lamina" run --kernel "$here/disk_cli_test.sh" --serial none --disk policy/sub/child.vhd,allow-parent-dir
check "run --disk ...,allow-dir=DIR opens it" 1 'HdrS' -- \
  "$lamina" run --kernel "$here/disk_cli_test.sh" --serial none --disk "policy/sub/child.vhd,allow-dir=$work/policy"
check "merge refuses a parent outside the folder" 1 'outside the image' -- \
  "$lamina" disk merge policy/sub/child.vhd
check "merge --allow-parent-dir" 0 'merged' -- "$lamina" disk merge --allow-parent-dir policy/sub/child.vhd
check "compact --allow-parent-dir" 0 'bytes' -- "$lamina" disk compact --allow-parent-dir policy/sub/child.vhd
check "resize has no --force-share" 2 'force-share' -- "$lamina" disk resize --force-share policy/base.vhd 8M
if command -v qemu-img >/dev/null; then
  qemu-img create -q -f qcow2 -u -b /etc/passwd -F raw policy/passwd.qcow2 1M
  check "convert of a qcow2 over /etc/passwd is refused" 1 "backing file '/etc/passwd' lies outside" -- \
    "$lamina" disk convert --format raw policy/passwd.qcow2 policy/out.raw
  [[ -e policy/out.raw ]] && { echo "FAIL: a refused convert left output"; failures=$((failures + 1)); }
  mkfifo policy/pipe
  qemu-img create -q -f qcow2 -u -b pipe -F raw policy/fifo.qcow2 1M
  check "a FIFO backing file is refused, not waited on" 1 'not a regular file' -- \
    timeout 20 "$lamina" disk info policy/fifo.qcow2
  qemu-img create -q -f qcow2 -u -b base.vhd policy/unnamed.qcow2 1M 2>/dev/null ||
    qemu-img create -q -f qcow2 -u -b base.vhd -F vpc policy/unnamed.qcow2 1M
  if qemu-img info policy/unnamed.qcow2 2>/dev/null | grep -q 'backing file format'; then :; else
    check "a backing file of unrecorded format is not probed" 1 'does not guess' -- \
      "$lamina" disk convert policy/unnamed.qcow2 policy/out.vhd
  fi
fi
rm -rf policy

leftovers=$(ls -A | grep -c 'lamina-')
if [[ $leftovers -eq 0 ]]; then echo "ok: no temporary files left"
else echo "FAIL: temporary files left behind"; ls -A; failures=$((failures + 1)); fi

exit $((failures > 0))
