#pragma once
// Small qcow2 and VMDK images built byte by byte from the format specifications, with the
// content a reader must return, so the readers are tested without qemu-img and the
// robustness test has valid seeds to mutate.

#include <cstddef>
#include <vector>

namespace lamina::storage::testing {

struct BuiltImage {
  std::vector<std::byte> file;      // the image file's bytes
  std::vector<std::byte> expected;  // the virtual disk's bytes
};

// qcow2 (version 2 or 3), 512-byte clusters, 64 KiB virtual: two L2 tables, plain data
// clusters, a compressed cluster, and (v3) a zero-flagged cluster over nothing.
BuiltImage build_qcow2(int version);

// A monolithic sparse VMDK ("KDMV", 4 KiB grains, 64 KiB virtual) with an embedded
// descriptor; `stream_optimized` writes deflate grains with markers and the directory in a
// footer (GD_AT_END).
BuiltImage build_vmdk_sparse(bool stream_optimized);

}  // namespace lamina::storage::testing
