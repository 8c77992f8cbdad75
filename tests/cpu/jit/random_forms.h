#pragma once
// Random instruction forms for the JIT's differential tests (against the interpreter): flag
// writers of every kind (full, partial, none), their consumers (SETcc, CMOVcc, Jcc, ADC/SBB,
// PUSHF), moves of every width and memory forms on kData, on the registers in kWorking.

#include <cstdint>
#include <random>

#include <xbyak/xbyak.h>

#include "jit_test_program.h"

namespace lamina::cpu::x86::testing {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

// The registers the random programs work on (rsi: kData, r15: the fold, r10: scratch).
inline const Xbyak::Reg64 kWorking[] = {rax, rbx, rcx, rdx, rdi, r8, r9, r11};

// The flags as PUSHF sees them, folded into r15 (the ADD after it sets flags of its own).
inline void fold_pushf(CodeGenerator& c) {
  c.pushfq();
  c.pop(r10);
  c.add(r15, r10);
  c.rol(r15, 7);
}

// SETcc r8 / CMOVcc r32, r32 / Jcc over an ADD to r15, condition `code`.
inline void setcc(CodeGenerator& c, int code, const Xbyak::Reg8& to) {
  c.db(0x0f);
  c.db(static_cast<uint8_t>(0x90 | (code & 15)));
  c.db(static_cast<uint8_t>(0xc0 | to.getIdx()));
}
inline void cmovcc(CodeGenerator& c, int code, const Xbyak::Reg32& to, const Xbyak::Reg32& from) {
  c.db(0x0f);
  c.db(static_cast<uint8_t>(0x40 | (code & 15)));
  c.db(static_cast<uint8_t>(0xc0 | (to.getIdx() << 3) | from.getIdx()));
}
inline void jump_over_add(CodeGenerator& c, int code) {
  c.db(static_cast<uint8_t>(0x70 | (code & 15)));
  c.db(4);
  c.add(r15, code + 1);
}

// One instruction of the random programs: `form` picks the kind, `random` the operands.
inline void random_form(CodeGenerator& c, int form, std::mt19937_64& random) {
  const auto pick = [&] { return kWorking[random() % std::size(kWorking)]; };
  const auto count = [&] { return static_cast<uint8_t>(random() % 4 == 0 ? random() % 3 : random() % 70); };
  const Xbyak::Reg64 a = pick(), b = pick();
  const int code = static_cast<int>(random() % 16);
  switch (form) {
    case 0: c.xor_(a.cvt32(), b.cvt32()); break;
    case 1: c.and_(a, b); break;
    case 2: c.or_(a.cvt8(), 0x41); break;
    case 3: c.add(a.cvt32(), b.cvt32()); break;
    case 4: c.sub(a, b); break;
    case 5: c.cmp(a.cvt32(), static_cast<uint32_t>(random() % 3 == 0 ? 0 : random())); break;
    case 6: c.test(a.cvt16(), b.cvt16()); break;
    case 7: c.rol(a.cvt32(), count()); break;
    case 8: c.ror(a, count()); break;
    case 9: random() % 2 ? c.rol(a.cvt8(), 1) : c.ror(a.cvt16(), count()); break;
    case 10: random() % 2 ? c.rol(a, cl) : c.ror(a.cvt32(), cl); break;
    case 11: c.inc(a.cvt32()); break;
    case 12: c.dec(a); break;
    case 13: c.inc(a.cvt8()); break;
    case 14: c.adc(a.cvt32(), b.cvt32()); break;
    case 15: c.sbb(a, static_cast<uint32_t>(random() % 5)); break;
    // rax-rdi only (no REX: SETcc of rdi's number writes BH).
    case 16: setcc(c, code, Xbyak::Reg8(static_cast<int>(random() % 8 == 4 ? 0 : random() % 8))); break;
    case 17: cmovcc(c, code, eax, Xbyak::Reg32(a.getIdx() < 8 ? a.getIdx() : 3)); break;
    case 18: fold_pushf(c); break;
    case 19: c.mov(a.cvt32(), b.cvt32()); break;
    case 20: c.mov(a, random()); break;
    case 21: c.not_(a.cvt32()); break;
    case 22: c.lea(a, ptr[a + b * 2 + 3]); break;
    case 23: c.shl(a.cvt32(), static_cast<uint8_t>(1 + random() % 31)); break;
    case 24: c.shr(a, cl); break;
    case 25: c.neg(a.cvt32()); break;
    case 26: c.imul(a, b); break;
    case 27: c.bt(a, static_cast<uint8_t>(random() % 64)); break;
    case 28: c.add(dword[rsi + 8 * (random() % 8)], a.cvt32()); break;
    case 29: c.mov(a.cvt32(), dword[rsi + 4 * (random() % 16)]); break;
    case 30: jump_over_add(c, code); break;
    case 31: c.jmp("@f"); c.L("@@"); break;  // a block end with the flags as they are
    case 32: c.mov(a.cvt8(), b.cvt8()); break;
    case 33: random() % 2 ? c.mov(a.cvt16(), static_cast<uint32_t>(random() & 0xffff))
                          : c.mov(a.cvt8(), static_cast<uint32_t>(random() & 0xff)); break;
    case 34: random() % 2 ? c.mov(ah, bl) : c.mov(a.cvt16(), b.cvt16()); break;
    case 35: c.xor_(a.cvt32(), a.cvt32()); break;
    default: random() % 2 ? c.inc(a.cvt16()) : c.dec(a.cvt32()); break;
  }
}

}  // namespace lamina::cpu::x86::testing
