// Segmented and linear memory access for the core: segment limit/type checks in legacy modes,
// the soft TLB (system/tlb: read, write and fetch pointers per privilege), page walks on a miss,
// MMIO for addresses outside RAM, and write protection of pages that hold translated code.
#include <algorithm>

#include "cpu/x86/core.h"
#include "cpu/x86/system/page_walker.h"

namespace lamina::cpu::x86 {

namespace {
constexpr uint64_t kPageMask = ~uint64_t{0xfff};
}

void raise_fault(uint8_t vector) { throw GuestFault{vector, 0, false}; }
void raise_fault(uint8_t vector, uint32_t error_code) { throw GuestFault{vector, error_code, true}; }

namespace {
// The MSR file's view of CR0.PG (EFER.LME is fixed while paging is on).
MsrHooks with_paging_hook(MsrHooks hooks, const CpuState& state) {
  hooks.paging_enabled = [&state] { return (state.cr0 & cr0::kPg) != 0; };
  return hooks;
}
}  // namespace

CpuCore::CpuCore(GuestMemory& guest_memory, CpuEnvironment& cpu_environment,
                 const CpuidModel& model, uint32_t index, MsrHooks hooks)
    : memory(guest_memory),
      environment(cpu_environment),
      cpuid_model(model),
      vcpu_index(index),
      msr_file(model.features(),
               MsrStorage{state.msr, state.segment[kFs].base, state.segment[kGs].base},
               with_paging_hook(std::move(hooks), state)) {}

uint64_t CpuCore::read_register_sized(uint8_t index, uint8_t size, bool rex) const {
  switch (size) {
    case 1: return read_register<uint8_t>(index, rex);
    case 2: return read_register<uint16_t>(index, rex);
    case 4: return read_register<uint32_t>(index, rex);
    default: return state.gpr[index];
  }
}

void CpuCore::write_register_sized(uint8_t index, uint8_t size, bool rex, uint64_t value) {
  switch (size) {
    case 1: write_register<uint8_t>(index, rex, static_cast<uint8_t>(value)); break;
    case 2: write_register<uint16_t>(index, rex, static_cast<uint16_t>(value)); break;
    case 4: write_register<uint32_t>(index, rex, static_cast<uint32_t>(value)); break;
    default: state.gpr[index] = value; break;
  }
}

// SDM vol. 3A, 5.3 (limit checking) and 5.4 (type checking).
uint64_t CpuCore::legacy_linear_address(uint8_t segment, uint64_t offset, uint32_t size,
                                        Access access) {
  const SegmentCache& cache = state.segment[segment];
  const uint8_t fault = segment == kSs ? vector::kStackFault : vector::kGeneralProtection;
  const uint64_t last = offset + size - 1;
  if (state.protected_mode() && !state.virtual_8086()) {
    if (!cache.present()) raise_fault(fault, 0);
    const uint8_t type = cache.type();
    const bool code = type & 8;
    if (access == Access::kWrite && (code || !(type & 2))) raise_fault(fault, 0);
    if (access == Access::kRead && code && !(type & 2)) raise_fault(fault, 0);
    if (!code && (type & 4)) {
      // Expand-down: valid offsets are limit+1 .. 0xffff or 0xffffffff.
      const uint64_t upper = cache.default_big() ? 0xffffffffu : 0xffffu;
      if (offset <= cache.limit || last > upper) raise_fault(fault, 0);
      return (cache.base + offset) & 0xffffffffu;
    }
  }
  if (last > cache.limit) raise_fault(fault, 0);
  return (cache.base + offset) & 0xffffffffu;
}

uint64_t CpuCore::read_sized(uint8_t segment, uint64_t offset, uint8_t size) {
  switch (size) {
    case 1: return read<uint8_t>(segment, offset);
    case 2: return read<uint16_t>(segment, offset);
    case 4: return read<uint32_t>(segment, offset);
    default: return read<uint64_t>(segment, offset);
  }
}

void CpuCore::write_sized(uint8_t segment, uint64_t offset, uint8_t size, uint64_t value) {
  switch (size) {
    case 1: write<uint8_t>(segment, offset, static_cast<uint8_t>(value)); break;
    case 2: write<uint16_t>(segment, offset, static_cast<uint16_t>(value)); break;
    case 4: write<uint32_t>(segment, offset, static_cast<uint32_t>(value)); break;
    default: write<uint64_t>(segment, offset, value); break;
  }
}

CpuCore::PageTarget CpuCore::translate_page(uint64_t linear, Access access, bool user) {
  const PagingRegisters registers = paging_registers();
  const AccessContext context{access, user, !user && state.cpl < 3 && (state.rflags & rflags::kAc)};
  auto translation =
      walk_page_tables(registers, memory, linear, context, cpuid_model.features().paging());
  if (!translation) {
    state.cr2 = translation.error().linear;
    raise_fault(vector::kPageFault, translation.error().error_code);
  }
  // Without paging the walker gives the identity; legacy linear addresses are 32 bits.
  if (!(state.cr0 & cr0::kPg)) translation->physical &= 0xffffffffu;
  translation->physical &= physical_address_mask;
  const uint64_t physical = translation->physical;
  const uint64_t physical_page = physical & kPageMask;
  // The xAPIC page is decoded before memory, even when relocated over RAM (SDM 11.4.5): it
  // takes the MMIO path and is never cached.
  const uint64_t apic_base = msr_file.apic_base();
  if ((apic_base & (kApicBaseEnable | kApicBaseExtended)) == kApicBaseEnable &&
      (apic_base & kPageMask) == physical_page)
    return {physical, nullptr};
  // Shadow RAM the chipset made read-only (PAM): the write goes to the MMIO bus, whose shadow
  // device drops it or redirects it; such pages never get write pointers in the TLB.
  if (access == Access::kWrite && memory.write_protected(physical_page)) return {physical, nullptr};
  std::byte* host = memory.host_pointer(physical_page, 4096);
  if (host == nullptr) return {physical, nullptr};
  if (access == Access::kWrite) {
    // Live migration's dirty log: a page is marked when a write makes it writable here,
    // before the store; Machine::take_dirty_pages flushes the write entries as it takes the
    // log, so every later store comes back through this point.
    memory.note_written(physical_page, 4096);
    if (blocks.is_code_page(physical_page)) {
      // Self-modifying code: drop the page's blocks before the store lands.
      if (blocks.invalidate_page(physical_page, running_block)) stop_block = true;
    }
    if (shared_code != nullptr && shared_code->tracked(physical_page))
      shared_code->note_write(physical_page, owner);
  }
  // A write fills the write pointers after the checks above. A read or fetch fills them too
  // when those checks would have nothing to do: the page's dirty flag is set already (no walk
  // needed to set it), it holds no translated code and is no shadow ROM, no other vCPU tracks
  // its code, and the dirty log is off (starting it flushes write pointers: kFlushWrites). A
  // page that later becomes a code page loses them in protect_code_page as any other.
  const bool writes_checked =
      access == Access::kWrite ||
      (translation->dirty && shared_code == nullptr && !memory.dirty_log().logging() &&
       !memory.write_protected(physical_page) && !blocks.is_code_page(physical_page));
  const TlbTraps traps{.writes = !writes_checked,
                       .data = breakpoints.data_mask != 0 &&
                               data_breakpoint_in_page(breakpoints, linear & kPageMask),
                       .user_data = alignment_check};
  tlb.insert(linear, *translation, registers, host, traps);
  return {physical, host + (physical & 0xfff)};
}

uint64_t CpuCore::translate(uint64_t linear, Access access, bool user) {
  return translate_page(linear, access, user).physical;
}

uint64_t CpuCore::read_linear_slow(uint64_t linear, uint8_t size, bool user) {
  // SDM 6.15, interrupt 17: a 2-, 4- or 8-byte operand must be aligned to its size.
  if (alignment_check && user && (linear & (size - 1u)) != 0)
    raise_fault(vector::kAlignmentCheck, 0);
  const uint64_t value = read_linear_unchecked(linear, size, user);
  // Data breakpoints are traps: the access completes, the #DB follows the instruction.
  if (breakpoints.data_mask != 0)
    note_breakpoint_hits(match_data(breakpoints, linear, size, false));
  return value;
}

void CpuCore::write_linear_slow(uint64_t linear, uint8_t size, uint64_t value, bool user) {
  if (alignment_check && user && (linear & (size - 1u)) != 0)
    raise_fault(vector::kAlignmentCheck, 0);
  write_linear_unchecked(linear, size, value, user);
  if (breakpoints.data_mask != 0) note_breakpoint_hits(match_data(breakpoints, linear, size, true));
}

uint64_t CpuCore::read_linear_unchecked(uint64_t linear, uint8_t size, bool user) {
  if ((linear & 0xfff) + size > 4096) {
    // Split access: translate both pages before reading either (faults come first).
    const uint8_t first = static_cast<uint8_t>(4096 - (linear & 0xfff));
    const PageTarget low = translate_page(linear, Access::kRead, user);
    const PageTarget high = translate_page(linear + first, Access::kRead, user);
    uint64_t value = 0;
    for (uint8_t i = 0; i < size; ++i) {
      const PageTarget& target = i < first ? low : high;
      const uint64_t offset = i < first ? i : i - first;
      const uint64_t byte = target.host != nullptr
                                ? std::to_integer<uint64_t>(target.host[offset])
                                : environment.mmio_read(target.physical + offset, 1) & 0xff;
      value |= byte << (8 * i);
    }
    return value;
  }
  const PageTarget target = translate_page(linear, Access::kRead, user);
  if (target.host == nullptr) return environment.mmio_read(target.physical, size);
  uint64_t value = 0;
  std::memcpy(&value, target.host, size);
  return value;
}

void CpuCore::write_linear_unchecked(uint64_t linear, uint8_t size, uint64_t value, bool user) {
  if ((linear & 0xfff) + size > 4096) {
    const uint8_t first = static_cast<uint8_t>(4096 - (linear & 0xfff));
    const PageTarget low = translate_page(linear, Access::kWrite, user);
    const PageTarget high = translate_page(linear + first, Access::kWrite, user);
    for (uint8_t i = 0; i < size; ++i) {
      const PageTarget& target = i < first ? low : high;
      const uint64_t offset = i < first ? i : i - first;
      const uint8_t byte = static_cast<uint8_t>(value >> (8 * i));
      if (target.host != nullptr) {
        target.host[offset] = std::byte{byte};
      } else {
        environment.mmio_write(target.physical + offset, 1, byte);
      }
    }
    if (low.host != nullptr) note_store_landed(low.physical);
    if (high.host != nullptr) note_store_landed(high.physical);
    return;
  }
  const PageTarget target = translate_page(linear, Access::kWrite, user);
  if (target.host == nullptr) {
    environment.mmio_write(target.physical, size, value);
    return;
  }
  std::memcpy(target.host, &value, size);
  note_store_landed(target.physical);
}

void CpuCore::note_store_landed(uint64_t physical) {
  const uint64_t page = physical & kPageMask;
  if (shared_code != nullptr && shared_code->tracked(page) && shared_code->is_code(page))
    shared_code->note_write(page, owner);
}

std::byte* CpuCore::writable_host_pointer(uint64_t linear, uint8_t size) {
  if ((linear & 0xfff) + size > 4096) return nullptr;
  if (std::byte* host = tlb.lookup(linear, AccessType::kWrite, user_access())) return host;
  std::byte* host = translate_page(linear, Access::kWrite, user_access()).host;
  // Checked pages go through write_linear_slow (alignment, data breakpoints).
  return data_page_checked(linear, user_access()) ? nullptr : host;
}

uint64_t CpuCore::code_physical(uint64_t linear) {
  const TlbPage* entry = tlb.find(linear);
  if (entry != nullptr && entry->permits(AccessType::kExecute, user_access()))
    return entry->physical_page() | (linear & 0xfff);
  return translate(linear, Access::kExecute, user_access());
}

size_t CpuCore::fetch_code(uint64_t linear, uint8_t* out, size_t count, uint64_t& physical,
                           bool& ram) {
  const size_t available = std::min<size_t>(count, 4096 - (linear & 0xfff));
  const std::byte* host = tlb.lookup(linear, AccessType::kExecute, user_access());
  if (host != nullptr) {
    physical = tlb.find(linear)->physical_page() | (linear & 0xfff);
  } else {
    const PageTarget target = translate_page(linear, Access::kExecute, user_access());
    physical = target.physical;
    host = target.host;
  }
  ram = host != nullptr;
  if (host != nullptr) {
    std::memcpy(out, host, available);
  } else {
    for (size_t i = 0; i < available; ++i)
      out[i] = static_cast<uint8_t>(environment.mmio_read(physical + i, 1));
  }
  return available;
}

void CpuCore::flush_tlb(bool include_global) {
  // Links to code on global pages hold over a CR3 load as the TLB's global entries do.
  if (include_global) {
    blocks.new_generation();
    tlb.flush_all();
  } else {
    blocks.new_address_space();
    tlb.flush_non_global();
  }
}

void CpuCore::invalidate_tlb_page(uint64_t linear) {
  // In 64-bit code (CS base 0, RIP is linear) a page no chained successor lies on changes no
  // link; elsewhere every INVLPG starts a new generation.
  // An INVLPG in a large page's range flushes the whole TLB (Tlb::invalidate_page): links to
  // its other 4 KiB slices go too.
  const bool flushed_all = tlb.invalidate_page(linear);
  if (flushed_all || code_mode != CodeMode::k64 || blocks.page_linked(linear)) blocks.new_generation();
}

uint8_t CpuCore::stack_address_size() const {
  if (code_mode == CodeMode::k64) return 8;
  return state.segment[kSs].default_big() ? 4 : 2;
}

uint64_t CpuCore::stack_pointer() const {
  switch (stack_address_size()) {
    case 8: return state.gpr[kRsp];
    case 4: return state.gpr[kRsp] & 0xffffffffu;
    default: return state.gpr[kRsp] & 0xffffu;
  }
}

void CpuCore::set_stack_pointer(uint64_t value) {
  switch (stack_address_size()) {
    case 8: state.gpr[kRsp] = value; break;
    case 4: state.gpr[kRsp] = value & 0xffffffffu; break;
    default: state.gpr[kRsp] = (state.gpr[kRsp] & ~uint64_t{0xffff}) | (value & 0xffff); break;
  }
}

void CpuCore::push_slow(uint64_t value, uint8_t size) {
  const uint64_t new_top = stack_pointer() - size;
  const uint64_t masked = stack_address_size() == 8 ? new_top
                          : stack_address_size() == 4 ? new_top & 0xffffffffu
                                                      : new_top & 0xffffu;
  write_sized(kSs, masked, size, value);
  set_stack_pointer(masked);
}

uint64_t CpuCore::pop_slow(uint8_t size) {
  const uint64_t top = stack_pointer();
  const uint64_t value = read_sized(kSs, top, size);
  set_stack_pointer(top + size);
  return value;
}

void CpuCore::update_mode() {
  const SegmentCache& code = state.segment[kCs];
  if (state.long_mode_active() && code.long_mode()) {
    code_mode = CodeMode::k64;
  } else {
    code_mode = (state.protected_mode() && !state.virtual_8086() && code.default_big())
                    ? CodeMode::k32
                    : CodeMode::k16;
  }
  // Chained successors map a RIP to a block as fetching code did when they were recorded: they
  // stay valid while nothing that fetching depends on has changed (TLB flushes, CR3 loads,
  // INVLPG and code writes move the generation on elsewhere). Supervisor and user code keep separate links
  // (the TLB's permissions differ).
  const FetchContext context{code_mode, code.base, code.limit, state.cr0, state.cr4};
  if (context != fetch_context) {
    fetch_context = context;
    blocks.new_generation();
  }
  blocks.set_user_context(state.cpl == 3);
  tlb.set_user(user_access());
  for (size_t i = 0; i < effective_base.size(); ++i) {
    effective_base[i] = (code_mode == CodeMode::k64 && i < kFs) ? 0 : state.segment[i].base;
  }
  update_alignment_check();
}

}  // namespace lamina::cpu::x86
