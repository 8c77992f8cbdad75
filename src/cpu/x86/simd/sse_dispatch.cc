// Decode tables for the 0F, 0F 38 and 0F 3A maps: which (opcode, mandatory prefix) pairs are
// this unit's, whether they carry an imm8, and which family executes them (SDM Vol. 2
// appendix A, opcode map tables ).

#include "cpu/x86/simd/sse_operands.h"

namespace lamina::cpu::x86::simd {
namespace {

enum class Family : uint8_t {
  kNone,
  kInteger,
  kMove,
  kFloat,
  kConvert,
  kEmms,
  kSsse3,
  kSse41,
  kStrings,
  kCrc32,
};

struct Route {
  Family family = Family::kNone;
  bool immediate = false;
};

bool is_integer_opcode(uint8_t opcode) {
  return (opcode >= 0x60 && opcode <= 0x6d) || (opcode >= 0x70 && opcode <= 0x76) ||
         (opcode >= 0xd1 && opcode <= 0xd5) || (opcode >= 0xd7 && opcode <= 0xe5) ||
         (opcode >= 0xe8 && opcode <= 0xef) || (opcode >= 0xf1 && opcode <= 0xf6) ||
         (opcode >= 0xf8 && opcode <= 0xfe) || opcode == 0xc4 || opcode == 0xc5;
}

Route route_two_byte(uint8_t opcode, uint8_t prefix) {
  bool immediate = opcode == 0x70 || (opcode >= 0x71 && opcode <= 0x73) || opcode == 0xc2 ||
                   opcode == 0xc4 || opcode == 0xc5 || opcode == 0xc6;
  if (opcode == 0x77) return prefix == 0 ? Route{Family::kEmms} : Route{};
  if (opcode == 0xae) return prefix == 0 ? Route{Family::kMove} : Route{};
  if ((opcode >= 0x10 && opcode <= 0x17) || opcode == 0x28 || opcode == 0x29 || opcode == 0x2b ||
      opcode == 0x50 || (opcode >= 0x54 && opcode <= 0x57) || opcode == 0x6e || opcode == 0x6f ||
      opcode == 0x7e || opcode == 0x7f || opcode == 0xc6 || opcode == 0xd6 || opcode == 0xe7 ||
      opcode == 0xf0 || opcode == 0xf7) {
    return {Family::kMove, immediate};
  }
  if (opcode == 0x2a || opcode == 0x2c || opcode == 0x2d || opcode == 0x5a || opcode == 0x5b ||
      opcode == 0xe6) {
    return {Family::kConvert};
  }
  if (opcode == 0x2e || opcode == 0x2f || (opcode >= 0x51 && opcode <= 0x53) ||
      (opcode >= 0x58 && opcode <= 0x5f) || opcode == 0xc2 || opcode == 0x7c || opcode == 0x7d ||
      opcode == 0xd0) {
    return {Family::kFloat, immediate};
  }
  if (is_integer_opcode(opcode)) return {Family::kInteger, immediate};
  return {};
}

Route route_38(uint8_t opcode, uint8_t prefix) {
  if (opcode <= 0x0b || (opcode >= 0x1c && opcode <= 0x1e)) return {Family::kSsse3};
  if (opcode == 0xf0 || opcode == 0xf1) return prefix == 0xf2 ? Route{Family::kCrc32} : Route{};
  if (prefix != 0x66) return {};
  if (opcode == 0x10 || opcode == 0x14 || opcode == 0x15 || opcode == 0x17 ||
      (opcode >= 0x20 && opcode <= 0x25) || (opcode >= 0x28 && opcode <= 0x2b) ||
      (opcode >= 0x30 && opcode <= 0x35) || (opcode >= 0x37 && opcode <= 0x41)) {
    return {Family::kSse41};
  }
  return {};
}

Route route_3a(uint8_t opcode, uint8_t prefix) {
  if (opcode == 0x0f) return {Family::kSsse3, true};
  if (prefix != 0x66) return {};
  if ((opcode >= 0x08 && opcode <= 0x0e) || (opcode >= 0x14 && opcode <= 0x17) ||
      (opcode >= 0x20 && opcode <= 0x22) || (opcode >= 0x40 && opcode <= 0x42)) {
    return {Family::kSse41, true};
  }
  if (opcode >= 0x60 && opcode <= 0x63) return {Family::kStrings, true};
  return {};
}

Route route(OpcodeMap map, uint8_t opcode, uint8_t prefix) {
  switch (map) {
    case OpcodeMap::kTwoByte: return route_two_byte(opcode, prefix);
    case OpcodeMap::kThreeByte38: return route_38(opcode, prefix);
    case OpcodeMap::kThreeByte3A: return route_3a(opcode, prefix);
    default: return {};
  }
}

SimdOutcome execute(Context& context) {
  const SimdInstruction& instruction = context.instruction;
  Route selected = route(instruction.map, instruction.opcode, instruction.mandatory_prefix);
  uint8_t prefix = instruction.mandatory_prefix;
  switch (selected.family) {
    case Family::kNone: return SimdOutcome::kNotSimd;
    case Family::kEmms: {
      if (context.control.cr0_em) return SimdOutcome::kInvalidOpcode;
      if (context.control.cr0_ts) return SimdOutcome::kDeviceNotAvailable;
      if ((context.state.status & kX87ErrorSummary) && context.control.cr0_ne) {
        return SimdOutcome::kFloatingPointError;
      }
      context.state.tag_valid = 0;  // SDM Vol. 2 EMMS: all tags empty
      return SimdOutcome::kDone;
    }
    case Family::kInteger: {
      uint8_t opcode = instruction.opcode;
      if (opcode == 0x70 && (prefix == 0xf2 || prefix == 0xf3))
        return packed_integer(context, true);
      if (prefix != 0 && prefix != 0x66) return SimdOutcome::kInvalidOpcode;
      if (prefix == 0 && (opcode == 0x6c || opcode == 0x6d)) return SimdOutcome::kInvalidOpcode;
      return packed_integer(context, prefix == 0x66);
    }
    case Family::kMove:
      if (instruction.opcode == 0xf7) return mask_move(context);
      return sse_move(context);
    case Family::kFloat: return sse_float(context);
    case Family::kConvert: return sse_convert(context);
    case Family::kSsse3: return ssse3(context);
    case Family::kSse41: return sse41(context);
    case Family::kStrings: return sse42_strings(context);
    case Family::kCrc32: return crc32(context);
  }
  return SimdOutcome::kNotSimd;
}

}  // namespace

SimdOutcome execute_two_byte(Context& context) { return execute(context); }
SimdOutcome execute_three_byte_38(Context& context) { return execute(context); }
SimdOutcome execute_three_byte_3a(Context& context) { return execute(context); }

}  // namespace lamina::cpu::x86::simd

namespace lamina::cpu::x86 {

SimdOpcodeInfo simd_opcode_info(OpcodeMap map, uint8_t opcode, uint8_t mandatory_prefix) {
  if (map == OpcodeMap::kOneByte) {
    if (opcode == 0x9b) return {true, false, false};
    if (opcode >= 0xd8 && opcode <= 0xdf) return {true, true, false};
    return {};
  }
  simd::Route selected = simd::route(map, opcode, mandatory_prefix);
  if (selected.family == simd::Family::kNone) return {};
  return {true, selected.family != simd::Family::kEmms, selected.immediate};
}

}  // namespace lamina::cpu::x86
