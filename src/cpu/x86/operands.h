#pragma once
// Operand helpers shared by the instruction handlers: ModRM r/m and reg operands by size,
// read-modify-write of a memory destination (host atomics under LOCK), branch targets, and
// the flag bits handlers compute eagerly.
//
// Thread-safety: as CpuCore.

#include <atomic>
#include <bit>
#include <cstdint>
#include <type_traits>

#include "cpu/x86/core.h"

namespace lamina::cpu::x86 {

// 128-bit integers for 64-bit MUL/DIV and SHLD/SHRD (a GCC/Clang extension).
__extension__ typedef unsigned __int128 Uint128;
__extension__ typedef __int128 Int128;

template <typename T>
struct SignedOf {
  using Type = std::make_signed_t<T>;
};
template <>
struct SignedOf<Uint128> {
  using Type = Int128;
};

template <typename T>
inline T read_rm(CpuCore& core, const Instruction& in) {
  if (in.memory) return core.read<T>(in.segment, core.effective_address(in));
  return core.read_register<T>(in.rm, in.rex);
}

template <typename T>
inline void write_rm(CpuCore& core, const Instruction& in, T value) {
  if (in.memory) {
    core.write<T>(in.segment, core.effective_address(in), value);
  } else {
    core.write_register<T>(in.rm, in.rex, value);
  }
}

template <typename T>
inline T read_reg(CpuCore& core, const Instruction& in) {
  return core.read_register<T>(in.reg, in.rex);
}
template <typename T>
inline void write_reg(CpuCore& core, const Instruction& in, T value) {
  core.write_register<T>(in.reg, in.rex, value);
}

// memory = operation(memory). With LOCK on an aligned RAM operand the update is a host
// compare-exchange loop, so other vCPUs see it atomically (the host is TSO like the guest);
// `operation` may then run more than once and must only depend on its argument.
template <typename T, typename Operation>
inline void modify_memory(CpuCore& core, uint8_t segment, uint64_t offset, bool lock,
                          Operation&& operation) {
  if (lock) {
    const uint64_t linear = core.linear_address(segment, offset, sizeof(T), Access::kWrite);
    std::byte* host = core.writable_host_pointer(linear, sizeof(T));
    if (host != nullptr && reinterpret_cast<uintptr_t>(host) % sizeof(T) == 0) {
      std::atomic_ref<T> target(*reinterpret_cast<T*>(host));
      T expected = target.load();
      while (!target.compare_exchange_weak(expected, operation(expected))) {
      }
      return;
    }
  }
  const T old = core.read<T>(segment, offset);
  core.write<T>(segment, offset, operation(old));
}

// r/m = operation(r/m).
template <typename T, typename Operation>
inline void modify_rm(CpuCore& core, const Instruction& in, Operation&& operation) {
  if (!in.memory) {
    core.write_register<T>(in.rm, in.rex, operation(core.read_register<T>(in.rm, in.rex)));
    return;
  }
  modify_memory<T>(core, in.segment, core.effective_address(in), in.lock, operation);
}

// Calls `body.template operator()<T>()` with T the unsigned type of `size` bytes.
template <typename Body>
inline void with_size(uint8_t size, Body&& body) {
  switch (size) {
    case 1: body.template operator()<uint8_t>(); break;
    case 2: body.template operator()<uint16_t>(); break;
    case 4: body.template operator()<uint32_t>(); break;
    default: body.template operator()<uint64_t>(); break;
  }
}

// The handler `pick.template operator()<T>()` returns for T the unsigned type of `size` bytes.
template <typename Pick>
inline Handler pick_by_size(uint8_t size, Pick&& pick) {
  switch (size) {
    case 1: return pick.template operator()<uint8_t>();
    case 2: return pick.template operator()<uint16_t>();
    case 4: return pick.template operator()<uint32_t>();
    default: return pick.template operator()<uint64_t>();
  }
}

template <typename T>
inline constexpr T sign_bit_of = T{1} << (sizeof(T) * 8 - 1);

inline uint64_t parity_flag(uint64_t result) {
  return (std::popcount(static_cast<uint8_t>(result)) & 1) ? 0 : rflags::kPf;
}

// SF, ZF and PF of a result plus the given CF/OF/AF, stored as materialized flags.
template <typename T>
inline void set_logic_flags(CpuCore& core, T result, bool carry, bool overflow, bool adjust = false) {
  uint64_t bits = parity_flag(result);
  if (result == 0) bits |= rflags::kZf;
  if (result & sign_bit_of<T>) bits |= rflags::kSf;
  if (carry) bits |= rflags::kCf;
  if (overflow) bits |= rflags::kOf;
  if (adjust) bits |= rflags::kAf;
  core.state.flags.set_materialized(bits);
}

// Replaces only the flags in `mask` with `bits`, keeping the others.
inline void update_flags(CpuCore& core, uint64_t mask, uint64_t bits) {
  const uint64_t current = core.state.flags.materialize();
  core.state.flags.set_materialized((current & ~mask) | (bits & mask));
}

// A near branch target masked to the operand size; outside 64-bit mode checked against the
// CS limit, in 64-bit mode against canonical form, #GP(0) otherwise (SDM vol. 2, JMP).
inline uint64_t checked_target(const CpuCore& core, uint64_t target, uint8_t operand_size) {
  if (operand_size == 2) {
    target &= 0xffff;
  } else if (operand_size == 4) {
    target &= 0xffffffffu;
  }
  if (core.code_mode == CodeMode::k64) {
    if (static_cast<uint64_t>(static_cast<int64_t>(target << 16) >> 16) != target)
      raise_fault(vector::kGeneralProtection, 0);
  } else if (target > core.state.segment[kCs].limit) {
    raise_fault(vector::kGeneralProtection, 0);
  }
  return target;
}

inline void branch_to(CpuCore& core, uint64_t target, uint8_t operand_size) {
  core.state.rip = checked_target(core, target, operand_size);
}

}  // namespace lamina::cpu::x86
