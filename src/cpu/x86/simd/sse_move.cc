// SSE/SSE2 data movement, logic and shuffles: MOVUPS..MOVDQU, MOVSS/MOVSD, MOVLPS/MOVHPS and
// their PD forms, MOVHLPS/MOVLHPS, MOVSLDUP/MOVSHDUP/MOVDDUP, MOVD/MOVQ (all directions),
// MOVQ2DQ/MOVDQ2Q, MOVNT*, LDDQU, UNPCK*, SHUFPS/PD, MOVMSKPS/PD, ANDPS..XORPD, LDMXCSR/STMXCSR,
// the fences (SDM Vol. 2, the entries of each mnemonic).

#include <atomic>

#include "cpu/x86/simd/sse_operands.h"

namespace lamina::cpu::x86::simd {
namespace {

SimdOutcome store_memory(Context& context, const Xmm& value, unsigned size, bool aligned) {
  if (aligned && size == 16 && (context.operands.effective_address() & 15)) {
    return SimdOutcome::kGeneralProtection;
  }
  return context.write_bytes(0, value.bytes.data(), size) ? SimdOutcome::kDone
                                                          : SimdOutcome::kMemoryFault;
}

Xmm unpack_float(const Xmm& a, const Xmm& b, bool doubles, bool high) {
  Xmm out;
  if (doubles) {
    out.set_lane<uint64_t>(0, a.lane<uint64_t>(high ? 1 : 0));
    out.set_lane<uint64_t>(1, b.lane<uint64_t>(high ? 1 : 0));
  } else {
    unsigned base = high ? 2 : 0;
    for (unsigned i = 0; i < 2; ++i) {
      out.set_lane<uint32_t>(2 * i, a.lane<uint32_t>(base + i));
      out.set_lane<uint32_t>(2 * i + 1, b.lane<uint32_t>(base + i));
    }
  }
  return out;
}

SimdOutcome mxcsr_access(Context& context, bool load) {
  if (auto failed = sse_check(context)) return *failed;
  if (load) {
    uint32_t value;
    if (!context.read(0, value)) return SimdOutcome::kMemoryFault;
    // SDM Vol. 2 LDMXCSR: #GP(0) for reserved bits set.
    if (value & ~kMxcsrWritable) return SimdOutcome::kGeneralProtection;
    context.state.mxcsr = value;
    return SimdOutcome::kDone;
  }
  return context.write(0, context.state.mxcsr) ? SimdOutcome::kDone : SimdOutcome::kMemoryFault;
}

}  // namespace

SimdOutcome sse_move(Context& context) {
  const SimdInstruction& instruction = context.instruction;
  SimdState& state = context.state;
  uint8_t opcode = instruction.opcode;
  uint8_t prefix = instruction.mandatory_prefix;
  bool memory = instruction.memory_operand;
  unsigned reg = instruction.reg & 15;

  if (opcode == 0xae) {
    unsigned group = (instruction.modrm >> 3) & 7;
    if (prefix != 0) return SimdOutcome::kNotSimd;
    if (memory) {
      switch (group) {
        case 0: return fxsave_fxrstor(context, false);
        case 1: return fxsave_fxrstor(context, true);
        case 2: return mxcsr_access(context, true);
        case 3: return mxcsr_access(context, false);
        default: return SimdOutcome::kNotSimd;  // XSAVE family, CLFLUSH: the core's
      }
    }
    // LFENCE, MFENCE, SFENCE: the host is TSO; MFENCE also orders stores before loads.
    if (group == 6) std::atomic_thread_fence(std::memory_order_seq_cst);
    return group >= 5 ? SimdOutcome::kDone : SimdOutcome::kInvalidOpcode;
  }

  // Forms without an F2/F3 variant (SDM Vol. 2 appendix A, table A-3): #UD.
  bool repeat_prefix = prefix == 0xf2 || prefix == 0xf3;
  // F2/F3 0F 2B are AMD's SSE4a MOVNTSD/MOVNTSS, which the unit does not offer.
  if (repeat_prefix &&
      (opcode == 0x28 || opcode == 0x29 || opcode == 0x6e || opcode == 0x2b || opcode == 0xe7)) {
    return SimdOutcome::kInvalidOpcode;
  }
  if (prefix == 0xf2 && (opcode == 0x6f || opcode == 0x7f || opcode == 0x7e)) {
    return SimdOutcome::kInvalidOpcode;
  }

  // MMX-register forms of the moves.
  bool mmx_form = prefix == 0 && (opcode == 0x6e || opcode == 0x7e || opcode == 0x6f ||
                                  opcode == 0x7f || opcode == 0xe7);
  if (mmx_form || (opcode == 0xd6 && prefix == 0xf2)) {
    if (auto failed = mmx_enter(context)) return *failed;
  } else if (auto failed = sse_check(context)) {
    return *failed;
  }
  Xmm& destination = state.xmm[reg];
  Xmm source;
  switch (opcode) {
    case 0x10:
    case 0x11:
    case 0x28:
    case 0x29:
    case 0x6f:
    case 0x7f:
    case 0x2b:
    case 0xe7:
    case 0xf0: {
      bool store =
          opcode == 0x11 || opcode == 0x29 || opcode == 0x7f || opcode == 0x2b || opcode == 0xe7;
      bool aligned = opcode == 0x28 || opcode == 0x29 || opcode == 0x2b ||
                     (opcode == 0xe7 && prefix == 0x66) ||
                     ((opcode == 0x6f || opcode == 0x7f) && prefix == 0x66);
      if ((opcode == 0x2b || opcode == 0xe7 || opcode == 0xf0) && !memory)
        return SimdOutcome::kInvalidOpcode;
      if (opcode == 0xf0 && prefix != 0xf2) return SimdOutcome::kInvalidOpcode;
      if (mmx_form) {  // MOVQ mm, mm/m64; MOVQ mm/m64, mm; MOVNTQ
        uint64_t value;
        if (store) {
          value = mmx_read(state, instruction.reg);
          if (memory)
            return context.write(0, value) ? SimdOutcome::kDone : SimdOutcome::kMemoryFault;
          mmx_write(state, instruction.rm, value);
          return SimdOutcome::kDone;
        }
        if (memory) {
          if (!context.read(0, value)) return SimdOutcome::kMemoryFault;
        } else {
          value = mmx_read(state, instruction.rm);
        }
        mmx_write(state, instruction.reg, value);
        return SimdOutcome::kDone;
      }
      // MOVSS/MOVSD: scalar sizes; a load from memory zeroes the rest, register moves merge.
      unsigned size = (opcode <= 0x11 && prefix == 0xf3)   ? 4
                      : (opcode <= 0x11 && prefix == 0xf2) ? 8
                                                           : 16;
      if (store) {
        if (memory) return store_memory(context, destination, size, aligned);
        Xmm& target = state.xmm[instruction.rm & 15];
        if (size == 16) {
          target = destination;
        } else {
          std::memcpy(target.bytes.data(), destination.bytes.data(), size);
        }
        return SimdOutcome::kDone;
      }
      if (auto failed = read_source(context, source, size, false, aligned)) return *failed;
      if (size == 16 || memory) {
        destination = source;
      } else {
        std::memcpy(destination.bytes.data(), source.bytes.data(), size);
      }
      return SimdOutcome::kDone;
    }
    case 0x12:
    case 0x16: {
      bool high = opcode == 0x16;
      if (prefix == 0xf3 || (prefix == 0xf2 && !high)) {  // MOVSLDUP, MOVSHDUP, MOVDDUP
        if (prefix == 0xf2) {
          if (auto failed = read_source(context, source, memory ? 8 : 16, false, false))
            return *failed;
          destination.set_lane<uint64_t>(0, source.lane<uint64_t>(0));
          destination.set_lane<uint64_t>(1, source.lane<uint64_t>(0));
          return SimdOutcome::kDone;
        }
        if (auto failed = read_source(context, source, 16, false, true)) return *failed;
        unsigned odd = high ? 1 : 0;
        for (unsigned i = 0; i < 4; i += 2) {
          destination.set_lane<uint32_t>(i, source.lane<uint32_t>(i + odd));
          destination.set_lane<uint32_t>(i + 1, source.lane<uint32_t>(i + odd));
        }
        return SimdOutcome::kDone;
      }
      if (prefix == 0xf2) return SimdOutcome::kInvalidOpcode;
      if (!memory) {  // MOVHLPS / MOVLHPS (no 66 form)
        if (prefix == 0x66) return SimdOutcome::kInvalidOpcode;
        const Xmm& other = state.xmm[instruction.rm & 15];
        destination.set_lane<uint64_t>(high ? 1 : 0, other.lane<uint64_t>(high ? 0 : 1));
        return SimdOutcome::kDone;
      }
      uint64_t value;
      if (!context.read(0, value)) return SimdOutcome::kMemoryFault;
      destination.set_lane<uint64_t>(high ? 1 : 0, value);
      return SimdOutcome::kDone;
    }
    case 0x13:
    case 0x17:
      if (!memory || prefix > 0x66) return SimdOutcome::kInvalidOpcode;
      return context.write(0, destination.lane<uint64_t>(opcode == 0x17 ? 1 : 0))
                 ? SimdOutcome::kDone
                 : SimdOutcome::kMemoryFault;
    case 0x14:
    case 0x15:
      if (prefix > 0x66) return SimdOutcome::kInvalidOpcode;
      if (auto failed = read_source(context, source, 16, false, true)) return *failed;
      destination = unpack_float(destination, source, prefix == 0x66, opcode == 0x15);
      return SimdOutcome::kDone;
    case 0x54:
    case 0x55:
    case 0x56:
    case 0x57: {
      if (prefix > 0x66) return SimdOutcome::kInvalidOpcode;
      if (auto failed = read_source(context, source, 16, false, true)) return *failed;
      for (unsigned i = 0; i < 2; ++i) {
        uint64_t a = destination.lane<uint64_t>(i), b = source.lane<uint64_t>(i);
        uint64_t r = opcode == 0x54   ? a & b
                     : opcode == 0x55 ? ~a & b
                     : opcode == 0x56 ? a | b
                                      : a ^ b;
        destination.set_lane<uint64_t>(i, r);
      }
      return SimdOutcome::kDone;
    }
    case 0xc6: {
      if (prefix > 0x66) return SimdOutcome::kInvalidOpcode;
      if (auto failed = read_source(context, source, 16, false, true)) return *failed;
      uint8_t order = instruction.immediate;
      Xmm out;
      if (prefix == 0x66) {
        out.set_lane<uint64_t>(0, destination.lane<uint64_t>(order & 1));
        out.set_lane<uint64_t>(1, source.lane<uint64_t>((order >> 1) & 1));
      } else {
        out.set_lane<uint32_t>(0, destination.lane<uint32_t>(order & 3));
        out.set_lane<uint32_t>(1, destination.lane<uint32_t>((order >> 2) & 3));
        out.set_lane<uint32_t>(2, source.lane<uint32_t>((order >> 4) & 3));
        out.set_lane<uint32_t>(3, source.lane<uint32_t>((order >> 6) & 3));
      }
      destination = out;
      return SimdOutcome::kDone;
    }
    case 0x50: {
      if (!memory && prefix <= 0x66) {
        const Xmm& value = state.xmm[instruction.rm & 15];
        uint32_t mask = 0;
        if (prefix == 0x66) {
          for (unsigned i = 0; i < 2; ++i)
            mask |= static_cast<uint32_t>(value.lane<uint64_t>(i) >> 63) << i;
        } else {
          for (unsigned i = 0; i < 4; ++i) mask |= (value.lane<uint32_t>(i) >> 31) << i;
        }
        context.operands.write_gpr(instruction.reg, mask, 4);
        return SimdOutcome::kDone;
      }
      return SimdOutcome::kInvalidOpcode;
    }
    case 0x6e: {  // MOVD/MOVQ mm|xmm, r/m32|64
      unsigned size = instruction.rex_w ? 8 : 4;
      uint64_t value = 0;
      if (memory) {
        if (!context.read_bytes(0, &value, size)) return SimdOutcome::kMemoryFault;
      } else {
        value = context.operands.read_gpr(instruction.rm);
        if (size == 4) value &= 0xffffffffu;
      }
      if (mmx_form) {
        mmx_write(state, instruction.reg, value);
      } else {
        destination = Xmm{};
        destination.set_lane<uint64_t>(0, value);
      }
      return SimdOutcome::kDone;
    }
    case 0x7e: {
      if (prefix == 0xf3) {  // MOVQ xmm, xmm/m64
        if (auto failed = read_source(context, source, 8, false, false)) return *failed;
        destination = Xmm{};
        destination.set_lane<uint64_t>(0, source.lane<uint64_t>(0));
        return SimdOutcome::kDone;
      }
      unsigned size = instruction.rex_w ? 8 : 4;
      uint64_t value = mmx_form ? mmx_read(state, instruction.reg) : destination.lane<uint64_t>(0);
      if (memory)
        return context.write_bytes(0, &value, size) ? SimdOutcome::kDone
                                                    : SimdOutcome::kMemoryFault;
      context.operands.write_gpr(instruction.rm, value, static_cast<uint8_t>(size));
      return SimdOutcome::kDone;
    }
    case 0xd6: {
      if (prefix == 0x66) {  // MOVQ xmm/m64, xmm
        if (memory)
          return context.write(0, destination.lane<uint64_t>(0)) ? SimdOutcome::kDone
                                                                 : SimdOutcome::kMemoryFault;
        uint64_t low = destination.lane<uint64_t>(0);
        Xmm& target = state.xmm[instruction.rm & 15];
        target = Xmm{};
        target.set_lane<uint64_t>(0, low);
        return SimdOutcome::kDone;
      }
      if (memory) return SimdOutcome::kInvalidOpcode;
      if (prefix == 0xf3) {  // MOVQ2DQ xmm, mm
        if (auto failed = mmx_enter(context)) return *failed;
        destination = Xmm{};
        destination.set_lane<uint64_t>(0, mmx_read(state, instruction.rm));
        return SimdOutcome::kDone;
      }
      if (prefix == 0xf2) {  // MOVDQ2Q mm, xmm
        mmx_write(state, instruction.reg, state.xmm[instruction.rm & 15].lane<uint64_t>(0));
        return SimdOutcome::kDone;
      }
      return SimdOutcome::kInvalidOpcode;
    }
    default: return SimdOutcome::kInvalidOpcode;
  }
}

}  // namespace lamina::cpu::x86::simd

namespace lamina::cpu::x86::simd {

// MASKMOVQ mm, mm / MASKMOVDQU xmm, xmm: stores the bytes whose mask byte has its top bit set
// to DS:rDI; the core passes DS:rDI as the effective address for 0F F7.
SimdOutcome mask_move(Context& context) {
  const SimdInstruction& instruction = context.instruction;
  bool xmm = instruction.mandatory_prefix == 0x66;
  if (instruction.memory_operand || (instruction.mandatory_prefix != 0 && !xmm)) {
    return SimdOutcome::kInvalidOpcode;
  }
  if (auto failed = xmm ? sse_check(context) : mmx_enter(context)) return *failed;
  Xmm data, mask;
  unsigned width = xmm ? 16 : 8;
  if (xmm) {
    data = context.state.xmm[instruction.reg & 15];
    mask = context.state.xmm[instruction.rm & 15];
  } else {
    data.set_lane<uint64_t>(0, mmx_read(context.state, instruction.reg));
    mask.set_lane<uint64_t>(0, mmx_read(context.state, instruction.rm));
  }
  for (unsigned i = 0; i < width; ++i) {
    if (!(mask.bytes[i] & 0x80)) continue;
    if (!context.write_bytes(i, &data.bytes[i], 1)) return SimdOutcome::kMemoryFault;
  }
  return SimdOutcome::kDone;
}

}  // namespace lamina::cpu::x86::simd
