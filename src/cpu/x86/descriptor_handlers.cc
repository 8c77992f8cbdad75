// Descriptor-table instructions: LGDT/LIDT/SGDT/SIDT, LLDT/SLDT, LTR/STR, SMSW/LMSW,
// LAR/LSL/VERR/VERW and ARPL (SDM vol. 2; vol. 3A 2.4 and 7.2.4).
#include "cpu/x86/handlers.h"
#include "cpu/x86/operands.h"

namespace lamina::cpu::x86 {
namespace {

void require_protected(const CpuCore& core) {
  if (!core.state.protected_mode() || core.state.virtual_8086()) raise_fault(vector::kInvalidOpcode);
}
void require_cpl0(const CpuCore& core) {
  if (core.state.cpl != 0) raise_fault(vector::kGeneralProtection, 0);
}

// 0F 01 /0-/3: the operand is a 16-bit limit then a 24-, 32- or 64-bit base.
void table_register(CpuCore& core, const Instruction& in) {
  const uint8_t group = in.group_index();
  DescriptorTableRegister& table = (group & 1) ? core.state.idtr : core.state.gdtr;
  const uint64_t address = core.effective_address(in);
  const bool wide = core.code_mode == CodeMode::k64;
  if (group >= 2) {
    require_cpl0(core);
    const uint16_t limit = core.read<uint16_t>(in.segment, address);
    uint64_t base = wide ? core.read<uint64_t>(in.segment, address + 2) : core.read<uint32_t>(in.segment, address + 2);
    if (!wide && in.operand_size == 2) base &= 0xffffff;
    table.limit = limit;
    table.base = base;
    core.stop_block = true;
  } else {
    core.write<uint16_t>(in.segment, address, table.limit);
    if (wide) {
      core.write<uint64_t>(in.segment, address + 2, table.base);
    } else {
      core.write<uint32_t>(in.segment, address + 2, static_cast<uint32_t>(table.base));
    }
  }
}

void store_selector(CpuCore& core, const Instruction& in, uint16_t selector) {
  if (in.memory) {
    core.write<uint16_t>(in.segment, core.effective_address(in), selector);
  } else {
    core.write_register_sized(in.rm, in.operand_size, false, selector);
  }
}

void store_machine_status(CpuCore& core, const Instruction& in) {
  if (in.memory) {
    core.write<uint16_t>(in.segment, core.effective_address(in), static_cast<uint16_t>(core.state.cr0));
  } else {
    core.write_register_sized(in.rm, in.operand_size, false, core.state.cr0);
  }
}

// LMSW loads PE, MP, EM, TS and cannot clear PE.
void load_machine_status(CpuCore& core, const Instruction& in) {
  require_cpl0(core);
  const uint16_t value = read_rm<uint16_t>(core, in);
  const uint64_t keep_pe = core.state.cr0 & cr0::kPe;
  core.state.cr0 = (core.state.cr0 & ~uint64_t{0xe}) | (value & 0xf) | keep_pe;
  core.update_mode();
  core.stop_block = true;
}

// The descriptor LLDT or LTR names in the GDT: 16 bytes in IA-32e mode (SDM 7.2.3), the upper
// half nullopt when it lies past the GDT limit. An LDT selector is refused by the checks.
struct SystemDescriptor {
  std::optional<uint64_t> low;
  std::optional<uint64_t> high;
};
SystemDescriptor read_system_descriptor(CpuCore& core, uint16_t selector) {
  if (selector_is_local(selector)) return {};
  SystemDescriptor descriptor{core.read_descriptor(selector), uint64_t{0}};
  if (descriptor.low && core.state.long_mode_active())
    descriptor.high = core.read_descriptor_high(selector);
  return descriptor;
}

void load_local_descriptor_table(CpuCore& core, uint16_t selector) {
  const SystemDescriptor descriptor = read_system_descriptor(core, selector);
  core.state.ldtr = CpuCore::segment_cache(checked(check_lldt(
      selector, descriptor.low, descriptor.high, core.state.long_mode_active())));
}

void load_task_register(CpuCore& core, uint16_t selector) {
  const SystemDescriptor descriptor = read_system_descriptor(core, selector);
  SegmentCache task = CpuCore::segment_cache(checked(
      check_ltr(selector, descriptor.low, descriptor.high, core.state.long_mode_active())));
  // LTR marks the TSS busy in the GDT (SDM 7.2.4).
  core.write_system(core.state.gdtr.base + selector_index(selector) * 8u + 5, 1,
                    (with_busy_bit(*descriptor.low, true) >> 40) & 0xff);
  task.attributes |= 2;
  core.state.tr = task;
}

// A descriptor LAR, LSL, VERR and VERW may look at: a code or data segment the CPL and RPL
// see (conforming code is always seen), or for LAR/LSL the system types `system_allowed` takes.
template <typename SystemAllowed>
std::optional<SegmentDescriptor> visible_descriptor(CpuCore& core, uint16_t selector,
                                                    std::optional<uint64_t> raw,
                                                    SystemAllowed system_allowed) {
  if (!raw) return std::nullopt;  // null or outside the table: ZF = 0, no fault
  const SegmentDescriptor descriptor = decode_segment_descriptor(*raw);
  if (descriptor.system && !system_allowed(descriptor.type)) return std::nullopt;
  const bool visible = descriptor.conforming() ||
                       (descriptor.dpl >= core.state.cpl && descriptor.dpl >= selector_rpl(selector));
  if (!visible) return std::nullopt;
  return descriptor;
}

// VERR (0F 00 /4) and VERW (/5).
void verify_segment(CpuCore& core, const Instruction& in) {
  const uint16_t selector = read_rm<uint16_t>(core, in);
  const auto descriptor = visible_descriptor(core, selector, core.read_descriptor(selector),
                                             [](uint8_t) { return false; });
  const bool ok = descriptor &&
                  (in.group_index() == 4 ? descriptor->readable() : descriptor->writable());
  update_flags(core, rflags::kZf, ok ? rflags::kZf : 0);
}

void group6(CpuCore& core, const Instruction& in) {
  require_protected(core);
  switch (in.group_index()) {
    case 0: store_selector(core, in, core.state.ldtr.selector); return;
    case 1: store_selector(core, in, core.state.tr.selector); return;
    case 2:
      require_cpl0(core);
      load_local_descriptor_table(core, read_rm<uint16_t>(core, in));
      return;
    case 3:
      require_cpl0(core);
      load_task_register(core, read_rm<uint16_t>(core, in));
      return;
    default: verify_segment(core, in); return;
  }
}

// LAR (0F 02) and LSL (0F 03).
void load_access(CpuCore& core, const Instruction& in) {
  require_protected(core);
  const uint16_t selector = read_rm<uint16_t>(core, in);
  const bool lar = in.opcode == 0x102;
  const bool long_mode = core.state.long_mode_active();
  // System types LAR/LSL accept (SDM vol. 2, LAR table 3-60 and LSL).
  auto system_allowed = [&](uint8_t type) {
    using namespace system_type;
    if (long_mode) return type == kLdt || type == kTssAvailable || type == kTssBusy || (lar && type == kCallGate);
    return type == kTss16Available || type == kLdt || type == kTss16Busy || type == kTssAvailable ||
           type == kTssBusy || (lar && (type == kCallGate16 || type == kTaskGate || type == kCallGate));
  };
  const std::optional<uint64_t> raw = core.read_descriptor(selector);
  const auto descriptor = visible_descriptor(core, selector, raw, system_allowed);
  if (descriptor) {
    // LAR: the descriptor's high dword masked with 00FFFF00h, limit bits 19:16 included, as
    // AMD's APM (vol. 3, LAR) says and Intel and AMD hardware both do (Intel leaves 19:16
    // undefined); the differential test compares it with the host.
    const uint64_t value = lar ? (*raw >> 32) & 0x00ffff00 : descriptor->limit;
    core.write_register_sized(in.reg, in.operand_size, in.rex, value);
  }
  update_flags(core, rflags::kZf, descriptor ? rflags::kZf : 0);
}

void adjust_rpl(CpuCore& core, const Instruction& in) {
  require_protected(core);
  const uint16_t source = read_reg<uint16_t>(core, in);
  bool changed = false;
  modify_rm<uint16_t>(core, in, [&](uint16_t destination) {
    changed = (destination & 3) < (source & 3);
    return changed ? static_cast<uint16_t>((destination & ~3u) | (source & 3)) : destination;
  });
  update_flags(core, rflags::kZf, changed ? rflags::kZf : 0);
}

}  // namespace

Handler select_descriptor_handler(const Instruction& in) {
  switch (in.opcode) {
    case 0x100: return &group6;
    case 0x101:
      if (in.memory && in.group_index() <= 3) return &table_register;
      if (in.group_index() == 4) return &store_machine_status;
      if (in.group_index() == 6) return &load_machine_status;
      return nullptr;
    case 0x102: case 0x103: return &load_access;
    case 0x63: return in.mode != CodeMode::k64 ? &adjust_rpl : nullptr;
    default: return nullptr;
  }
}

}  // namespace lamina::cpu::x86
