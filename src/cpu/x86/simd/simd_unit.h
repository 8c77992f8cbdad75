#pragma once
// The contract between the CPU core (decoder, interpreter) and the x87/MMX/SSE unit.
//
// The core decodes prefixes, opcode, ModRM/SIB, displacement and immediate, computes the
// effective address, checks nothing else, and hands the instruction to execute_simd(). The unit
// owns the architectural x87/MMX/SSE state and all semantics of these instructions, including
// their CR0/CR4 checks and their exceptions, reported back as a SimdOutcome that the core turns
// into #UD, #NM, #MF, #XM or #GP. Memory goes through SimdOperands so the core's MMU (with its
// faults) stays the only path to guest memory.
//
// Thread-safety: one SimdState per vCPU, used only by that vCPU's thread.

#include <cstddef>
#include <cstdint>
#include <span>

namespace lamina::cpu::x86 {

struct SimdState;  // defined by the unit in simd/simd_state.h (x87 stack, MMX, XMM0-15, MXCSR)

enum class OpcodeMap : uint8_t {
  kOneByte,     // x87 escapes D8..DF, also FWAIT (9B)
  kTwoByte,     // 0F xx
  kThreeByte38, // 0F 38 xx
  kThreeByte3A, // 0F 3A xx
};

// One decoded instruction as the core hands it over.
struct SimdInstruction {
  OpcodeMap map = OpcodeMap::kOneByte;
  uint8_t opcode = 0;
  // The last of 66/F2/F3 that selects the SSE form (0 when none); the core applies the
  // architectural rule of which prefix wins.
  uint8_t mandatory_prefix = 0;
  bool operand_size_prefix = false;  // 66 present (also when it is the mandatory prefix)
  bool rex_w = false;
  uint8_t modrm = 0;
  uint8_t reg = 0;  // ModRM.reg extended by REX.R (0-15)
  uint8_t rm = 0;   // ModRM.rm extended by REX.B when the operand is a register (0-15)
  bool memory_operand = false;  // ModRM.mod != 3
  uint8_t immediate = 0;        // imm8 for the forms that have one
  uint8_t address_size = 64;    // 16, 32 or 64 (FSTENV/FSAVE layouts depend on operand size)
  uint8_t operand_size = 32;    // 16 or 32 (or 64 with REX.W)
  bool long_mode_64 = true;     // in 64-bit mode (affects FXSAVE64 with REX.W)
  // Any REX prefix present: byte register numbers 4-7 then mean SPL-DIL, not AH-BH (CRC32 r/m8).
  bool rex = false;
};

// Control bits the unit checks (CR0.EM/TS/MP/NE, CR4.OSFXSR/OSXMMEXCPT).
struct SimdControl {
  bool cr0_em = false;
  bool cr0_ts = false;
  bool cr0_mp = true;
  bool cr0_ne = true;
  bool cr4_osfxsr = true;
  bool cr4_osxmmexcpt = true;
  // CR0.PE=1 and not virtual-8086: FNSTENV/FLDENV/FNSAVE/FRSTOR use the protected-mode layouts
  // (SDM Vol. 1 8.1.10, figures 8-9 to 8-12); otherwise the real-mode ones.
  bool protected_mode = true;
};

// The core's side: memory at the instruction's effective address and the general registers.
class SimdOperands {
 public:
  virtual ~SimdOperands() = default;
  // Reads/writes data.size() bytes at effective address + offset. False means the access
  // faulted and the core has already recorded the fault: the unit must stop and return
  // SimdOutcome::kMemoryFault without changing architectural state further.
  virtual bool read_memory(uint64_t offset, std::span<std::byte> data) = 0;
  virtual bool write_memory(uint64_t offset, std::span<const std::byte> data) = 0;
  // General registers by number (0-15), for MOVD/MOVQ, CVTSI2SD, PMOVMSKB, FNSTSW AX, ...
  virtual uint64_t read_gpr(uint8_t index) = 0;
  // Writes `bytes` (4 or 8) of the register; a 4-byte write zero-extends as in 64-bit mode.
  virtual void write_gpr(uint8_t index, uint64_t value, uint8_t bytes) = 0;
  // The effective address itself (for FLDENV/FSTENV's FPU data pointer bookkeeping).
  virtual uint64_t effective_address() = 0;
  // Address of the instruction (FPU instruction pointer for FSTENV/FXSAVE).
  virtual uint64_t instruction_address() = 0;
  // RFLAGS, for FCOMI/FUCOMI/COMISS/UCOMISS/PTEST/PCMPxSTRx (write) and FCMOVcc (read).
  // The unit changes only the bits the instruction defines and passes the others back.
  virtual uint64_t read_rflags() = 0;
  virtual void write_rflags(uint64_t value) = 0;
};

enum class SimdOutcome : uint8_t {
  kDone,
  kNotSimd,             // not an instruction of this unit; the core handles it
  kInvalidOpcode,       // #UD
  kDeviceNotAvailable,  // #NM
  kFloatingPointError,  // #MF (x87, unmasked exception pending with CR0.NE=1)
  kSimdException,       // #XM (unmasked SSE exception, CR4.OSXMMEXCPT=1); #UD when 0
  kGeneralProtection,   // #GP(0), e.g. a misaligned 16-byte operand of an aligned form
  kMemoryFault,         // SimdOperands reported a fault already raised by the core
};

// What the core's decoder needs to know about an opcode before handing it over: whether the
// unit takes it, and whether it has a ModRM byte and an imm8. Unknown combinations are
// {false, ...} and stay the core's (POPCNT, MOVBE, MOVNTI, CLFLUSH, XSAVE, PREFETCH, NOPs, ...).
struct SimdOpcodeInfo {
  bool handled = false;
  bool has_modrm = false;
  bool has_immediate = false;
};
// 0F AE is reported as handled (it has a ModRM): execute_simd() takes /0-/3 with memory
// (FXSAVE, FXRSTOR, LDMXCSR, STMXCSR) and the register forms /5-/7 (LFENCE, MFENCE, SFENCE) and
// answers kNotSimd, with no state changed, for the rest (XSAVE*, CLFLUSH).
SimdOpcodeInfo simd_opcode_info(OpcodeMap map, uint8_t opcode, uint8_t mandatory_prefix);

// Notes for the core:
// - FWAIT (9B) is an instruction of its own: hand it over separately (FSTSW = 9B DF E0 is two).
// - x87 escapes ignore mandatory_prefix; operand_size selects the 14- or 28-byte environment.
// - For 0F F7 (MASKMOVQ/MASKMOVDQU) the effective address is DS:rDI (address-size masked).
// - CR0.NE=0 (the PC's FERR#/IRQ 13 path) is not modeled: pending x87 exceptions are ignored.

SimdOutcome execute_simd(SimdState& state, const SimdControl& control,
                         const SimdInstruction& instruction, SimdOperands& operands);

}  // namespace lamina::cpu::x86
