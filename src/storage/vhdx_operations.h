#pragma once
// The VHDX side of `lamina disk resize`, `compact`, `merge` and `create --parent` (internal:
// image_operations.cc and image_resize.cc dispatch here by detected format).
//
// Every one either rewrites through a StagedFile (nothing half-written) or changes the file in
// an order where a crash leaves it readable with the old or the new content:
// - resize: in place through the log when the BAT region has room (grow: new entries, then the
//   size; shrink: the size, then the entries), else a staged rewrite with a larger BAT.
// - compact: a staged rewrite holding only non-zero data (differencing: the file's own
//   sectors), keeping VirtualDiskId and DataWriteGuid so children still link to it.
// - merge: (1) the child is rewritten to also accept the parent's future DataWriteGuid
//   (parent_linkage2), (2) the child's sectors are written into the parent under that guid,
//   (3) the child becomes an empty differencing disk over the updated parent. After a crash at
//   any point the child opens and reads the same data; merging again finishes the job.
//
// Thread-safety: one operation at a time per file.

#include <cstdint>
#include <string>
#include <utility>

#include "storage/image_operations.h"

namespace lamina::storage {

// access: the reference policy the parents are found under (image_reference_policy.h).
Result<void> resize_vhdx(const std::string& path, uint64_t new_size, bool allow_shrink,
                         const Progress& progress, const ImageAccess& access = {});
Result<std::pair<uint64_t, uint64_t>> compact_vhdx(const std::string& path,
                                                   const Progress& progress,
                                                   const ImageAccess& access = {});
Result<uint64_t> merge_vhdx(const std::string& child, const Progress& progress,
                            const ImageAccess& access = {});
// A staged create_vhdx_differencing (refuses an existing path unless overwrite).
Result<void> create_vhdx_child(const std::string& path, const std::string& parent, bool overwrite);

}  // namespace lamina::storage
