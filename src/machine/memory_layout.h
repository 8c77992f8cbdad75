#pragma once
// The PC's guest-physical memory map for a given RAM size: where RAM lies (below 640 KiB, the
// BIOS shadow area, up to the 32-bit PCI hole, above 4 GiB), where the platform's MMIO windows
// sit (ECAM, IOAPIC, HPET, LAPIC, firmware ROM), where boot-time data goes (GDT, page tables,
// zero page, command line, ACPI tables), and the e820 table firmware and boot loaders report.
//
// A MemoryLayout is a plain value, computed once by MemoryLayout::create and then read-only;
// it may be shared between threads.

#include <cstdint>
#include <vector>

#include "base/error.h"
#include "base/guest_memory.h"

namespace lamina::machine {

inline constexpr uint64_t kKiB = uint64_t{1} << 10;
inline constexpr uint64_t kMiB = uint64_t{1} << 20;
inline constexpr uint64_t kGiB = uint64_t{1} << 30;

// e820 range types (ACPI 6.5 section 15, "System Address Map Interfaces", table 15.1).
enum class E820Type : uint32_t {
  kUsable = 1,
  kReserved = 2,
  kAcpiReclaimable = 3,
  kAcpiNvs = 4,
  kUnusable = 5,
};

struct E820Entry {
  uint64_t address;
  uint64_t size;
  E820Type type;
  bool operator==(const E820Entry&) const = default;
};

// Fixed platform addresses. The 32-bit PCI hole starts at kPciHoleStart; RAM that would fall
// inside it is placed above 4 GiB instead.
inline constexpr uint64_t kLowRamEnd = 0xA0000;              // 640 KiB conventional memory
inline constexpr uint64_t kEbdaStart = 0x9FC00;              // last KiB of it: the EBDA
inline constexpr uint64_t kVgaWindowStart = 0xA0000;         // legacy VGA, MMIO
inline constexpr uint64_t kBiosAreaStart = 0xC0000;          // option ROMs + system BIOS
inline constexpr uint64_t kBiosAreaEnd = 0x100000;
inline constexpr uint64_t kBiosSystemAreaStart = 0xE0000;    // where RSDP is searched
inline constexpr uint64_t kHighMemoryStart = 0x100000;       // 1 MiB
inline constexpr uint64_t kPciHoleStart = 0xB0000000;        // = ECAM base
inline constexpr uint64_t kEcamBase = 0xB0000000;
inline constexpr uint64_t kEcamSize = 256 * kMiB;            // buses 0..255, 1 MiB each
inline constexpr uint64_t kPciMmio32Start = 0xC0000000;
inline constexpr uint64_t kPciMmio32End = 0xFEC00000;        // exclusive
inline constexpr uint64_t kIoApicBase = 0xFEC00000;
inline constexpr uint64_t kIoApicSize = 0x1000;
inline constexpr uint64_t kHpetBase = 0xFED00000;
inline constexpr uint64_t kHpetSize = 0x400;
inline constexpr uint64_t kLapicBase = 0xFEE00000;
inline constexpr uint64_t kLapicSize = 0x1000;
inline constexpr uint64_t kFourGiB = 4 * kGiB;
inline constexpr uint64_t kAbove4GiBStart = kFourGiB;

// Where the loaders put their boot-time data in conventional memory (all below kEbdaStart).
inline constexpr uint64_t kBootGdtAddress = 0x1000;
inline constexpr uint64_t kBootPageTablesAddress = 0x2000;   // PML4, PDPT, 4 PDs: 0x2000-0x7FFF
inline constexpr uint64_t kBootParamsAddress = 0x8000;       // Linux zero page (4 KiB)
inline constexpr uint64_t kMultibootInfoAddress = 0x9000;    // Multiboot info + lists, to 0x1FFFF
inline constexpr uint64_t kMultibootInfoEnd = 0x20000;
inline constexpr uint64_t kCommandLineAddress = 0x20000;     // up to kCommandLineMax bytes
inline constexpr uint64_t kCommandLineMax = 0x10000;
inline constexpr uint64_t kBootStackTop = 0x80000;           // 64 KiB boot stack below this

// ACPI tables live at the top of RAM below the PCI hole, reported as ACPI (reclaimable).
inline constexpr uint64_t kAcpiAreaSize = 64 * kKiB;

// Limits on the RAM size a user may ask for.
inline constexpr uint64_t kMinRamSize = 4 * kMiB;
// With the 64-bit PCI window above RAM, every address stays below 2^40 (a CPU advertising 40
// physical address bits, as QEMU's default models do, can reach all of it).
inline constexpr uint64_t kMaxRamSize = 512 * kGiB;
inline constexpr uint64_t kPciMmio64MinimumBase = 512 * kGiB;
inline constexpr uint64_t kPciMmio64Size = 64 * kGiB;

struct MemoryLayoutOptions {
  uint64_t ram_size = 0;                 // bytes of RAM the guest sees; a multiple of 1 MiB
  uint64_t firmware_rom_size = 256 * kKiB;  // ROM mapped just below 4 GiB; power of two
  // Room for memory the guest may get while it runs (virtio-mem): a whole number of 128 MiB
  // (Linux's memory block on x86), 0 for none.
  uint64_t hotplug_size = 0;
};

class MemoryLayout {
 public:
  // Fails with kInvalidArgument when the RAM size is not a multiple of 1 MiB, below
  // kMinRamSize or above kMaxRamSize, or the ROM size is not a power of two in [64 KiB, 16 MiB].
  static Result<MemoryLayout> create(const MemoryLayoutOptions& options);

  uint64_t ram_size() const { return ram_size_; }
  // End (exclusive) of the RAM that starts at 1 MiB; at most kPciHoleStart.
  uint64_t below_4g_ram_end() const { return below_4g_end_; }
  // Bytes of RAM placed at kAbove4GiBStart (0 when everything fits below the hole). Like a PC
  // (and QEMU), RAM addresses 640 KiB-1 MiB are shadowed by the legacy hole and not relocated.
  uint64_t above_4g_ram_size() const { return ram_size_ - below_4g_end_; }
  uint64_t firmware_rom_base() const { return kFourGiB - firmware_rom_size_; }
  uint64_t firmware_rom_size() const { return firmware_rom_size_; }
  // The 64-bit PCI MMIO window: kPciMmio64Size bytes at 512 GiB, or at the first GiB boundary
  // above RAM when RAM reaches past 512 GiB.
  uint64_t pci_mmio64_base() const;
  uint64_t pci_mmio64_size() const { return kPciMmio64Size; }
  uint64_t acpi_area_base() const { return below_4g_end_ - kAcpiAreaSize; }
  // The virtio-mem region: at the first GiB boundary above RAM (at least 4 GiB), not in the
  // e820 map (the guest learns of it from the device). Size 0 without memory hotplug.
  uint64_t hotplug_base() const;
  uint64_t hotplug_size() const { return hotplug_size_; }
  uint64_t acpi_area_size() const { return kAcpiAreaSize; }

  // Regions to hand to GuestMemory::create. The BIOS area (0xC0000-0xFFFFF) is backed by RAM so
  // firmware can be loaded or shadowed there; it is not counted in ram_size(). The virtio-mem
  // region comes last.
  std::vector<RamRegion> ram_regions() const;

  // The e820 map, sorted and non-overlapping: usable RAM, the EBDA and BIOS area, the ACPI
  // tables, and the MMIO windows an OS must not claim (ECAM, IOAPIC, HPET, LAPIC, ROM).
  std::vector<E820Entry> e820() const;

 private:
  MemoryLayout(uint64_t ram_size, uint64_t below_4g_end, uint64_t rom_size,
               uint64_t hotplug_size)
      : ram_size_(ram_size),
        below_4g_end_(below_4g_end),
        firmware_rom_size_(rom_size),
        hotplug_size_(hotplug_size) {}

  uint64_t ram_size_;
  uint64_t below_4g_end_;
  uint64_t firmware_rom_size_;
  uint64_t hotplug_size_;
};

// True when [address, address + size) lies inside one usable e820 entry.
bool in_usable_ram(const std::vector<E820Entry>& map, uint64_t address, uint64_t size);

// Highest address range of `size` bytes, aligned to `alignment` (a power of two), lying inside a
// usable e820 entry, ending at or below `limit` (exclusive end) and not overlapping any of the
// `avoid` ranges. Used to place an initrd or modules high in RAM. 0 size is rejected.
struct AddressRange {
  uint64_t address;
  uint64_t size;
};
Result<uint64_t> find_highest_free(const std::vector<E820Entry>& map, uint64_t size,
                                   uint64_t alignment, uint64_t limit,
                                   const std::vector<AddressRange>& avoid);

}  // namespace lamina::machine
