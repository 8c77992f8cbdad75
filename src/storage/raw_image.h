#pragma once
// RawImage: a plain file (or block device) whose bytes are the disk, as a BlockDevice. Holes in
// a sparse file are reported through map_extent so copies skip them.
//
// Ownership: owns its file. Thread-safety: one thread at a time.

#include <memory>
#include <string>

#include "storage/block_device.h"
#include "storage/host_file.h"
#include "storage/write_behind.h"

namespace lamina::storage {

class RawImage final : public BlockDevice {
 public:
  // force_share: read-only without the shared lock; granted: where the descriptor comes from
  // (storage/host_file.h).
  static Result<std::unique_ptr<RawImage>> open(const std::string& path, bool writable,
                                                bool force_share = false,
                                                GrantedFiles* granted = nullptr);
  // Makes `file` (empty, writable) a sparse raw disk of `size` bytes. Its writes start their
  // writeback from a background thread (it is being filled as a whole, not used by a guest).
  static Result<std::unique_ptr<RawImage>> create(HostFile file, uint64_t size);

  uint64_t size() const override { return size_; }
  bool read_only() const override { return !file_.writable(); }
  Result<void> read(uint64_t offset, std::span<std::byte> data) override;
  Result<void> read_scattered(uint64_t offset, ScatterList buffers) override;
  Result<void> write(uint64_t offset, std::span<const std::byte> data) override;
  Result<void> flush() override;
  Result<void> set_write_lock(bool locked) override { return file_.set_locked(locked); }
  Result<void> discard(uint64_t offset, uint64_t length) override;
  // A hole (may_unmap) or a zeroed allocated range (FALLOC_FL_ZERO_RANGE); zero buffers when
  // the host file system offers neither.
  Result<void> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) override;
  Result<Extent> map_extent(uint64_t offset, uint64_t max_length) override;

  const std::string& path() const { return file_.path(); }
  Result<void> resize(uint64_t new_size);

 private:
  RawImage(HostFile file, uint64_t size) : file_(std::move(file)), size_(size) {}
  Result<void> check_range(uint64_t offset, uint64_t length) const;

  HostFile file_;
  uint64_t size_;
  std::unique_ptr<WriteBehind> write_behind_;  // after file_: stops before it closes
};

}  // namespace lamina::storage
