// The "vcpu" section: every field of CpuState survives a round trip, and states no vCPU can
// be in are refused.
#include "migration/cpu_state_stream.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

namespace lamina::migration {
namespace {

using cpu::x86::CpuState;

// Format 1.1's bytes at the section's end: the events (bool, u8, bool, u32, bool, u8, bool),
// XCR0 and sixteen 16-byte YMM halves, each a blob with its u64 length.
constexpr size_t kAppendedInOneOne = 10 + 8 + 16 * (8 + 16);

CpuState random_state(uint64_t seed) {
  std::mt19937_64 random(seed);
  CpuState state;
  for (uint64_t& value : state.gpr) value = random();
  state.rip = random();
  state.write_rflags(0x202 | (random() & 0x8d5));
  for (auto& segment : state.segment) {
    segment = {static_cast<uint16_t>(random()), random(), static_cast<uint32_t>(random()),
               static_cast<uint16_t>(random() & 0xf0ff)};
  }
  state.ldtr.base = random();
  state.tr.base = random();
  state.gdtr = {random(), static_cast<uint16_t>(random())};
  state.idtr = {random(), static_cast<uint16_t>(random())};
  state.cr0 = 0x80000011;
  state.cr2 = random();
  state.cr3 = random() & ~uint64_t{0xfff};
  state.cr4 = 0x6a0;
  state.cr8 = 5;
  for (uint64_t& value : state.dr) value = random();
  state.msr.efer = 0xd01;
  state.msr.lstar = random();
  state.msr.kernel_gs_base = random();
  state.msr.tsc_offset = random();
  state.msr.mtrr_fixed[3] = random();
  state.msr.mtrr_variable[5] = random();
  state.msr.perf_counter[1] = random();
  state.msr.machine_check_banks[7] = random();
  state.cpl = 3;
  state.halted = true;
  state.waiting_for_startup = true;
  state.nmi_blocked = true;
  state.interrupt_shadow = true;
  for (auto& reg : state.simd.x87) reg = {random(), static_cast<uint16_t>(random())};
  state.simd.status = 0x3800;
  state.simd.tag_valid = 0x81;
  state.simd.last_opcode = 0x5ab;
  for (auto& xmm : state.simd.xmm) xmm.set_lane<uint64_t>(1, random());
  state.simd.mxcsr = 0x9fc0;
  state.pae_pdptes[2] = random();
  state.pae_pdptes_loaded = true;
  state.pending_events.exception = true;
  state.pending_events.exception_vector = static_cast<uint8_t>(random() & 31);
  state.pending_events.exception_has_error_code = true;
  state.pending_events.exception_error_code = static_cast<uint32_t>(random());
  state.pending_events.interrupt = true;
  state.pending_events.interrupt_vector = static_cast<uint8_t>(random());
  state.pending_events.nmi = true;
  state.extended_simd.xcr0 = 7;
  for (auto& half : state.extended_simd.ymm_high) half[random() & 15] = static_cast<uint8_t>(random());
  return state;
}

std::vector<std::byte> saved(const CpuState& state) {
  StateWriter writer;
  save_cpu_state(writer, state);
  return writer.data();
}

TEST(CpuStateStreamTest, EveryFieldSurvivesARoundTrip) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    const CpuState state = random_state(seed);
    const std::vector<std::byte> bytes = saved(state);
    StateReader reader(bytes);
    auto loaded = load_cpu_state(reader);
    ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
    EXPECT_TRUE(reader.at_end());
    EXPECT_EQ(loaded->gpr, state.gpr);
    EXPECT_EQ(loaded->rip, state.rip);
    EXPECT_EQ(loaded->read_rflags(), state.read_rflags());
    EXPECT_EQ(loaded->segment[cpu::x86::kGs].base, state.segment[cpu::x86::kGs].base);
    EXPECT_EQ(loaded->msr, state.msr);
    EXPECT_EQ(loaded->simd.x87, state.simd.x87);
    EXPECT_EQ(loaded->simd.xmm, state.simd.xmm);
    EXPECT_EQ(loaded->simd.mxcsr, state.simd.mxcsr);
    EXPECT_EQ(loaded->waiting_for_startup, state.waiting_for_startup);
    EXPECT_EQ(loaded->halted, state.halted);
    EXPECT_EQ(loaded->pae_pdptes, state.pae_pdptes);
    EXPECT_EQ(loaded->pending_events, state.pending_events);
    EXPECT_EQ(loaded->extended_simd, state.extended_simd);
    // Whatever the comparisons above miss, a second save must be the same bytes.
    EXPECT_EQ(saved(*loaded), bytes);
  }
}

TEST(CpuStateStreamTest, RefusesStatesNoVcpuCanBeIn) {
  auto refused = [](void (*damage)(CpuState&)) {
    CpuState state = random_state(7);
    damage(state);
    const std::vector<std::byte> bytes = saved(state);
    StateReader reader(bytes);
    return !load_cpu_state(reader).has_value();
  };
  EXPECT_TRUE(refused([](CpuState& s) { s.cpl = 4; }));
  EXPECT_TRUE(refused([](CpuState& s) { s.cr0 &= ~uint64_t{1}; }));  // paging without PE
  EXPECT_TRUE(refused([](CpuState& s) { s.cr4 = 0; }));              // LMA without PAE
  EXPECT_TRUE(refused([](CpuState& s) { s.simd.mxcsr = 0x10000; }));
  EXPECT_TRUE(refused([](CpuState& s) { s.segment[1].attributes = 0x0f00; }));
  EXPECT_TRUE(refused([](CpuState& s) { s.rflags |= uint64_t{1} << 40; }));
  // A held #DB without its MOV SS shadow, or with bits DR6 never holds there.
  EXPECT_TRUE(refused([](CpuState& s) {
    s.interrupt_shadow = false;
    s.debug_shadow = true;
  }));
  EXPECT_TRUE(refused([](CpuState& s) {
    s.interrupt_shadow = s.debug_shadow = true;
    s.pending_debug = 0x2000;  // BD is a fault, never held
  }));
  // Events and XSAVE state (format 1.1): an exception vector past 31, an error code without
  // an exception, XCR0 without x87, AVX without SSE, or components no vCPU here can have.
  EXPECT_TRUE(refused([](CpuState& s) { s.pending_events.exception_vector = 32; }));
  EXPECT_TRUE(refused([](CpuState& s) { s.pending_events.exception = false; }));
  EXPECT_TRUE(refused([](CpuState& s) { s.extended_simd.xcr0 = 6; }));
  EXPECT_TRUE(refused([](CpuState& s) { s.extended_simd.xcr0 = 5; }));
  EXPECT_TRUE(refused([](CpuState& s) { s.extended_simd.xcr0 = 0xe7; }));
  EXPECT_FALSE(refused([](CpuState&) {}));
}

// A section of format 1.0 (no events, no XSAVE state) loads with none pending and XCR0 = x87.
TEST(CpuStateStreamTest, FormatOneZeroSectionsLoadWithoutEvents) {
  const CpuState state = random_state(5);
  const std::vector<std::byte> bytes = saved(state);
  std::vector<std::byte> older(bytes.begin(), bytes.end() - kAppendedInOneOne);
  const size_t name_length = static_cast<size_t>(older[0]) | static_cast<size_t>(older[1]) << 8;
  const size_t length_at = 2 + name_length + 4;
  uint64_t payload = 0;
  std::memcpy(&payload, older.data() + length_at, 8);
  payload -= kAppendedInOneOne;
  std::memcpy(older.data() + length_at, &payload, 8);
  StateReader reader(older);
  auto loaded = load_cpu_state(reader);
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  EXPECT_FALSE(loaded->pending_events.any());
  EXPECT_EQ(loaded->extended_simd, cpu::x86::ExtendedSimdState{});
  EXPECT_EQ(loaded->gpr, state.gpr);
}

// The #DB a MOV SS holds crosses a checkpoint; a stream from before those fields holds none.
TEST(CpuStateStreamTest, HeldDebugTrapsSurviveAndOlderStreamsHoldNone) {
  CpuState state = random_state(3);
  state.interrupt_shadow = state.debug_shadow = true;
  state.pending_debug = 0x4001;  // BS and B0
  const std::vector<std::byte> bytes = saved(state);
  StateReader reader(bytes);
  auto loaded = load_cpu_state(reader);
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  EXPECT_TRUE(loaded->debug_shadow);
  EXPECT_EQ(loaded->pending_debug, 0x4001);
  // The same section without its last three bytes (bool + u16) before format 1.1's, with its
  // length patched, is what the first writer of version 1 wrote.
  std::vector<std::byte> older(bytes.begin(), bytes.end() - 3 - kAppendedInOneOne);
  const size_t name_length = static_cast<size_t>(older[0]) | static_cast<size_t>(older[1]) << 8;
  const size_t length_at = 2 + name_length + 4;
  uint64_t payload = 0;
  std::memcpy(&payload, older.data() + length_at, 8);
  payload -= 3 + kAppendedInOneOne;
  std::memcpy(older.data() + length_at, &payload, 8);
  StateReader older_reader(older);
  auto from_older = load_cpu_state(older_reader);
  ASSERT_TRUE(from_older.has_value()) << from_older.error().message();
  EXPECT_FALSE(from_older->debug_shadow);
  EXPECT_EQ(from_older->pending_debug, 0);
}

TEST(CpuStateStreamTest, EveryTruncationIsAnError) {
  const std::vector<std::byte> bytes = saved(random_state(3));
  for (size_t length = 0; length < bytes.size(); ++length) {
    StateReader reader{std::span<const std::byte>(bytes).first(length)};
    EXPECT_FALSE(load_cpu_state(reader).has_value()) << length;
  }
}

}  // namespace
}  // namespace lamina::migration
