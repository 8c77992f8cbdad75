#pragma once
// The setup header of a Linux x86 bzImage (Documentation/arch/x86/boot.rst, "The Real-Mode
// Kernel Header"), parsed and checked against the file: where the protected-mode kernel and its
// compressed payload lie, and what the kernel asks of its boot loader.
//
// BzImage holds spans into the caller's file bytes; the file must outlive it.

#include <cstddef>
#include <cstdint>
#include <span>

#include "base/error.h"

namespace lamina::machine {

// Offsets in the image file (and in boot_params, which embeds the header at the same place).
inline constexpr uint64_t kSetupHeaderOffset = 0x1F1;
inline constexpr uint16_t kMinimumBootProtocol = 0x020C;  // 2.12: xloadflags, 64-bit entry flag

// loadflags bits (boot.rst, field "loadflags").
inline constexpr uint8_t kLoadedHigh = 1 << 0;
inline constexpr uint8_t kKaslrFlag = 1 << 1;  // set by the decompressor when it randomized
inline constexpr uint8_t kCanUseHeap = 1 << 7;

// xloadflags bits (boot.rst, field "xloadflags").
inline constexpr uint16_t kXlfKernel64 = 1 << 0;  // has the 64-bit entry at +0x200
inline constexpr uint16_t kXlfCanBeLoadedAbove4G = 1 << 1;

struct SetupHeader {
  uint8_t setup_sects = 0;  // 0 means 4 (boot.rst)
  uint32_t syssize = 0;     // protected-mode code size in 16-byte paragraphs
  uint16_t version = 0;
  uint8_t loadflags = 0;
  uint32_t code32_start = 0;
  uint32_t initrd_addr_max = 0;
  uint32_t kernel_alignment = 0;
  bool relocatable = false;
  uint8_t min_alignment = 0;  // log2
  uint16_t xloadflags = 0;
  uint32_t cmdline_size = 0;  // maximum command line length without the NUL
  uint32_t payload_offset = 0;
  uint32_t payload_length = 0;
  uint64_t pref_address = 0;
  uint32_t init_size = 0;
};

struct BzImage {
  SetupHeader header;
  // The header's bytes from 0x1F1 to its end (0x202 + the byte at 0x201), copied into
  // boot_params by the loader (boot.rst, "64-bit Boot Protocol").
  std::span<const std::byte> header_bytes;
  // Everything after the real-mode setup sectors: what the loader puts at the load address.
  std::span<const std::byte> protected_mode;
  // The compressed kernel inside the protected-mode part (empty if payload_length is 0).
  std::span<const std::byte> payload;
};

// True when the bytes carry the "HdrS" signature at 0x202.
bool is_bzimage(std::span<const std::byte> file);

// Parses and checks a bzImage: boot flag 0xAA55, "HdrS", protocol >= 2.12, setup sectors and
// syssize inside the file, the payload inside the protected-mode part, cmdline_size and
// initrd_addr_max present. Errors are kCorrupt (the file contradicts itself) or kUnsupported
// (valid but too old) and name the field.
Result<BzImage> parse_bzimage(std::span<const std::byte> file);

}  // namespace lamina::machine
