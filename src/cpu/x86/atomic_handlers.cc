// Compare-and-exchange family: CMPXCHG, XADD, CMPXCHG8B/CMPXCHG16B (SDM vol. 2). Under LOCK
// (and for the 8B/16B forms whenever the operand is aligned RAM) they are host atomics.
#include "cpu/x86/handlers.h"
#include "cpu/x86/operands.h"

namespace lamina::cpu::x86 {
namespace {

// LOCK CMPXCHG16B on the host (x86-64 only, like the whole emulator); inline so no libatomic.
bool host_compare_exchange_16(std::byte* target, Uint128& expected, Uint128 desired) {
  uint64_t low = static_cast<uint64_t>(expected);
  uint64_t high = static_cast<uint64_t>(expected >> 64);
  bool equal = false;
  asm volatile("lock cmpxchg16b %1"
               : "=@ccz"(equal), "+m"(*reinterpret_cast<Uint128*>(target)), "+a"(low), "+d"(high)
               : "b"(static_cast<uint64_t>(desired)), "c"(static_cast<uint64_t>(desired >> 64))
               : "memory");
  expected = (Uint128{high} << 64) | low;
  return equal;
}

template <typename T>
void compare_exchange(CpuCore& core, const Instruction& in) {
  LazyFlags& flags = core.state.flags;
  const T accumulator = core.read_register<T>(kRax, false);
  const T source = read_reg<T>(core, in);
  T old = 0;
  if (!in.memory) {
    old = core.read_register<T>(in.rm, in.rex);
    if (old == accumulator) core.write_register<T>(in.rm, in.rex, source);
  } else {
    // The destination is written either way (with its old value on failure), so a read-only
    // page faults even when the comparison fails, as on hardware.
    modify_rm<T>(core, in, [&](T value) {
      old = value;
      return value == accumulator ? source : value;
    });
  }
  flags.set(FlagOp::kSub, sizeof(T), static_cast<T>(accumulator - old), accumulator, old);
  if (old != accumulator) core.write_register<T>(kRax, false, old);
}

template <typename T>
void exchange_add(CpuCore& core, const Instruction& in) {
  LazyFlags& flags = core.state.flags;
  const T source = read_reg<T>(core, in);
  T old = 0;
  if (!in.memory) {
    // SRC <- DEST, then DEST <- sum: with one register for both, the sum wins.
    old = core.read_register<T>(in.rm, in.rex);
    write_reg<T>(core, in, old);
    core.write_register<T>(in.rm, in.rex, static_cast<T>(old + source));
  } else {
    modify_rm<T>(core, in, [&](T value) {
      old = value;
      return static_cast<T>(value + source);
    });
    write_reg<T>(core, in, old);
  }
  flags.set(FlagOp::kAdd, sizeof(T), static_cast<T>(old + source), old, source);
}

// CMPXCHG8B m64 / CMPXCHG16B m128 (16B needs a 16-byte aligned operand, else #GP(0)).
void compare_exchange_wide(CpuCore& core, const Instruction& in) {
  CpuState& state = core.state;
  const uint64_t offset = core.effective_address(in);
  bool equal = false;
  if (in.rex_w) {
    const uint64_t linear = core.linear_address(in.segment, offset, 16, Access::kWrite);
    if (linear & 15) raise_fault(vector::kGeneralProtection, 0);
    const Uint128 expected = (Uint128{state.gpr[kRdx]} << 64) | state.gpr[kRax];
    const Uint128 desired = (Uint128{state.gpr[kRcx]} << 64) | state.gpr[kRbx];
    Uint128 old = 0;
    std::byte* host = core.writable_host_pointer(linear, 16);
    if (host != nullptr) {
      old = expected;
      equal = host_compare_exchange_16(host, old, desired);
    } else {
      old = (Uint128{core.read<uint64_t>(in.segment, offset + 8)} << 64) | core.read<uint64_t>(in.segment, offset);
      equal = old == expected;
      const Uint128 stored = equal ? desired : old;
      core.write<uint64_t>(in.segment, offset, static_cast<uint64_t>(stored));
      core.write<uint64_t>(in.segment, offset + 8, static_cast<uint64_t>(stored >> 64));
    }
    if (!equal) {
      state.gpr[kRax] = static_cast<uint64_t>(old);
      state.gpr[kRdx] = static_cast<uint64_t>(old >> 64);
    }
  } else {
    const uint64_t expected = (state.gpr[kRdx] << 32) | (state.gpr[kRax] & 0xffffffffu);
    const uint64_t desired = (state.gpr[kRcx] << 32) | (state.gpr[kRbx] & 0xffffffffu);
    uint64_t old = 0;
    modify_memory<uint64_t>(core, in.segment, offset, true, [&](uint64_t value) {
      old = value;
      return value == expected ? desired : value;
    });
    equal = old == expected;
    if (!equal) {
      core.write_register<uint32_t>(kRax, false, static_cast<uint32_t>(old));
      core.write_register<uint32_t>(kRdx, false, static_cast<uint32_t>(old >> 32));
    }
  }
  update_flags(core, rflags::kZf, equal ? rflags::kZf : 0);
}

}  // namespace

Handler select_atomic_handler(const Instruction& in) {
  const uint8_t size = in.operand_size;
  switch (in.opcode) {
    case 0x1b0: return &compare_exchange<uint8_t>;
    case 0x1b1: return pick_by_size(size, []<typename T>() -> Handler { return &compare_exchange<T>; });
    case 0x1c0: return &exchange_add<uint8_t>;
    case 0x1c1: return pick_by_size(size, []<typename T>() -> Handler { return &exchange_add<T>; });
    case 0x1c7: return in.memory && in.group_index() == 1 ? &compare_exchange_wide : nullptr;
    default: return nullptr;
  }
}

}  // namespace lamina::cpu::x86
