#include "base/guest_memory.h"

#include <fmt/format.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>

namespace lamina {

namespace {
constexpr uint64_t kPageSize = 4096;
}

Result<GuestMemory> GuestMemory::create(std::vector<RamRegion> regions) {
  std::sort(regions.begin(), regions.end(),
            [](const RamRegion& a, const RamRegion& b) { return a.guest_physical < b.guest_physical; });
  for (size_t i = 0; i < regions.size(); ++i) {
    const RamRegion& region = regions[i];
    if (region.size == 0 || region.size % kPageSize != 0 || region.guest_physical % kPageSize != 0) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("RAM region at {:#x} of {:#x} bytes is empty or not page-aligned",
                              region.guest_physical, region.size));
    }
    if (region.guest_physical + region.size < region.guest_physical) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("RAM region at {:#x} runs past the end of the address space",
                              region.guest_physical));
    }
    if (i > 0 && regions[i - 1].guest_physical + regions[i - 1].size > region.guest_physical) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("RAM regions at {:#x} and {:#x} overlap", regions[i - 1].guest_physical,
                              region.guest_physical));
    }
  }

  GuestMemory memory;
  for (const RamRegion& region : regions) {
    // MAP_NORESERVE: guest RAM is committed as the guest touches it, like a real VMM.
    void* host = ::mmap(nullptr, region.size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (host == MAP_FAILED) {
      return fail(ErrorCode::kIo, fmt::format("cannot map {} bytes of guest RAM: {}", region.size,
                                              std::strerror(errno)));
    }
    memory.mappings_.push_back({region, static_cast<std::byte*>(host)});
  }
  memory.dirty_ = std::make_unique<DirtyLog>(
      regions.empty() ? 0 : regions.back().guest_physical + regions.back().size);
  memory.regions_ = std::move(regions);
  return memory;
}

GuestMemory::GuestMemory(GuestMemory&& other) noexcept
    : regions_(std::move(other.regions_)),
      mappings_(std::move(other.mappings_)),
      dirty_(std::move(other.dirty_)),
      write_protected_(std::move(other.write_protected_)) {
  // A moved-from GuestMemory has no regions and no protection bits; nothing may use it.
  other.mappings_.clear();
  other.regions_.clear();
}

GuestMemory& GuestMemory::operator=(GuestMemory&& other) noexcept {
  if (this != &other) {
    unmap_all();
    regions_ = std::move(other.regions_);
    mappings_ = std::move(other.mappings_);
    dirty_ = std::move(other.dirty_);
    write_protected_ = std::move(other.write_protected_);
    other.mappings_.clear();
    other.regions_.clear();
  }
  return *this;
}

GuestMemory::~GuestMemory() { unmap_all(); }

void GuestMemory::set_write_protected(uint64_t guest_physical, uint64_t length, bool on) {
  if (!write_protected_) return;  // moved from
  const uint64_t end = std::min(guest_physical + length, kProtectableEnd);
  for (uint64_t page = guest_physical & ~uint64_t{0xfff}; page < end; page += 0x1000) {
    const uint64_t index = page >> 12;
    const uint64_t bit = uint64_t{1} << (index % 64);
    if (on) {
      (*write_protected_)[index / 64].fetch_or(bit, std::memory_order_relaxed);
    } else {
      (*write_protected_)[index / 64].fetch_and(~bit, std::memory_order_relaxed);
    }
  }
}

void GuestMemory::unmap_all() {
  for (const Mapping& mapping : mappings_) ::munmap(mapping.host, mapping.region.size);
  mappings_.clear();
}

Result<void> GuestMemory::read(uint64_t guest_physical, std::span<std::byte> data) const {
  // An empty span may carry a null pointer, which memcpy must never see.
  if (data.empty()) return {};
  std::byte* host = host_pointer(guest_physical, data.size());
  if (host == nullptr) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("guest range {:#x}+{:#x} is not RAM", guest_physical, data.size()));
  }
  std::memcpy(data.data(), host, data.size());
  return {};
}

Result<void> GuestMemory::write(uint64_t guest_physical, std::span<const std::byte> data) {
  if (data.empty()) return {};
  std::byte* host = host_pointer(guest_physical, data.size());
  if (host == nullptr) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("guest range {:#x}+{:#x} is not RAM", guest_physical, data.size()));
  }
  std::memcpy(host, data.data(), data.size());
  note_written(guest_physical, data.size());
  return {};
}

Result<void> GuestMemory::map_file(size_t index, int fd, uint64_t file_offset) {
  if (index >= mappings_.size() || file_offset % kPageSize != 0) {
    return fail(
        ErrorCode::kInvalidArgument,
        fmt::format("RAM region {} cannot be mapped from file offset {:#x}", index, file_offset));
  }
  const Mapping& mapping = mappings_[index];
  // MAP_FIXED replaces the anonymous pages in place, so host pointers handed out stay valid.
  void* host = ::mmap(mapping.host, mapping.region.size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd, static_cast<off_t>(file_offset));
  if (host == MAP_FAILED) {
    return fail(ErrorCode::kIo, fmt::format("cannot map {} bytes of saved guest RAM: {}",
                                            mapping.region.size, std::strerror(errno)));
  }
  return {};
}

uint64_t GuestMemory::total_size() const {
  uint64_t total = 0;
  for (const RamRegion& region : regions_) total += region.size;
  return total;
}

}  // namespace lamina
