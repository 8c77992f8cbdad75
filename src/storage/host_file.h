#pragma once
// HostFile: the one open host file every image format sits on (raw, VHD, VHDX, qcow2, VMDK,
// their parents, backing files and extents). Positional reads are checked against the file's
// size, since formats read untrusted offsets from their own headers; writes, sizes, holes and
// durability complete short transfers.
//
// Locking (held for the file's whole life, released when it closes): a writable open takes an
// exclusive flock, a read-only open a shared one, both non-blocking; a conflicting open fails
// with kInvalidArgument naming why ("in use by another process (locked for writing)").
// `force_share` opens read-only without a lock, for inspection (as qemu-img -U).
//
// Opening never blocks: the open is O_NONBLOCK and the type is checked with fstat before the
// first read, so a FIFO or a device named by an image cannot hang or feed endless data.
//
// Ownership: owns its file descriptor and lock (RAII, move-only). Thread-safety: positional
// reads may run concurrently; writes and size changes need one writer.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "base/error.h"
#include "base/granted_files.h"
#include "storage/scatter_list.h"

namespace lamina::storage {

// How HostFile::open shares the file and which kinds of file it accepts.
struct HostFileOptions {
  // Read-only without the shared lock: inspecting an image a writer holds (may see it torn).
  bool force_share = false;
  // Regular files only (a file an image names: parent, backing file, extent). Otherwise
  // block devices are accepted too, for an image the user named.
  bool regular_only = false;
  // Not owned; when set, the descriptor comes through it (recorded by laminad, or granted to
  // a sandboxed worker, whose lock came with it): see base/granted_files.h.
  GrantedFiles* granted = nullptr;
};

// Sees every change a HostFile makes, in order: what a power cut could keep or lose. The
// crash-consistency tests record through it and replay every point of a write sequence.
class HostFileObserver {
 public:
  virtual ~HostFileObserver() = default;
  virtual void wrote(uint64_t offset, std::span<const std::byte> data) = 0;
  // Ranges made to read as zeros (holes, zero ranges).
  virtual void zeroed(uint64_t offset, uint64_t length) = 0;
  virtual void truncated(uint64_t size) = 0;
  // fdatasync returned: everything before it is durable.
  virtual void flushed() = 0;
};

class HostFile {
 public:
  enum class Mode { kRead, kReadWrite, kCreateExclusive };
  using Options = HostFileOptions;

  static Result<HostFile> open(const std::string& path, Mode mode, Options options = {});

  HostFile() = default;
  HostFile(HostFile&& other) noexcept;
  HostFile& operator=(HostFile&& other) noexcept;
  HostFile(const HostFile&) = delete;
  HostFile& operator=(const HostFile&) = delete;
  ~HostFile();

  const std::string& path() const { return path_; }
  // "name.ext" for messages.
  std::string name() const;
  bool writable() const { return writable_; }
  bool read_only() const { return !writable_; }
  int descriptor() const { return fd_; }

  // The size at open, kept current by this object's writes and truncation (writers are
  // exclusive, so nobody else changes it).
  uint64_t size() const { return size_; }
  // True when [offset, offset + length) lies inside the file, without overflow.
  bool contains(uint64_t offset, uint64_t length) const {
    return offset <= size_ && length <= size_ - offset;
  }

  // Reads exactly data.size() bytes; kCorrupt naming `what` when the range passes the end.
  [[nodiscard]] Result<void> read_at(uint64_t offset, std::span<std::byte> data,
                                     std::string_view what = "data") const;
  // Reads up to data.size() bytes and zero-fills what lies past the end of the file.
  [[nodiscard]] Result<void> read_padded(uint64_t offset, std::span<std::byte> data) const;
  // As read_at and read_padded, into `buffers` one after another: preadv, one call for up to
  // kVectoredPieces of them (read_at and read_padded are these with one buffer).
  [[nodiscard]] Result<void> read_vectored_at(uint64_t offset, ScatterList buffers,
                                              std::string_view what = "data") const;
  [[nodiscard]] Result<void> read_vectored_padded(uint64_t offset, ScatterList buffers) const;
  static constexpr size_t kVectoredPieces = 256;
  [[nodiscard]] Result<void> write_at(uint64_t offset, std::span<const std::byte> data);
  // fdatasync: data and the metadata needed to read it back are on stable storage.
  [[nodiscard]] Result<void> flush();
  [[nodiscard]] Result<void> truncate(uint64_t size);
  // Frees a range so it reads as zeros, keeping the size; false (not an error) when the file
  // system cannot.
  [[nodiscard]] Result<bool> punch_hole(uint64_t offset, uint64_t length);
  // Makes a range read as zeros and keeps it allocated (FALLOC_FL_ZERO_RANGE); false (not an
  // error) when the file system cannot. Does not change the file size.
  [[nodiscard]] Result<bool> zero_range(uint64_t offset, uint64_t length);
  // Makes a range read as zeros for sure: a hole (free_space) or FALLOC_FL_ZERO_RANGE, and
  // written zero buffers when the file system offers neither.
  [[nodiscard]] Result<void> zero(uint64_t offset, uint64_t length, bool free_space);
  // Offset of the next data at or after offset (SEEK_DATA), or the file size when none.
  Result<uint64_t> next_data(uint64_t offset) const;
  // Offset of the next hole at or after offset (SEEK_HOLE).
  Result<uint64_t> next_hole(uint64_t offset) const;
  // Drops the file's lock (false) or takes it again (true, non-blocking: kInvalidArgument
  // when another process took it meanwhile). Live migration hands a disk's lock to the
  // destination at switchover and takes it back when the destination does not run the VM.
  [[nodiscard]] Result<void> set_locked(bool locked);
  // Identity of the underlying file (device, inode), used to detect parent loops.
  Result<std::pair<uint64_t, uint64_t>> identity() const;
  // Not owned; nullptr to stop. Reports the changes made through this object from now on.
  void set_observer(HostFileObserver* observer) { observer_ = observer; }

 private:
  static Result<HostFile> open_path(const std::string& path, Mode mode, const Options& options);
  // Reads until the buffers are full or the file ends; returns how many bytes were read.
  Result<size_t> read_vectored_until_end(uint64_t offset, ScatterList buffers) const;
  Result<void> refuse_read_only() const;

  int fd_ = -1;
  bool writable_ = false;
  uint64_t size_ = 0;
  std::string path_;
  HostFileObserver* observer_ = nullptr;
};

// Makes an error from errno naming the file and the operation.
Error io_error(const std::string& path, std::string_view operation);

// True when every byte of data is zero (fast path for skipping zero blocks).
bool is_all_zero(std::span<const std::byte> data);

}  // namespace lamina::storage
