#pragma once
// The x86 instruction decoder: legacy, REX, one-byte, 0F, 0F38 and 0F3A maps in 16-, 32- and
// 64-bit code (SDM vol. 2, chapter 2). VEX/EVEX/XOP encodings are not supported (not
// advertised in CPUID) and decode as invalid (#UD).
//
// Thread-safety: pure functions over their arguments.

#include <cstdint>
#include <span>

#include "cpu/x86/instruction.h"

namespace lamina::cpu::x86 {

enum class DecodeStatus : uint8_t {
  kOk,
  kInvalid,    // #UD
  kTruncated,  // the bytes ran out before the instruction ended (fetch more, or #GP/#PF)
};

// Decodes one instruction from `bytes` (at most 15 are looked at). On kOk fills `out`
// (handler left null: see select_handler()).
DecodeStatus decode(std::span<const uint8_t> bytes, CodeMode mode, Instruction& out);

// True for opcodes whose semantics (and prefix validity) belong to the x87/MMX/SSE unit.
bool is_simd_opcode(uint16_t opcode);

}  // namespace lamina::cpu::x86
