// The unit's faults and mode checks, from the SDM's exception tables: #NM (CR0.TS/EM), #UD
// (CR0.EM for MMX/SSE, CR4.OSFXSR=0, CR4.OSXMMEXCPT=0), #MF (pending x87 exception on the next
// waiting instruction), #XM, #GP (alignment, reserved MXCSR bits), memory faults, the MMX
// transition, the real-mode environment layout, and the decode table the core uses.

#include <gtest/gtest.h>

#include "cpu/x86/simd/simd_state.h"
#include "cpu/x86/simd/simd_unit.h"
#include "test_support.h"

namespace lamina::cpu::x86::test {
namespace {

SimdInstruction register_form(OpcodeMap map, uint8_t opcode, uint8_t prefix, uint8_t reg,
                              uint8_t rm) {
  InstructionForm form;
  form.map = map;
  form.opcode = opcode;
  form.prefix = prefix;
  form.reg = reg;
  form.rm = rm;
  return encode(form).instruction;
}

SimdInstruction memory_form(OpcodeMap map, uint8_t opcode, uint8_t prefix, uint8_t reg) {
  InstructionForm form;
  form.map = map;
  form.opcode = opcode;
  form.prefix = prefix;
  form.reg = reg;
  form.memory = true;
  return encode(form).instruction;
}

// x87 ESC with ModRM given directly.
SimdInstruction x87(uint8_t escape, uint8_t modrm) {
  InstructionForm form;
  form.map = OpcodeMap::kOneByte;
  form.opcode = escape;
  form.reg = (modrm >> 3) & 7;
  form.rm = modrm & 7;
  form.memory = modrm < 0xc0;
  return encode(form).instruction;
}

const SimdInstruction kAddps = register_form(OpcodeMap::kTwoByte, 0x58, 0, 1, 2);
const SimdInstruction kPaddb = register_form(OpcodeMap::kTwoByte, 0xfc, 0, 1, 2);
const SimdInstruction kFaddSt0St1 = x87(0xd8, 0xc1);

class SimdExceptions : public ::testing::Test {
 protected:
  void SetUp() override { reset(state_); }
  SimdOutcome run(const SimdInstruction& instruction) {
    return execute_simd(state_, control_, instruction, operands_);
  }
  SimdState state_;
  SimdControl control_;
  TestOperands operands_;
};

TEST_F(SimdExceptions, TaskSwitchedRaisesDeviceNotAvailable) {
  control_.cr0_ts = true;
  EXPECT_EQ(run(kFaddSt0St1), SimdOutcome::kDeviceNotAvailable);
  EXPECT_EQ(run(kAddps), SimdOutcome::kDeviceNotAvailable);
  EXPECT_EQ(run(kPaddb), SimdOutcome::kDeviceNotAvailable);
  EXPECT_EQ(run(memory_form(OpcodeMap::kTwoByte, 0xae, 0, 0)), SimdOutcome::kDeviceNotAvailable);
  SimdInstruction fwait;
  fwait.map = OpcodeMap::kOneByte;
  fwait.opcode = 0x9b;
  control_.cr0_mp = true;
  EXPECT_EQ(run(fwait), SimdOutcome::kDeviceNotAvailable);
  control_.cr0_mp = false;  // WAIT ignores TS unless MP is set
  EXPECT_EQ(run(fwait), SimdOutcome::kDone);
}

TEST_F(SimdExceptions, EmulationBitMakesMmxAndSseUndefinedAndX87Unavailable) {
  control_.cr0_em = true;
  EXPECT_EQ(run(kFaddSt0St1), SimdOutcome::kDeviceNotAvailable);
  EXPECT_EQ(run(kAddps), SimdOutcome::kInvalidOpcode);
  EXPECT_EQ(run(kPaddb), SimdOutcome::kInvalidOpcode);
}

TEST_F(SimdExceptions, SseNeedsOsfxsrButMmxDoesNot) {
  control_.cr4_osfxsr = false;
  EXPECT_EQ(run(kAddps), SimdOutcome::kInvalidOpcode);
  EXPECT_EQ(run(register_form(OpcodeMap::kTwoByte, 0xfc, 0x66, 1, 2)), SimdOutcome::kInvalidOpcode);
  EXPECT_EQ(run(kPaddb), SimdOutcome::kDone);
}

TEST_F(SimdExceptions, PendingX87ExceptionFaultsOnTheNextWaitingInstruction) {
  // ST(0) = 1, ST(1) = 0; FDIV ST(0), ST(1) with ZE unmasked.
  state_.control = 0x037f & ~kX87ZeroDivide;
  state_.set_top(6);
  state_.tag_valid = 0xc0;
  state_.x87[6] = X87Register{1ull << 63, 0x3fff};
  state_.x87[7] = X87Register{};
  X87Register before = state_.x87[6];
  EXPECT_EQ(run(x87(0xd8, 0xf1)), SimdOutcome::kDone);
  EXPECT_EQ(state_.x87[6], before) << "an unmasked zero-divide leaves the destination";
  EXPECT_TRUE(state_.status & kX87ZeroDivide);
  EXPECT_TRUE(state_.status & kX87ErrorSummary);
  EXPECT_EQ(run(kFaddSt0St1), SimdOutcome::kFloatingPointError);
  EXPECT_EQ(run(kPaddb), SimdOutcome::kFloatingPointError);
  SimdInstruction fwait;
  fwait.map = OpcodeMap::kOneByte;
  fwait.opcode = 0x9b;
  EXPECT_EQ(run(fwait), SimdOutcome::kFloatingPointError);
  // Non-waiting forms run: FNSTSW AX reports the pending state, FNCLEX clears it.
  EXPECT_EQ(run(x87(0xdf, 0xe0)), SimdOutcome::kDone);
  EXPECT_TRUE(operands_.gpr[0] & kX87ErrorSummary);
  EXPECT_EQ(run(x87(0xdb, 0xe2)), SimdOutcome::kDone);
  EXPECT_EQ(run(kFaddSt0St1), SimdOutcome::kDone);
}

TEST_F(SimdExceptions, UnmaskedSseExceptionRaisesSimdFaultOrUndefined) {
  state_.mxcsr = kMxcsrDefault & ~(1u << 9);        // ZE unmasked
  state_.xmm[1].set_lane<uint32_t>(0, 0x3f800000);  // 1.0f / 0.0f
  Xmm before = state_.xmm[1];
  SimdInstruction divps = register_form(OpcodeMap::kTwoByte, 0x5e, 0, 1, 2);
  EXPECT_EQ(run(divps), SimdOutcome::kSimdException);
  EXPECT_EQ(state_.xmm[1], before);
  EXPECT_TRUE(state_.mxcsr & (1u << 2));
  control_.cr4_osxmmexcpt = false;
  EXPECT_EQ(run(divps), SimdOutcome::kInvalidOpcode);
  state_.mxcsr = kMxcsrDefault;  // masked: infinity, flag set
  EXPECT_EQ(run(divps), SimdOutcome::kDone);
  EXPECT_EQ(state_.xmm[1].lane<uint32_t>(0), 0x7f800000u);
}

TEST_F(SimdExceptions, MisalignedAlignedFormsRaiseGeneralProtection) {
  operands_.address = kTestEffectiveAddress + 8;
  operands_.memory[0] = 0x5a;
  Xmm before = state_.xmm[3];
  EXPECT_EQ(run(memory_form(OpcodeMap::kTwoByte, 0x28, 0, 3)),
            SimdOutcome::kGeneralProtection);  // MOVAPS
  EXPECT_EQ(run(memory_form(OpcodeMap::kTwoByte, 0x58, 0, 3)),
            SimdOutcome::kGeneralProtection);  // ADDPS
  EXPECT_EQ(run(memory_form(OpcodeMap::kTwoByte, 0x6f, 0x66, 3)),
            SimdOutcome::kGeneralProtection);  // MOVDQA
  EXPECT_EQ(run(memory_form(OpcodeMap::kTwoByte, 0x29, 0, 3)),
            SimdOutcome::kGeneralProtection);  // MOVAPS store
  EXPECT_EQ(run(memory_form(OpcodeMap::kTwoByte, 0xae, 0, 0)),
            SimdOutcome::kGeneralProtection);  // FXSAVE
  EXPECT_EQ(state_.xmm[3], before);
  EXPECT_EQ(operands_.memory[0], 0x5a) << "nothing is stored";
  // Unaligned forms and scalar operands do not care.
  EXPECT_EQ(run(memory_form(OpcodeMap::kTwoByte, 0x10, 0, 3)), SimdOutcome::kDone);     // MOVUPS
  EXPECT_EQ(run(memory_form(OpcodeMap::kTwoByte, 0x58, 0xf3, 3)), SimdOutcome::kDone);  // ADDSS
  EXPECT_EQ(run(memory_form(OpcodeMap::kTwoByte, 0x6f, 0xf3, 3)), SimdOutcome::kDone);  // MOVDQU
  SimdInstruction pcmpistri = memory_form(OpcodeMap::kThreeByte3A, 0x63, 0x66, 3);
  EXPECT_EQ(run(pcmpistri), SimdOutcome::kDone);
}

TEST_F(SimdExceptions, ReservedMxcsrBitsRaiseGeneralProtection) {
  uint32_t value = 0x10000 | kMxcsrDefault;
  std::memcpy(operands_.memory.data(), &value, 4);
  EXPECT_EQ(run(memory_form(OpcodeMap::kTwoByte, 0xae, 0, 2)), SimdOutcome::kGeneralProtection);
  EXPECT_EQ(state_.mxcsr, kMxcsrDefault);
  // FXRSTOR with the same MXCSR image: #GP and nothing loaded.
  std::memset(operands_.memory.data(), 0, 512);
  std::memcpy(operands_.memory.data() + 24, &value, 4);
  uint16_t control = 0x0040;
  std::memcpy(operands_.memory.data(), &control, 2);
  EXPECT_EQ(run(memory_form(OpcodeMap::kTwoByte, 0xae, 0, 1)), SimdOutcome::kGeneralProtection);
  EXPECT_EQ(state_.control, 0x037f);
}

TEST_F(SimdExceptions, MemoryFaultLeavesTheStateAlone) {
  operands_.address = kTestEffectiveAddress;
  state_.set_top(7);
  state_.tag_valid = 0x80;
  state_.x87[7] = X87Register{3ull << 62, 0x4000};
  SimdState before = state_;
  // FSTP m80 at an offset beyond the test buffer: the core reports the fault.
  SimdInstruction fstp = x87(0xdb, 0x3e);
  class Faulting : public TestOperands {
   public:
    bool write_memory(uint64_t, std::span<const std::byte>) override { return false; }
    bool read_memory(uint64_t, std::span<std::byte>) override { return false; }
  } always_faulting;
  EXPECT_EQ(execute_simd(state_, control_, fstp, always_faulting), SimdOutcome::kMemoryFault);
  EXPECT_EQ(state_.status, before.status);
  EXPECT_EQ(state_.tag_valid, before.tag_valid);
  EXPECT_EQ(
      execute_simd(state_, control_, memory_form(OpcodeMap::kTwoByte, 0x58, 0, 1), always_faulting),
      SimdOutcome::kMemoryFault);
  EXPECT_EQ(state_.xmm, before.xmm);
}

TEST_F(SimdExceptions, MmxInstructionsEnterMmxModeAndEmmsLeavesIt) {
  state_.set_top(5);
  state_.tag_valid = 0;
  EXPECT_EQ(run(kPaddb), SimdOutcome::kDone);
  EXPECT_EQ(state_.top(), 0u);
  EXPECT_EQ(state_.tag_valid, 0xff);
  EXPECT_EQ(state_.x87[1].sign_exponent, 0xffff)
      << "the written MMX register's exponent is all ones";
  SimdInstruction emms;
  emms.map = OpcodeMap::kTwoByte;
  emms.opcode = 0x77;
  EXPECT_EQ(run(emms), SimdOutcome::kDone);
  EXPECT_EQ(state_.tag_valid, 0);
}

// MASKMOVDQU stores the bytes whose mask byte has bit 7 set, at the address the core passes
// (DS:rDI); the differential tests cannot run it because the host stub owns rdi.
TEST_F(SimdExceptions, MaskedMoveStoresSelectedBytesOnly) {
  for (unsigned i = 0; i < 16; ++i) {
    state_.xmm[1].bytes[i] = static_cast<uint8_t>(0xa0 + i);
    state_.xmm[2].bytes[i] = (i % 3 == 0) ? 0x80 : 0x7f;
    operands_.memory[i] = 0x11;
  }
  ASSERT_EQ(run(register_form(OpcodeMap::kTwoByte, 0xf7, 0x66, 1, 2)), SimdOutcome::kDone);
  for (unsigned i = 0; i < 16; ++i) {
    EXPECT_EQ(operands_.memory[i], (i % 3 == 0) ? 0xa0 + i : 0x11) << "byte " << i;
  }
  // MASKMOVQ: the same with MMX registers, and the memory form does not exist.
  state_.x87[3].significand = 0x0807060504030201ull;
  state_.x87[4].significand = 0x8000800080008000ull;
  ASSERT_EQ(run(register_form(OpcodeMap::kTwoByte, 0xf7, 0, 3, 4)), SimdOutcome::kDone);
  EXPECT_EQ(operands_.memory[1], 0x02);
  EXPECT_EQ(operands_.memory[0], 0xa0);
  EXPECT_EQ(run(memory_form(OpcodeMap::kTwoByte, 0xf7, 0x66, 1)), SimdOutcome::kInvalidOpcode);
}

TEST_F(SimdExceptions, RealModeEnvironmentSplitsThePointers) {
  control_.protected_mode = false;
  state_.last_instruction = 0x12345;
  state_.last_opcode = 0x5a5;
  state_.last_data = 0x6789a;
  SimdInstruction fnstenv = x87(0xd9, 0x36);
  fnstenv.operand_size = 16;
  ASSERT_EQ(run(fnstenv), SimdOutcome::kDone);
  auto word = [&](int index) {
    return static_cast<uint16_t>(operands_.memory[2 * index] | operands_.memory[2 * index + 1]
                                                                   << 8);
  };
  EXPECT_EQ(word(0), 0x037f);
  EXPECT_EQ(word(2), 0xffff) << "all registers empty";
  EXPECT_EQ(word(3), 0x2345);
  EXPECT_EQ(word(4), 0x1000 | 0x5a5);
  EXPECT_EQ(word(5), 0x789a);
  EXPECT_EQ(word(6), 0x6000);
  // FLDENV of the same image restores the pointers.
  SimdState saved = state_;
  state_.last_instruction = 0;
  state_.last_data = 0;
  state_.last_opcode = 0;
  SimdInstruction fldenv = x87(0xd9, 0x26);
  fldenv.operand_size = 16;
  ASSERT_EQ(run(fldenv), SimdOutcome::kDone);
  EXPECT_EQ(state_.last_instruction, 0x12345u);
  EXPECT_EQ(state_.last_data, 0x6789au);
  EXPECT_EQ(state_.last_opcode, 0x5a5);
  EXPECT_EQ(state_.control, saved.control);
}

// Outside 64-bit mode FXSAVE stores 32-bit pointers with zero selectors and XMM0-7 only
// (SDM Vol. 2 FXSAVE, table 3-53); FXRSTOR reads the same.
TEST_F(SimdExceptions, FxsaveOutsideLongModeUsesTheLegacyLayout) {
  state_.last_instruction = 0x1122334455667788ull;
  state_.last_data = 0x99aabbccddeeff00ull;
  state_.last_opcode = 0x123;
  state_.xmm[7].bytes.fill(0x77);
  state_.xmm[8].bytes.fill(0x88);
  operands_.memory.fill(0xcc);
  SimdInstruction fxsave = memory_form(OpcodeMap::kTwoByte, 0xae, 0, 0);
  fxsave.long_mode_64 = false;
  ASSERT_EQ(run(fxsave), SimdOutcome::kDone);
  auto dword = [&](size_t offset) {
    uint32_t value;
    std::memcpy(&value, operands_.memory.data() + offset, 4);
    return value;
  };
  EXPECT_EQ(dword(8), 0x55667788u);
  EXPECT_EQ(dword(12), 0u) << "FCS";
  EXPECT_EQ(dword(16), 0xddeeff00u);
  EXPECT_EQ(dword(20), 0u) << "FDS";
  EXPECT_EQ(dword(24), kMxcsrDefault);
  EXPECT_EQ(operands_.memory[160 + 16 * 7], 0x77);
  EXPECT_EQ(operands_.memory[160 + 16 * 8], 0xcc) << "XMM8 is not stored";
  state_.xmm[8].bytes.fill(0);
  state_.xmm[7].bytes.fill(0);
  SimdInstruction fxrstor = memory_form(OpcodeMap::kTwoByte, 0xae, 0, 1);
  fxrstor.long_mode_64 = false;
  ASSERT_EQ(run(fxrstor), SimdOutcome::kDone);
  EXPECT_EQ(state_.xmm[7].bytes[0], 0x77);
  EXPECT_EQ(state_.xmm[8].bytes[0], 0) << "XMM8 is not loaded";
  EXPECT_EQ(state_.last_instruction, 0x55667788u);
}

TEST_F(SimdExceptions, ResetStateIsFninitWithDefaultMxcsr) {
  state_.xmm[4].bytes[0] = 1;
  state_.mxcsr = 0;
  reset(state_);
  EXPECT_EQ(state_.control, 0x037f);
  EXPECT_EQ(state_.status, 0);
  EXPECT_EQ(state_.tag_valid, 0);
  EXPECT_EQ(state_.mxcsr, kMxcsrDefault);
  EXPECT_EQ(state_.xmm[4], Xmm{});
}

TEST(SimdOpcodeInfo, TellsTheCoreWhatIsOurs) {
  auto info = simd_opcode_info(OpcodeMap::kOneByte, 0xd9, 0);
  EXPECT_TRUE(info.handled && info.has_modrm && !info.has_immediate);
  info = simd_opcode_info(OpcodeMap::kOneByte, 0x9b, 0);
  EXPECT_TRUE(info.handled && !info.has_modrm);
  EXPECT_FALSE(simd_opcode_info(OpcodeMap::kOneByte, 0x90, 0).handled);
  info = simd_opcode_info(OpcodeMap::kTwoByte, 0x70, 0x66);
  EXPECT_TRUE(info.handled && info.has_immediate);
  info = simd_opcode_info(OpcodeMap::kTwoByte, 0x77, 0);
  EXPECT_TRUE(info.handled && !info.has_modrm);
  EXPECT_TRUE(simd_opcode_info(OpcodeMap::kTwoByte, 0xc2, 0xf3).has_immediate);
  EXPECT_TRUE(simd_opcode_info(OpcodeMap::kThreeByte3A, 0x0f, 0).has_immediate);
  EXPECT_FALSE(simd_opcode_info(OpcodeMap::kTwoByte, 0xb8, 0xf3).handled);     // POPCNT
  EXPECT_FALSE(simd_opcode_info(OpcodeMap::kThreeByte38, 0xf0, 0).handled);    // MOVBE
  EXPECT_TRUE(simd_opcode_info(OpcodeMap::kThreeByte38, 0xf0, 0xf2).handled);  // CRC32
  EXPECT_FALSE(simd_opcode_info(OpcodeMap::kTwoByte, 0xc3, 0).handled);        // MOVNTI
  EXPECT_FALSE(simd_opcode_info(OpcodeMap::kTwoByte, 0x18, 0).handled);        // PREFETCH
}

TEST(SimdOpcodeInfo, NotOursIsReportedAsSuch) {
  SimdState state;
  SimdControl control;
  TestOperands operands;
  SimdInstruction popcnt = register_form(OpcodeMap::kTwoByte, 0xb8, 0xf3, 0, 1);
  EXPECT_EQ(execute_simd(state, control, popcnt, operands), SimdOutcome::kNotSimd);
  SimdInstruction clflush = memory_form(OpcodeMap::kTwoByte, 0xae, 0, 7);
  EXPECT_EQ(execute_simd(state, control, clflush, operands), SimdOutcome::kNotSimd);
}

}  // namespace
}  // namespace lamina::cpu::x86::test
