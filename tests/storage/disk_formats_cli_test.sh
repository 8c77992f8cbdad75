#!/usr/bin/env bash
# `lamina disk` with every format of the format table, checked against qemu-img: VMDK and qcow2
# images qemu-img makes convert to identical bytes; VHDX that Lamina makes passes qemu-img check
# and compares identical; `info` detects each format from content, not the file name.
set -euo pipefail
lamina=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# 48 MiB with random data in the first 6 MiB and at the end, holes between.
head -c 6M /dev/urandom > source.raw
truncate -s 47M source.raw
head -c 1M /dev/urandom >> source.raw

qemu-img convert -f raw -O vmdk -o subformat=streamOptimized source.raw stream.img
qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse source.raw sparse.img
qemu-img convert -f raw -O qcow2 -c source.raw compressed.img
for image in stream sparse compressed; do
  "$lamina" disk convert "$image.img" "$image.out" --format raw
  cmp -s "$image.out" source.raw || fail "$image: converted bytes differ from the source"
done
"$lamina" disk info stream.img | grep -q '^format: vmdk' || fail "VMDK not detected from content"
"$lamina" disk info compressed.img | grep -q '^format: qcow2' || fail "qcow2 not detected"

for type in dynamic fixed; do
  "$lamina" disk convert source.raw "$type.vhdx" --format vhdx --type "$type"
  qemu-img check -f vhdx "$type.vhdx" >/dev/null || fail "qemu-img check rejects $type VHDX"
  qemu-img compare -f raw -F vhdx source.raw "$type.vhdx" >/dev/null ||
    fail "$type VHDX content differs in qemu-img"
  "$lamina" disk info "$type.vhdx" | grep -q '^format: vhdx' || fail "VHDX not detected"
done
"$lamina" disk create empty.vhdx --format vhdx --size 1G
[[ $(qemu-img info -f vhdx --output=json empty.vhdx | grep -o '"virtual-size": [0-9]*') == \
   '"virtual-size": 1073741824' ]] || fail "qemu-img reports another size for a 1G VHDX"

if [[ $failures -gt 0 ]]; then exit 1; fi
echo "ok: vmdk, qcow2 and vhdx through lamina disk"
