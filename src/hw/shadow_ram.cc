#include "hw/shadow_ram.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace lamina::hw {

namespace {
constexpr uint32_t kStateVersion = 1;
// The legacy alias of the system BIOS: its last 128 KiB at 0xE0000-0xFFFFF.
constexpr uint64_t kBiosAliasSize = 0x20000;
}  // namespace

uint64_t ShadowRam::segment_base(unsigned segment) {
  return segment == 0 ? 0xf0000 : kBase + (segment - 1) * 0x4000;
}

uint64_t ShadowRam::segment_size(unsigned segment) { return segment == 0 ? 0x10000 : 0x4000; }

ShadowRam::ShadowRam(DmaMemory& memory, std::span<const std::byte> rom,
                     std::function<void()> protection_changed)
    : memory_(memory),
      rom_view_(kSize, std::byte{0xff}),
      protection_changed_(std::move(protection_changed)),
      dram_(kSize, std::byte{0}) {
  const size_t shown = std::min<size_t>(rom.size(), kBiosAliasSize);
  std::memcpy(rom_view_.data() + kSize - shown, rom.data() + rom.size() - shown, shown);
  std::lock_guard lock(mutex_);
  // Reset: every segment on the ROM side (PAM registers read 0).
  for (unsigned segment = 0; segment < kSegments; ++segment) {
    apply_locked(segment, Access{.read_dram = true, .write_dram = true}, Access{});
  }
  // What the reset view replaced was not DRAM's content: DRAM starts zeroed.
  std::fill(dram_.begin(), dram_.end(), std::byte{0});
}

void ShadowRam::set_access(unsigned segment, Access access) {
  if (segment >= kSegments) return;
  std::lock_guard lock(mutex_);
  const Access before = access_[segment];
  if (before == access) return;
  apply_locked(segment, before, access);
  if (protection_changed_) protection_changed_();
}

ShadowRam::Access ShadowRam::access(unsigned segment) const {
  std::lock_guard lock(mutex_);
  return segment < kSegments ? access_[segment] : Access{};
}

void ShadowRam::apply_locked(unsigned segment, Access before, Access after) {
  const uint64_t base = segment_base(segment);
  const uint64_t size = segment_size(segment);
  const uint64_t offset = base - kBase;
  std::span<std::byte> visible = memory_.map_for_write(base, size);
  if (visible.empty()) return;  // the machine has no RAM there: nothing to shadow
  if (before.read_dram && !after.read_dram) {
    // DRAM goes into hiding; the ROM side shows.
    std::memcpy(dram_.data() + offset, visible.data(), size);
    std::memcpy(visible.data(), rom_view_.data() + offset, size);
    memory_.written(base, size);
  } else if (!before.read_dram && after.read_dram) {
    std::memcpy(visible.data(), dram_.data() + offset, size);
    memory_.written(base, size);
  }
  access_[segment] = after;
  protect_locked(segment);
}

void ShadowRam::protect_locked(unsigned segment) {
  const Access access = access_[segment];
  // Writes may land in RAM only when RAM is both what reads see and where writes go.
  memory_.guest_memory().set_write_protected(segment_base(segment), segment_size(segment),
                                             !(access.read_dram && access.write_dram));
}

void ShadowRam::read(uint64_t offset, std::span<std::byte> data) {
  std::lock_guard lock(mutex_);
  if (offset >= kSize || data.size() > kSize - offset) {
    std::fill(data.begin(), data.end(), std::byte{0xff});
    return;
  }
  if (std::span<const std::byte> visible = memory_.map_for_read(kBase + offset, data.size());
      !visible.empty()) {
    std::copy(visible.begin(), visible.end(), data.begin());
  } else {
    std::fill(data.begin(), data.end(), std::byte{0xff});
  }
}

void ShadowRam::write(uint64_t offset, std::span<const std::byte> data) {
  std::lock_guard lock(mutex_);
  if (offset >= kSize || data.size() > kSize - offset) return;
  for (size_t index = 0; index < data.size(); ++index) {
    const uint64_t address = kBase + offset + index;
    unsigned segment = 0;
    if (address < 0xf0000) segment = static_cast<unsigned>((address - kBase) / 0x4000) + 1;
    const Access access = access_[segment];
    if (access.write_dram && !access.read_dram) {
      // "Write only": the write reaches DRAM, which reads do not see yet.
      dram_[offset + index] = data[index];
    } else if (access.write_dram && access.read_dram) {
      // A vCPU whose cached translation predates the protection change: RAM takes it.
      (void)memory_.write(address, data.subspan(index, 1));
    } else if (log_limiter_.allow()) {
      log_warn("shadow-ram: write to read-only {:#x} dropped", address);
    }
  }
}

void ShadowRam::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section("shadow-ram", kStateVersion);
  for (const Access& access : access_) writer.put(access.read_dram, access.write_dram);
  writer.put_bytes(dram_);
  writer.end_section();
}

Result<void> ShadowRam::load(StateReader& reader) {
  auto version = reader.begin_section("shadow-ram");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("shadow-ram: saved state version {} is not supported", *version));
  }
  std::lock_guard lock(mutex_);
  for (Access& access : access_) {
    if (auto got = reader.get(access.read_dram, access.write_dram); !got) return got;
  }
  if (auto got = reader.get_bytes(dram_); !got) return got;
  // The visible bytes came back with guest RAM; only the protection is rebuilt.
  for (unsigned segment = 0; segment < kSegments; ++segment) protect_locked(segment);
  if (protection_changed_) protection_changed_();
  return reader.end_section();
}

}  // namespace lamina::hw
