// x87 data transfer: FLD/FST/FSTP (m32/m64/m80 and ST(i)), FILD/FIST/FISTP/FISTTP
// (m16/m32/m64) and FBLD/FBSTP (SDM Vol. 2, the entries of each mnemonic).

#include "cpu/x86/simd/x87_stack.h"

namespace lamina::cpu::x86::simd {
namespace {

// Pushes a converted value, with the stack-overflow check first (SDM Vol. 1 8.5.1.1) and the
// conversion's exceptions (SNaN or denormal source) after.
SimdOutcome push_loaded(SimdState& state, const X87Register& value, uint16_t host_status) {
  if (x87_push_overflows(state)) {
    if (x87_stack_overflow(state)) x87_push(state, kX87Indefinite);
    return SimdOutcome::kDone;
  }
  // An unmasked invalid operand (SNaN) stops the load; a denormal source only signals.
  uint16_t flags = host_status & kX87ExceptionFlags;
  if (x87_unmasked(state, flags & kX87Invalid)) {
    x87_raise(state, flags);
    x87_set_c1(state, false);
    return SimdOutcome::kDone;
  }
  x87_raise(state, flags);
  x87_set_c1(state, false);
  x87_push(state, value);
  return SimdOutcome::kDone;
}

// Stores ST(0) to memory in `format` (`size` bytes), popping when asked. An empty ST(0) stores
// the format's indefinite when IE is masked. Unmasked IE, overflow or underflow leave memory
// and the stack unchanged (SDM Vol. 1 8.5.4, 8.5.5).
SimdOutcome store_converted(Context& context, X87StoreFormat format, size_t size, bool pop) {
  SimdState& state = context.state;
  bool empty = state.st_empty(0);
  HostStoreResult result =
      host_store(format, state.control, state.status, empty ? kX87Indefinite : state.st(0));
  if (empty) {
    if (!x87_stack_underflow(state)) return SimdOutcome::kDone;
  } else {
    // Unmasked, underflow is signaled for any tiny result, exact or not (SDM Vol. 1 4.9.1.5).
    bool tiny = (format == X87StoreFormat::kFloat32 && (result.bits & 0x7f800000u) == 0 &&
                 (result.bits & 0x7fffffu) != 0) ||
                (format == X87StoreFormat::kFloat64 && (result.bits & 0x7ff0000000000000ull) == 0 &&
                 (result.bits & 0xfffffffffffffull) != 0);
    if (tiny && x87_unmasked(state, kX87Underflow)) result.status |= kX87Underflow;
    uint16_t flags = result.status & kX87ExceptionFlags;
    if (x87_unmasked(state, flags & ~kX87Precision)) {
      x87_raise(state, flags & ~kX87Precision);
      x87_set_c1(state, false);
      return SimdOutcome::kDone;
    }
  }
  // Memory is written before any flag changes, so a faulting store leaves the state intact.
  bool written = format == X87StoreFormat::kBcd ? context.write_bytes(0, result.bcd, size)
                                                : context.write_bytes(0, &result.bits, size);
  if (!written) return SimdOutcome::kMemoryFault;
  if (!empty) {
    x87_raise(state, result.status & kX87ExceptionFlags);
    x87_set_c1(state, result.status & kX87C1);
  }
  if (pop) x87_pop(state);
  return SimdOutcome::kDone;
}

SimdOutcome store_extended(Context& context, bool pop) {
  SimdState& state = context.state;
  X87Register value = state.st(0);
  bool empty = state.st_empty(0);
  if (empty) {
    if (x87_unmasked(state, kX87Invalid)) {
      x87_stack_underflow(state);
      return SimdOutcome::kDone;
    }
    value = kX87Indefinite;
  }
  uint8_t bytes[10];
  std::memcpy(bytes, &value.significand, 8);
  std::memcpy(bytes + 8, &value.sign_exponent, 2);
  if (!context.write_bytes(0, bytes, 10)) return SimdOutcome::kMemoryFault;
  if (empty) {
    x87_stack_underflow(state);
  } else {
    x87_set_c1(state, false);
  }
  if (pop) x87_pop(state);
  return SimdOutcome::kDone;
}

SimdOutcome load_memory(Context& context, uint8_t escape, unsigned reg) {
  SimdState& state = context.state;
  switch (escape) {
    case 0xd9: {  // FLD m32fp
      uint32_t bits;
      if (!context.read(0, bits)) return SimdOutcome::kMemoryFault;
      HostX87Result loaded = host_load_float32(state.control, state.status, bits);
      return push_loaded(state, loaded.value, loaded.status);
    }
    case 0xdd: {  // FLD m64fp
      uint64_t bits;
      if (!context.read(0, bits)) return SimdOutcome::kMemoryFault;
      HostX87Result loaded = host_load_float64(state.control, state.status, bits);
      return push_loaded(state, loaded.value, loaded.status);
    }
    case 0xdb: {
      if (reg == 5) {  // FLD m80fp: no conversion, no exceptions
        uint8_t bytes[10];
        if (!context.read_bytes(0, bytes, 10)) return SimdOutcome::kMemoryFault;
        X87Register value;
        std::memcpy(&value.significand, bytes, 8);
        std::memcpy(&value.sign_exponent, bytes + 8, 2);
        return push_loaded(state, value, 0);
      }
      int32_t value;  // FILD m32int
      if (!context.read(0, value)) return SimdOutcome::kMemoryFault;
      return push_loaded(state, x87_from_integer(value), 0);
    }
    default: {         // DF
      if (reg == 0) {  // FILD m16int
        int16_t value;
        if (!context.read(0, value)) return SimdOutcome::kMemoryFault;
        return push_loaded(state, x87_from_integer(value), 0);
      }
      if (reg == 5) {  // FILD m64int
        int64_t value;
        if (!context.read(0, value)) return SimdOutcome::kMemoryFault;
        return push_loaded(state, x87_from_integer(value), 0);
      }
      uint8_t bcd[10];  // FBLD m80bcd
      if (!context.read_bytes(0, bcd, 10)) return SimdOutcome::kMemoryFault;
      HostX87Result loaded = host_load_bcd(state.control, state.status, bcd);
      return push_loaded(state, loaded.value, loaded.status);
    }
  }
}

}  // namespace

SimdOutcome x87_load_store(Context& context) {
  SimdState& state = context.state;
  const SimdInstruction& instruction = context.instruction;
  uint8_t escape = instruction.opcode;
  unsigned reg = (instruction.modrm >> 3) & 7;
  if (!instruction.memory_operand) {
    unsigned index = instruction.modrm & 7;
    if (escape == 0xd9 && reg == 0) {  // FLD ST(i)
      // An empty source is reported as underflow (C1=0) even when the push also overflows.
      if (state.st_empty(index)) {
        if (x87_stack_underflow(state)) x87_push(state, kX87Indefinite);
        return SimdOutcome::kDone;
      }
      return push_loaded(state, state.st(index), 0);
    }
    // FST ST(i) (DD D0), FSTP ST(i) (DD D8, and the aliases D9 D8, DF D0, DF D8).
    bool pop = !(escape == 0xdd && reg == 2);
    // D9 D8+i (FSTP1, also called FSTPNCE) signals no stack underflow: an empty ST(0) leaves
    // ST(i) alone and is popped.
    if (escape == 0xd9 && state.st_empty(0)) {
      x87_set_c1(state, false);
      x87_pop(state);
      return SimdOutcome::kDone;
    }
    if (state.st_empty(0)) {
      if (!x87_stack_underflow(state)) return SimdOutcome::kDone;
      x87_write(state, index, kX87Indefinite);
    } else {
      x87_set_c1(state, false);
      x87_write(state, index, state.st(0));
    }
    if (pop) x87_pop(state);
    return SimdOutcome::kDone;
  }
  switch (escape) {
    case 0xd9:
      if (reg == 0) return load_memory(context, escape, reg);
      return store_converted(context, X87StoreFormat::kFloat32, 4, reg == 3);
    case 0xdd:
      if (reg == 0) return load_memory(context, escape, reg);
      if (reg == 1) return store_converted(context, X87StoreFormat::kTruncInt64, 8, true);
      return store_converted(context, X87StoreFormat::kFloat64, 8, reg == 3);
    case 0xdb:
      switch (reg) {
        case 0:
        case 5: return load_memory(context, escape, reg);
        case 1: return store_converted(context, X87StoreFormat::kTruncInt32, 4, true);
        case 2:
        case 3: return store_converted(context, X87StoreFormat::kInt32, 4, reg == 3);
        default: return store_extended(context, true);  // 7: FSTP m80fp
      }
    default:  // DF
      switch (reg) {
        case 0:
        case 4:
        case 5: return load_memory(context, escape, reg);
        case 1: return store_converted(context, X87StoreFormat::kTruncInt16, 2, true);
        case 2:
        case 3: return store_converted(context, X87StoreFormat::kInt16, 2, reg == 3);
        case 6: return store_converted(context, X87StoreFormat::kBcd, 10, true);
        default: return store_converted(context, X87StoreFormat::kInt64, 8, true);
      }
  }
}

}  // namespace lamina::cpu::x86::simd
