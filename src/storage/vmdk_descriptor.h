#pragma once
// The VMDK text descriptor (VMware "Virtual Disk Format 1.1", section "The Descriptor File"):
// key=value lines (createType, CID, parentCID, parentFileNameHint) and extent lines
// `ACCESS SECTORS TYPE "FILE" [OFFSET]`. Parsing only; opening extents is vmdk_image's job.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace lamina::storage {

enum class VmdkExtentType { kSparse, kFlat, kZero };

struct VmdkExtentLine {
  bool writable = true;  // RW (true) or RDONLY (false)
  uint64_t sectors = 0;  // size in 512-byte sectors
  VmdkExtentType type = VmdkExtentType::kFlat;
  std::string file;             // relative to the descriptor's folder unless absolute
  uint64_t offset_sectors = 0;  // FLAT only: where the extent starts in its file
};

struct VmdkDescriptor {
  std::string create_type;  // e.g. "monolithicSparse", "twoGbMaxExtentFlat"
  std::string parent_file_name_hint;
  bool has_parent = false;  // parentCID other than ffffffff
  std::vector<VmdkExtentLine> extents;
};

// Descriptor texts and extent counts beyond these are refused (no writer comes near them).
inline constexpr size_t kMaxVmdkDescriptorBytes = 1u << 20;
inline constexpr size_t kMaxVmdkExtents = 4096;

// Parses descriptor text; `file_name` names the file in errors.
Result<VmdkDescriptor> parse_vmdk_descriptor(std::string_view text, std::string_view file_name);

}  // namespace lamina::storage
