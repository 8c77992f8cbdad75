#pragma once
// The Linux zero page (struct boot_params, Documentation/arch/x86/zero-page.rst) a boot loader
// hands the kernel in RSI: the kernel's setup header as the loader updated it, the e820 map,
// where the command line and initrd are, and the ACPI RSDP address.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"
#include "machine/memory_layout.h"

namespace lamina::machine {

inline constexpr uint64_t kBootParamsSize = 4096;
inline constexpr size_t kMaxE820Entries = 128;  // E820_MAX_ENTRIES_ZEROPAGE

// Offsets in boot_params (zero-page.rst and boot.rst).
namespace boot_params_offset {
inline constexpr uint64_t kAcpiRsdpAddr = 0x070;
inline constexpr uint64_t kExtRamdiskImage = 0x0C0;
inline constexpr uint64_t kExtRamdiskSize = 0x0C4;
inline constexpr uint64_t kExtCmdLinePtr = 0x0C8;
inline constexpr uint64_t kAltMemK = 0x1E0;
inline constexpr uint64_t kE820Entries = 0x1E8;
inline constexpr uint64_t kSentinel = 0x1EF;
inline constexpr uint64_t kSetupHeader = 0x1F1;
inline constexpr uint64_t kBootFlag = 0x1FE;
inline constexpr uint64_t kHeaderMagic = 0x202;
inline constexpr uint64_t kVersion = 0x206;
inline constexpr uint64_t kTypeOfLoader = 0x210;
inline constexpr uint64_t kLoadflags = 0x211;
inline constexpr uint64_t kCode32Start = 0x214;
inline constexpr uint64_t kRamdiskImage = 0x218;
inline constexpr uint64_t kRamdiskSize = 0x21C;
inline constexpr uint64_t kCmdLinePtr = 0x228;
inline constexpr uint64_t kInitrdAddrMax = 0x22C;
inline constexpr uint64_t kKernelAlignment = 0x230;
inline constexpr uint64_t kRelocatableKernel = 0x234;
inline constexpr uint64_t kXloadflags = 0x236;
inline constexpr uint64_t kCmdlineSize = 0x238;
inline constexpr uint64_t kSetupData = 0x250;
inline constexpr uint64_t kE820Table = 0x2D0;
}  // namespace boot_params_offset

struct BootParamsInput {
  // The setup header bytes from 0x1F1 (BzImage::header_bytes); empty for an ELF vmlinux, in
  // which case a protocol 2.15 header is synthesized.
  std::span<const std::byte> setup_header;
  uint64_t command_line_address = 0;
  uint64_t initrd_address = 0;
  uint64_t initrd_size = 0;
  uint64_t acpi_rsdp_address = 0;  // 0: the kernel searches the EBDA and 0xE0000-0xFFFFF
  uint64_t code32_start = 0;       // where the protected-mode kernel was put (0: leave as is)
  std::vector<E820Entry> e820;
};

using BootParams = std::array<std::byte, kBootParamsSize>;

// Builds the zero page. type_of_loader is 0xFF (undefined loader, boot.rst); loadflags keeps
// the kernel's bits but clears KASLR_FLAG, which only the kernel's decompressor sets when it
// randomized the kernel's address (boot.rst, "loadflags", bit 1). Fails when the e820 map has
// more than 128 entries or the setup header is longer than its place in boot_params.
Result<BootParams> build_boot_params(const BootParamsInput& input);

}  // namespace lamina::machine
