// Segment-register loads and the descriptor reads every segment check starts from (SDM vol. 3A,
// 3.4-3.5 and 5.5-5.6; the MOV, POP and LDS/LES/LFS/LGS/LSS pages of vol. 2). The checks
// themselves are system/segment_checks; this file reads the descriptor tables for them and
// installs what they return.
#include "cpu/x86/core.h"

namespace lamina::cpu::x86 {

std::optional<uint64_t> CpuCore::read_descriptor_bytes(uint16_t selector, uint32_t offset) {
  uint64_t base = state.gdtr.base;
  uint32_t limit = state.gdtr.limit;
  if (selector_is_local(selector)) {
    if (!state.ldtr.present()) return std::nullopt;
    base = state.ldtr.base;
    limit = state.ldtr.limit;
  }
  // SDM 3.5.1: every byte of the descriptor must lie within the table's limit.
  const uint32_t first = uint32_t{selector_index(selector)} * 8 + offset;
  if (first + 7 > limit) return std::nullopt;
  return read_system(base + first, 8);
}

SegmentCache CpuCore::segment_cache(const LoadedSegment& segment) {
  const SegmentDescriptor& descriptor = segment.descriptor;
  SegmentCache cache;
  cache.selector = segment.selector;
  cache.base = descriptor.base;
  cache.limit = descriptor.limit;
  // The attribute word mirrors descriptor bits 47:40 and 55:52.
  cache.attributes = static_cast<uint16_t>(
      descriptor.type | (descriptor.system ? 0 : 0x10) | (descriptor.dpl << 5) |
      (descriptor.present ? 0x80 : 0) | (descriptor.available ? 0x1000 : 0) |
      (descriptor.long_mode ? 0x2000 : 0) | (descriptor.default_big ? 0x4000 : 0) |
      (descriptor.granularity ? 0x8000 : 0));
  if (segment.null) cache = SegmentCache{segment.selector, 0, 0, 0};
  return cache;
}

LoadedSegment CpuCore::loaded_segment(const SegmentCache& cache) {
  LoadedSegment segment;
  segment.selector = cache.selector;
  segment.null = selector_is_null(cache.selector) && !cache.present();
  SegmentDescriptor& descriptor = segment.descriptor;
  descriptor.base = cache.base;
  descriptor.limit = cache.limit;
  descriptor.type = cache.type();
  descriptor.system = !cache.code_or_data();
  descriptor.dpl = cache.dpl();
  descriptor.present = cache.present();
  descriptor.long_mode = cache.long_mode();
  descriptor.default_big = cache.default_big();
  return segment;
}

void CpuCore::mark_accessed(uint16_t selector, uint64_t descriptor) {
  if (with_accessed_bit(descriptor) == descriptor) return;
  // SDM 3.4.5.1: the processor sets the accessed bit of a segment descriptor it loads.
  const uint64_t table = selector_is_local(selector) ? state.ldtr.base : state.gdtr.base;
  write_system(table + selector_index(selector) * 8u + 5, 1,
               (with_accessed_bit(descriptor) >> 40) & 0xff);
}

void CpuCore::install_segment(uint8_t segment, const LoadedSegment& loaded,
                              std::optional<uint64_t> descriptor) {
  SegmentCache cache = segment_cache(loaded);
  if (!loaded.null && descriptor) {
    mark_accessed(loaded.selector, *descriptor);
    cache.attributes |= 1;
  }
  // A null SS of 64-bit mode keeps a usable stack at the CPL (SDM 3.4.4): flat, writable.
  if (loaded.null && segment == kSs)
    cache.attributes = static_cast<uint16_t>(0x93 | (loaded.descriptor.dpl << 5));
  state.segment[segment] = cache;
  update_mode();
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
  const std::optional<uint64_t> descriptor = read_descriptor(selector);
  const LoadedSegment loaded =
      segment == kSs
          ? checked(check_stack_segment_load(selector, descriptor, state.cpl,
                                             code_mode == CodeMode::k64))
          : checked(check_data_segment_load(selector, descriptor, state.cpl));
  install_segment(segment, loaded, descriptor);
}

CpuCore::InnerStack CpuCore::tss_inner_stack(uint8_t new_cpl, uint8_t ist) {
  const std::optional<tss::StackSlot> slot =
      tss::inner_stack_slot(state.tr.type(), state.long_mode_active(), new_cpl, ist, state.tr.limit);
  if (!slot) raise_fault(vector::kInvalidTss, state.tr.selector & ~3u);
  InnerStack stack;
  stack.pointer = read_system(state.tr.base + slot->offset, slot->pointer_bytes);
  if (slot->has_selector)
    stack.selector = static_cast<uint16_t>(read_system(state.tr.base + slot->offset + slot->pointer_bytes, 2));
  return stack;
}

}  // namespace lamina::cpu::x86
