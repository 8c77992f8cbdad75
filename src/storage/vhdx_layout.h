#pragma once
// The parsed, validated structure of one VHDX file (internal to the VHDX reader and writer):
// which header is current, where the regions are, the metadata items and the BAT geometry.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"
#include "storage/host_file.h"
#include "storage/vhdx_format.h"
#include "storage/vhdx_log.h"

namespace lamina::storage::vhdx {

struct Layout {
  Header header;
  int header_slot = 0;  // which of the two header copies is current
  uint64_t bat_offset = 0;
  uint64_t bat_length = 0;
  uint64_t metadata_offset = 0;
  uint64_t metadata_length = 0;
  uint32_t block_size = 0;
  uint32_t logical_sector_size = 0;
  uint32_t physical_sector_size = 0;
  uint64_t virtual_size = 0;
  uint64_t virtual_size_item = 0;  // file offset of the VirtualDiskSize item (resize rewrites it)
  bool leave_block_allocated = false;
  bool has_parent = false;
  Guid virtual_disk_id;
  uint64_t chunk_ratio = 0;  // payload blocks per sector bitmap block (2.4)
  uint64_t data_blocks = 0;
  uint64_t bat_entries = 0;
  std::vector<std::pair<std::string, std::string>> parent_locator;  // key, value

  uint64_t payload_index(uint64_t block) const { return block + block / chunk_ratio; }
  uint64_t bitmap_index(uint64_t chunk) const { return chunk * (chunk_ratio + 1) + chunk_ratio; }
  std::string locator(std::string_view key) const;
};

// Reads file bytes through an optional in-memory log replay (read-only opens).
class FileView {
 public:
  FileView(const HostFile& file, const LogOverlay* overlay) : file_(file), overlay_(overlay) {}
  uint64_t size() const { return overlay_ ? overlay_->logical_size(file_.size()) : file_.size(); }
  bool contains(uint64_t offset, uint64_t length) const {
    return offset <= size() && length <= size() - offset;
  }
  Result<void> read(uint64_t offset, std::span<std::byte> data, std::string_view what) const;
  const HostFile& file() const { return file_; }

 private:
  const HostFile& file_;
  const LogOverlay* overlay_;
};

// Parses headers, regions, metadata and the BAT; every offset is checked against the file and
// against the other structures. Returns the layout and the BAT entries.
struct ParsedImage {
  Layout layout;
  std::vector<uint64_t> bat;
};
Result<Header> read_current_header(const HostFile& file, int& slot);
Result<ParsedImage> parse_image(const FileView& view, const Header& header, int header_slot);

}  // namespace lamina::storage::vhdx
