// Legacy-mode-only instructions: DAA DAS AAA AAS AAM AAD (BCD arithmetic), SALC and BOUND
// (SDM vol. 2). The decoder rejects them in 64-bit mode.
#include "cpu/x86/handlers.h"
#include "cpu/x86/operands.h"

namespace lamina::cpu::x86 {
namespace {

uint8_t al(const CpuCore& core) { return static_cast<uint8_t>(core.state.gpr[kRax]); }
void set_al(CpuCore& core, uint8_t value) { core.write_register<uint8_t>(kRax, false, value); }

void decimal_adjust(CpuCore& core, const Instruction& in) {
  const bool subtract = in.opcode == 0x2f;
  const uint8_t old_al = al(core);
  const bool old_carry = core.state.flags.cf();
  bool carry = false;
  bool adjust = false;
  uint8_t value = old_al;
  if ((value & 0xf) > 9 || core.state.flags.af()) {
    carry = old_carry || (subtract ? value < 6 : value > 0xf9);
    value = static_cast<uint8_t>(subtract ? value - 6 : value + 6);
    adjust = true;
  }
  if (old_al > 0x99 || old_carry) {
    value = static_cast<uint8_t>(subtract ? value - 0x60 : value + 0x60);
    carry = true;
  }
  set_al(core, value);
  set_logic_flags<uint8_t>(core, value, carry, false, adjust);
}

void ascii_adjust(CpuCore& core, const Instruction& in) {
  const bool subtract = in.opcode == 0x3f;
  uint16_t ax = static_cast<uint16_t>(core.state.gpr[kRax]);
  const bool adjust = (ax & 0xf) > 9 || core.state.flags.af();
  if (adjust) {
    if (subtract) {
      ax = static_cast<uint16_t>(ax - 6 - 0x100);  // AX - 6, then AH - 1 (SDM vol. 2, AAS)
    } else {
      ax = static_cast<uint16_t>(ax + 0x106);
    }
  }
  ax &= 0xff0f;
  core.write_register<uint16_t>(kRax, false, ax);
  set_logic_flags<uint8_t>(core, static_cast<uint8_t>(ax), adjust, false, adjust);
}

void ascii_multiply_adjust(CpuCore& core, const Instruction& in) {
  const uint8_t base = static_cast<uint8_t>(in.immediate);
  if (base == 0) raise_fault(vector::kDivideError);
  const uint8_t value = al(core);
  core.write_register<uint16_t>(kRax, false, static_cast<uint16_t>(((value / base) << 8) | (value % base)));
  set_logic_flags<uint8_t>(core, static_cast<uint8_t>(value % base), false, false);
}

void ascii_divide_adjust(CpuCore& core, const Instruction& in) {
  const uint8_t base = static_cast<uint8_t>(in.immediate);
  const uint16_t ax = static_cast<uint16_t>(core.state.gpr[kRax]);
  const uint8_t value = static_cast<uint8_t>((ax & 0xff) + (ax >> 8) * base);
  core.write_register<uint16_t>(kRax, false, value);
  set_logic_flags<uint8_t>(core, value, false, false);
}

void set_al_from_carry(CpuCore& core, const Instruction&) { set_al(core, core.state.flags.cf() ? 0xff : 0); }

void check_bound(CpuCore& core, const Instruction& in) {
  const uint64_t address = core.effective_address(in);
  if (in.operand_size == 2) {
    const auto index = static_cast<int16_t>(read_reg<uint16_t>(core, in));
    const auto lower = static_cast<int16_t>(core.read<uint16_t>(in.segment, address));
    const auto upper = static_cast<int16_t>(core.read<uint16_t>(in.segment, address + 2));
    if (index < lower || index > upper) raise_fault(vector::kBoundRange);
  } else {
    const auto index = static_cast<int32_t>(read_reg<uint32_t>(core, in));
    const auto lower = static_cast<int32_t>(core.read<uint32_t>(in.segment, address));
    const auto upper = static_cast<int32_t>(core.read<uint32_t>(in.segment, address + 4));
    if (index < lower || index > upper) raise_fault(vector::kBoundRange);
  }
}

}  // namespace

Handler select_bcd_handler(const Instruction& in) {
  switch (in.opcode) {
    case 0x27: case 0x2f: return &decimal_adjust;
    case 0x37: case 0x3f: return &ascii_adjust;
    case 0xd4: return &ascii_multiply_adjust;
    case 0xd5: return &ascii_divide_adjust;
    case 0xd6: return &set_al_from_carry;
    case 0x62: return &check_bound;
    default: return nullptr;
  }
}

}  // namespace lamina::cpu::x86
