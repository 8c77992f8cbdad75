// Binary ALU operations (ADD OR ADC SBB AND SUB XOR CMP, TEST), INC/DEC, NOT/NEG with lazy
// flags (SDM vol. 2 instruction pages; flags per vol. 1, appendix A).
#include "cpu/x86/handlers.h"
#include "cpu/x86/operands.h"

namespace lamina::cpu::x86 {
namespace {

enum Form : int { kRmReg, kRegRm, kAccImm, kRmImm };

template <int kOp, typename T>
inline T compute(LazyFlags& flags, T a, T b, bool carry) {
  constexpr uint8_t size = sizeof(T);
  T result = 0;
  switch (kOp) {
    case 0: result = static_cast<T>(a + b); flags.set(FlagOp::kAdd, size, result, a, b); break;
    case 1: result = static_cast<T>(a | b); flags.set(FlagOp::kLogic, size, result, a, b); break;
    case 2:
      result = static_cast<T>(a + b + carry);
      flags.set(FlagOp::kAdc, size, result, a, b, carry);
      break;
    case 3:
      result = static_cast<T>(a - b - carry);
      flags.set(FlagOp::kSbb, size, result, a, b, carry);
      break;
    case 4: result = static_cast<T>(a & b); flags.set(FlagOp::kLogic, size, result, a, b); break;
    case 5: case 7:
      result = static_cast<T>(a - b);
      flags.set(FlagOp::kSub, size, result, a, b);
      break;
    case 6: result = static_cast<T>(a ^ b); flags.set(FlagOp::kLogic, size, result, a, b); break;
    case 8: result = static_cast<T>(a & b); flags.set(FlagOp::kLogic, size, result, a, b); break;  // TEST
  }
  return result;
}

// Operations 7 (CMP) and 8 (TEST) do not write their destination.
template <int kOp, typename T, int kForm>
void alu(CpuCore& core, const Instruction& in) {
  LazyFlags& flags = core.state.flags;
  const bool carry = (kOp == 2 || kOp == 3) ? flags.cf() : false;
  constexpr bool writes = kOp != 7 && kOp != 8;
  if constexpr (kForm == kRegRm) {
    const T a = read_reg<T>(core, in);
    const T result = compute<kOp, T>(flags, a, read_rm<T>(core, in), carry);
    if (writes) write_reg<T>(core, in, result);
  } else if constexpr (kForm == kAccImm) {
    const T a = core.read_register<T>(kRax, false);
    const T result = compute<kOp, T>(flags, a, static_cast<T>(in.immediate), carry);
    if (writes) core.write_register<T>(kRax, false, result);
  } else {
    const T b = kForm == kRmReg ? read_reg<T>(core, in) : static_cast<T>(in.immediate);
    if constexpr (writes) {
      modify_rm<T>(core, in, [&](T a) { return compute<kOp, T>(flags, a, b, carry); });
    } else {
      compute<kOp, T>(flags, read_rm<T>(core, in), b, carry);
    }
  }
}

template <typename T>
void increment(CpuCore& core, const Instruction& in) {
  LazyFlags& flags = core.state.flags;
  const bool carry = flags.cf();
  modify_rm<T>(core, in, [&](T a) {
    const T result = static_cast<T>(a + 1);
    flags.set(FlagOp::kInc, sizeof(T), result, a, 1, carry);
    return result;
  });
}

template <typename T>
void decrement(CpuCore& core, const Instruction& in) {
  LazyFlags& flags = core.state.flags;
  const bool carry = flags.cf();
  modify_rm<T>(core, in, [&](T a) {
    const T result = static_cast<T>(a - 1);
    flags.set(FlagOp::kDec, sizeof(T), result, a, 1, carry);
    return result;
  });
}

// INC/DEC r (40-4F outside 64-bit mode).
template <typename T, bool kIncrement>
void step_register(CpuCore& core, const Instruction& in) {
  LazyFlags& flags = core.state.flags;
  const bool carry = flags.cf();
  const uint8_t index = in.opcode_byte() & 7;
  const T a = core.read_register<T>(index, false);
  const T result = static_cast<T>(kIncrement ? a + 1 : a - 1);
  flags.set(kIncrement ? FlagOp::kInc : FlagOp::kDec, sizeof(T), result, a, 1, carry);
  core.write_register<T>(index, false, result);
}

template <typename T>
void complement(CpuCore& core, const Instruction& in) {
  modify_rm<T>(core, in, [](T a) { return static_cast<T>(~a); });
}

template <typename T>
void negate(CpuCore& core, const Instruction& in) {
  LazyFlags& flags = core.state.flags;
  modify_rm<T>(core, in, [&](T a) {
    const T result = static_cast<T>(T{0} - a);
    flags.set(FlagOp::kSub, sizeof(T), result, 0, a);
    return result;
  });
}

template <int kOp, int kForm>
Handler by_size(uint8_t size) {
  switch (size) {
    case 1: return &alu<kOp, uint8_t, kForm>;
    case 2: return &alu<kOp, uint16_t, kForm>;
    case 4: return &alu<kOp, uint32_t, kForm>;
    default: return &alu<kOp, uint64_t, kForm>;
  }
}

template <int kForm>
Handler by_operation(int operation, uint8_t size) {
  switch (operation) {
    case 0: return by_size<0, kForm>(size);
    case 1: return by_size<1, kForm>(size);
    case 2: return by_size<2, kForm>(size);
    case 3: return by_size<3, kForm>(size);
    case 4: return by_size<4, kForm>(size);
    case 5: return by_size<5, kForm>(size);
    case 6: return by_size<6, kForm>(size);
    case 7: return by_size<7, kForm>(size);
    default: return by_size<8, kForm>(size);
  }
}

}  // namespace

Handler select_alu_handler(const Instruction& in) {
  const uint16_t op = in.opcode;
  const uint8_t size = in.operand_size;
  if (op < 0x40 && (op & 7) < 6) {
    const int operation = op >> 3;
    const bool byte = (op & 1) == 0;
    const uint8_t width = byte ? 1 : size;
    switch (op & 7) {
      case 0: case 1: return by_operation<kRmReg>(operation, width);
      case 2: case 3: return by_operation<kRegRm>(operation, width);
      default: return by_operation<kAccImm>(operation, width);
    }
  }
  switch (op) {
    case 0x80: case 0x82: return by_operation<kRmImm>(in.group_index(), 1);
    case 0x81: case 0x83: return by_operation<kRmImm>(in.group_index(), size);
    case 0x84: return by_operation<kRmReg>(8, 1);
    case 0x85: return by_operation<kRmReg>(8, size);
    case 0xa8: return by_operation<kAccImm>(8, 1);
    case 0xa9: return by_operation<kAccImm>(8, size);
    case 0xf6: case 0xf7: {
      const uint8_t width = op == 0xf6 ? 1 : size;
      switch (in.group_index()) {
        case 0: case 1: return by_operation<kRmImm>(8, width);
        case 2: return pick_by_size(width, []<typename T>() -> Handler { return &complement<T>; });
        case 3: return pick_by_size(width, []<typename T>() -> Handler { return &negate<T>; });
        default: return nullptr;  // MUL/IMUL/DIV/IDIV: muldiv_handlers.cc
      }
    }
    case 0xfe: case 0xff: {
      const uint8_t width = op == 0xfe ? 1 : size;
      if (in.group_index() == 0) return pick_by_size(width, []<typename T>() -> Handler { return &increment<T>; });
      if (in.group_index() == 1) return pick_by_size(width, []<typename T>() -> Handler { return &decrement<T>; });
      return nullptr;
    }
    default: break;
  }
  if (op >= 0x40 && op <= 0x4f && in.mode != CodeMode::k64) {
    const bool increment_form = op < 0x48;
    if (size == 2) return increment_form ? &step_register<uint16_t, true> : &step_register<uint16_t, false>;
    return increment_form ? &step_register<uint32_t, true> : &step_register<uint32_t, false>;
  }
  return nullptr;
}

}  // namespace lamina::cpu::x86
