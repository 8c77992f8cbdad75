// x87 control: FLDCW/FNSTCW/FNSTSW/FNCLEX/FNINIT, FNSTENV/FLDENV/FNSAVE/FRSTOR in their 16- and
// 32-bit, real- and protected-mode layouts (SDM Vol. 1 8.1.10, figures 8-9 to 8-12), FFREE(P),
// FXCH and FCMOVcc; and the unit's reset state.

#include "base/byte_order.h"
#include "cpu/x86/simd/x87_stack.h"

namespace lamina::cpu::x86::simd {
namespace {

void initialize(SimdState& state) {
  state.control = 0x037f;
  state.status = 0;
  state.tag_valid = 0;
  state.last_opcode = 0;
  state.last_instruction = 0;
  state.last_data = 0;
}

// Control-word bits that exist (masks, PC, RC, the 287's infinity control); bit 6 reads as 1.
uint16_t loadable_control(uint32_t value) { return static_cast<uint16_t>((value & 0x1f3f) | 0x40); }

// The environment image: 14 bytes with 16-bit operand size, 28 bytes otherwise. FCS and FDS are
// stored as zero (CPUID.(EAX=7,ECX=0):EBX[13], "FCS and FDS deprecated").
size_t build_environment(const Context& context, uint8_t* out) {
  const SimdState& state = context.state;
  uint16_t words[7] = {state.control, state.status, full_tag_word(state), 0, 0, 0, 0};
  uint32_t instruction = static_cast<uint32_t>(state.last_instruction);
  uint32_t data = static_cast<uint32_t>(state.last_data);
  bool wide = context.instruction.operand_size != 16;
  if (context.control.protected_mode) {
    if (!wide) {
      words[3] = static_cast<uint16_t>(instruction);
      words[5] = static_cast<uint16_t>(data);
      std::memcpy(out, words, 14);
      return 14;
    }
    uint32_t dwords[7] = {0xffff0000u | words[0],
                          0xffff0000u | words[1],
                          0xffff0000u | words[2],
                          instruction,
                          static_cast<uint32_t>(state.last_opcode & 0x7ff) << 16,
                          data,
                          0xffff0000u};
    std::memcpy(out, dwords, 28);
    return 28;
  }
  // Real-mode layouts: linear pointers split into a low word and the high bits shifted by 12.
  if (!wide) {
    words[3] = static_cast<uint16_t>(instruction);
    words[4] =
        static_cast<uint16_t>(((instruction >> 16) & 0xf) << 12 | (state.last_opcode & 0x7ff));
    words[5] = static_cast<uint16_t>(data);
    words[6] = static_cast<uint16_t>(((data >> 16) & 0xf) << 12);
    std::memcpy(out, words, 14);
    return 14;
  }
  uint32_t dwords[7] = {0xffff0000u | words[0],
                        0xffff0000u | words[1],
                        0xffff0000u | words[2],
                        0xffff0000u | (instruction & 0xffff),
                        ((instruction >> 16) << 12) | (state.last_opcode & 0x7ffu),
                        0xffff0000u | (data & 0xffff),
                        (data >> 16) << 12};
  std::memcpy(out, dwords, 28);
  return 28;
}

size_t environment_size(const Context& context) {
  return context.instruction.operand_size == 16 ? 14 : 28;
}

// Loads an environment image into the state.
void load_environment(Context& context, const uint8_t* in) {
  SimdState& state = context.state;
  bool wide = context.instruction.operand_size != 16;
  auto field = [&](unsigned index) -> uint32_t {
    if (wide) return load_le<uint32_t>(in + 4 * index);
    return load_le<uint16_t>(in + 2 * index);
  };
  state.control = loadable_control(field(0));
  state.status = static_cast<uint16_t>(field(1));
  uint16_t tags = static_cast<uint16_t>(field(2));
  state.tag_valid = 0;
  for (unsigned i = 0; i < 8; ++i) {
    if (((tags >> (2 * i)) & 3) != 3)
      state.tag_valid = static_cast<uint8_t>(state.tag_valid | (1u << i));
  }
  if (context.control.protected_mode) {
    state.last_instruction = field(3);
    state.last_opcode = wide ? static_cast<uint16_t>((field(4) >> 16) & 0x7ff) : 0;
    state.last_data = field(5);
  } else {
    uint32_t high_bits = wide ? 16 : 4;
    uint32_t high_mask = (1u << high_bits) - 1;
    state.last_instruction = (field(3) & 0xffff) | (((field(4) >> 12) & high_mask) << 16);
    state.last_opcode = static_cast<uint16_t>(field(4) & 0x7ff);
    state.last_data = (field(5) & 0xffff) | (((field(6) >> 12) & high_mask) << 16);
  }
  x87_update_error_summary(state);
}

SimdOutcome memory_control(Context& context) {
  SimdState& state = context.state;
  uint8_t escape = context.instruction.opcode;
  unsigned reg = (context.instruction.modrm >> 3) & 7;
  uint8_t image[108];
  if (escape == 0xd9) {
    switch (reg) {
      case 4: {  // FLDENV
        if (!context.read_bytes(0, image, environment_size(context)))
          return SimdOutcome::kMemoryFault;
        load_environment(context, image);
        return SimdOutcome::kDone;
      }
      case 5: {  // FLDCW
        uint16_t control;
        if (!context.read(0, control)) return SimdOutcome::kMemoryFault;
        state.control = loadable_control(control);
        x87_update_error_summary(state);
        return SimdOutcome::kDone;
      }
      case 6: {  // FNSTENV: then all exceptions are masked (SDM Vol. 2 FSTENV)
        size_t size = build_environment(context, image);
        if (!context.write_bytes(0, image, size)) return SimdOutcome::kMemoryFault;
        state.control |= kX87ExceptionFlags;
        return SimdOutcome::kDone;
      }
      case 7:  // FNSTCW
        return context.write(0, state.control) ? SimdOutcome::kDone : SimdOutcome::kMemoryFault;
      default: return SimdOutcome::kInvalidOpcode;
    }
  }
  // DD /4 FRSTOR, /6 FNSAVE, /7 FNSTSW m16.
  switch (reg) {
    case 4: {
      size_t size = environment_size(context);
      if (!context.read_bytes(0, image, size + 80)) return SimdOutcome::kMemoryFault;
      load_environment(context, image);
      for (unsigned i = 0; i < 8; ++i) {
        X87Register& target = state.st(i);
        std::memcpy(&target.significand, image + size + 10 * i, 8);
        std::memcpy(&target.sign_exponent, image + size + 10 * i + 8, 2);
      }
      return SimdOutcome::kDone;
    }
    case 6: {
      size_t size = build_environment(context, image);
      for (unsigned i = 0; i < 8; ++i) {
        const X87Register& source = state.st(i);
        std::memcpy(image + size + 10 * i, &source.significand, 8);
        std::memcpy(image + size + 10 * i + 8, &source.sign_exponent, 2);
      }
      if (!context.write_bytes(0, image, size + 80)) return SimdOutcome::kMemoryFault;
      initialize(state);
      return SimdOutcome::kDone;
    }
    case 7: return context.write(0, state.status) ? SimdOutcome::kDone : SimdOutcome::kMemoryFault;
    default: return SimdOutcome::kInvalidOpcode;
  }
}

// FCMOVcc condition from RFLAGS: DA C0 B, C8 E, D0 BE, D8 U; DB the negations.
bool fcmov_condition(Context& context) {
  uint64_t rflags = context.operands.read_rflags();
  bool carry = rflags & 1, parity = rflags & 4, zero = rflags & 0x40;
  bool condition = false;
  switch ((context.instruction.modrm >> 3) & 3) {
    case 0: condition = carry; break;
    case 1: condition = zero; break;
    case 2: condition = carry || zero; break;
    default: condition = parity; break;
  }
  return context.instruction.opcode == 0xdb ? !condition : condition;
}

}  // namespace

SimdOutcome x87_control(Context& context) {
  SimdState& state = context.state;
  const SimdInstruction& instruction = context.instruction;
  if (instruction.memory_operand) return memory_control(context);
  uint8_t escape = instruction.opcode;
  uint8_t modrm = instruction.modrm;
  unsigned reg = (modrm >> 3) & 7;
  unsigned index = modrm & 7;
  if ((escape == 0xda || escape == 0xdb) && reg < 4) {  // FCMOVcc
    if (state.st_empty(0) || state.st_empty(index)) {
      if (x87_stack_underflow(state)) x87_write(state, 0, kX87Indefinite);
      return SimdOutcome::kDone;
    }
    if (fcmov_condition(context)) x87_write(state, 0, state.st(index));
    return SimdOutcome::kDone;
  }
  if (reg == 1) {  // FXCH (D9 C8, and the aliases DD C8, DF C8)
    bool empty0 = state.st_empty(0), empty_i = state.st_empty(index);
    if (empty0 || empty_i) {
      if (!x87_stack_underflow(state)) return SimdOutcome::kDone;
      if (empty0) x87_write(state, 0, kX87Indefinite);
      if (empty_i) x87_write(state, index, kX87Indefinite);
    }
    X87Register first = state.st(0);
    x87_write(state, 0, state.st(index));
    x87_write(state, index, first);
    x87_set_c1(state, false);
    return SimdOutcome::kDone;
  }
  switch (escape) {
    case 0xdb:
      switch (modrm) {
        case 0xe2: state.status &= 0x7f00; return SimdOutcome::kDone;  // FNCLEX
        case 0xe3:
          initialize(state);
          return SimdOutcome::kDone;  // FNINIT
        // FENI, FDISI, FSETPM: 8087/287 controls that later FPUs execute as no-ops.
        case 0xe0:
        case 0xe1:
        case 0xe4: return SimdOutcome::kDone;
        default: return SimdOutcome::kInvalidOpcode;
      }
    case 0xdd:  // FFREE (C1 undefined by the SDM; cleared, as processors do)
      state.tag_valid = static_cast<uint8_t>(state.tag_valid & ~(1u << state.physical(index)));
      x87_set_c1(state, false);
      return SimdOutcome::kDone;
    case 0xdf:
      if (modrm == 0xe0) {  // FNSTSW AX
        uint64_t rax = context.operands.read_gpr(0);
        context.operands.write_gpr(0, (rax & ~uint64_t{0xffff}) | state.status, 8);
        return SimdOutcome::kDone;
      }
      if (reg == 0) {  // FFREEP (undocumented): FFREE ST(i), then pop
        state.tag_valid = static_cast<uint8_t>(state.tag_valid & ~(1u << state.physical(index)));
        x87_set_c1(state, false);
        x87_pop(state);
        return SimdOutcome::kDone;
      }
      return SimdOutcome::kInvalidOpcode;
    default: return SimdOutcome::kInvalidOpcode;
  }
}

}  // namespace lamina::cpu::x86::simd

namespace lamina::cpu::x86 {

using simd::X87Class;

void reset(SimdState& state) {
  state = SimdState{};
  simd::initialize(state);
  // SDM Vol. 3 table 9-1: after RESET the x87 control word is 0040h; INIT keeps FNINIT's state
  // on newer processors. Firmware executes FNINIT before using the FPU either way.
  state.mxcsr = kMxcsrDefault;
}

uint16_t full_tag_word(const SimdState& state) {
  uint16_t tags = 0;
  for (unsigned i = 0; i < 8; ++i) {
    unsigned tag = 3;
    if (state.tag_valid & (1u << i)) {
      switch (simd::x87_classify(state.x87[i])) {
        case X87Class::kNormal: tag = 0; break;
        case X87Class::kZero: tag = 1; break;
        default: tag = 2; break;
      }
    }
    tags = static_cast<uint16_t>(tags | (tag << (2 * i)));
  }
  return tags;
}

}  // namespace lamina::cpu::x86
