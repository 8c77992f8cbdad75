#pragma once
// The core's side of the x87/MMX/SSE contract (simd/simd_unit.h): the decoded instruction in
// the unit's form, its control bits, and memory/register access through the core's MMU.

#include <optional>

#include "cpu/x86/core.h"
#include "cpu/x86/simd/simd_unit.h"

namespace lamina::cpu::x86 {

SimdInstruction to_simd_instruction(const Instruction& in);
SimdControl simd_control(const CpuState& state);

// Memory at the instruction's effective address; a fault is kept (not thrown through the
// unit) and rethrown by the core when the unit reports kMemoryFault.
class CoreSimdOperands final : public SimdOperands {
 public:
  CoreSimdOperands(CpuCore& core, const Instruction& in);
  bool read_memory(uint64_t offset, std::span<std::byte> data) override;
  bool write_memory(uint64_t offset, std::span<const std::byte> data) override;
  uint64_t read_gpr(uint8_t index) override;
  void write_gpr(uint8_t index, uint64_t value, uint8_t bytes) override;
  uint64_t effective_address() override { return effective_address_; }
  uint64_t instruction_address() override { return core_.instruction_rip; }
  uint64_t read_rflags() override { return core_.read_rflags(); }
  void write_rflags(uint64_t value) override { core_.state.write_rflags(value); }
  const std::optional<GuestFault>& fault() const { return fault_; }

 private:
  CpuCore& core_;
  const Instruction& instruction_;
  uint64_t effective_address_ = 0;
  std::optional<GuestFault> fault_;
};

// Raises the exception a SimdOutcome stands for (nothing for kDone).
void raise_simd_outcome(SimdOutcome outcome, const CpuState& state, const CoreSimdOperands& operands);

}  // namespace lamina::cpu::x86
