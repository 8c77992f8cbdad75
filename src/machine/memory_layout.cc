#include "machine/memory_layout.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <optional>

namespace lamina::machine {

Result<MemoryLayout> MemoryLayout::create(const MemoryLayoutOptions& options) {
  const uint64_t ram = options.ram_size;
  if (ram % kMiB != 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("RAM size {} is not a whole number of MiB", ram));
  }
  if (ram < kMinRamSize || ram > kMaxRamSize) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("RAM size {} MiB is outside the supported range {} MiB to {} GiB",
                            ram / kMiB, kMinRamSize / kMiB, kMaxRamSize / kGiB));
  }
  const uint64_t rom = options.firmware_rom_size;
  if (!std::has_single_bit(rom) || rom < 64 * kKiB || rom > 16 * kMiB) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("firmware ROM size {:#x} is not a power of two between 64 KiB and "
                            "16 MiB",
                            rom));
  }
  const uint64_t hotplug = options.hotplug_size;
  if (hotplug % (128 * kMiB) != 0 || hotplug > kMaxRamSize - ram) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("memory hotplug room of {} MiB is not whole 128 MiB blocks within "
                            "{} GiB of RAM in all",
                            hotplug / kMiB, kMaxRamSize / kGiB));
  }
  return MemoryLayout(ram, std::min(ram, kPciHoleStart), rom, hotplug);
}

uint64_t MemoryLayout::pci_mmio64_base() const {
  // Above RAM and the virtio-mem region.
  const uint64_t ram_top = hotplug_size_ > 0 ? hotplug_base() + hotplug_size_
                                             : kAbove4GiBStart + above_4g_ram_size();
  return std::max(kPciMmio64MinimumBase, (ram_top + kGiB - 1) & ~(kGiB - 1));
}

uint64_t MemoryLayout::hotplug_base() const {
  const uint64_t ram_top = kAbove4GiBStart + above_4g_ram_size();
  return (ram_top + kGiB - 1) & ~(kGiB - 1);
}

std::vector<RamRegion> MemoryLayout::ram_regions() const {
  std::vector<RamRegion> regions = {
      {0, kLowRamEnd},
      {kBiosAreaStart, kBiosAreaEnd - kBiosAreaStart},
      {kHighMemoryStart, below_4g_end_ - kHighMemoryStart},
  };
  if (above_4g_ram_size() > 0) regions.push_back({kAbove4GiBStart, above_4g_ram_size()});
  if (hotplug_size_ > 0) regions.push_back({hotplug_base(), hotplug_size_});
  return regions;
}

std::vector<E820Entry> MemoryLayout::e820() const {
  std::vector<E820Entry> map = {
      {0, kEbdaStart, E820Type::kUsable},
      {kEbdaStart, kLowRamEnd - kEbdaStart, E820Type::kReserved},
      // Option ROMs and the system BIOS live in 0xC0000-0xFFFFF; the RSDP may sit in the
      // 0xE0000-0xFFFFF part, which ACPI 6.5 section 5.2.5.1 tells the OS to search.
      {kBiosSystemAreaStart, kBiosAreaEnd - kBiosSystemAreaStart, E820Type::kReserved},
      {kHighMemoryStart, acpi_area_base() - kHighMemoryStart, E820Type::kUsable},
      {acpi_area_base(), kAcpiAreaSize, E820Type::kAcpiReclaimable},
      // Linux only uses ECAM (MMCONFIG) when the firmware reserves it (PCI Firmware spec 3.2,
      // section 4.1.2: the MCFG range must be reserved in the memory map).
      {kEcamBase, kEcamSize, E820Type::kReserved},
      {kIoApicBase, kIoApicSize, E820Type::kReserved},
      {kHpetBase, kHpetSize, E820Type::kReserved},
      {kLapicBase, kLapicSize, E820Type::kReserved},
      {firmware_rom_base(), firmware_rom_size_, E820Type::kReserved},
  };
  if (above_4g_ram_size() > 0) {
    map.push_back({kAbove4GiBStart, above_4g_ram_size(), E820Type::kUsable});
  }
  return map;
}

bool in_usable_ram(const std::vector<E820Entry>& map, uint64_t address, uint64_t size) {
  return std::any_of(map.begin(), map.end(), [&](const E820Entry& entry) {
    return entry.type == E820Type::kUsable && address >= entry.address &&
           address - entry.address <= entry.size && size <= entry.size - (address - entry.address);
  });
}

Result<uint64_t> find_highest_free(const std::vector<E820Entry>& map, uint64_t size,
                                   uint64_t alignment, uint64_t limit,
                                   const std::vector<AddressRange>& avoid) {
  if (size == 0 || !std::has_single_bit(alignment)) {
    return fail(ErrorCode::kInternal, "find_highest_free: empty size or bad alignment");
  }
  std::optional<uint64_t> best;
  // Candidate ends: the top of each usable entry (clipped to the limit) and the start of each
  // range to avoid; the highest fitting start below each candidate end is tried.
  std::vector<uint64_t> ends = {limit};
  for (const E820Entry& entry : map) ends.push_back(entry.address + entry.size);
  for (const AddressRange& range : avoid) ends.push_back(range.address);
  for (const E820Entry& entry : map) {
    if (entry.type != E820Type::kUsable) continue;
    const uint64_t entry_end = std::min(entry.address + entry.size, limit);
    for (uint64_t end : ends) {
      end = std::min(end, entry_end);
      if (end < entry.address || end - entry.address < size) continue;
      const uint64_t start = (end - size) & ~(alignment - 1);
      if (start < entry.address) continue;
      const bool collides = std::any_of(avoid.begin(), avoid.end(), [&](const AddressRange& r) {
        return start < r.address + r.size && r.address < start + size;
      });
      if (!collides && (!best || start > *best)) best = start;
    }
  }
  if (!best) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("no free RAM for {} bytes below {:#x}; give the VM more memory", size,
                            limit));
  }
  return *best;
}

}  // namespace lamina::machine
