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

// A system descriptor from the GDT; 16 bytes in long mode (SDM 7.2.3).
SegmentCache system_descriptor(CpuCore& core, uint16_t selector, uint64_t& descriptor) {
  if (selector & 4) raise_fault(vector::kGeneralProtection, selector & ~3u);
  descriptor = core.read_descriptor(selector);
  SegmentCache cache = CpuCore::make_cache(selector, descriptor);
  if (core.state.long_mode_active())
    cache.base |= core.read_system(core.state.gdtr.base + (selector & ~7u) + 8, 4) << 32;
  return cache;
}

void group6(CpuCore& core, const Instruction& in) {
  require_protected(core);
  const uint8_t group = in.group_index();
  switch (group) {
    case 0: store_selector(core, in, core.state.ldtr.selector); return;
    case 1: store_selector(core, in, core.state.tr.selector); return;
    case 2: {  // LLDT
      require_cpl0(core);
      const uint16_t selector = read_rm<uint16_t>(core, in);
      if ((selector & ~3u) == 0) {
        core.state.ldtr = SegmentCache{selector, 0, 0, 0};
        return;
      }
      uint64_t descriptor = 0;
      const SegmentCache cache = system_descriptor(core, selector, descriptor);
      if (cache.code_or_data() || cache.type() != 2) raise_fault(vector::kGeneralProtection, selector & ~3u);
      if (!cache.present()) raise_fault(vector::kSegmentNotPresent, selector & ~3u);
      core.state.ldtr = cache;
      return;
    }
    case 3: {  // LTR: an available TSS, marked busy in the GDT
      require_cpl0(core);
      const uint16_t selector = read_rm<uint16_t>(core, in);
      if ((selector & ~3u) == 0) raise_fault(vector::kGeneralProtection, 0);
      uint64_t descriptor = 0;
      SegmentCache cache = system_descriptor(core, selector, descriptor);
      const uint8_t type = cache.type();
      const bool available = core.state.long_mode_active() ? type == 9 : (type == 9 || type == 1);
      if (cache.code_or_data() || !available) raise_fault(vector::kGeneralProtection, selector & ~3u);
      if (!cache.present()) raise_fault(vector::kSegmentNotPresent, selector & ~3u);
      core.write_system(core.state.gdtr.base + (selector & ~7u) + 5, 1, ((descriptor >> 40) & 0xff) | 2);
      cache.attributes |= 2;
      core.state.tr = cache;
      return;
    }
    default: {  // VERR (4), VERW (5)
      const uint16_t selector = read_rm<uint16_t>(core, in);
      bool ok = false;
      if ((selector & ~3u) != 0) {
        try {
          const SegmentCache cache = CpuCore::make_cache(selector, core.read_descriptor(selector));
          const bool code = cache.type() & 8;
          const bool conforming = code && (cache.type() & 4);
          const bool visible = conforming || (cache.dpl() >= core.state.cpl && cache.dpl() >= (selector & 3));
          const bool allowed = group == 4 ? (!code || (cache.type() & 2)) : (!code && (cache.type() & 2));
          ok = cache.code_or_data() && visible && allowed;
        } catch (const GuestFault&) {
          ok = false;  // outside the table: ZF=0, no fault
        }
      }
      update_flags(core, rflags::kZf, ok ? rflags::kZf : 0);
      return;
    }
  }
}

// LAR (0F 02) and LSL (0F 03).
void load_access(CpuCore& core, const Instruction& in) {
  require_protected(core);
  const uint16_t selector = read_rm<uint16_t>(core, in);
  bool ok = false;
  uint64_t value = 0;
  if ((selector & ~3u) != 0) {
    try {
      const uint64_t descriptor = core.read_descriptor(selector);
      const SegmentCache cache = CpuCore::make_cache(selector, descriptor);
      const uint8_t type = cache.type();
      bool valid_type = cache.code_or_data();
      if (!valid_type) {
        // System types LAR/LSL accept (SDM vol. 2, LAR table 3-60 and LSL).
        const bool long_mode = core.state.long_mode_active();
        const bool lar = in.opcode == 0x102;
        valid_type = long_mode ? (type == 2 || type == 9 || type == 11 || (lar && type == 12))
                               : (type == 1 || type == 2 || type == 3 || type == 9 || type == 11 ||
                                  (lar && (type == 4 || type == 5 || type == 12)));
      }
      const bool conforming = cache.code_or_data() && (type & 0xc) == 0xc;
      const bool visible = conforming || (cache.dpl() >= core.state.cpl && cache.dpl() >= (selector & 3));
      ok = valid_type && visible;
      value = in.opcode == 0x102 ? (descriptor >> 32) & 0x00f0ff00 : cache.limit;
    } catch (const GuestFault&) {
      ok = false;
    }
  }
  if (ok) core.write_register_sized(in.reg, in.operand_size, in.rex, value);
  update_flags(core, rflags::kZf, ok ? rflags::kZf : 0);
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
