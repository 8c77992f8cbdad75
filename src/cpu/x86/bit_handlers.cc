// Bit instructions: BT/BTS/BTR/BTC (register and immediate offsets), BSF/BSR, POPCNT
// (SDM vol. 2). TZCNT/LZCNT are not advertised, so F3 0F BC/BD execute as BSF/BSR.
#include "cpu/x86/handlers.h"
#include "cpu/x86/operands.h"

namespace lamina::cpu::x86 {
namespace {

template <typename T>
constexpr unsigned kBits = sizeof(T) * 8;

// kOperation: 4 BT, 5 BTS, 6 BTR, 7 BTC (the group 8 encoding).
template <typename T>
T apply_bit(int operation, T value, unsigned bit) {
  const T mask = static_cast<T>(T{1} << bit);
  switch (operation) {
    case 5: return static_cast<T>(value | mask);
    case 6: return static_cast<T>(value & ~mask);
    case 7: return static_cast<T>(value ^ mask);
    default: return value;
  }
}

template <typename T, bool kImmediate>
void bit_test(CpuCore& core, const Instruction& in) {
  int operation = in.group_index();
  if (!kImmediate) {
    switch (in.opcode) {
      case 0x1a3: operation = 4; break;
      case 0x1ab: operation = 5; break;
      case 0x1b3: operation = 6; break;
      default: operation = 7; break;
    }
  }
  uint64_t bit_offset = kImmediate ? (in.immediate & 0xff) : read_reg<T>(core, in);
  bool carry = false;
  if (!in.memory) {
    const unsigned bit = bit_offset & (kBits<T> - 1);
    const T value = core.read_register<T>(in.rm, in.rex);
    carry = (value >> bit) & 1;
    if (operation != 4) core.write_register<T>(in.rm, in.rex, apply_bit<T>(operation, value, bit));
  } else {
    uint64_t offset = core.effective_address(in);
    unsigned bit = bit_offset & (kBits<T> - 1);
    if (!kImmediate) {
      // A register bit offset is signed and may address memory outside the operand.
      using S = std::make_signed_t<T>;
      const int64_t element = static_cast<int64_t>(static_cast<S>(bit_offset)) >> (sizeof(T) == 2 ? 4 : sizeof(T) == 4 ? 5 : 6);
      offset += static_cast<uint64_t>(element * static_cast<int64_t>(sizeof(T)));
      if (in.address_size == 4) offset &= 0xffffffffu;
      if (in.address_size == 2) offset &= 0xffff;
    }
    if (operation == 4) {
      carry = (core.read<T>(in.segment, offset) >> bit) & 1;
    } else {
      modify_memory<T>(core, in.segment, offset, in.lock, [&](T value) {
        carry = (value >> bit) & 1;
        return apply_bit<T>(operation, value, bit);
      });
    }
  }
  update_flags(core, rflags::kCf, carry ? rflags::kCf : 0);
}

template <typename T, bool kReverse>
void bit_scan(CpuCore& core, const Instruction& in) {
  const T value = read_rm<T>(core, in);
  if (value == 0) {
    update_flags(core, rflags::kZf, rflags::kZf);  // destination unchanged
    return;
  }
  const unsigned index = kReverse ? kBits<T> - 1 - std::countl_zero(value) : std::countr_zero(value);
  write_reg<T>(core, in, static_cast<T>(index));
  update_flags(core, rflags::kZf, 0);
}

template <typename T>
void population_count(CpuCore& core, const Instruction& in) {
  const T value = read_rm<T>(core, in);
  write_reg<T>(core, in, static_cast<T>(std::popcount(value)));
  core.state.flags.set_materialized(value == 0 ? rflags::kZf : 0);
}

}  // namespace

Handler select_bit_handler(const Instruction& in) {
  const uint8_t size = in.operand_size;
  switch (in.opcode) {
    case 0x1a3: case 0x1ab: case 0x1b3: case 0x1bb:
      return pick_by_size(size, []<typename T>() -> Handler { return &bit_test<T, false>; });
    case 0x1ba: return pick_by_size(size, []<typename T>() -> Handler { return &bit_test<T, true>; });
    case 0x1bc: return pick_by_size(size, []<typename T>() -> Handler { return &bit_scan<T, false>; });
    case 0x1bd: return pick_by_size(size, []<typename T>() -> Handler { return &bit_scan<T, true>; });
    case 0x1b8: return pick_by_size(size, []<typename T>() -> Handler { return &population_count<T>; });
    default: return nullptr;
  }
}

}  // namespace lamina::cpu::x86
