#pragma once
// CodeCache: a fixed-size store for the host code the JIT translates, written through one
// mapping and executed through a second mapping of the same shared memory, so no page is ever
// writable and executable in one mapping (W^X). Space is handed out by a bump pointer; when it
// runs out the owner flushes the whole cache, which bumps epoch(): code addresses handed out
// before a flush must not be entered again (callers keep the epoch beside each address).
//
// Ownership: owns both mappings (unmapped on destruction).
// Thread-safety: one cache per vCPU, used only by its thread.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "base/error.h"

namespace lamina::cpu::x86::jit {

class CodeCache {
 public:
  // Code is placed at this alignment (a cache line: translated blocks start on their own line).
  static constexpr size_t kAlignment = 64;

  // `bytes` is rounded up to whole pages; kInvalidArgument when zero, kInternal when the host
  // refuses a mapping (the message says which).
  static Result<std::unique_ptr<CodeCache>> create(size_t bytes);
  ~CodeCache();
  CodeCache(const CodeCache&) = delete;
  CodeCache& operator=(const CodeCache&) = delete;

  // Copies `code` in and returns where it executes; nullptr when it does not fit in what is
  // left (flush() and try again; code larger than the whole cache never fits).
  const std::byte* install(std::span<const std::byte> code);
  // Rewrites `bytes.size()` bytes of installed code at `address` (in the executable mapping)
  // through the writable mapping: an exit's patched jump (exit_site.h). False when the range
  // is not wholly inside what was installed since the last flush.
  bool patch(const std::byte* address, std::span<const std::byte> bytes);
  // Drops every translation at once.
  void flush();

  uint64_t epoch() const { return epoch_; }
  size_t capacity() const { return size_; }
  size_t used() const { return used_; }
  uint64_t flushes() const { return epoch_ - 1; }
  // Whether `address` lies in the executable mapping (tests, assertions).
  bool contains(const void* address) const {
    const auto* byte = static_cast<const std::byte*>(address);
    return byte >= executable_ && byte < executable_ + size_;
  }

 private:
  CodeCache(std::byte* writable, std::byte* executable, size_t size)
      : writable_(writable), executable_(executable), size_(size) {}

  std::byte* writable_;
  std::byte* executable_;
  size_t size_;
  size_t used_ = 0;
  uint64_t epoch_ = 1;
};

}  // namespace lamina::cpu::x86::jit
