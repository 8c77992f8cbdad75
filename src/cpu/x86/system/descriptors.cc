#include "cpu/x86/system/descriptors.h"

namespace lamina::cpu::x86 {

namespace {
constexpr uint64_t field(uint64_t raw, unsigned low, unsigned width) {
  return (raw >> low) & ((uint64_t{1} << width) - 1);
}
}  // namespace

SegmentDescriptor decode_segment_descriptor(uint64_t raw) {
  // SDM Figure 3-8: limit 15:0 | base 15:0 | base 23:16 | type | S | DPL | P | limit 19:16 |
  // AVL | L | D/B | G | base 31:24.
  SegmentDescriptor descriptor;
  descriptor.base = field(raw, 16, 24) | (field(raw, 56, 8) << 24);
  uint32_t limit = static_cast<uint32_t>(field(raw, 0, 16) | (field(raw, 48, 4) << 16));
  descriptor.granularity = field(raw, 55, 1) != 0;
  descriptor.limit = descriptor.granularity ? (limit << 12) | 0xfff : limit;
  descriptor.type = static_cast<uint8_t>(field(raw, 40, 4));
  descriptor.system = field(raw, 44, 1) == 0;
  descriptor.dpl = static_cast<uint8_t>(field(raw, 45, 2));
  descriptor.present = field(raw, 47, 1) != 0;
  descriptor.available = field(raw, 52, 1) != 0;
  descriptor.long_mode = field(raw, 53, 1) != 0;
  descriptor.default_big = field(raw, 54, 1) != 0;
  return descriptor;
}

bool offset_within_limit(const SegmentDescriptor& descriptor, uint64_t offset, uint64_t size) {
  if (size == 0) size = 1;
  uint64_t last = offset + size - 1;
  if (last < offset) return false;
  if (descriptor.expand_down()) {
    // SDM 5.3: valid offsets run from limit + 1 to 0xffff (B = 0) or 0xffffffff (B = 1).
    uint64_t upper = descriptor.default_big ? 0xffffffffu : 0xffffu;
    return offset > descriptor.limit && last <= upper;
  }
  return last <= descriptor.limit;
}

std::optional<SegmentDescriptor> decode_system_descriptor_64(uint64_t low, uint64_t high) {
  if (field(high, 40, 5) != 0) return std::nullopt;
  SegmentDescriptor descriptor = decode_segment_descriptor(low);
  descriptor.base |= field(high, 0, 32) << 32;
  return descriptor;
}

std::optional<GateDescriptor> decode_gate(uint64_t low, uint64_t high, bool long_mode) {
  SegmentDescriptor common = decode_segment_descriptor(low);
  if (!common.system) return std::nullopt;
  GateDescriptor gate;
  gate.dpl = common.dpl;
  gate.present = common.present;
  gate.selector = static_cast<uint16_t>(field(low, 16, 16));
  uint64_t offset = field(low, 0, 16) | (field(low, 48, 16) << 16);
  if (long_mode) {
    // SDM 5.8.3.1 and 6.14.1: only the 64-bit call (C), interrupt (E) and trap (F) gates exist.
    switch (common.type) {
      case system_type::kCallGate:
        gate.kind = GateKind::kCall;
        // The upper half's type field must be zero so the gate is not mistaken for a
        // descriptor (SDM Figure 5-9).
        if (field(high, 40, 5) != 0) return std::nullopt;
        break;
      case system_type::kInterruptGate: gate.kind = GateKind::kInterrupt; break;
      case system_type::kTrapGate: gate.kind = GateKind::kTrap; break;
      default: return std::nullopt;
    }
    gate.bits = 64;
    gate.offset = offset | (field(high, 0, 32) << 32);
    if (gate.kind != GateKind::kCall) gate.ist = static_cast<uint8_t>(field(low, 32, 3));
    return gate;
  }
  switch (common.type) {
    case system_type::kCallGate16:
      gate.kind = GateKind::kCall;
      gate.bits = 16;
      break;
    case system_type::kCallGate:
      gate.kind = GateKind::kCall;
      gate.bits = 32;
      break;
    case system_type::kInterruptGate16:
      gate.kind = GateKind::kInterrupt;
      gate.bits = 16;
      break;
    case system_type::kInterruptGate:
      gate.kind = GateKind::kInterrupt;
      gate.bits = 32;
      break;
    case system_type::kTrapGate16:
      gate.kind = GateKind::kTrap;
      gate.bits = 16;
      break;
    case system_type::kTrapGate:
      gate.kind = GateKind::kTrap;
      gate.bits = 32;
      break;
    case system_type::kTaskGate:
      gate.kind = GateKind::kTask;
      gate.bits = 32;
      break;
    default: return std::nullopt;
  }
  if (gate.kind == GateKind::kTask) {
    gate.offset = 0;
  } else {
    // 16-bit gates carry only offset 15:0 (the upper word is ignored).
    gate.offset = gate.bits == 16 ? (offset & 0xffff) : offset;
  }
  if (gate.kind == GateKind::kCall) gate.parameter_count = static_cast<uint8_t>(field(low, 32, 5));
  return gate;
}

namespace tss {

std::optional<StackSlot> inner_stack_slot(uint8_t tss_type, bool long_mode, uint8_t new_cpl,
                                          uint8_t ist, uint32_t tss_limit) {
  StackSlot slot;
  uint32_t last = 0;  // offset of the slot's last byte
  if (long_mode) {
    slot.offset = ist != 0 ? ist_offset_64(ist) : stack_pointer_offset_64(new_cpl);
    slot.pointer_bytes = 8;
    last = slot.offset + 7;
  } else if (tss_type == system_type::kTss16Available || tss_type == system_type::kTss16Busy) {
    slot.offset = stack_pointer_offset_16(new_cpl);
    slot.pointer_bytes = 2;
    slot.has_selector = true;
    last = slot.offset + 3;  // SP and SS
  } else {
    slot.offset = stack_pointer_offset_32(new_cpl);
    slot.pointer_bytes = 4;
    slot.has_selector = true;
    last = slot.offset + 5;  // ESP and SS
  }
  if (last > tss_limit) return std::nullopt;
  return slot;
}

std::optional<uint32_t> io_bitmap_offset(uint32_t tss_limit, uint16_t io_map_base, uint16_t port) {
  // Two bytes are always read so an access spanning a byte boundary of the map is covered; both
  // must lie within the limit.
  uint32_t offset = uint32_t{io_map_base} + port / 8u;
  if (offset + 1 > tss_limit) return std::nullopt;
  return offset;
}

bool io_bitmap_permits(uint16_t bitmap_word, uint16_t port, uint8_t bytes) {
  if (bytes == 0 || bytes > 4) bytes = 4;
  uint32_t mask = ((1u << bytes) - 1u) << (port & 7u);
  return (bitmap_word & mask) == 0;
}

}  // namespace tss

}  // namespace lamina::cpu::x86
