// System instructions: CLI/STI, HLT, MOV to/from CRn and DRn, CLTS, INVLPG, WBINVD/INVD,
// RDTSC/RDTSCP/RDPMC, RDMSR/WRMSR, CPUID, SYSCALL/SYSRET, SYSENTER/SYSEXIT, SWAPGS, fences,
// CLFLUSH, VMCALL/VMMCALL, IN/OUT and the I/O permission check (SDM vol. 2; vol. 3A ch. 2,
// 5 and 19). MOV to CR0/CR3/CR4 are system/control_registers' rules.
#include <atomic>

#include "cpu/x86/handlers.h"
#include "cpu/x86/msr.h"
#include "cpu/x86/operands.h"
#include "cpu/x86/system/control_registers.h"
#include "cpu/x86/system/debug_registers.h"

namespace lamina::cpu::x86 {
namespace {

void require_cpl0(const CpuCore& core) {
  if (core.state.cpl != 0) raise_fault(vector::kGeneralProtection, 0);
}

uint8_t current_iopl(const CpuCore& core) { return (core.state.rflags & rflags::kIopl) >> 12; }

void clear_interrupts(CpuCore& core, const Instruction&) {
  if (core.state.protected_mode() && core.state.cpl > current_iopl(core))
    raise_fault(vector::kGeneralProtection, 0);
  core.state.rflags &= ~rflags::kIf;
}

// STI delays interrupts until after the next instruction (SDM vol. 2, STI).
void set_interrupts(CpuCore& core, const Instruction&) {
  if (core.state.protected_mode() && core.state.cpl > current_iopl(core))
    raise_fault(vector::kGeneralProtection, 0);
  if (!(core.state.rflags & rflags::kIf)) core.state.interrupt_shadow = true;
  core.state.rflags |= rflags::kIf;
  core.interrupt_window_may_open();
  core.stop_block = true;
}

void halt(CpuCore& core, const Instruction&) {
  require_cpl0(core);
  core.state.halted = true;
  core.stop_block = true;
}

void write_control(CpuCore& core, uint8_t index, uint64_t value) {
  switch (index) {
    case 0:
    case 3: core.write_paging_control(index, value); break;
    case 4:
      core.write_paging_control(index, value);
      core.update_breakpoints();  // CR4.DE gives R/W = 10b its meaning (I/O breakpoints)
      break;
    case 2: core.state.cr2 = value; break;
    case 8:
      if (value >> 4) raise_fault(vector::kGeneralProtection, 0);
      core.state.cr8 = value;
      break;
    default: raise_fault(vector::kInvalidOpcode);
  }
  core.update_mode();
  core.stop_block = true;
}

uint64_t read_control(const CpuCore& core, uint8_t index) {
  switch (index) {
    case 0: return core.state.cr0;
    case 2: return core.state.cr2;
    case 3: return core.state.cr3;
    case 4: return core.state.cr4;
    case 8: return core.state.cr8;
    default: raise_fault(vector::kInvalidOpcode);
  }
}

// 0F 20-23: the general register is ModRM.rm whatever ModRM.mod says.
void move_control(CpuCore& core, const Instruction& in) {
  require_cpl0(core);
  const uint8_t size = core.code_mode == CodeMode::k64 ? 8 : 4;
  if (in.opcode == 0x120) {
    core.write_register_sized(in.rm, size, false, read_control(core, in.reg));
  } else {
    write_control(core, in.reg, core.read_register_sized(in.rm, size, false));
  }
}

[[noreturn]] void raise(const Fault& fault) {
  if (fault.vector == vector::kGeneralProtection) raise_fault(fault.vector, fault.error_code);
  raise_fault(fault.vector);
}

// MOV to/from DRn: system/debug_registers' checks (general detect reports DR6.BD and is a
// fault); a write to DR0-DR3 or DR7 re-decodes the breakpoints before the next instruction.
void move_debug(CpuCore& core, const Instruction& in) {
  CpuState& state = core.state;
  const auto index =
      check_debug_register_access(in.reg, state.cpl, (state.cr4 & cr4::kDe) != 0, state.dr[7]);
  if (!index) {
    if (index.error().vector == vector::kDebug)
      state.dr[6] = (state.dr[6] & ~dr6::kBreakpointHits) | dr6::kBd;
    raise(index.error());
  }
  const uint8_t size = core.code_mode == CodeMode::k64 ? 8 : 4;
  if (in.opcode == 0x121) {
    core.write_register_sized(in.rm, size, false, state.dr[*index]);
    return;
  }
  const auto value = debug_register_value(*index, core.read_register_sized(in.rm, size, false));
  if (!value) raise(value.error());
  state.dr[*index] = *value;
  if (*index != 6) {
    core.update_breakpoints();
    core.stop_block = true;
  }
}

void clear_task_switched(CpuCore& core, const Instruction&) {
  require_cpl0(core);
  core.state.cr0 &= ~cr0::kTs;
}

void invalidate_page(CpuCore& core, const Instruction& in) {
  require_cpl0(core);
  core.invalidate_tlb_page(core.effective_base[in.segment] + core.effective_address(in));
}

void cache_control(CpuCore& core, const Instruction&) { require_cpl0(core); }

void read_time_stamp(CpuCore& core, const Instruction& in) {
  if ((core.state.cr4 & cr4::kTsd) && core.state.cpl != 0) raise_fault(vector::kGeneralProtection, 0);
  const uint64_t tsc = core.msr_file.tsc();
  core.write_register<uint32_t>(kRax, false, static_cast<uint32_t>(tsc));
  core.write_register<uint32_t>(kRdx, false, static_cast<uint32_t>(tsc >> 32));
  if (in.opcode == 0x101) core.write_register<uint32_t>(kRcx, false, static_cast<uint32_t>(core.state.msr.tsc_aux));
}

// RDPMC (AMD APM vol. 3): at CPL 0, or anywhere with CR4.PCE; the counters count nothing.
void read_performance_counter(CpuCore& core, const Instruction&) {
  if (core.state.cpl != 0 && !(core.state.cr4 & cr4::kPce))
    raise_fault(vector::kGeneralProtection, 0);
  const auto value =
      core.msr_file.read_performance_counter(static_cast<uint32_t>(core.state.gpr[kRcx]));
  if (!value) raise_fault(vector::kGeneralProtection, 0);
  core.write_register<uint32_t>(kRax, false, static_cast<uint32_t>(*value));
  core.write_register<uint32_t>(kRdx, false, static_cast<uint32_t>(*value >> 32));
}

void read_msr(CpuCore& core, const Instruction&) {
  require_cpl0(core);
  const auto value = read_model_specific(core, static_cast<uint32_t>(core.state.gpr[kRcx]));
  if (!value) raise_fault(vector::kGeneralProtection, 0);
  core.write_register<uint32_t>(kRax, false, static_cast<uint32_t>(*value));
  core.write_register<uint32_t>(kRdx, false, static_cast<uint32_t>(*value >> 32));
}

void write_msr(CpuCore& core, const Instruction&) {
  require_cpl0(core);
  const uint64_t value = (core.state.gpr[kRdx] << 32) | (core.state.gpr[kRax] & 0xffffffffu);
  if (!write_model_specific(core, static_cast<uint32_t>(core.state.gpr[kRcx]), value))
    raise_fault(vector::kGeneralProtection, 0);
  core.stop_block = true;
}

void cpu_identification(CpuCore& core, const Instruction&) {
  CpuidState cpuid_state;
  cpuid_state.vcpu_index = core.vcpu_index;
  cpuid_state.apic_enabled = core.msr_file.apic_base() & kApicBaseEnable;
  const CpuidResult result = core.cpuid_model.query(static_cast<uint32_t>(core.state.gpr[kRax]),
                                                    static_cast<uint32_t>(core.state.gpr[kRcx]), cpuid_state);
  core.write_register<uint32_t>(kRax, false, result.eax);
  core.write_register<uint32_t>(kRbx, false, result.ebx);
  core.write_register<uint32_t>(kRcx, false, result.ecx);
  core.write_register<uint32_t>(kRdx, false, result.edx);
}

// VMCALL/VMMCALL: Lamina offers no hypercalls, so it answers as KVM does for a hypercall it
// does not know: RAX = -KVM_ENOSYS (-1000), or -KVM_EPERM (-1) above CPL 0, truncated to 32
// bits outside 64-bit mode; RIP moves on. (Raising #UD, what bare hardware would do outside a
// VM, kills guests that probe for a hypervisor this way.)
void hypercall(CpuCore& core, const Instruction&) {
  constexpr int64_t kNoSuchHypercall = -1000, kNotPermitted = -1;
  const auto result = static_cast<uint64_t>(core.state.cpl == 0 ? kNoSuchHypercall : kNotPermitted);
  core.state.gpr[kRax] = core.code_mode == CodeMode::k64 ? result : result & 0xffffffffu;
}

void fence(CpuCore&, const Instruction&) { std::atomic_thread_fence(std::memory_order_seq_cst); }

void cache_line_flush(CpuCore& core, const Instruction& in) {
  // Checks the address like a byte read; caches are not modelled.
  (void)core.read<uint8_t>(in.segment, core.effective_address(in));
}

// CPL <= IOPL passes; otherwise (and always in virtual-8086 mode) the TSS bitmap decides.
void io_permission(CpuCore& core, uint16_t port, uint8_t size) {
  const CpuState& state = core.state;
  if (!state.protected_mode()) return;
  if (!state.virtual_8086() && state.cpl <= current_iopl(core)) return;
  const uint8_t type = state.tr.type();
  if ((type != 0x9 && type != 0xb) || state.tr.limit < 0x67) raise_fault(vector::kGeneralProtection, 0);
  const uint64_t bitmap = core.read_system(state.tr.base + 0x66, 2);
  const uint64_t offset = bitmap + port / 8;
  if (offset + 1 > state.tr.limit) raise_fault(vector::kGeneralProtection, 0);
  const uint64_t bits = core.read_system(state.tr.base + offset, 2);
  const uint64_t mask = ((uint64_t{1} << size) - 1) << (port & 7);
  if (bits & mask) raise_fault(vector::kGeneralProtection, 0);
}

void port_input(CpuCore& core, const Instruction& in) {
  const uint8_t size = (in.opcode & 1) ? (in.operand_size == 2 ? 2 : 4) : 1;
  const uint16_t port = in.opcode >= 0xec ? static_cast<uint16_t>(core.state.gpr[kRdx]) : in.immediate & 0xff;
  io_permission(core, port, size);
  core.check_io_breakpoints(port, size);
  const uint32_t value = core.environment.io_read(port, size);
  core.write_register_sized(kRax, size, false, value);
}

void port_output(CpuCore& core, const Instruction& in) {
  const uint8_t size = (in.opcode & 1) ? (in.operand_size == 2 ? 2 : 4) : 1;
  const uint16_t port = in.opcode >= 0xec ? static_cast<uint16_t>(core.state.gpr[kRdx]) : in.immediate & 0xff;
  io_permission(core, port, size);
  core.check_io_breakpoints(port, size);
  core.environment.io_write(port, size, static_cast<uint32_t>(core.read_register_sized(kRax, size, false)));
  // A device may have posted a request that must apply before the next instruction (A20).
  core.stop_block = true;
}

}  // namespace

// MOV to CR0/CR3/CR4 are system/control_registers' checks and paging transitions; the core
// stores the result (EFER.LMA lives in the MSR store) and performs the TLB flush it asks for.
void CpuCore::write_paging_control(uint8_t index, uint64_t value) {
  const CpuFeatures& features = cpuid_model.features();
  const PagingRegisters current = paging_registers();
  const auto written =
      index == 0 ? write_cr0(current, value, code_mode == CodeMode::k64, features, memory)
      : index == 3 ? write_cr3(current, value, features, memory)
                   : write_cr4(current, value, features, memory);
  if (!written) raise_fault(written.error().vector, written.error().error_code);
  const PagingRegisters& result = written->registers;
  state.cr0 = result.cr0;
  state.cr3 = result.cr3;
  state.cr4 = result.cr4;
  msr_file.set_long_mode_active((result.efer & efer::kLma) != 0);
  state.pae_pdptes = result.pae_pdptes;
  state.pae_pdptes_loaded = result.pae_pdptes_loaded;
  switch (written->flush) {
    case TlbFlush::kNone: break;
    // Entries are global only with CR4.PGE (the walker's rule), so this keeps just those.
    case TlbFlush::kNonGlobal: flush_tlb(false); break;
    case TlbFlush::kAll: flush_tlb(true); break;
  }
}

void check_io_permission(CpuCore& core, uint16_t port, uint8_t size) { io_permission(core, port, size); }

void invalid_opcode(CpuCore&, const Instruction&) { raise_fault(vector::kInvalidOpcode); }

Handler select_system_handler(const Instruction& in) {
  switch (in.opcode) {
    case 0xfa: return &clear_interrupts;
    case 0xfb: return &set_interrupts;
    case 0xf4: return &halt;
    case 0x120: case 0x122: return &move_control;
    case 0x121: case 0x123: return &move_debug;
    case 0x106: return &clear_task_switched;
    case 0x108: case 0x109: return &cache_control;
    case 0x131: return &read_time_stamp;
    case 0x133: return &read_performance_counter;
    case 0x130: return &write_msr;
    case 0x132: return &read_msr;
    case 0x1a2: return &cpu_identification;
    case 0x101:
      if (in.memory && in.group_index() == 7) return &invalidate_page;
      if (in.modrm == 0xf9) return &read_time_stamp;
      if (in.modrm == 0xc1 || in.modrm == 0xd9) return &hypercall;
      return nullptr;
    case 0x1ae:
      if (!in.memory) return &fence;
      if (in.group_index() == 7) return &cache_line_flush;
      return nullptr;
    case 0xe4: case 0xe5: case 0xec: case 0xed: return &port_input;
    case 0xe6: case 0xe7: case 0xee: case 0xef: return &port_output;
    default: return nullptr;
  }
}

}  // namespace lamina::cpu::x86
