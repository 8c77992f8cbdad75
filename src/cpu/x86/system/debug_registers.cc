#include "cpu/x86/system/debug_registers.h"

namespace lamina::cpu::x86 {
namespace {

constexpr uint8_t kLengths[4] = {1, 2, 8, 4};  // LENn encodings (SDM 17.2.5)

bool overlaps(uint64_t start, uint64_t size, const Breakpoint& breakpoint) {
  return start < breakpoint.address + breakpoint.length && breakpoint.address < start + size;
}

}  // namespace

BreakpointSet decode_breakpoints(const std::array<uint64_t, 8>& dr, bool debug_extensions) {
  BreakpointSet set;
  const uint64_t control = dr[7];
  for (unsigned index = 0; index < 4; ++index) {
    // Ln and Gn enable alike: Lamina has no task switches to clear the local ones.
    if (((control >> (2 * index)) & 3) == 0) continue;
    const unsigned access = (control >> (16 + 4 * index)) & 3;
    const uint8_t length = kLengths[(control >> (18 + 4 * index)) & 3];
    const auto bit = static_cast<uint8_t>(1u << index);
    Breakpoint& breakpoint = set.entries[index];
    switch (access) {
      case 0:
        // LEN must be 00 for an instruction breakpoint; other lengths are undefined and the
        // address of the instruction's first byte is matched as given.
        breakpoint = Breakpoint{BreakpointType::kInstruction, dr[index], 1};
        set.instruction_mask |= bit;
        break;
      case 1:
      case 3:
        // A misaligned address is taken aligned down to the length (the low bits are ignored).
        breakpoint = Breakpoint{access == 1 ? BreakpointType::kWrite : BreakpointType::kReadWrite,
                                dr[index] & ~uint64_t{length - 1u}, length};
        set.data_mask |= bit;
        break;
      default:
        if (!debug_extensions) break;
        breakpoint =
            Breakpoint{BreakpointType::kIo, dr[index] & 0xffff & ~uint64_t{length - 1u}, length};
        set.io_mask |= bit;
        break;
    }
  }
  return set;
}

uint8_t match_instruction(const BreakpointSet& set, uint64_t linear) {
  uint8_t hits = 0;
  for (unsigned index = 0; index < 4; ++index) {
    if (((set.instruction_mask >> index) & 1) && set.entries[index].address == linear)
      hits |= static_cast<uint8_t>(1u << index);
  }
  return hits;
}

uint8_t match_data(const BreakpointSet& set, uint64_t linear, uint64_t size, bool write) {
  uint8_t hits = 0;
  for (unsigned index = 0; index < 4; ++index) {
    if (!((set.data_mask >> index) & 1)) continue;
    const Breakpoint& breakpoint = set.entries[index];
    if (!write && breakpoint.type == BreakpointType::kWrite) continue;
    if (overlaps(linear, size, breakpoint)) hits |= static_cast<uint8_t>(1u << index);
  }
  return hits;
}

bool data_breakpoint_in_page(const BreakpointSet& set, uint64_t page) {
  for (unsigned index = 0; index < 4; ++index) {
    if (((set.data_mask >> index) & 1) && overlaps(page, 4096, set.entries[index])) return true;
  }
  return false;
}

uint8_t match_io(const BreakpointSet& set, uint16_t port, uint8_t size) {
  uint8_t hits = 0;
  for (unsigned index = 0; index < 4; ++index) {
    if (((set.io_mask >> index) & 1) && overlaps(port, size, set.entries[index]))
      hits |= static_cast<uint8_t>(1u << index);
  }
  return hits;
}

std::expected<uint8_t, Fault> check_debug_register_access(uint8_t index, uint8_t cpl,
                                                          bool debug_extensions, uint64_t dr7) {
  if (cpl != 0) return std::unexpected(general_protection_fault());
  // REX.R names DR8-DR15, which do not exist.
  if (index > 7) return std::unexpected(Fault{exception_vector::kInvalidOpcode, 0});
  if (index == 4 || index == 5) {
    // With CR4.DE, DR4 and DR5 are reserved; without it they alias DR6 and DR7.
    if (debug_extensions) return std::unexpected(Fault{exception_vector::kInvalidOpcode, 0});
    index = static_cast<uint8_t>(index + 2);
  }
  // General detect (SDM 17.2.4): #DB before the instruction, as a fault.
  if (dr7 & dr7::kGd) return std::unexpected(Fault{exception_vector::kDebug, 0});
  return index;
}

std::expected<uint64_t, Fault> debug_register_value(uint8_t index, uint64_t value) {
  if (index < 4) return value;
  if (value >> 32) return std::unexpected(general_protection_fault());
  if (index == 6) return (value & dr6::kWritable) | dr6::kFixed1;
  return (value & dr7::kWritable) | dr7::kFixed1;
}

}  // namespace lamina::cpu::x86
