#pragma once
// Internal to the unit: one instruction's execution context and the small helpers every
// instruction family shares (memory operands, outcome shorthands).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "cpu/x86/simd/simd_state.h"
#include "cpu/x86/simd/simd_unit.h"

namespace lamina::cpu::x86::simd {

struct Context {
  SimdState& state;
  const SimdControl& control;
  const SimdInstruction& instruction;
  SimdOperands& operands;

  // Reads a little-endian value of sizeof(T) bytes at effective address + offset.
  template <typename T>
  bool read(uint64_t offset, T& value) {
    std::byte buffer[sizeof(T)];
    if (!operands.read_memory(offset, buffer)) return false;
    std::memcpy(&value, buffer, sizeof(T));
    return true;
  }
  template <typename T>
  bool write(uint64_t offset, const T& value) {
    std::byte buffer[sizeof(T)];
    std::memcpy(buffer, &value, sizeof(T));
    return operands.write_memory(offset, buffer);
  }
  bool read_bytes(uint64_t offset, void* data, size_t size) {
    return operands.read_memory(offset, std::span<std::byte>(static_cast<std::byte*>(data), size));
  }
  bool write_bytes(uint64_t offset, const void* data, size_t size) {
    return operands.write_memory(
        offset, std::span<const std::byte>(static_cast<const std::byte*>(data), size));
  }
};

// The families; each returns its outcome. Defined in x87_*.cc, mmx_sse_integer*.cc, sse_*.cc.
SimdOutcome execute_x87(Context& context);
SimdOutcome execute_fwait(Context& context);
SimdOutcome execute_two_byte(Context& context);
SimdOutcome execute_three_byte_38(Context& context);
SimdOutcome execute_three_byte_3a(Context& context);

}  // namespace lamina::cpu::x86::simd
