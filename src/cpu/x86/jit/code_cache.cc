#include "cpu/x86/jit/code_cache.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>


namespace lamina::cpu::x86::jit {

Result<std::unique_ptr<CodeCache>> CodeCache::create(size_t bytes) {
  if (bytes == 0) return fail(ErrorCode::kInvalidArgument, "JIT code cache: size 0");
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t size = (bytes + page - 1) / page * page;
  // Shared anonymous memory, so that mremap with an old size of 0 maps the same pages a second
  // time (mremap(2)); this needs no memory file, so the worker's sandbox allows it (mmap,
  // mremap and mprotect, no memfd_create).
  void* writable = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (writable == MAP_FAILED) {
    return fail(ErrorCode::kInternal,
                fmt::format("JIT code cache: mapping {} bytes: {}", size, std::strerror(errno)));
  }
  void* executable = mremap(writable, 0, size, MREMAP_MAYMOVE);
  if (executable == MAP_FAILED || mprotect(executable, size, PROT_READ | PROT_EXEC) != 0) {
    const int error = errno;
    if (executable != MAP_FAILED) munmap(executable, size);
    munmap(writable, size);
    return fail(ErrorCode::kInternal,
                fmt::format("JIT code cache: executable mapping: {}", std::strerror(error)));
  }
  return std::unique_ptr<CodeCache>(
      new CodeCache(static_cast<std::byte*>(writable), static_cast<std::byte*>(executable), size));
}

CodeCache::~CodeCache() {
  munmap(writable_, size_);
  munmap(executable_, size_);
}

const std::byte* CodeCache::install(std::span<const std::byte> code) {
  const size_t start = (used_ + kAlignment - 1) & ~(kAlignment - 1);
  if (start > size_ || code.size() > size_ - start) return nullptr;
  std::memcpy(writable_ + start, code.data(), code.size());
  used_ = start + code.size();
  // x86 keeps instruction fetch coherent with stores to the same physical memory, including
  // through another mapping (SDM vol. 3A 8.1.3: cross-modifying code); the jump into the new
  // code serializes enough for code that no processor has executed yet.
  return executable_ + start;
}

bool CodeCache::patch(const std::byte* address, std::span<const std::byte> bytes) {
  if (address < executable_ || address > executable_ + used_) return false;
  const auto offset = static_cast<size_t>(address - executable_);
  if (bytes.size() > used_ - offset) return false;
  // Coherent with instruction fetch as install() is: the patched jump is only executed after
  // the chaining code returns into generated code again.
  std::memcpy(writable_ + offset, bytes.data(), bytes.size());
  return true;
}

void CodeCache::flush() {
  used_ = 0;
  ++epoch_;
  // The pages go back to the host (both mappings then read zeros until written again), so a
  // guest that once filled the cache does not keep it resident. Advice only: on failure the
  // pages stay and are reused.
  (void)madvise(writable_, size_, MADV_REMOVE);
}

}  // namespace lamina::cpu::x86::jit
