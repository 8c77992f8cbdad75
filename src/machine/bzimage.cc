#include "machine/bzimage.h"

#include <fmt/format.h>

#include "base/byte_order.h"

namespace lamina::machine {

namespace {

// Field offsets in the image (boot.rst, "The Real-Mode Kernel Header").
constexpr uint64_t kSetupSects = 0x1F1;
constexpr uint64_t kSyssize = 0x1F4;
constexpr uint64_t kBootFlag = 0x1FE;
constexpr uint64_t kJump = 0x200;
constexpr uint64_t kHeaderMagic = 0x202;
constexpr uint64_t kVersion = 0x206;
constexpr uint64_t kLoadflags = 0x211;
constexpr uint64_t kCode32Start = 0x214;
constexpr uint64_t kInitrdAddrMax = 0x22C;
constexpr uint64_t kKernelAlignment = 0x230;
constexpr uint64_t kRelocatableKernel = 0x234;
constexpr uint64_t kMinAlignment = 0x235;
constexpr uint64_t kXloadflags = 0x236;
constexpr uint64_t kCmdlineSize = 0x238;
constexpr uint64_t kPayloadOffset = 0x248;
constexpr uint64_t kPayloadLength = 0x24C;
constexpr uint64_t kPrefAddress = 0x258;
constexpr uint64_t kInitSize = 0x260;
constexpr uint64_t kHeaderEndAtLeast = 0x264;  // through init_size, protocol 2.10+

template <typename T>
T at(std::span<const std::byte> file, uint64_t offset) {
  return load_le<T>(file.data() + offset);
}

}  // namespace

bool is_bzimage(std::span<const std::byte> file) {
  return file.size() >= kHeaderMagic + 4 && at<uint32_t>(file, kHeaderMagic) == 0x53726448;
}

Result<BzImage> parse_bzimage(std::span<const std::byte> file) {
  if (file.size() < 1024) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("kernel image of {} bytes is too short to be a bzImage", file.size()));
  }
  if (!is_bzimage(file)) {
    return fail(ErrorCode::kCorrupt, "kernel image has no \"HdrS\" setup header signature");
  }
  if (at<uint16_t>(file, kBootFlag) != 0xAA55) {
    return fail(ErrorCode::kCorrupt, "kernel image's boot_flag is not 0xAA55");
  }
  BzImage image;
  SetupHeader& header = image.header;
  header.version = at<uint16_t>(file, kVersion);
  if (header.version < kMinimumBootProtocol) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("kernel uses boot protocol {}.{:02}; Lamina needs 2.12 or newer "
                            "(Linux 3.8+)",
                            header.version >> 8, header.version & 0xFF));
  }
  // The header ends where the jump at 0x200 lands: 0x202 + its 8-bit displacement.
  const uint64_t header_end = kHeaderMagic + static_cast<uint8_t>(file[kJump + 1]);
  header.setup_sects = static_cast<uint8_t>(file[kSetupSects]);
  const uint64_t setup_size = uint64_t{header.setup_sects == 0 ? 4u : header.setup_sects} * 512 +
                              512;
  if (header_end < kHeaderEndAtLeast || header_end > setup_size) {
    return fail(ErrorCode::kCorrupt, fmt::format("setup header end {:#x} is outside the setup "
                                                 "code",
                                                 header_end));
  }
  if (setup_size >= file.size()) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("kernel image is truncated: {} setup sectors but {} bytes in all",
                            header.setup_sects, file.size()));
  }
  header.syssize = at<uint32_t>(file, kSyssize);
  header.loadflags = static_cast<uint8_t>(file[kLoadflags]);
  header.code32_start = at<uint32_t>(file, kCode32Start);
  header.initrd_addr_max = at<uint32_t>(file, kInitrdAddrMax);
  header.kernel_alignment = at<uint32_t>(file, kKernelAlignment);
  header.relocatable = file[kRelocatableKernel] != std::byte{0};
  header.min_alignment = static_cast<uint8_t>(file[kMinAlignment]);
  header.xloadflags = at<uint16_t>(file, kXloadflags);
  header.cmdline_size = at<uint32_t>(file, kCmdlineSize);
  header.payload_offset = at<uint32_t>(file, kPayloadOffset);
  header.payload_length = at<uint32_t>(file, kPayloadLength);
  header.pref_address = at<uint64_t>(file, kPrefAddress);
  header.init_size = at<uint32_t>(file, kInitSize);

  image.header_bytes = file.subspan(kSetupHeaderOffset, header_end - kSetupHeaderOffset);
  image.protected_mode = file.subspan(setup_size);
  // syssize counts 16-byte paragraphs of the protected-mode part, rounded up: the file may end
  // inside the last paragraph (Debian's memtest86+ does) or be padded beyond it.
  if (uint64_t{header.syssize} * 16 > image.protected_mode.size() + 15) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("kernel image is truncated: syssize says {} bytes of kernel, the file "
                            "has {}",
                            uint64_t{header.syssize} * 16, image.protected_mode.size()));
  }
  if (header.payload_length > 0) {
    if (header.payload_offset > image.protected_mode.size() ||
        header.payload_length > image.protected_mode.size() - header.payload_offset) {
      return fail(ErrorCode::kCorrupt,
                  fmt::format("kernel payload ({:#x} bytes at {:#x}) lies outside the {:#x}-byte "
                              "protected-mode kernel",
                              header.payload_length, header.payload_offset,
                              image.protected_mode.size()));
    }
    image.payload = image.protected_mode.subspan(header.payload_offset, header.payload_length);
  }
  if (header.kernel_alignment != 0 && (header.kernel_alignment & (header.kernel_alignment - 1))) {
    return fail(ErrorCode::kCorrupt, fmt::format("kernel_alignment {:#x} is not a power of two",
                                                 header.kernel_alignment));
  }
  return image;
}

}  // namespace lamina::machine
