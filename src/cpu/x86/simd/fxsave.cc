// FXSAVE/FXRSTOR in the 32-bit and 64-bit (REX.W) layouts (SDM Vol. 2 FXSAVE, tables 10-2 and
// 10-3): 16-byte alignment (#GP), MXCSR reserved bits (#GP), the abridged tag word.

#include "base/byte_order.h"
#include "cpu/x86/simd/sse_operands.h"
#include "cpu/x86/simd/x87_stack.h"

namespace lamina::cpu::x86::simd {

SimdOutcome fxsave_fxrstor(Context& context, bool restore) {
  SimdState& state = context.state;
  // SDM Vol. 2 FXSAVE: #NM when CR0.TS or CR0.EM is set; #GP(0) for a misaligned area.
  if (context.control.cr0_ts || context.control.cr0_em) return SimdOutcome::kDeviceNotAvailable;
  if (context.operands.effective_address() & 15) return SimdOutcome::kGeneralProtection;
  bool wide = context.instruction.rex_w && context.instruction.long_mode_64;
  unsigned xmm_count = context.instruction.long_mode_64 ? 16 : 8;
  size_t size = 160 + 16 * xmm_count;
  uint8_t image[512] = {};
  if (restore) {
    if (!context.read_bytes(0, image, size)) return SimdOutcome::kMemoryFault;
    uint32_t mxcsr = load_le<uint32_t>(image + 24);
    if (mxcsr & ~kMxcsrWritable) return SimdOutcome::kGeneralProtection;
    state.control = static_cast<uint16_t>((load_le<uint16_t>(image) & 0x1f3f) | 0x40);
    state.status = load_le<uint16_t>(image + 2);
    x87_update_error_summary(state);
    state.tag_valid = image[4];
    state.last_opcode = load_le<uint16_t>(image + 6) & 0x7ff;
    state.last_instruction = wide ? load_le<uint64_t>(image + 8) : load_le<uint32_t>(image + 8);
    state.last_data = wide ? load_le<uint64_t>(image + 16) : load_le<uint32_t>(image + 16);
    state.mxcsr = mxcsr;
    for (unsigned i = 0; i < 8; ++i) {
      X87Register& reg = state.st(i);
      reg.significand = load_le<uint64_t>(image + 32 + 16 * i);
      reg.sign_exponent = load_le<uint16_t>(image + 40 + 16 * i);
    }
    for (unsigned i = 0; i < xmm_count; ++i) {
      std::memcpy(state.xmm[i].bytes.data(), image + 160 + 16 * i, 16);
    }
    return SimdOutcome::kDone;
  }
  store_le<uint16_t>(image, state.control);
  store_le<uint16_t>(image + 2, state.status);
  image[4] = state.tag_valid;
  store_le<uint16_t>(image + 6, state.last_opcode);
  if (wide) {
    store_le<uint64_t>(image + 8, state.last_instruction);
    store_le<uint64_t>(image + 16, state.last_data);
  } else {
    // FCS and FDS are stored as zero (deprecated, CPUID.(EAX=7,ECX=0):EBX[13]).
    store_le<uint32_t>(image + 8, static_cast<uint32_t>(state.last_instruction));
    store_le<uint32_t>(image + 16, static_cast<uint32_t>(state.last_data));
  }
  store_le<uint32_t>(image + 24, state.mxcsr);
  store_le<uint32_t>(image + 28, kMxcsrWritable);  // MXCSR_MASK
  for (unsigned i = 0; i < 8; ++i) {
    const X87Register& reg = state.st(i);
    store_le<uint64_t>(image + 32 + 16 * i, reg.significand);
    store_le<uint16_t>(image + 40 + 16 * i, reg.sign_exponent);
  }
  for (unsigned i = 0; i < xmm_count; ++i) {
    std::memcpy(image + 160 + 16 * i, state.xmm[i].bytes.data(), 16);
  }
  return context.write_bytes(0, image, size) ? SimdOutcome::kDone : SimdOutcome::kMemoryFault;
}

}  // namespace lamina::cpu::x86::simd
