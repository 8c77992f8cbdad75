// Checks our decoder against Zydis, an independent decoder, on random byte streams with a
// fixed seed: instruction length and validity in 16-, 32- and 64-bit code.
#include <Zydis/Zydis.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <array>
#include <random>
#include <string>

#include "cpu/x86/cpu_state.h"
#include "cpu/x86/decoder.h"

namespace lamina::cpu::x86 {
namespace {

// ISA extensions whose validity our decoder decides itself; anything else Zydis knows (VMX,
// SVM, XSAVE, RTM, MONITOR, CET, ...) is not advertised by our CPUID and must be #UD for us.
bool core_isa(ZydisISAExt extension) {
  switch (extension) {
    case ZYDIS_ISA_EXT_BASE:
    case ZYDIS_ISA_EXT_LONGMODE:
    case ZYDIS_ISA_EXT_PAUSE:
    case ZYDIS_ISA_EXT_RDTSCP:
    case ZYDIS_ISA_EXT_CLFSH:
    case ZYDIS_ISA_EXT_SSE2:  // MOVNTI, LFENCE/MFENCE
    case ZYDIS_ISA_EXT_SSE:   // SFENCE, PREFETCHh
      return true;
    default:
      return false;
  }
}

std::string hex(const uint8_t* bytes, size_t count) {
  std::string text;
  for (size_t i = 0; i < count; ++i) text += fmt::format("{:02x} ", bytes[i]);
  return text;
}

// Random bytes biased toward prefixes and escape bytes so that every map gets exercised.
void fill_instruction_bytes(std::mt19937_64& random, std::array<uint8_t, 15>& bytes,
                            bool long_mode) {
  static constexpr uint8_t kPrefixes[] = {0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x2e, 0x3e,
                                          0x26, 0x36, 0x64, 0x65};
  for (auto& byte : bytes) byte = static_cast<uint8_t>(random());
  size_t position = 0;
  const unsigned prefix_count = random() % 4 == 0 ? random() % 4 : 0;
  for (unsigned i = 0; i < prefix_count; ++i)
    bytes[position++] = kPrefixes[random() % std::size(kPrefixes)];
  if (long_mode && random() % 3 == 0) bytes[position++] = static_cast<uint8_t>(0x40 | (random() & 15));
  switch (random() % 6) {
    case 0: case 1: bytes[position] = 0x0f; break;
    case 2: bytes[position] = 0x0f; bytes[position + 1] = random() % 2 ? 0x38 : 0x3a; break;
    default: break;
  }
}

struct ModeCase {
  CodeMode mode;
  ZydisMachineMode machine_mode;
  ZydisStackWidth stack_width;
};

void compare_with_zydis(const ModeCase& mode_case, uint64_t seed, int iterations) {
  ZydisDecoder zydis;
  ASSERT_TRUE(ZYAN_SUCCESS(ZydisDecoderInit(&zydis, mode_case.machine_mode, mode_case.stack_width)));
  // Our CPU does not advertise MPX, CET, LZCNT/TZCNT or KNC: their encodings are NOPs or the
  // older instructions (BSF/BSR) there.
  for (auto decoder_mode : {ZYDIS_DECODER_MODE_MPX, ZYDIS_DECODER_MODE_CET,
                            ZYDIS_DECODER_MODE_LZCNT, ZYDIS_DECODER_MODE_TZCNT,
                            ZYDIS_DECODER_MODE_KNC, ZYDIS_DECODER_MODE_CLDEMOTE})
    ZydisDecoderEnableMode(&zydis, decoder_mode, ZYAN_FALSE);

  std::mt19937_64 random(seed);
  std::array<uint8_t, 15> bytes{};
  int failures = 0, compared_lengths = 0, compared_valid = 0;
  for (int i = 0; i < iterations && failures < 20; ++i) {
    fill_instruction_bytes(random, bytes, mode_case.mode == CodeMode::k64);
    ZydisDecodedInstruction reference;
    const bool reference_ok = ZYAN_SUCCESS(
        ZydisDecoderDecodeInstruction(&zydis, nullptr, bytes.data(), bytes.size(), &reference));
    Instruction ours;
    const DecodeStatus status = decode(bytes, mode_case.mode, ours);
    const bool ours_ok = status == DecodeStatus::kOk;
    ASSERT_NE(status, DecodeStatus::kTruncated) << hex(bytes.data(), 15);

    std::string problem;
    if (reference_ok && reference.encoding != ZYDIS_INSTRUCTION_ENCODING_LEGACY) {
      if (ours_ok) problem = "we accept a VEX/EVEX/XOP/3DNow! encoding";
    } else if (reference_ok) {
      if (ours_ok) {
        ++compared_lengths;
        if (ours.length != reference.length)
          problem = fmt::format("length {} but Zydis {}", ours.length, reference.length);
      } else if (core_isa(reference.meta.isa_ext)) {
        problem = "we reject a valid instruction";
      }
      if (core_isa(reference.meta.isa_ext)) ++compared_valid;
    } else if (ours_ok && !is_simd_opcode(ours.opcode)) {
      ++compared_valid;
      problem = "we accept an instruction Zydis rejects";
    }
    if (!problem.empty()) {
      ++failures;
      ADD_FAILURE() << problem << ": " << hex(bytes.data(), 15) << " (Zydis: "
                    << (reference_ok ? ZydisMnemonicGetString(reference.mnemonic) : "invalid")
                    << ", isa " << (reference_ok ? ZydisISAExtGetString(reference.meta.isa_ext) : "-")
                    << ")";
    }
  }
  EXPECT_EQ(failures, 0);
  // The comparison must actually have compared a large share of the stream.
  EXPECT_GT(compared_lengths, iterations / 3);
  EXPECT_GT(compared_valid, iterations / 4);
}

TEST(DecoderZydis, LengthAndValidity64) {
  compare_with_zydis({CodeMode::k64, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64}, 0x64, 300000);
}
TEST(DecoderZydis, LengthAndValidity32) {
  compare_with_zydis({CodeMode::k32, ZYDIS_MACHINE_MODE_LEGACY_32, ZYDIS_STACK_WIDTH_32}, 0x32, 300000);
}
TEST(DecoderZydis, LengthAndValidity16) {
  compare_with_zydis({CodeMode::k16, ZYDIS_MACHINE_MODE_LEGACY_16, ZYDIS_STACK_WIDTH_16}, 0x16, 300000);
}

TEST(Decoder, TruncatedWhenBytesRunOut) {
  Instruction out;
  const uint8_t mov_imm64[] = {0x48, 0xb8, 1, 2, 3};
  EXPECT_EQ(decode(mov_imm64, CodeMode::k64, out), DecodeStatus::kTruncated);
  const uint8_t too_long[15] = {0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
                                0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x90};
  EXPECT_EQ(decode(too_long, CodeMode::k64, out), DecodeStatus::kOk);
  const uint8_t sixteen_bytes[15] = {0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
                                     0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x05};
  EXPECT_EQ(decode(sixteen_bytes, CodeMode::k64, out), DecodeStatus::kInvalid);
}

TEST(Decoder, ModrmSibAndRipRelative) {
  Instruction out;
  // mov rax, [r12 + r13*4 + 0x12345678]
  const uint8_t sib[] = {0x4b, 0x8b, 0x84, 0xac, 0x78, 0x56, 0x34, 0x12};
  ASSERT_EQ(decode(sib, CodeMode::k64, out), DecodeStatus::kOk);
  EXPECT_EQ(out.length, 8);
  EXPECT_EQ(out.base, kR12);
  EXPECT_EQ(out.index, kR13);
  EXPECT_EQ(out.scale, 2);
  EXPECT_EQ(out.displacement, 0x12345678);
  EXPECT_EQ(out.operand_size, 8);
  // lea eax, [rip - 16]
  const uint8_t rip[] = {0x8d, 0x05, 0xf0, 0xff, 0xff, 0xff};
  ASSERT_EQ(decode(rip, CodeMode::k64, out), DecodeStatus::kOk);
  EXPECT_EQ(out.base, kRipRegister);
  EXPECT_EQ(out.displacement, -16);
  EXPECT_EQ(out.operand_size, 4);
  // 16-bit: mov ax, [bp+si+5] defaults to SS.
  const uint8_t bp_si[] = {0x8b, 0x42, 0x05};
  ASSERT_EQ(decode(bp_si, CodeMode::k16, out), DecodeStatus::kOk);
  EXPECT_EQ(out.segment, 2);
  EXPECT_EQ(out.length, 3);
}

}  // namespace
}  // namespace lamina::cpu::x86
