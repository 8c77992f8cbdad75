// Shifts and rotates: ROL ROR RCL RCR SHL SHR SAR (group 2) and SHLD/SHRD (SDM vol. 2,
// "RCL/RCR/ROL/ROR", "SAL/SAR/SHL/SHR", "SHLD", "SHRD"). A masked count of zero changes no
// flags; flags that the SDM leaves undefined get the values noted per case.
#include "cpu/x86/handlers.h"
#include "cpu/x86/operands.h"

namespace lamina::cpu::x86 {
namespace {

template <typename T>
constexpr unsigned kBits = sizeof(T) * 8;

template <typename T>
bool top_bit(T value) { return (value >> (kBits<T> - 1)) & 1; }

template <typename T>
T shift_value(CpuCore& core, int operation, T value, unsigned raw_count) {
  const unsigned count = raw_count & (kBits<T> == 64 ? 63 : 31);
  if (count == 0) return value;
  constexpr unsigned bits = kBits<T>;
  switch (operation) {
    case 0: {  // ROL
      const unsigned rotate = count % bits;
      const T result = rotate == 0 ? value : static_cast<T>((value << rotate) | (value >> (bits - rotate)));
      const bool carry = result & 1;
      update_flags(core, rflags::kCf | rflags::kOf,
                   (carry ? rflags::kCf : 0) | ((top_bit(result) != carry) ? rflags::kOf : 0));
      return result;
    }
    case 1: {  // ROR
      const unsigned rotate = count % bits;
      const T result = rotate == 0 ? value : static_cast<T>((value >> rotate) | (value << (bits - rotate)));
      const bool carry = top_bit(result);
      const bool next = (result >> (bits - 2)) & 1;
      update_flags(core, rflags::kCf | rflags::kOf,
                   (carry ? rflags::kCf : 0) | ((carry != next) ? rflags::kOf : 0));
      return result;
    }
    case 2: case 3: {  // RCL, RCR: rotate through CF, count modulo width + 1
      const unsigned rotate = count % (bits + 1);
      bool carry = core.state.flags.cf();
      T result = value;
      for (unsigned i = 0; i < rotate; ++i) {
        if (operation == 2) {
          const bool out = top_bit(result);
          result = static_cast<T>((result << 1) | T{carry});
          carry = out;
        } else {
          const bool out = result & 1;
          result = static_cast<T>((result >> 1) | (T{carry} << (bits - 1)));
          carry = out;
        }
      }
      const bool overflow = operation == 2 ? top_bit(result) != carry
                                           : top_bit(result) != static_cast<bool>((result >> (bits - 2)) & 1);
      update_flags(core, rflags::kCf | rflags::kOf,
                   (carry ? rflags::kCf : 0) | (overflow ? rflags::kOf : 0));
      return result;
    }
    case 4: case 6: {  // SHL/SAL
      const T result = count < bits ? static_cast<T>(value << count) : T{0};
      const bool carry = count <= bits ? (value >> (bits - count)) & 1 : false;
      set_logic_flags<T>(core, result, carry, top_bit(result) != carry);
      return result;
    }
    case 5: {  // SHR
      const T result = count < bits ? static_cast<T>(value >> count) : T{0};
      const bool carry = count <= bits ? (value >> (count - 1)) & 1 : false;
      set_logic_flags<T>(core, result, carry, top_bit(value));
      return result;
    }
    default: {  // SAR
      using Signed = std::make_signed_t<T>;
      const unsigned effective = count < bits ? count : bits - 1;
      const T result = static_cast<T>(static_cast<Signed>(value) >> effective);
      const bool carry = count < bits ? (static_cast<Signed>(value) >> (count - 1)) & 1 : top_bit(value);
      set_logic_flags<T>(core, result, carry, false);
      return result;
    }
  }
}

enum CountSource : int { kImmediate, kOne, kCl };

template <typename T, int kSource>
void shift(CpuCore& core, const Instruction& in) {
  unsigned count = 1;
  if (kSource == kImmediate) count = static_cast<uint8_t>(in.immediate);
  if (kSource == kCl) count = static_cast<uint8_t>(core.state.gpr[kRcx]);
  const int operation = in.group_index();
  if ((count & (kBits<T> == 64 ? 63 : 31)) == 0) {
    // No change and no flags, but a 32-bit register destination is still zero-extended.
    if (!in.memory && sizeof(T) == 4) write_rm<T>(core, in, read_rm<T>(core, in));
    if (in.memory) (void)read_rm<T>(core, in);  // the operand is still accessed (faults)
    return;
  }
  modify_rm<T>(core, in, [&](T value) { return shift_value<T>(core, operation, value, count); });
}

// SHLD/SHRD r/m, r, imm8/CL.
template <typename T, bool kLeft, bool kCl>
void double_shift(CpuCore& core, const Instruction& in) {
  constexpr unsigned bits = kBits<T>;
  const unsigned count = (kCl ? static_cast<uint8_t>(core.state.gpr[kRcx]) : static_cast<uint8_t>(in.immediate)) &
                         (bits == 64 ? 63 : 31);
  const T source = read_reg<T>(core, in);
  if (count == 0) {
    if (!in.memory && sizeof(T) == 4) write_rm<T>(core, in, read_rm<T>(core, in));
    if (in.memory) (void)read_rm<T>(core, in);
    return;
  }
  modify_rm<T>(core, in, [&](T destination) {
    // Widen so counts up to 31 on 16-bit operands follow the double-width shift.
    using Wide = Uint128;
    T result;
    bool carry;
    if (kLeft) {
      const Wide combined = (Wide{destination} << bits) | source;
      const Wide shifted = combined << count;
      result = static_cast<T>(shifted >> bits);
      carry = static_cast<bool>((combined >> (2 * bits - count)) & 1);
    } else {
      const Wide combined = (Wide{source} << bits) | destination;
      result = static_cast<T>(combined >> count);
      carry = static_cast<bool>((combined >> (count - 1)) & 1);
    }
    set_logic_flags<T>(core, result, carry, top_bit(result) != top_bit(destination));
    return result;
  });
}

}  // namespace

Handler select_shift_handler(const Instruction& in) {
  const uint8_t size = in.operand_size;
  switch (in.opcode) {
    case 0xc0: return &shift<uint8_t, kImmediate>;
    case 0xc1: return pick_by_size(size, []<typename T>() -> Handler { return &shift<T, kImmediate>; });
    case 0xd0: return &shift<uint8_t, kOne>;
    case 0xd1: return pick_by_size(size, []<typename T>() -> Handler { return &shift<T, kOne>; });
    case 0xd2: return &shift<uint8_t, kCl>;
    case 0xd3: return pick_by_size(size, []<typename T>() -> Handler { return &shift<T, kCl>; });
    case 0x1a4: return pick_by_size(size, []<typename T>() -> Handler { return &double_shift<T, true, false>; });
    case 0x1a5: return pick_by_size(size, []<typename T>() -> Handler { return &double_shift<T, true, true>; });
    case 0x1ac: return pick_by_size(size, []<typename T>() -> Handler { return &double_shift<T, false, false>; });
    case 0x1ad: return pick_by_size(size, []<typename T>() -> Handler { return &double_shift<T, false, true>; });
    default: return nullptr;
  }
}

}  // namespace lamina::cpu::x86
