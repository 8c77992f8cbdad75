#include "cpu/x86/decoder_tables.h"

namespace lamina::cpu::x86 {
namespace {

using namespace attribute;

constexpr void set_range(OpcodeTable& table, int first, int last, uint16_t bits) {
  for (int opcode = first; opcode <= last; ++opcode) table[opcode] = bits;
}

constexpr OpcodeTable make_one_byte() {
  OpcodeTable t{};
  // ALU rows 00-3F: Eb,Gb / Ev,Gv / Gb,Eb / Gv,Ev / AL,Ib / eAX,Iz.
  for (int row = 0; row < 8; ++row) {
    const int base = row * 8;
    const uint16_t lock = row == 7 ? 0 : kLockable;  // CMP cannot be locked
    t[base + 0] = kModrm | lock;
    t[base + 1] = kModrm | lock;
    t[base + 2] = kModrm;
    t[base + 3] = kModrm;
    t[base + 4] = kImm8;
    t[base + 5] = kImmZ;
  }
  for (int opcode : {0x06, 0x07, 0x0e, 0x16, 0x17, 0x1e, 0x1f}) t[opcode] = kInvalid64;
  t[0x0f] = kInvalid;  // escape, handled by the decoder
  for (int opcode : {0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x66, 0x67, 0xf0, 0xf2, 0xf3})
    t[opcode] = kPrefix;
  for (int opcode : {0x27, 0x2f, 0x37, 0x3f}) t[opcode] = kInvalid64;
  set_range(t, 0x40, 0x4f, 0);  // INC/DEC r (REX in 64-bit mode, handled by the decoder)
  set_range(t, 0x50, 0x5f, kDefault64);
  t[0x60] = kInvalid64;
  t[0x61] = kInvalid64;
  t[0x62] = kModrm | kInvalid64 | kGroup;  // BOUND (memory only)
  t[0x63] = kModrm;                        // ARPL / MOVSXD
  t[0x68] = kImmZ | kDefault64;
  t[0x69] = kModrm | kImmZ;
  t[0x6a] = kImm8 | kDefault64;
  t[0x6b] = kModrm | kImm8;
  set_range(t, 0x6c, 0x6f, 0);
  set_range(t, 0x70, 0x7f, kImm8 | kForce64);
  t[0x80] = kModrm | kImm8 | kLockable | kGroup;
  t[0x81] = kModrm | kImmZ | kLockable | kGroup;
  t[0x82] = kModrm | kImm8 | kLockable | kGroup | kInvalid64;
  t[0x83] = kModrm | kImm8 | kLockable | kGroup;
  set_range(t, 0x84, 0x8b, kModrm);
  t[0x86] = kModrm | kLockable;
  t[0x87] = kModrm | kLockable;
  t[0x8c] = kModrm | kGroup;
  t[0x8d] = kModrm | kGroup;  // LEA: memory only
  t[0x8e] = kModrm | kGroup;
  t[0x8f] = kModrm | kDefault64 | kGroup;
  set_range(t, 0x90, 0x99, 0);
  t[0x9a] = kFarPointer | kInvalid64;
  t[0x9b] = kSimd;  // FWAIT
  t[0x9c] = kDefault64;
  t[0x9d] = kDefault64;
  t[0x9e] = 0;
  t[0x9f] = 0;
  set_range(t, 0xa0, 0xa3, kMoffs);
  set_range(t, 0xa4, 0xa7, 0);
  t[0xa8] = kImm8;
  t[0xa9] = kImmZ;
  set_range(t, 0xaa, 0xaf, 0);
  set_range(t, 0xb0, 0xb7, kImm8);
  set_range(t, 0xb8, 0xbf, kImmV);
  t[0xc0] = kModrm | kImm8 | kGroup;
  t[0xc1] = kModrm | kImm8 | kGroup;
  t[0xc2] = kImm16 | kForce64;
  t[0xc3] = kForce64;
  t[0xc4] = kModrm | kInvalid64 | kGroup;  // LES (VEX is not supported)
  t[0xc5] = kModrm | kInvalid64 | kGroup;  // LDS
  t[0xc6] = kModrm | kImm8 | kGroup;
  t[0xc7] = kModrm | kImmZ | kGroup;
  t[0xc8] = kImm16 | kImm8 | kDefault64;
  t[0xc9] = kDefault64;
  t[0xca] = kImm16;
  t[0xcb] = 0;
  t[0xcc] = 0;
  t[0xcd] = kImm8;
  t[0xce] = kInvalid64;
  t[0xcf] = 0;
  set_range(t, 0xd0, 0xd3, kModrm | kGroup);
  t[0xd4] = kImm8 | kInvalid64;
  t[0xd5] = kImm8 | kInvalid64;
  t[0xd6] = kInvalid64;  // SALC (undocumented, but every x86 decodes it)
  t[0xd7] = 0;
  set_range(t, 0xd8, 0xdf, kModrm | kSimd);
  set_range(t, 0xe0, 0xe3, kImm8 | kForce64);
  set_range(t, 0xe4, 0xe7, kImm8);
  t[0xe8] = kImmZ | kForce64;
  t[0xe9] = kImmZ | kForce64;
  t[0xea] = kFarPointer | kInvalid64;
  t[0xeb] = kImm8 | kForce64;
  set_range(t, 0xec, 0xef, 0);
  t[0xf1] = 0;
  t[0xf4] = 0;
  t[0xf5] = 0;
  t[0xf6] = kModrm | kLockable | kGroup;
  t[0xf7] = kModrm | kLockable | kGroup;
  set_range(t, 0xf8, 0xfd, 0);
  t[0xfe] = kModrm | kLockable | kGroup;
  t[0xff] = kModrm | kLockable | kGroup;
  return t;
}

constexpr OpcodeTable make_two_byte() {
  OpcodeTable t{};
  set_range(t, 0x00, 0xff, kInvalid);
  t[0x00] = kModrm | kGroup;
  t[0x01] = kModrm | kGroup;
  t[0x02] = kModrm;
  t[0x03] = kModrm;
  t[0x05] = 0;  // SYSCALL
  t[0x06] = 0;  // CLTS
  t[0x07] = 0;  // SYSRET
  t[0x08] = 0;  // INVD
  t[0x09] = 0;  // WBINVD
  t[0x0b] = 0;  // UD2
  t[0x0d] = kModrm;  // PREFETCH hints; NOP with a register operand
  set_range(t, 0x10, 0x17, kModrm | kSimd);
  t[0x18] = kModrm;
  set_range(t, 0x19, 0x1f, kModrm);  // reserved hint NOPs
  set_range(t, 0x20, 0x23, kModrm | kRegisterOnly | kForce64 | kGroup);
  set_range(t, 0x28, 0x2f, kModrm | kSimd);
  set_range(t, 0x30, 0x35, 0);  // WRMSR RDTSC RDMSR RDPMC SYSENTER SYSEXIT
  set_range(t, 0x40, 0x4f, kModrm);
  set_range(t, 0x50, 0x7f, kModrm | kSimd);
  set_range(t, 0x70, 0x73, kModrm | kImm8 | kSimd);
  t[0x77] = kSimd;  // EMMS
  t[0x78] = kInvalid;
  t[0x79] = kInvalid;
  t[0x7a] = kInvalid;
  t[0x7b] = kInvalid;
  set_range(t, 0x80, 0x8f, kImmZ | kForce64);
  set_range(t, 0x90, 0x9f, kModrm);
  t[0xa0] = kDefault64;
  t[0xa1] = kDefault64;
  t[0xa2] = 0;
  t[0xa3] = kModrm;
  t[0xa4] = kModrm | kImm8;
  t[0xa5] = kModrm;
  t[0xa8] = kDefault64;
  t[0xa9] = kDefault64;
  t[0xaa] = 0;  // RSM (#UD outside SMM)
  t[0xab] = kModrm | kLockable;
  t[0xac] = kModrm | kImm8;
  t[0xad] = kModrm;
  t[0xae] = kModrm | kGroup | kSimd;
  t[0xaf] = kModrm;
  t[0xb0] = kModrm | kLockable;
  t[0xb1] = kModrm | kLockable;
  t[0xb2] = kModrm | kGroup;  // LSS
  t[0xb3] = kModrm | kLockable;
  t[0xb4] = kModrm | kGroup;  // LFS
  t[0xb5] = kModrm | kGroup;  // LGS
  t[0xb6] = kModrm;
  t[0xb7] = kModrm;
  t[0xb8] = kModrm | kGroup;  // POPCNT (F3 only)
  t[0xb9] = kModrm;           // UD1
  t[0xba] = kModrm | kImm8 | kLockable | kGroup;
  t[0xbb] = kModrm | kLockable;
  set_range(t, 0xbc, 0xbf, kModrm);
  t[0xc0] = kModrm | kLockable;
  t[0xc1] = kModrm | kLockable;
  t[0xc2] = kModrm | kImm8 | kSimd;
  t[0xc3] = kModrm | kGroup;  // MOVNTI: memory only
  set_range(t, 0xc4, 0xc6, kModrm | kImm8 | kSimd);
  t[0xc7] = kModrm | kLockable | kGroup;
  set_range(t, 0xc8, 0xcf, 0);  // BSWAP
  set_range(t, 0xd0, 0xff, kModrm | kSimd);
  t[0xff] = kModrm;  // UD0
  return t;
}

constexpr OpcodeTable make_three_byte(uint16_t bits) {
  OpcodeTable t{};
  set_range(t, 0x00, 0xff, bits);
  return t;
}

constexpr OpcodeTable kOneByte = make_one_byte();
constexpr OpcodeTable kTwoByte = make_two_byte();
// 0F38: every opcode has ModRM and no immediate; 0F3A: ModRM and imm8 (SDM vol. 2, A.3).
// MOVBE/CRC32 (0F38 F0/F1) and ADCX/ADOX are not advertised, so the whole map goes to the
// SIMD unit, which answers #UD for what it does not implement.
constexpr OpcodeTable kThreeByte38 = make_three_byte(kModrm | kSimd);
constexpr OpcodeTable kThreeByte3A = make_three_byte(kModrm | kImm8 | kSimd);

}  // namespace

const OpcodeTable& one_byte_table() { return kOneByte; }
const OpcodeTable& two_byte_table() { return kTwoByte; }
const OpcodeTable& three_byte_38_table() { return kThreeByte38; }
const OpcodeTable& three_byte_3a_table() { return kThreeByte3A; }

}  // namespace lamina::cpu::x86
