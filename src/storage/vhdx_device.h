#pragma once
// VhdxDevice: one open VHDX file as a BlockDevice (internal; open_vhdx in vhdx_image.h makes
// it). Reads and writes fixed, dynamic and differencing disks.
//
// Ownership: owns the file, the in-memory log replay (read-only opens with a pending log),
// the BAT copy and the parent device. Thread-safety: one thread at a time.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "storage/block_device.h"
#include "storage/host_file.h"
#include "storage/vhdx_layout.h"
#include "storage/vhdx_log.h"

namespace lamina::storage::vhdx {

class VhdxDevice final : public BlockDevice {
 public:
  VhdxDevice(HostFile file, std::unique_ptr<LogOverlay> overlay, ParsedImage parsed,
             std::unique_ptr<BlockDevice> parent);
  // Closing after writes clears the LogGuid (every log entry was already applied and flushed).
  ~VhdxDevice() override;
  VhdxDevice(const VhdxDevice&) = delete;
  VhdxDevice& operator=(const VhdxDevice&) = delete;

  uint64_t size() const override { return layout_.virtual_size; }
  bool read_only() const override { return file_.read_only(); }
  Result<void> read(uint64_t offset, std::span<std::byte> data) override;
  // One preadv per fully present payload block (no log replayed in memory); read_piece per
  // piece elsewhere (read() is this with one buffer).
  Result<void> read_scattered(uint64_t offset, ScatterList buffers) override;
  Result<void> write(uint64_t offset, std::span<const std::byte> data) override;
  Result<void> flush() override { return file_.flush(); }
  Result<void> set_write_lock(bool locked) override { return file_.set_locked(locked); }
  Result<void> discard(uint64_t offset, uint64_t length) override;
  // Dynamic: a present block wholly zeroed with may_unmap becomes PAYLOAD_BLOCK_ZERO (through
  // the log) and its space is punched; other present ranges are zeroed in the file; absent
  // blocks already read as zeros. Fixed: zeroed in the file, blocks stay allocated
  // (LeaveBlockAllocated). Differencing: zeros are written, since they must hide the parent.
  Result<void> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) override;

  Result<Extent> map_extent(uint64_t offset, uint64_t max_length) override;

  const Layout& layout() const { return layout_; }

  // Maintenance for resize, compact and merge (vhdx_maintenance.cc).
  // The DataWriteGuid the next write session stamps instead of a random one: compact keeps a
  // file's identity, merge announces the parent's new one to the child (parent_linkage2).
  void set_session_data_write_guid(const Guid& guid) { session_data_write_guid_ = guid; }
  // A run of the virtual disk this file itself defines: its data, or (zero, differencing disks
  // only) a ZERO/UNMAPPED/UNDEFINED block state that hides the parent.
  struct OwnRun {
    uint64_t offset;
    uint64_t length;
    bool zero;
  };
  Result<std::vector<OwnRun>> own_runs(uint64_t block);
  // True when the BAT region has room for the entries of a disk of new_size.
  bool bat_fits(uint64_t new_size) const;
  // Changes the virtual size in place (not for differencing disks; bat_fits(new_size)). Growing
  // writes the new BAT entries before the size, shrinking the size first, so a crash leaves the
  // old or the new size readable; the tail of a partly used last block reads as zeros.
  Result<void> resize(uint64_t new_size);
  // Payload blocks present in the file, times the block size.
  uint64_t allocated_bytes() const;
  // After a log replay into the file: a header update clears the LogGuid (2.2.2).
  Result<void> clear_log_guid();

 private:
  FileView view() const { return FileView(file_, overlay_.get()); }
  Result<void> check_range(uint64_t offset, uint64_t length, bool writing) const;
  Result<void> read_piece(uint64_t block, uint64_t in_block, std::span<std::byte> out);
  std::vector<std::span<std::byte>> scattered_pieces_;  // read_scattered's, reused
  Result<void> read_partial(uint64_t block, uint64_t in_block, std::span<std::byte> out);
  Result<void> read_parent(uint64_t offset, std::span<std::byte> out);
  Result<const std::vector<std::byte>*> sector_bitmap(uint64_t chunk);
  Result<void> begin_session();
  Result<void> write_headers(Header header);
  // Metadata pages one write changes, committed together through the log.
  struct PendingPage {
    uint64_t file_offset;
    std::vector<std::byte> data;
  };
  Result<std::byte*> pending_page(std::vector<PendingPage>& pages, uint64_t file_offset);
  Result<void> stage_bat_entry(std::vector<PendingPage>& pages, uint64_t index, uint64_t entry);
  Result<void> stage_present_sectors(std::vector<PendingPage>& pages, uint64_t virtual_offset,
                                     uint64_t length);
  Result<void> commit(std::vector<PendingPage>& pages);
  Result<uint64_t> append_zeroed(uint64_t length);
  Result<void> write_piece(uint64_t block, uint64_t in_block, std::span<const std::byte> data);
  // Makes a range of the file read as zeros (a hole when free_space, else ZERO_RANGE, else
  // written zeros).
  Result<void> zero_file_range(uint64_t file_offset, uint64_t length, bool free_space);

  HostFile file_;
  std::unique_ptr<LogOverlay> overlay_;
  Layout layout_;
  std::vector<uint64_t> bat_;
  std::unique_ptr<BlockDevice> parent_;
  std::optional<LogWriter> log_writer_;
  std::unordered_map<uint64_t, std::vector<std::byte>> bitmaps_;
  // BAT entries staged by the write in progress; they enter bat_ once committed.
  std::vector<std::pair<uint64_t, uint64_t>> staged_entries_;
  std::optional<Guid> session_data_write_guid_;
};

}  // namespace lamina::storage::vhdx
