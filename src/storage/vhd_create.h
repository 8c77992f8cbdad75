#pragma once
// Writing new VHD files: fixed, dynamic and differencing layouts (VHD spec sections "Hard Disk
// Footer Format", "Dynamic Disk Header Format", "Block Allocation Table").
//
// The creator application is "win ": qemu (block/vpc.c) trusts current_size only for creator
// apps it knows write it exactly ("win ", "qem2", "d2v ", "CTXS", "tap"), and otherwise derives
// the size from the CHS geometry, which would turn a requested 100 MiB into 100.0078 MiB. Lamina
// writes current_size exactly as Hyper-V does, so it says so the way Hyper-V does.

#include <optional>
#include <string>

#include "storage/host_file.h"
#include "storage/vhd_format.h"

namespace lamina::storage::vhd {

inline constexpr std::array<char, 4> kCreatorApplication = {'w', 'i', 'n', ' '};
// Lamina 0.1 as major << 16 | minor (spec: "Creator Version").
inline constexpr uint32_t kCreatorVersion = 0x00000001;
inline constexpr uint32_t kCreatorHostWindows = 0x5769326b;  // "Wi2k"

struct ParentLink {
  std::string path;  // the parent file, as the user named it
  Uuid unique_id{};
  uint32_t time_stamp = 0;  // parent's modification time, VHD epoch
};

struct CreateSpec {
  DiskType type = DiskType::kDynamic;
  uint64_t size = 0;
  uint32_t block_size = kDefaultBlockSize;
  std::optional<Uuid> unique_id;    // kept by compact and resize; fresh otherwise
  std::optional<ParentLink> parent;  // differencing disks only
};

// Checks size and block size against the format (multiple of 512, at most 2040 GiB, block size
// a power of two); the message names the bad value.
Result<void> validate_create(const CreateSpec& spec);

// Writes a complete empty image into `file`, which must be empty.
Result<void> write_new_image(HostFile& file, const CreateSpec& spec);

// The parent link Hyper-V would record for `parent_path` (its unique id and time stamp).
Result<ParentLink> link_to_parent(const std::string& parent_path);

}  // namespace lamina::storage::vhd
