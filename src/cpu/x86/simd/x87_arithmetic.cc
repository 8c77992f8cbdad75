// x87 basic arithmetic and comparisons: D8, DC, DE (register and real/integer memory forms),
// DA (integer memory forms, FUCOMPP), and FCOMI/FUCOMI(P) in DB/DF (SDM Vol. 2 FADD..FUCOMI).

#include <optional>

#include "cpu/x86/simd/x87_stack.h"

namespace lamina::cpu::x86::simd {
namespace {}  // namespace

// Stores the result of a binary operation into ST(destination), honoring the guest's masks.
// Returns false when an unmasked pre-computation exception stopped the instruction.
bool x87_store_binary(SimdState& state, X87Binary operation, unsigned destination,
                      const X87Register& a, const X87Register& b) {
  HostX87Result result = host_binary(operation, state.control, state.status, a, b);
  std::optional<HostX87Result> unmasked;
  if (x87_needs_unmasked_result(state, result)) {
    unmasked = host_binary_unmasked(operation, state.control, state.status, a, b);
  }
  return x87_store_result(state, destination, result, unmasked);
}

bool x87_store_result(SimdState& state, unsigned destination, HostX87Result result,
                      const std::optional<HostX87Result>& unmasked) {
  // With overflow or underflow unmasked the hardware's own result (bias-adjusted, SDM Vol. 1
  // 8.5.4/8.5.5) and flags (underflow on any tiny result, precision of the unbounded result)
  // replace the masked response.
  if (unmasked) result = *unmasked;
  if (!x87_accept(state, result.status)) return false;
  x87_write(state, destination, result.value);
  return true;
}

namespace {

// Compares ST(0) with `source`; sets C0/C2/C3 or, for FCOMI forms, ZF/PF/CF.
void compare_result(Context& context, const HostX87Result& result, bool to_flags, unsigned pops) {
  SimdState& state = context.state;
  uint16_t flags = result.status & kX87ExceptionFlags;
  // An unmasked invalid or denormal operand still reports the comparison but does not pop.
  bool stopped = x87_unmasked(state, flags & kX87PreComputation);
  x87_raise(state, flags);
  // FCOMI and FUCOMI report through RFLAGS and leave C1 alone.
  if (!to_flags) x87_set_c1(state, false);
  if (stopped) pops = 0;
  uint16_t codes = result.status & (kX87C0 | kX87C2 | kX87C3);
  if (to_flags) {
    // SDM Vol. 2 FCOMI: ZF, PF, CF from the comparison; OF, SF and AF cleared.
    uint64_t rflags = context.operands.read_rflags() & ~uint64_t{0x8d5};
    if (codes & kX87C0) rflags |= 1u << 0;
    if (codes & kX87C2) rflags |= 1u << 2;
    if (codes & kX87C3) rflags |= 1u << 6;
    context.operands.write_rflags(rflags);
  } else {
    x87_set_codes(state, kX87C0 | kX87C2 | kX87C3, codes);
  }
  for (unsigned i = 0; i < pops; ++i) x87_pop(state);
}

void compare(Context& context, const X87Register& source, bool unordered, bool to_flags,
             unsigned pops) {
  compare_result(
      context,
      host_binary(unordered ? X87Binary::kCompareUnordered : X87Binary::kCompare,
                  context.state.control, context.state.status, context.state.st(0), source),
      to_flags, pops);
}

// Comparison with an empty operand: masked, the result is "unordered".
void compare_underflow(Context& context, bool to_flags, unsigned pops) {
  SimdState& state = context.state;
  // Unmasked, the comparison is still reported as unordered; only the pops are skipped.
  if (!x87_stack_underflow(state)) pops = 0;
  if (to_flags) {
    uint64_t rflags = context.operands.read_rflags() & ~uint64_t{0x8d5};
    context.operands.write_rflags(rflags | 0x45);
  } else {
    x87_set_codes(state, kX87C0 | kX87C2 | kX87C3, kX87C0 | kX87C2 | kX87C3);
  }
  for (unsigned i = 0; i < pops; ++i) x87_pop(state);
}

// The arithmetic selected by ModRM.reg (0 add, 1 mul, 4-7 the subtract/divide directions) with
// ST(0) and `other`; reg 4 computes ST(0)-other, 5 other-ST(0), 6 ST(0)/other, 7 other/ST(0) in
// every ESC group (the DC/DE mnemonics name the same directions from the destination's side).
// Returns false when an unmasked pre-computation exception stopped it.
bool arithmetic(SimdState& state, unsigned reg, unsigned destination, const X87Register& other) {
  X87Register st0 = state.st(0);
  switch (reg) {
    case 0: return x87_store_binary(state, X87Binary::kAdd, destination, st0, other);
    case 1: return x87_store_binary(state, X87Binary::kMultiply, destination, st0, other);
    case 4: return x87_store_binary(state, X87Binary::kSubtract, destination, st0, other);
    case 5: return x87_store_binary(state, X87Binary::kSubtract, destination, other, st0);
    case 6: return x87_store_binary(state, X87Binary::kDivide, destination, st0, other);
    case 7: return x87_store_binary(state, X87Binary::kDivide, destination, other, st0);
    default: return true;
  }
}

// D8/DA/DC/DE with a memory operand: ST(0) op m32fp/m32int/m64fp/m16int.
SimdOutcome memory_form(Context& context, uint8_t escape) {
  SimdState& state = context.state;
  unsigned reg = context.instruction.reg & 7;
  bool is_compare = reg == 2 || reg == 3;
  bool real = escape == 0xd8 || escape == 0xdc;
  uint64_t bits = 0;
  X87Register integer;
  if (escape == 0xd8) {
    uint32_t value;
    if (!context.read(0, value)) return SimdOutcome::kMemoryFault;
    bits = value;
  } else if (escape == 0xdc) {
    if (!context.read(0, bits)) return SimdOutcome::kMemoryFault;
  } else if (escape == 0xda) {
    int32_t value;
    if (!context.read(0, value)) return SimdOutcome::kMemoryFault;
    integer = x87_from_integer(value);
  } else {
    int16_t value;
    if (!context.read(0, value)) return SimdOutcome::kMemoryFault;
    integer = x87_from_integer(value);
  }
  if (state.st_empty(0)) {
    if (is_compare) {
      compare_underflow(context, false, reg == 3);
    } else if (x87_stack_underflow(state)) {
      x87_write(state, 0, kX87Indefinite);
    }
    return SimdOutcome::kDone;
  }
  if (!real) {  // integers convert exactly; the operation alone signals
    if (is_compare) {
      compare(context, integer, false, false, reg == 3);
    } else {
      arithmetic(state, reg, 0, integer);
    }
    return SimdOutcome::kDone;
  }
  HostX87Result result =
      host_memory_operation(reg, escape == 0xdc, state.control, state.status, state.st(0), bits);
  if (is_compare) {
    compare_result(context, result, false, reg == 3);
    return SimdOutcome::kDone;
  }
  std::optional<HostX87Result> unmasked;
  if (x87_needs_unmasked_result(state, result)) {
    unmasked = host_memory_operation_unmasked(reg, escape == 0xdc, state.control, state.status,
                                              state.st(0), bits);
  }
  x87_store_result(state, 0, result, unmasked);
  return SimdOutcome::kDone;
}

}  // namespace

SimdOutcome x87_arithmetic(Context& context) {
  SimdState& state = context.state;
  const SimdInstruction& instruction = context.instruction;
  uint8_t escape = instruction.opcode;
  if (instruction.memory_operand) return memory_form(context, escape);
  unsigned reg = (instruction.modrm >> 3) & 7;
  unsigned index = instruction.modrm & 7;

  // FCOMI/FUCOMI (DB F0/E8) and FCOMIP/FUCOMIP (DF F0/E8).
  if (escape == 0xdb || escape == 0xdf) {
    bool unordered = reg == 5;
    unsigned pops = escape == 0xdf ? 1 : 0;
    if (state.st_empty(0) || state.st_empty(index)) {
      compare_underflow(context, true, pops);
    } else {
      compare(context, state.st(index), unordered, true, pops);
    }
    return SimdOutcome::kDone;
  }
  // FUCOMPP (DA E9).
  if (escape == 0xda) {
    if (state.st_empty(0) || state.st_empty(1)) {
      compare_underflow(context, false, 2);
    } else {
      compare(context, state.st(1), true, false, 2);
    }
    return SimdOutcome::kDone;
  }
  // DD E0+i FUCOM, DD E8+i FUCOMP.
  if (escape == 0xdd) {
    unsigned pops = reg == 5 ? 1 : 0;
    if (state.st_empty(0) || state.st_empty(index)) {
      compare_underflow(context, false, pops);
    } else {
      compare(context, state.st(index), true, false, pops);
    }
    return SimdOutcome::kDone;
  }
  // Compare forms: D8 D0/D8 (FCOM/FCOMP), the DC/DE aliases and DE D9 (FCOMPP).
  if (reg == 2 || reg == 3) {
    unsigned pops = (escape == 0xd8 || escape == 0xdc) ? (reg == 3 ? 1 : 0) : (reg == 3 ? 2 : 1);
    if (state.st_empty(0) || state.st_empty(index)) {
      compare_underflow(context, false, pops);
    } else {
      compare(context, state.st(index), false, false, pops);
    }
    return SimdOutcome::kDone;
  }
  unsigned destination = escape == 0xd8 ? 0 : index;
  bool pop = escape == 0xde;
  if (state.st_empty(0) || state.st_empty(index)) {
    if (!x87_stack_underflow(state)) return SimdOutcome::kDone;
    x87_write(state, destination, kX87Indefinite);
  } else {
    // An unmasked pre-computation exception leaves the stack as it was (no pop).
    if (!arithmetic(state, reg, destination, state.st(index))) return SimdOutcome::kDone;
  }
  if (pop) x87_pop(state);
  return SimdOutcome::kDone;
}

}  // namespace lamina::cpu::x86::simd
