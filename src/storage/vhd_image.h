#pragma once
// VhdImage: a VHD file (fixed, dynamic or differencing) as a BlockDevice. A differencing disk
// owns its parent (opened read-only, found through the parent locators, its unique id checked)
// and so, recursively, the whole chain.
//
// Crash consistency (design.md): a new block is laid out as footer-at-new-end, fdatasync, then
// bitmap and data, fdatasync, then the BAT entry; so after a power cut at any point the file
// ends with a valid footer and the BAT never points at unwritten data (vhd_power_loss_test
// replays every cut). flush() is fdatasync. Options::durable = false drops the
// per-allocation fdatasync for files being staged under a temporary name (convert, compact).
//
// Ownership: owns its file and its parent chain. Thread-safety: one thread at a time.

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "storage/block_device.h"
#include "storage/host_file.h"
#include "storage/image_reference_policy.h"
#include "storage/vhd_format.h"
#include "storage/write_behind.h"

namespace lamina::storage {

class VhdImage final : public BlockDevice {
 public:
  struct Options {
    bool writable = false;
    bool durable = true;
    bool open_parent = true;  // false: a differencing disk reads unallocated data as zeros
    // Locking and the reference policy the parent locators are resolved under.
    ImageAccess access;
  };
  using Identity = std::pair<uint64_t, uint64_t>;

  static Result<std::unique_ptr<VhdImage>> open(const std::string& path, Options options);
  // Opens one link of a chain; `seen` holds the files already in it (parent loop detection).
  static Result<std::unique_ptr<VhdImage>> open_link(const std::string& path, Options options,
                                                     std::set<Identity>& seen);

  uint64_t size() const override { return footer_.current_size / kSectorSize * kSectorSize; }
  bool read_only() const override { return !file_.writable(); }
  Result<void> read(uint64_t offset, std::span<std::byte> data) override;
  // One preadv per block whose sectors are all present here; read_block per piece elsewhere
  // (read() is this with one buffer).
  Result<void> read_scattered(uint64_t offset, ScatterList buffers) override;
  Result<void> write(uint64_t offset, std::span<const std::byte> data) override;
  Result<void> flush() override;
  Result<void> set_write_lock(bool locked) override { return file_.set_locked(locked); }
  Result<void> discard(uint64_t offset, uint64_t length) override;
  // Fixed: a hole or a zeroed range in the file. Dynamic: whole blocks become unallocated when
  // may_unmap, other allocated ranges are zeroed in the file (unallocated ones already read as
  // zeros). Differencing: zeros are written, since they must hide the parent's data.
  Result<void> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) override;
  Result<Extent> map_extent(uint64_t offset, uint64_t max_length) override;

  const std::string& path() const { return file_.path(); }
  // The image's file, for in-place maintenance (resize) that rewrites metadata under the lock
  // this image holds; the image must not be used for I/O afterwards.
  HostFile& file() { return file_; }
  const vhd::Footer& footer() const { return footer_; }
  // Present for dynamic and differencing disks.
  const std::optional<vhd::DynamicHeader>& dynamic_header() const { return header_; }
  const std::vector<uint32_t>& bat() const { return bat_; }
  VhdImage* parent() const { return parent_.get(); }
  const std::string& parent_path() const { return parent_path_; }
  uint64_t file_size() const { return footer_offset_ + vhd::kFooterSize; }
  uint64_t block_size() const { return header_ ? header_->block_size : 0; }
  // Notes about what open() tolerated (e.g. a damaged trailing footer), for `info`.
  const std::vector<std::string>& warnings() const { return warnings_; }

  // Sector runs [first, first + count) (in sectors, disk-relative) that this file itself holds
  // in block `block` (for merge and compact). Empty for unallocated blocks.
  Result<std::vector<std::pair<uint64_t, uint64_t>>> own_sector_runs(uint32_t block);

 private:
  VhdImage() = default;
  Result<void> load(Options options, std::set<Identity>& seen);
  Result<void> read_block(uint32_t block, uint64_t in_block, std::span<std::byte> data);
  Result<void> write_block(uint32_t block, uint64_t in_block, std::span<const std::byte> data);
  Result<void> allocate_block(uint32_t block, uint64_t in_block, std::span<const std::byte> data);
  // Makes a dynamic disk's block unallocated (reads as zeros) and frees its host space.
  Result<void> unallocate_block(uint32_t block);
  Result<std::vector<std::byte>> read_bitmap(uint32_t block);
  Result<void> read_beneath(uint64_t offset, std::span<std::byte> data);
  Result<void> check_range(uint64_t offset, uint64_t length, bool for_write) const;
  bool differencing() const { return footer_.disk_type == vhd::DiskType::kDifferencing; }

  HostFile file_;
  vhd::Footer footer_;
  std::optional<vhd::DynamicHeader> header_;
  std::vector<uint32_t> bat_;
  // Per BAT entry: 0 bitmap not read yet, 1 every sector present, 2 some sectors absent.
  std::vector<uint8_t> bitmap_state_;
  std::vector<std::span<std::byte>> scattered_pieces_;  // read_scattered's, reused
  uint64_t bitmap_size_ = 0;
  uint64_t footer_offset_ = 0;  // where the trailing footer is; new blocks go here
  bool durable_ = true;
  std::unique_ptr<VhdImage> parent_;
  std::string parent_path_;
  std::vector<std::string> warnings_;
  // Staged (not durable) writable images start writeback in the background; after file_.
  std::unique_ptr<WriteBehind> write_behind_;
};

// Where a differencing disk's parent may be: the W2ru (relative) and W2ku (absolute) parent
// locators, then the parent's name beside the child, each resolved under `policy`. Returns the
// allowed candidates that exist; `refused` collects why the others were not taken.
std::vector<std::string> parent_candidates(const HostFile& child, const vhd::DynamicHeader& header,
                                           const ReferencePolicy& policy,
                                           std::vector<std::string>& refused);

}  // namespace lamina::storage
