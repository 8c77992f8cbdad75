#!/usr/bin/env bash
# Image locking from the outside, for every format and every `lamina disk` verb and
# `lamina run --disk`: another process holds the image (util-linux flock(1) takes the same
# flock(2) locks Lamina does), exclusively as a writer would or shared as a reader would.
# A verb that would conflict must refuse with a message naming why; --force-share lets the
# read-only verbs through.
#   disk_locking_cli_test.sh LAMINA
set -u
lamina=$(realpath "$1")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
holder=
cleanup() {
  [[ -n $holder ]] && kill "$holder" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work" || exit 1
source "$here/../lib/check.sh"

# hold MODE FILE: keeps a flock (-x or -s) on FILE in a background process until release.
hold() {
  # The subshell becomes the sleep that holds the lock, so killing $! releases it.
  (exec 9<"$2" && flock "$1" 9 && echo held >"$work/held" && exec sleep 600) &
  holder=$!
  for _ in $(seq 100); do [[ -s $work/held ]] && return; sleep 0.05; done
  echo "FAIL: flock never took the lock on $2"; failures=$((failures + 1))
}
release() {
  kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
  holder=
  rm -f "$work/held"
}

writer='in use by another process \(locked for writing\)'
reader='in use by another process \(locked for reading'

"$lamina" disk create d.vhd --size 8M >/dev/null
"$lamina" disk create d.vhdx --format vhdx --size 8M >/dev/null
"$lamina" disk create d.raw --format raw --size 8M >/dev/null
cp d.raw d.raw.copy
images=(d.vhd d.vhdx d.raw)
if command -v qemu-img >/dev/null; then
  qemu-img create -q -f qcow2 d.qcow2 8M
  qemu-img create -q -f vmdk d.vmdk 8M
  images+=(d.qcow2 d.vmdk)
fi

for image in "${images[@]}"; do
  # A writer holds it: nothing else may open it, except read-only inspection with --force-share.
  hold -x "$image"
  check "$image: info refused while a writer holds it" 1 "$writer.*--force-share" -- \
    "$lamina" disk info "$image"
  check "$image: info --force-share reads it anyway" 0 "virtual size" -- \
    "$lamina" disk info --force-share "$image"
  check "$image: check refused" 1 "$writer" -- "$lamina" disk check "$image"
  check "$image: check --force-share" 0 "" -- "$lamina" disk check --force-share "$image"
  check "$image: check --repair refuses --force-share" 1 "force-share is for reading" -- \
    "$lamina" disk check --repair --force-share "$image"
  check "$image: convert refused" 1 "$writer" -- "$lamina" disk convert "$image" out.vhd
  check "$image: convert --force-share" 0 "" -- "$lamina" disk convert --force-share "$image" out.vhd
  rm -f out.vhd
  check "$image: resize refused" 1 "$writer|can only|not supported" -- "$lamina" disk resize "$image" 16M
  check "$image: compact refused" 1 "$writer|only" -- "$lamina" disk compact "$image"
  check "$image: convert onto it refused" 1 "$writer" -- \
    "$lamina" disk convert --format raw d.raw.copy "$image" --force 2>/dev/null
  check "$image: run --disk refused" 2 "$writer" -- \
    "$lamina" run --kernel "$here/disk_locking_cli_test.sh" --serial none --disk "$image,readonly"
  release
  # A reader holds it (a VM's read-only disk, the parent of a differencing disk): other
  # readers share it, writers are refused.
  hold -s "$image"
  check "$image: info while a reader holds it" 0 "virtual size" -- "$lamina" disk info "$image"
  check "$image: convert while a reader holds it" 0 "" -- "$lamina" disk convert "$image" out.vhd
  rm -f out.vhd
  check "$image: resize refused while read" 1 "$reader|can only|not supported" -- \
    "$lamina" disk resize "$image" 16M
  check "$image: check --repair refused while read" 1 "$reader" -- \
    "$lamina" disk check --repair "$image"
  check "$image: replacing it with convert --force refused" 1 "$reader" -- \
    "$lamina" disk convert --format raw d.raw "$image" --force
  release
done

# Chains: a VM writing the parent blocks the child's readers; a reader of the parent (another
# child's VM) blocks merge, which writes the parent.
"$lamina" disk create c.vhd --parent d.vhd >/dev/null
"$lamina" disk create c.vhdx --parent d.vhdx >/dev/null
for format in vhd vhdx; do
  hold -x "d.$format"
  check "c.$format: info refused while its parent is written" 1 "d.$format is $writer" -- \
    "$lamina" disk info "c.$format"
  check "c.$format: a new child of a written parent refused" 1 "$writer" -- \
    "$lamina" disk create e.$format --parent "d.$format"
  release
  hold -s "d.$format"
  check "c.$format: merge refused while the parent is read" 1 "d.$format is $reader" -- \
    "$lamina" disk merge "c.$format"
  release
  hold -x "c.$format"
  check "c.$format: merge refused while the child is written" 1 "$writer" -- \
    "$lamina" disk merge "c.$format"
  release
  check "c.$format: merge once nobody holds them" 0 "merged" -- "$lamina" disk merge "c.$format"
done
exit $((failures > 0))
