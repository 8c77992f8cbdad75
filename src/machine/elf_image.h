#pragma once
// ELF executables as boot loaders see them: the header's class, machine and entry point, and
// the PT_LOAD program headers, every one checked against the file (System V gABI, "Program
// Header"). Used for a decompressed Linux vmlinux (ELF64) and Multiboot kernels (ELF32).
//
// Plain values; parse_elf keeps no reference to the file.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"
#include "base/guest_memory.h"

namespace lamina::machine {

inline constexpr uint16_t kElfMachineI386 = 3;
inline constexpr uint16_t kElfMachineX86_64 = 62;

struct ElfSegment {
  uint64_t physical_address;  // p_paddr
  uint64_t virtual_address;   // p_vaddr
  uint64_t file_offset;
  uint64_t file_size;
  uint64_t memory_size;  // >= file_size; the rest is zero-filled (.bss)
};

struct ElfImage {
  bool is_64_bit = false;
  uint16_t machine = 0;
  uint64_t entry = 0;
  std::vector<ElfSegment> load_segments;  // PT_LOAD entries with a non-zero memory size

  // [lowest physical address, highest physical end) over the load segments.
  uint64_t physical_start() const;
  uint64_t physical_end() const;
  // The entry point as a physical address: e_entry itself when a segment's physical range holds
  // it, else translated through the segment whose virtual range holds it; kCorrupt otherwise.
  Result<uint64_t> physical_entry() const;
};

// True when the bytes start with the ELF magic.
bool is_elf(std::span<const std::byte> file);

// Parses a little-endian executable (ET_EXEC) ELF32 or ELF64. Fails with kCorrupt naming the
// field when a header or segment lies outside the file, sizes overflow, or memsz < filesz.
Result<ElfImage> parse_elf(std::span<const std::byte> file);

// Copies each segment's file bytes to its physical address and zeroes the rest of its memory
// size. Fails with kInvalidArgument naming the segment when it is not entirely in RAM.
[[nodiscard]] Result<void> load_elf_segments(GuestMemory& memory, std::span<const std::byte> file,
                                             const ElfImage& image);

}  // namespace lamina::machine
