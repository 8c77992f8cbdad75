// Segment descriptors and segment-register loads (SDM vol. 3A, 3.4-3.5 and 5.5-5.6; the MOV,
// POP and LDS/LES/LFS/LGS/LSS instruction pages of vol. 2).
#include "cpu/x86/core.h"

namespace lamina::cpu::x86 {

uint64_t CpuCore::read_descriptor(uint16_t selector, uint8_t fault_vector) {
  const bool local = selector & 4;
  const uint16_t index_offset = selector & ~7u;
  uint64_t base = state.gdtr.base;
  uint32_t limit = state.gdtr.limit;
  if (local) {
    if (!state.ldtr.present()) raise_fault(fault_vector, selector & ~3u);
    base = state.ldtr.base;
    limit = state.ldtr.limit;
  }
  if (uint32_t{index_offset} + 7 > limit) raise_fault(fault_vector, selector & ~3u);
  return read_system(base + index_offset, 8);
}

SegmentCache CpuCore::make_cache(uint16_t selector, uint64_t descriptor) {
  SegmentCache cache;
  cache.selector = selector;
  cache.base = ((descriptor >> 16) & 0xffffff) | ((descriptor >> 32) & 0xff000000);
  uint32_t limit = static_cast<uint32_t>((descriptor & 0xffff) | ((descriptor >> 32) & 0xf0000));
  if (descriptor & (uint64_t{1} << 55)) limit = (limit << 12) | 0xfff;
  cache.limit = limit;
  cache.attributes = static_cast<uint16_t>(((descriptor >> 40) & 0xff) |
                                           (((descriptor >> 52) & 0xf) << 12));
  return cache;
}

void CpuCore::set_code_segment(const SegmentCache& cache, uint8_t cpl) {
  state.segment[kCs] = cache;
  state.segment[kCs].selector = static_cast<uint16_t>((cache.selector & ~3u) | cpl);
  state.cpl = cpl;
  update_mode();
  stop_block = true;
}

void CpuCore::load_segment(uint8_t segment, uint16_t selector) {
  SegmentCache& target = state.segment[segment];
  if (!state.protected_mode() || state.virtual_8086()) {
    // Real and virtual-8086 mode: base = selector * 16; limit and attributes stay.
    target.selector = selector;
    target.base = uint64_t{selector} << 4;
    if (state.virtual_8086()) {
      target.limit = 0xffff;
      target.attributes = 0xf3;
    }
    update_mode();
    return;
  }
  const uint8_t rpl = selector & 3;
  const uint8_t cpl = state.cpl;
  if ((selector & ~3u) == 0) {
    // Null selector: allowed except in SS (outside 64-bit mode at CPL < 3); using it faults.
    if (segment == kSs && !(code_mode == CodeMode::k64 && cpl < 3 && rpl == cpl))
      raise_fault(vector::kGeneralProtection, 0);
    target = SegmentCache{selector, 0, 0, 0};
    if (segment == kSs) target.attributes = static_cast<uint16_t>(0x93 | (cpl << 5));
    update_mode();
    return;
  }
  const uint64_t descriptor = read_descriptor(selector);
  SegmentCache cache = make_cache(selector, descriptor);
  const uint8_t type = cache.type();
  const bool code = type & 8;
  const uint32_t error = selector & ~3u;
  if (!cache.code_or_data()) raise_fault(vector::kGeneralProtection, error);
  if (segment == kSs) {
    if (rpl != cpl || cache.dpl() != cpl || code || !(type & 2))
      raise_fault(vector::kGeneralProtection, error);
    if (!cache.present()) raise_fault(vector::kStackFault, error);
  } else {
    if (code && !(type & 2)) raise_fault(vector::kGeneralProtection, error);  // execute-only
    const bool conforming = code && (type & 4);
    if (!conforming && (cache.dpl() < cpl || cache.dpl() < rpl))
      raise_fault(vector::kGeneralProtection, error);
    if (!cache.present()) raise_fault(vector::kSegmentNotPresent, error);
  }
  // Set the accessed bit in the descriptor the way the processor does (SDM 3.4.5.1).
  if (!(descriptor & (uint64_t{1} << 40))) {
    const uint64_t table = (selector & 4) ? state.ldtr.base : state.gdtr.base;
    write_system(table + (selector & ~7u) + 5, 1, ((descriptor >> 40) & 0xff) | 1);
    cache.attributes |= 1;
  }
  target = cache;
  update_mode();
}

uint64_t CpuCore::tss_stack_pointer(uint8_t cpl, uint16_t* stack_selector) {
  const uint8_t tss_type = state.tr.type();
  if (state.long_mode_active()) {
    // 64-bit TSS: RSP0-2 at offsets 4, 12, 20 (SDM 7.7).
    if (uint32_t{4} + cpl * 8 + 7 > state.tr.limit) raise_fault(vector::kInvalidTss, state.tr.selector & ~3u);
    return read_system(state.tr.base + 4 + cpl * 8, 8);
  }
  if ((tss_type & 8) != 0) {
    // 32-bit TSS: ESPn at 4 + 8n, SSn at 8 + 8n (SDM 7.2.1).
    const uint32_t offset = 4 + cpl * 8;
    if (offset + 5 > state.tr.limit) raise_fault(vector::kInvalidTss, state.tr.selector & ~3u);
    *stack_selector = static_cast<uint16_t>(read_system(state.tr.base + offset + 4, 2));
    return read_system(state.tr.base + offset, 4);
  }
  // 16-bit TSS: SPn at 2 + 4n, SSn at 4 + 4n.
  const uint32_t offset = 2 + cpl * 4;
  if (offset + 3 > state.tr.limit) raise_fault(vector::kInvalidTss, state.tr.selector & ~3u);
  *stack_selector = static_cast<uint16_t>(read_system(state.tr.base + offset + 2, 2));
  return read_system(state.tr.base + offset, 2);
}

}  // namespace lamina::cpu::x86
