// The JIT's inline SSE forms (translator_simd.cc) against the interpreter and the host CPU: the
// same code runs natively (a function on a host buffer) and as a guest on both engines, from
// random data, at aligned and misaligned addresses; then the faults an inlined form must leave
// to the SIMD unit (#GP for a misaligned aligned form, #PF across a page, #NM with CR0.TS, #UD
// with CR0.EM or without CR4.OSFXSR, CR0.TS set by a handler between two inlined forms), and
// the guest XMM registers cached in host ones (translator_xmm.cc) at a fault, a handler call
// and an eviction.
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include <xbyak/xbyak.h>

#include "cpu/x86/system/control_bits.h"
#include "jit_test_program.h"

namespace lamina::cpu::x86::testing {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

// Where the body keeps things, from its data base (rsi): random input below kOutput, stores
// from kOutput, the XMM registers loaded from kXmmIn and saved at kXmmOut.
constexpr uint32_t kInputBytes = 0x400, kOutput = 0x400, kXmmIn = 0x600, kXmmOut = 0x700;

// SSE forms the translator inlines, operating on the data at rsi; rax, rcx, rdx, r9-r11 are
// scratch (r8 is the callers' loop counter).
void simd_body(CodeGenerator& c) {
  // Loads: aligned forms at 16-byte offsets, unaligned ones anywhere.
  c.movdqu(xmm0, ptr[rsi + 0x00]);
  c.movdqu(xmm1, ptr[rsi + 0x13]);
  c.movdqa(xmm2, ptr[rsi + 0x20]);
  c.movaps(xmm3, ptr[rsi + 0x30]);
  c.movups(xmm4, ptr[rsi + 0x45]);
  c.movapd(xmm5, ptr[rsi + 0x60]);
  c.movupd(xmm6, ptr[rsi + 0x71]);
  c.movq(xmm7, ptr[rsi + 0x88]);
  c.movd(xmm8, ptr[rsi + 0x93]);
  c.mov(rax, ptr[rsi + 0x98]);
  c.movq(xmm9, rax);
  c.movd(xmm10, eax);
  // Compares, logic, arithmetic, shuffles, shifts (register and memory sources).
  c.pcmpeqb(xmm0, xmm1);
  c.pcmpeqb(xmm2, ptr[rsi + 0xa0]);
  c.pcmpeqw(xmm11, xmm3);
  c.pcmpeqd(xmm12, xmm4);
  c.pcmpgtb(xmm13, xmm5);
  c.pxor(xmm3, xmm4);
  c.por(xmm5, ptr[rsi + 0xb0]);
  c.pand(xmm6, xmm7);
  c.pandn(xmm7, xmm1);
  c.pminub(xmm1, ptr[rsi + 0xc0]);
  c.pmaxub(xmm14, xmm6);
  c.pminsw(xmm15, xmm2);
  c.psubb(xmm4, xmm1);
  c.paddd(xmm8, xmm6);
  c.paddq(xmm9, ptr[rsi + 0xd0]);
  c.paddusb(xmm10, xmm5);
  c.psubsw(xmm11, xmm6);
  c.pmullw(xmm12, xmm3);
  c.pmulhuw(xmm13, xmm4);
  c.pmuludq(xmm14, xmm5);
  c.pmaddwd(xmm15, xmm6);
  c.psadbw(xmm0, xmm7);
  c.pavgb(xmm1, xmm8);
  c.punpcklbw(xmm2, xmm9);
  c.punpckhqdq(xmm3, xmm10);
  c.packuswb(xmm4, xmm11);
  c.packsswb(xmm5, xmm12);
  c.psrlw(xmm6, xmm7);
  c.pslld(xmm7, ptr[rsi + 0xe0]);
  c.pshufd(xmm10, xmm0, 0x1b);
  c.pshufd(xmm11, ptr[rsi + 0xf0], 0x4e);
  c.pshuflw(xmm12, xmm1, 0x93);
  c.pshufhw(xmm13, xmm2, 0x39);
  c.psrldq(xmm12, 3);
  c.pslldq(xmm13, 5);
  c.psrlw(xmm14, 4);
  c.psraw(xmm15, 3);
  c.psllq(xmm0, 33);
  c.psrad(xmm1, 7);
  c.xorps(xmm2, xmm3);
  c.andps(xmm4, ptr[rsi + 0x100]);
  c.orps(xmm5, xmm6);
  c.andnps(xmm7, xmm8);
  c.andpd(xmm9, xmm10);
  c.xorpd(xmm11, xmm11);
  // SSSE3 (66 0F 38, 66 0F 3A): shuffles, aligns, horizontal sums, signs, absolute values.
  c.pshufb(xmm3, xmm0);
  c.pshufb(xmm4, ptr[rsi + 0x110]);
  c.palignr(xmm5, xmm1, 7);
  c.palignr(xmm6, ptr[rsi + 0x120], 19);
  c.phaddw(xmm7, xmm2);
  c.phsubd(xmm8, ptr[rsi + 0x130]);
  c.phaddsw(xmm9, xmm3);
  c.pmaddubsw(xmm10, xmm4);
  c.psignb(xmm11, xmm5);
  c.psignd(xmm12, ptr[rsi + 0x140]);
  c.pmulhrsw(xmm13, xmm6);
  c.pabsb(xmm14, xmm7);
  c.pabsw(xmm15, ptr[rsi + 0x150]);
  c.pabsd(xmm0, xmm8);
  // SSE4.2 implicit-length string compares: the index into ECX or the mask into XMM0, and the
  // flags (AF and PF clear) kept from each.
  c.pcmpistri(xmm3, xmm4, 0x0c);  // equal ordered, bytes
  c.mov(ptr[rsi + kOutput + 0xe0], ecx);
  c.pushfq();
  c.pop(r9);
  c.and_(r9d, 0x8d5);
  c.mov(ptr[rsi + kOutput + 0xe4], r9d);
  c.pcmpistri(xmm5, ptr[rsi + 0x163], 0x4a);  // unaligned memory, ranges... signed, last index
  c.mov(ptr[rsi + kOutput + 0xe8], ecx);
  c.pushfq();
  c.pop(r9);
  c.and_(r9d, 0x8d5);
  c.mov(ptr[rsi + kOutput + 0xec], r9d);
  c.pcmpistri(xmm9, xmm10, 0x01);  // equal any, words
  c.mov(ptr[rsi + kOutput + 0xf0], ecx);
  c.pcmpistrm(xmm6, xmm7, 0x44);   // ranges, byte mask
  c.movdqu(xmm15, xmm0);
  c.pcmpistrm(xmm8, ptr[rsi + 0x171], 0x38);  // equal each, negated valid, bit mask
  c.pushfq();
  c.pop(r9);
  c.and_(r9d, 0x8d5);
  c.mov(ptr[rsi + kOutput + 0xf4], r9d);
  // Register moves, MOVUPS's store-form encoding among them (0F 11 /r: xmm0 <- xmm9).
  c.movdqa(xmm15, xmm1);
  c.movdqu(xmm14, xmm2);
  c.movaps(xmm13, xmm3);
  c.db(0x0f), c.db(0x11), c.db(0xc8 | 0);  // movups xmm0, xmm1 (store form)
  c.movq(xmm12, xmm4);                     // F3 0F 7E
  c.db(0x66), c.db(0x0f), c.db(0xd6), c.db(0xeb);  // movq xmm3, xmm5 (66 0F D6, store form)
  // To general registers and memory.
  c.pmovmskb(eax, xmm0);
  c.mov(ptr[rsi + kOutput], eax);
  c.pmovmskb(r9d, xmm14);
  c.mov(ptr[rsi + kOutput + 4], r9d);
  c.movd(ecx, xmm4);
  c.mov(ptr[rsi + kOutput + 8], ecx);
  c.movq(rdx, xmm5);
  c.mov(ptr[rsi + kOutput + 0x10], rdx);
  c.movd(ptr[rsi + kOutput + 0x18], xmm2);
  c.movq(ptr[rsi + kOutput + 0x1c], xmm3);  // 66 0F D6 m64
  c.movdqa(ptr[rsi + kOutput + 0x30], xmm0);
  c.movdqu(ptr[rsi + kOutput + 0x43], xmm1);
  c.movaps(ptr[rsi + kOutput + 0x60], xmm2);
  c.movups(ptr[rsi + kOutput + 0x75], xmm3);
  c.movntdq(ptr[rsi + kOutput + 0x90], xmm4);
  c.movntps(ptr[rsi + kOutput + 0xa0], xmm5);
  c.movapd(ptr[rsi + kOutput + 0xb0], xmm6);
  c.movupd(ptr[rsi + kOutput + 0xc1], xmm7);
}

void load_xmm(CodeGenerator& c) {
  for (int index = 0; index < 16; ++index) c.movdqu(Xbyak::Xmm(index), ptr[rsi + kXmmIn + 16 * index]);
}
void save_xmm(CodeGenerator& c) {
  for (int index = 0; index < 16; ++index) c.movdqu(ptr[rsi + kXmmOut + 16 * index], Xbyak::Xmm(index));
}

// The body three times over (so the JIT runs chained and retranslated code), between loading
// and saving the XMM registers.
void simd_program(CodeGenerator& c) {
  Xbyak::Label round;
  load_xmm(c);
  c.mov(r8d, 3);
  c.L(round);
  simd_body(c);
  c.dec(r8d);
  c.jnz(round, CodeGenerator::T_NEAR);
  save_xmm(c);
}

std::vector<uint8_t> random_data(uint64_t seed) {
  std::mt19937_64 random(seed);
  std::vector<uint8_t> data(kDataBytes);
  for (uint32_t offset = 0; offset < kOutput; ++offset) data[offset] = static_cast<uint8_t>(random());
  // Some equal bytes and bytes with the top bit set, so compares and masks see both answers.
  for (uint32_t offset = 0x13; offset < 0x30; offset += 2) data[offset] = data[offset - 0x13];
  for (uint32_t offset = 0xa0; offset < 0xb0; offset += 3) data[offset] = 0x80 | data[offset];
  // Zero bytes end the implicit-length string operands early.
  data[0x16a] = 0;
  data[0x17c] = 0;
  data[0x17d] = 0;
  for (uint32_t offset = 0; offset < 0x100; ++offset) data[kXmmIn + offset] = static_cast<uint8_t>(random());
  return data;
}

// The program run natively on `data` (rsi = its start).
std::vector<uint8_t> run_on_host(std::vector<uint8_t> data) {
  void* buffer = std::aligned_alloc(4096, kDataBytes);
  std::memcpy(buffer, data.data(), kDataBytes);
  CodeGenerator host(64 * 1024);
  host.mov(rsi, rdi);
  simd_program(host);
  host.ret();
  host.ready();
  host.getCode<void (*)(void*)>()(buffer);
  std::memcpy(data.data(), buffer, kDataBytes);
  std::free(buffer);
  return data;
}

TEST(JitSimdInlineTest, RandomDataMatchesTheInterpreterAndTheHost) {
  for (const uint64_t seed : {uint64_t{1}, uint64_t{0x5eed}, uint64_t{20261207}}) {
    const std::vector<uint8_t> data = random_data(seed);
    const std::vector<uint8_t> program = assemble([](CodeGenerator& c) {
      c.mov(rsi, kData);
      simd_program(c);
      c.hlt();
    });
    const auto setup = [&data](TestMachine& machine) { machine.write(kData, data); };
    const Outcome translated = compare_with(program, setup);
    expect_no_exception(translated);
    EXPECT_GT(translated.translations, 0u);
    const std::vector<uint8_t> host = run_on_host(data);
    EXPECT_EQ(translated.data, host) << "seed " << seed;
  }
}

// One SSE instruction (after `before`) that must raise on both engines: the exception frame's
// RIP is the instruction's, and the state and data are the interpreter's.
void expect_fault(const char* name, bool error_code, const std::function<void(CodeGenerator&)>& before,
                  const std::function<void(CodeGenerator&)>& instruction,
                  const std::function<void(TestMachine&)>& setup = {}) {
  uint64_t faulting = 0;
  const std::vector<uint8_t> program = assemble([&](CodeGenerator& c) {
    c.mov(rsi, kData);
    // A load and a store fill the TLB's read and write slots for the data page, so that the
    // inline fast path, not a TLB miss, meets the fault.
    c.mov(eax, ptr[rsi]);
    c.mov(ptr[rsi + 0x800], eax);
    before(c);
    faulting = kCode + c.getSize();
    instruction(c);
    c.mov(ebx, 0x1234);
    c.hlt();
  });
  const auto prepare = [&](TestMachine& machine) {
    machine.write(kData, random_data(7));
    if (setup) setup(machine);
  };
  const Outcome interpreted = run_on(CpuEngine::kInterpreter, program, 1 << 20, 10'000'000, prepare);
  const Outcome translated = run_on(CpuEngine::kJit, program, 1 << 20, 10'000'000, prepare);
  SCOPED_TRACE(name);
  expect_same(interpreted, translated);
  EXPECT_EQ(translated.state.rip, kHandler + 1) << "no exception";
  EXPECT_NE(translated.state.gpr[kRbx], 0x1234u);
  // A fault with an error code (#GP, #PF) pushes it below the faulting RIP.
  EXPECT_EQ(error_code ? translated.stack_rip : translated.stack_word, faulting);
  EXPECT_GT(translated.translations, 0u);
}

TEST(JitSimdInlineTest, FaultsAreTheSimdUnits) {
  const auto nothing = [](CodeGenerator&) {};
  // #GP(0): misaligned operands of the aligned forms, loads, stores and operations.
  expect_fault("movdqa load", true, nothing, [](CodeGenerator& c) { c.movdqa(xmm0, ptr[rsi + 8]); });
  expect_fault("movaps store", true, nothing, [](CodeGenerator& c) { c.movaps(ptr[rsi + 0x404], xmm5); });
  expect_fault("pxor m128", true, nothing, [](CodeGenerator& c) { c.pxor(xmm0, ptr[rsi + 1]); });
  expect_fault("pshufd m128", true, nothing, [](CodeGenerator& c) { c.pshufd(xmm0, ptr[rsi + 0x18], 1); });
  expect_fault("movntdq", true, nothing, [](CodeGenerator& c) { c.movntdq(ptr[rsi + 0x408], xmm5); });
  expect_fault("pshufb m128", true, nothing, [](CodeGenerator& c) { c.pshufb(xmm0, ptr[rsi + 4]); });
  expect_fault("palignr m128", true, nothing, [](CodeGenerator& c) { c.palignr(xmm0, ptr[rsi + 0x21], 3); });
  // #PF across a page: a mapped page (the data's second page) then an unmapped one. The store
  // writes nothing (expect_same compares the data).
  constexpr uint64_t kEdge = 0x40000000;
  const auto map_edge = [](TestMachine& machine) {
    machine.map_page(kEdge, kData + 0x1000, false, true);
  };
  expect_fault("movdqu load across", true, [](CodeGenerator& c) { c.mov(rax, kEdge + 0xff8); },
               [](CodeGenerator& c) { c.movdqu(xmm0, ptr[rax]); },
               map_edge);
  expect_fault("movdqu store across", true, [](CodeGenerator& c) { c.mov(rax, kEdge + 0xff4); },
               [](CodeGenerator& c) { c.movdqu(ptr[rax], xmm5); },
               map_edge);
  expect_fault("pcmpistri across", true, [](CodeGenerator& c) { c.mov(rax, kEdge + 0xffc); },
               [](CodeGenerator& c) { c.pcmpistri(xmm0, ptr[rax], 0); },
               map_edge);
  expect_fault("movq store unmapped", true, [](CodeGenerator& c) { c.mov(rax, kEdge + 0x1000); },
               [](CodeGenerator& c) { c.movq(ptr[rax], xmm5); },
               map_edge);
  // #NM with CR0.TS, #UD with CR0.EM or without CR4.OSFXSR: register and memory forms.
  using Setup = std::function<void(TestMachine&)>;
  const Setup task_switched = [](TestMachine& machine) { machine.state().cr0 |= cr0::kTs; };
  const Setup emulation = [](TestMachine& machine) { machine.state().cr0 |= cr0::kEm; };
  const Setup no_osfxsr = [](TestMachine& machine) { machine.state().cr4 &= ~cr4::kOsfxsr; };
  for (const Setup& setup : {task_switched, emulation, no_osfxsr}) {
    const auto run_first = [&setup](TestMachine& machine) {
      setup(machine);
      machine.cpu().state_changed();
    };
    expect_fault("pxor reg", false, [](CodeGenerator& c) { c.nop(); }, [](CodeGenerator& c) { c.pxor(xmm0, xmm1); },
                 run_first);
    expect_fault("movdqu load", false, nothing, [](CodeGenerator& c) { c.movdqu(xmm0, ptr[rsi]); }, run_first);
    expect_fault("pmovmskb", false, nothing, [](CodeGenerator& c) { c.pmovmskb(eax, xmm1); }, run_first);
  }
}

// All 16 XMM registers loaded and changed (more than the cache's 14 host registers: some are
// evicted), so that the translation has dirty cached registers at what comes next.
void dirty_every_xmm_register(CodeGenerator& c) {
  for (int index = 0; index < 16; ++index) c.movdqu(Xbyak::Xmm(index), ptr[rsi + 16 * index]);
  for (int index = 0; index < 16; ++index) c.paddb(Xbyak::Xmm(index), Xbyak::Xmm((index + 5) % 16));
}

TEST(JitSimdInlineTest, CachedXmmRegistersAreInCpuStateAtAFault) {
  // The cached registers are stored before the faulting form's handler; its destination keeps
  // the value it had (expect_same compares every XMM register).
  constexpr uint64_t kEdge = 0x40000000;
  const auto map_edge = [](TestMachine& machine) { machine.map_page(kEdge, kData + 0x1000, false, true); };
  expect_fault("movdqu load across, registers dirty", true,
               [](CodeGenerator& c) {
                 dirty_every_xmm_register(c);
                 c.mov(rax, kEdge + 0xff8);
               },
               [](CodeGenerator& c) { c.movdqu(xmm3, ptr[rax]); }, map_edge);
  expect_fault("paddb from unmapped memory, registers dirty", true,
               [](CodeGenerator& c) {
                 dirty_every_xmm_register(c);
                 c.mov(rax, kEdge + 0x1000);
               },
               [](CodeGenerator& c) { c.paddb(xmm14, ptr[rax]); }, map_edge);
  // A destination the cache does not hold yet: its new host register is not loaded, and must
  // not be stored over the guest's on the way to the handler.
  expect_fault("movdqu load into an uncached register", true,
               [](CodeGenerator& c) {
                 c.movdqu(xmm0, ptr[rsi]);
                 c.paddb(xmm0, xmm0);
                 c.mov(rax, kEdge + 0xff8);
               },
               [](CodeGenerator& c) { c.movdqu(xmm9, ptr[rax]); }, map_edge);
  expect_fault("movdqa misaligned, registers dirty", true, dirty_every_xmm_register,
               [](CodeGenerator& c) { c.movdqa(xmm0, ptr[rsi + 8]); });
}

TEST(JitSimdInlineTest, CachedXmmRegistersSurviveHandlersAndSlowPaths) {
  const std::vector<uint8_t> program = assemble([](CodeGenerator& c) {
    c.mov(rsi, kData);
    dirty_every_xmm_register(c);
    // A handler call between cached forms: the registers go to CpuState before it and come
    // back after it (host XMM registers are caller-saved).
    c.xor_(eax, eax);
    c.cpuid();
    c.paddq(xmm3, xmm4);
    c.psrldq(xmm6, 3);
    c.pmovmskb(eax, xmm5);
    c.movss(xmm7, xmm8);
    c.movsd(xmm9, ptr[rsi + 8]);
    c.movq(xmm10, xmm11);
    c.movq(rdx, xmm12);
    c.movd(xmm13, eax);
    c.pcmpistri(xmm14, xmm15, 0x0c);
    c.pcmpistrm(xmm1, xmm2, 0x40);
    // Stores to a page the TLB does not hold yet: the first one's slow path runs its handler
    // with the registers cached.
    c.lea(rdi, ptr[rsi + 0x2000]);
    for (int index = 0; index < 16; ++index) c.movdqu(ptr[rdi + 16 * index], Xbyak::Xmm(index));
    // Register-only integer code between SSE forms keeps them cached.
    c.add(rdx, rcx);
    c.paddw(xmm2, xmm0);
    c.movdqu(ptr[rdi + 0x100], xmm2);
    c.hlt();
  });
  const auto setup = [](TestMachine& machine) { machine.write(kData, random_data(11)); };
  const Outcome translated = compare_with(program, setup);
  expect_no_exception(translated);
  EXPECT_GT(translated.translations, 0u);
}

TEST(JitSimdInlineTest, CrZeroTsSetBetweenTwoInlinedFormsFaultsTheSecond) {
  // The first PXOR checks CR0/CR4 inline; MOV CR0 (a handler) sets TS; the next PXOR, in the
  // same run of code if the block goes on, must take #NM.
  expect_fault("pxor after mov cr0", false,
               [](CodeGenerator& c) {
                 c.pxor(xmm0, xmm1);
                 c.db(0x0f), c.db(0x20), c.db(0xc0);  // mov rax, cr0
                 c.or_(eax, 8);
                 c.db(0x0f), c.db(0x22), c.db(0xc0);  // mov cr0, rax
               },
               [](CodeGenerator& c) { c.pxor(xmm2, xmm3); });
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
