#include "machine/boot_params.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "base/byte_order.h"
#include "machine/bzimage.h"

namespace lamina::machine {

namespace {

namespace off = boot_params_offset;

// The setup header may reach to 0x290 (where edd_mbr_sig_buffer starts).
constexpr uint64_t kSetupHeaderEnd = 0x290;

// A header for a kernel that came without one (an ELF vmlinux): the facts a 64-bit kernel of
// protocol 2.15 declares about itself, so the kernel finds sane values where it looks.
void synthesize_header(BootParams& params) {
  store_le<uint16_t>(&params[off::kBootFlag], 0xAA55);
  store_le<uint32_t>(&params[off::kHeaderMagic], 0x53726448);  // "HdrS"
  store_le<uint16_t>(&params[off::kVersion], 0x020F);
  params[off::kLoadflags] = std::byte{kLoadedHigh};
  store_le<uint32_t>(&params[off::kCode32Start], 0x100000);
  store_le<uint32_t>(&params[off::kInitrdAddrMax], 0x7FFFFFFF);
  store_le<uint32_t>(&params[off::kKernelAlignment], 0x200000);
  params[off::kRelocatableKernel] = std::byte{1};
  store_le<uint16_t>(&params[off::kXloadflags], kXlfKernel64 | kXlfCanBeLoadedAbove4G);
  store_le<uint32_t>(&params[off::kCmdlineSize], 2047);
}

}  // namespace

Result<BootParams> build_boot_params(const BootParamsInput& input) {
  BootParams params{};
  if (input.setup_header.empty()) {
    synthesize_header(params);
  } else {
    if (input.setup_header.size() > kSetupHeaderEnd - off::kSetupHeader) {
      return fail(ErrorCode::kCorrupt, fmt::format("setup header of {} bytes does not fit in "
                                                   "boot_params",
                                                   input.setup_header.size()));
    }
    std::memcpy(&params[off::kSetupHeader], input.setup_header.data(), input.setup_header.size());
  }
  if (input.e820.size() > kMaxE820Entries) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("memory map has {} entries; boot_params holds {}", input.e820.size(),
                            kMaxE820Entries));
  }
  params[off::kTypeOfLoader] = std::byte{0xFF};
  // setup_data is the loader's list of extra data (boot.rst, protocol 2.09); we pass none, so
  // whatever the image file carries there must not reach the kernel.
  if (input.setup_header.size() >= off::kSetupData + 8 - off::kSetupHeader) {
    store_le<uint64_t>(&params[off::kSetupData], 0);
  }
  params[off::kLoadflags] = std::byte{static_cast<uint8_t>(
      (static_cast<uint8_t>(params[off::kLoadflags]) | kLoadedHigh) & ~kKaslrFlag)};
  if (input.code32_start != 0) {
    store_le<uint32_t>(&params[off::kCode32Start], static_cast<uint32_t>(input.code32_start));
  }
  // 64-bit values are split: the low half in the setup header, the high half in ext_ fields.
  store_le<uint32_t>(&params[off::kCmdLinePtr], static_cast<uint32_t>(input.command_line_address));
  store_le<uint32_t>(&params[off::kExtCmdLinePtr],
                     static_cast<uint32_t>(input.command_line_address >> 32));
  store_le<uint32_t>(&params[off::kRamdiskImage], static_cast<uint32_t>(input.initrd_address));
  store_le<uint32_t>(&params[off::kExtRamdiskImage],
                     static_cast<uint32_t>(input.initrd_address >> 32));
  store_le<uint32_t>(&params[off::kRamdiskSize], static_cast<uint32_t>(input.initrd_size));
  store_le<uint32_t>(&params[off::kExtRamdiskSize],
                     static_cast<uint32_t>(input.initrd_size >> 32));
  store_le<uint64_t>(&params[off::kAcpiRsdpAddr], input.acpi_rsdp_address);

  // alt_mem_k: KiB of memory above 1 MiB up to the first hole, for kernels that ignore e820.
  uint64_t extended = 0;
  for (const E820Entry& entry : input.e820) {
    if (entry.type == E820Type::kUsable && entry.address == kHighMemoryStart) {
      extended = entry.size / kKiB;
    }
  }
  store_le<uint32_t>(&params[off::kAltMemK],
                     static_cast<uint32_t>(std::min<uint64_t>(extended, UINT32_MAX)));
  params[off::kE820Entries] = std::byte{static_cast<uint8_t>(input.e820.size())};
  for (size_t i = 0; i < input.e820.size(); ++i) {
    std::byte* entry = &params[off::kE820Table + i * 20];
    store_le<uint64_t>(entry, input.e820[i].address);
    store_le<uint64_t>(entry + 8, input.e820[i].size);
    store_le<uint32_t>(entry + 16, static_cast<uint32_t>(input.e820[i].type));
  }
  return params;
}

}  // namespace lamina::machine
