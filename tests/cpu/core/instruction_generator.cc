#include "instruction_generator.h"

#include <iterator>

namespace lamina::cpu::x86::testing {
namespace {

constexpr uint64_t kCf = 1, kPf = 4, kAf = 0x10, kZf = 0x40, kSf = 0x80, kOf = 0x800;
constexpr uint64_t kAll = kCf | kPf | kAf | kZf | kSf | kOf;

// Flags read by condition code `cc` (SDM vol. 1, appendix B).
uint64_t condition_reads(unsigned cc) {
  static constexpr uint64_t kReads[8] = {kOf, kCf, kZf, kCf | kZf, kSf, kPf, kSf | kOf, kZf | kSf | kOf};
  return kReads[(cc >> 1) & 7];
}

struct Operand {
  bool memory = false;
  uint8_t reg = 0;           // register number when !memory
  uint8_t displacement = 0;  // [r15 + disp8] when memory
};

class Builder {
 public:
  Builder(std::mt19937_64& random, uint64_t data_base, uint64_t data_size)
      : random_(random), data_base_(data_base), data_size_(data_size) {}

  unsigned pick(unsigned count) { return static_cast<unsigned>(random_() % count); }
  bool chance(unsigned percent) { return pick(100) < percent; }

  // A general register that is not RSP or R15.
  uint8_t any_register() {
    static constexpr uint8_t kAllowed[] = {0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
    return kAllowed[pick(sizeof(kAllowed))];
  }
  Operand rm_operand(bool allow_memory = true, unsigned alignment = 1) {
    Operand operand;
    if (allow_memory && chance(40)) {
      operand.memory = true;
      operand.displacement = static_cast<uint8_t>(pick(112 / alignment) * alignment);
    } else {
      operand.reg = any_register();
    }
    return operand;
  }
  uint8_t size() {
    static constexpr uint8_t kSizes[] = {1, 2, 4, 8};
    return kSizes[pick(4)];
  }

  // Emits [66] [REX] opcode... ModRM [disp8] for operand size `size`.
  void instruction(uint8_t size, std::initializer_list<uint8_t> opcode, uint8_t reg, const Operand& rm,
                   bool force_no_w = false) {
    if (size == 2) code_.push_back(0x66);
    uint8_t rex = 0x40;
    if (size == 8 && !force_no_w) rex |= 8;
    if (reg & 8) rex |= 4;
    if (rm.memory || (rm.reg & 8)) rex |= 1;
    // Without REX byte registers 4-7 are AH..BH, with it BPL/SIL/DIL (4 is never chosen).
    if (rex != 0x40) code_.push_back(rex);
    for (uint8_t byte : opcode) code_.push_back(byte);
    if (rm.memory) {
      code_.push_back(static_cast<uint8_t>(0x40 | ((reg & 7) << 3) | 7));  // [r15 + disp8]
      code_.push_back(rm.displacement);
    } else {
      code_.push_back(static_cast<uint8_t>(0xc0 | ((reg & 7) << 3) | (rm.reg & 7)));
    }
  }
  void immediate(uint8_t bytes, uint64_t value) {
    for (uint8_t i = 0; i < bytes; ++i) code_.push_back(static_cast<uint8_t>(value >> (8 * i)));
  }
  uint64_t random_value() {
    switch (pick(6)) {
      case 0: return pick(4);
      case 1: return ~uint64_t{0} - pick(3);
      case 2: return uint64_t{1} << pick(64);
      case 3: return (uint64_t{1} << pick(64)) - 1;
      default: return random_();
    }
  }
  void raw(std::initializer_list<uint8_t> bytes) { code_.insert(code_.end(), bytes); }
  // mov r32, imm32 (zero-extends).
  void set_register(uint8_t reg, uint32_t value) {
    if (reg & 8) code_.push_back(0x41);
    code_.push_back(static_cast<uint8_t>(0xb8 | (reg & 7)));
    immediate(4, value);
  }
  // Makes sure `reads` are defined before a flag reader, with CMP (which defines all six).
  void need_flags(uint64_t reads) {
    if ((reads & defined) == reads) return;
    raw({0x48, 0x39, static_cast<uint8_t>(0xc0 | (any_register() & 7) << 3 | (any_register() & 7))});
    defined = kAll;
  }
  void effect(uint64_t defines, uint64_t undefines) { defined = (defined | defines) & ~undefines; }
  // A register-form ADD, SUB, ADC, SBB, NEG or CMP of 64 bits right before a flag reader (so
  // a translator reads the flags of its own inlined producer); ADC/SBB read a CF that
  // need_flags(kAll) has defined. All six flags are defined after each.
  void flag_producer() {
    need_flags(kAll);
    static constexpr uint8_t kOpcodes[] = {0x01, 0x29, 0x11, 0x19, 0x39};
    const unsigned pick_one = pick(6);
    static constexpr uint8_t kWritable[] = {0, 1, 2, 3, 5, 6, 7};  // not RSP
    const auto modrm = [&](uint8_t reg) {
      return static_cast<uint8_t>(0xc0 | (reg & 7) << 3 | kWritable[pick(std::size(kWritable))]);
    };
    if (pick_one == 5) {
      raw({0x48, 0xf7, modrm(3)});  // NEG
    } else {
      raw({0x48, kOpcodes[pick_one], modrm(any_register())});
    }
    defined = kAll;
  }

  std::vector<uint8_t>& code() { return code_; }
  uint64_t defined = 0;
  uint64_t data_base() const { return data_base_; }
  uint64_t data_size() const { return data_size_; }

 private:
  std::mt19937_64& random_;
  std::vector<uint8_t> code_;
  uint64_t data_base_, data_size_;
};

uint8_t width_opcode(uint8_t size, uint8_t byte_form) { return size == 1 ? byte_form : byte_form + 1; }

void alu(Builder& b) {
  const uint8_t size = b.size();
  switch (b.pick(5)) {
    case 0: case 1: {
      const unsigned operation = b.pick(8);
      if (operation == 2 || operation == 3) b.need_flags(kCf);
      const uint8_t base = static_cast<uint8_t>(operation * 8);
      const unsigned form = b.pick(4);
      if (form == 0) b.instruction(size, {width_opcode(size, base)}, b.any_register(), b.rm_operand());
      if (form == 1) b.instruction(size, {width_opcode(size, base + 2)}, b.any_register(), b.rm_operand(false));
      if (form == 2) {
        if (size == 2) b.raw({0x66});
        if (size == 8) b.raw({0x48});
        b.raw({width_opcode(size, base + 4)});
        b.immediate(size == 1 ? 1 : size == 2 ? 2 : 4, b.random_value());
      }
      if (form == 3) {
        const bool short_immediate = size != 1 && b.chance(50);
        b.instruction(size, {static_cast<uint8_t>(size == 1 ? 0x80 : short_immediate ? 0x83 : 0x81)},
                      static_cast<uint8_t>(operation), b.rm_operand());
        b.immediate(size == 1 || short_immediate ? 1 : size == 2 ? 2 : 4, b.random_value());
      }
      const bool logic = operation == 1 || operation == 4 || operation == 6;
      b.effect(logic ? kAll & ~kAf : kAll, logic ? kAf : 0);
      return;
    }
    case 2:  // TEST
      b.instruction(size, {width_opcode(size, 0x84)}, b.any_register(), b.rm_operand());
      b.effect(kAll & ~kAf, kAf);
      return;
    case 3: {  // NOT / NEG
      const bool negate = b.chance(50);
      b.instruction(size, {width_opcode(size, 0xf6)}, negate ? 3 : 2, b.rm_operand());
      if (negate) b.effect(kAll, 0);
      return;
    }
    default:  // INC / DEC
      b.instruction(size, {width_opcode(size, 0xfe)}, static_cast<uint8_t>(b.pick(2)), b.rm_operand());
      b.effect(kAll & ~kCf, 0);
      return;
  }
}

void shift(Builder& b) {
  const uint8_t size = b.size();
  const unsigned bits = size * 8;
  if (size != 1 && b.chance(25)) {
    // SHLD/SHRD with an immediate or CL count kept within the operand size.
    const bool left = b.chance(50);
    const unsigned count = b.pick(size == 2 ? 17 : bits);
    const bool by_cl = b.chance(50);
    if (by_cl) b.raw({0xb1, static_cast<uint8_t>(count)});
    b.instruction(size, {0x0f, static_cast<uint8_t>((left ? 0xa4 : 0xac) + (by_cl ? 1 : 0))}, b.any_register(),
                  b.rm_operand());
    if (!by_cl) b.immediate(1, count);
    if (count != 0) b.effect(kCf | kSf | kZf | kPf | (count == 1 ? kOf : 0), kAf | (count == 1 ? 0 : kOf));
    return;
  }
  const unsigned operation = b.pick(8);
  const unsigned form = b.pick(3);
  unsigned count = 1;
  if (form != 0) count = b.chance(30) ? b.pick(256) : b.pick(bits + 2);
  if (form == 2) b.raw({0xb1, static_cast<uint8_t>(count)});  // mov cl, count
  if (operation == 2 || operation == 3) b.need_flags(kCf);
  const uint8_t opcode = static_cast<uint8_t>(form == 0 ? 0xd0 : form == 1 ? 0xc0 : 0xd2);
  b.instruction(size, {width_opcode(size, opcode)}, static_cast<uint8_t>(operation), b.rm_operand());
  if (form == 1) b.immediate(1, count);
  const unsigned masked = count & (size == 8 ? 63 : 31);
  if (masked == 0) return;
  const uint64_t overflow = masked == 1 ? kOf : 0;
  if (operation < 4) {  // rotates: CF, and OF only for a count of 1
    b.effect(kCf | overflow, masked == 1 ? 0 : kOf);
  } else {
    const uint64_t carry = masked <= bits ? kCf : 0;
    b.effect(carry | kSf | kZf | kPf | overflow, kAf | (overflow ? 0 : kOf) | (carry ? 0 : kCf));
  }
}

void multiply_divide(Builder& b) {
  const uint8_t size = b.size();
  switch (b.pick(4)) {
    case 0: {  // MUL/IMUL one operand
      b.instruction(size, {width_opcode(size, 0xf6)}, static_cast<uint8_t>(4 + b.pick(2)), b.rm_operand());
      b.effect(kCf | kOf, kSf | kZf | kAf | kPf);
      return;
    }
    case 1: {  // DIV/IDIV: often with a small high half so that it does not always fault
      if (b.chance(60)) b.raw({0x31, 0xd2});  // xor edx, edx
      if (b.chance(30)) b.raw({0x48, 0x99});  // cqo
      b.effect(kAll, 0);
      b.instruction(size, {width_opcode(size, 0xf6)}, static_cast<uint8_t>(6 + b.pick(2)), b.rm_operand());
      b.effect(0, kAll);
      return;
    }
    case 2: {
      const uint8_t wide = size == 1 ? 4 : size;
      b.instruction(wide, {0x0f, 0xaf}, b.any_register(), b.rm_operand());
      b.effect(kCf | kOf, kSf | kZf | kAf | kPf);
      return;
    }
    default: {
      const uint8_t wide = size == 1 ? 2 : size;
      const bool short_immediate = b.chance(50);
      b.instruction(wide, {static_cast<uint8_t>(short_immediate ? 0x6b : 0x69)}, b.any_register(), b.rm_operand());
      b.immediate(short_immediate ? 1 : wide == 2 ? 2 : 4, b.random_value());
      b.effect(kCf | kOf, kSf | kZf | kAf | kPf);
      return;
    }
  }
}

void bit(Builder& b) {
  const uint8_t size = static_cast<uint8_t>(2 << b.pick(3));  // 2, 4, 8
  switch (b.pick(5)) {
    case 0: {  // BT/BTS/BTR/BTC r/m, r with a bounded (possibly negative) bit offset
      const uint8_t offset_register = b.any_register();
      const Operand rm = b.rm_operand();
      if (rm.memory) b.set_register(offset_register, static_cast<uint32_t>(b.pick(400)));
      static constexpr uint8_t kOpcodes[] = {0xa3, 0xab, 0xb3, 0xbb};
      if (!rm.memory || rm.reg != offset_register)
        b.instruction(size, {0x0f, kOpcodes[b.pick(4)]}, offset_register, rm);
      b.effect(kCf, kOf | kSf | kAf | kPf);
      return;
    }
    case 1:
      b.instruction(size, {0x0f, 0xba}, static_cast<uint8_t>(4 + b.pick(4)), b.rm_operand());
      b.immediate(1, b.pick(256));
      b.effect(kCf, kOf | kSf | kAf | kPf);
      return;
    case 2:
      b.instruction(size, {0x0f, static_cast<uint8_t>(0xbc + b.pick(2))}, b.any_register(), b.rm_operand());
      b.effect(kZf, kCf | kOf | kSf | kAf | kPf);
      return;
    case 3:
      b.raw({0xf3});
      b.instruction(size, {0x0f, 0xb8}, b.any_register(), b.rm_operand());
      b.effect(kAll, 0);
      return;
    default: {
      const uint8_t reg = b.any_register();
      if (b.chance(50)) b.raw({static_cast<uint8_t>(0x48 | ((reg & 8) ? 1 : 0))});
      else if (reg & 8) b.raw({0x41});
      b.raw({0x0f, static_cast<uint8_t>(0xc8 | (reg & 7))});
      return;
    }
  }
}

void move(Builder& b) {
  const uint8_t size = b.size();
  switch (b.pick(12)) {
    case 0: {
      const unsigned cc = b.pick(16);
      b.need_flags(condition_reads(cc));
      if (b.chance(40)) b.flag_producer();
      b.instruction(size == 1 ? 4 : size, {0x0f, static_cast<uint8_t>(0x40 | cc)}, b.any_register(), b.rm_operand());
      return;
    }
    case 1: {
      const unsigned cc = b.pick(16);
      b.need_flags(condition_reads(cc));
      if (b.chance(40)) b.flag_producer();
      b.instruction(1, {0x0f, static_cast<uint8_t>(0x90 | cc)}, 0, b.rm_operand());
      return;
    }
    case 2: {  // MOVZX/MOVSX
      const uint8_t wide = size == 1 ? 4 : size;
      static constexpr uint8_t kOpcodes[] = {0xb6, 0xb7, 0xbe, 0xbf};
      const uint8_t opcode = kOpcodes[b.pick(4)];
      b.instruction(wide, {0x0f, opcode}, b.any_register(), b.rm_operand());
      return;
    }
    case 3: {  // MOVSXD (32-bit: a MOV), sometimes after a hint NOP (0F 1F /0, any operand)
      if (b.chance(25)) b.instruction(b.chance(50) ? 2 : 4, {0x0f, 0x1f}, 0, b.rm_operand());
      b.instruction(size == 8 ? 8 : 4, {0x63}, b.any_register(), b.rm_operand());
      return;
    }
    case 4: b.instruction(size, {width_opcode(size, 0x86)}, b.any_register(), b.rm_operand()); return;
    case 5: b.instruction(size, {width_opcode(size, 0x88 + 2 * b.pick(2))}, b.any_register(), b.rm_operand(b.chance(50))); return;
    case 6: {
      const uint8_t wide = size == 1 ? 2 : size;
      Operand rm = b.rm_operand();
      rm.memory = true;
      b.instruction(wide, {0x8d}, b.any_register(), rm);  // LEA
      return;
    }
    case 7: {  // CBW/CWDE/CDQE, CWD/CDQ/CQO, CLC/STC/CMC, LAHF/SAHF
      switch (b.pick(5)) {
        case 0: if (size == 2) b.raw({0x66}); if (size == 8) b.raw({0x48}); b.raw({0x98}); return;
        case 1: if (size == 2) b.raw({0x66}); if (size == 8) b.raw({0x48}); b.raw({0x99}); return;
        case 2: {
          static constexpr uint8_t kCarryOpcodes[] = {0xf5, 0xf8, 0xf9};  // CMC, CLC, STC
          const uint8_t opcode = kCarryOpcodes[b.pick(3)];
          if (opcode == 0xf5) b.need_flags(kCf);
          b.raw({opcode});
          b.effect(kCf, 0);
          return;
        }
        case 3: b.need_flags(kSf | kZf | kAf | kPf | kCf); b.raw({0x9f}); return;
        default: b.raw({0x9e}); b.effect(kSf | kZf | kAf | kPf | kCf, 0); return;
      }
    }
    case 8:  // CMPXCHG
      b.instruction(size, {0x0f, width_opcode(size, 0xb0)}, b.any_register(), b.rm_operand());
      b.effect(kAll, 0);
      return;
    case 9:  // XADD
      b.instruction(size, {0x0f, width_opcode(size, 0xc0)}, b.any_register(), b.rm_operand());
      b.effect(kAll, 0);
      return;
    case 10: {  // CMPXCHG8B/16B on an aligned operand, sometimes matching
      Operand rm = b.rm_operand(true, 16);
      rm.memory = true;
      const bool wide = b.chance(50);
      b.instruction(wide ? 8 : 4, {0x0f, 0xc7}, 1, rm);
      b.effect(kZf, 0);
      return;
    }
    default: {  // MOV r/m, imm and MOV r, imm
      if (b.chance(50)) {
        b.instruction(size, {width_opcode(size, 0xc6)}, 0, b.rm_operand());
        b.immediate(size == 1 ? 1 : size == 2 ? 2 : 4, b.random_value());
      } else {
        const uint8_t reg = b.any_register();
        if (size == 2) b.raw({0x66});
        const uint8_t rex = static_cast<uint8_t>(0x40 | (size == 8 ? 8 : 0) | ((reg & 8) ? 1 : 0));
        if (rex != 0x40 || (size == 1 && reg >= 4 && reg < 8)) b.raw({rex});
        b.raw({static_cast<uint8_t>((size == 1 ? 0xb0 : 0xb8) | (reg & 7))});
        b.immediate(size, b.random_value());
      }
      return;
    }
  }
}

void string(Builder& b) {
  const uint8_t size = b.size();
  const bool backwards = b.chance(30);
  const uint64_t area = b.data_base() + (backwards ? b.data_size() - 1024 : b.data_size() / 2 - 512);
  b.set_register(6, static_cast<uint32_t>(area + b.pick(512)));   // ESI
  b.set_register(7, static_cast<uint32_t>(area + b.pick(512)));   // EDI
  // Mostly short runs; some long ones that cross pages (the area has 8 KiB from its base).
  const unsigned count = b.chance(20) ? b.pick(900) : b.pick(12);
  b.set_register(1, count);                                         // ECX
  b.raw({static_cast<uint8_t>(backwards ? 0xfd : 0xfc)});
  static constexpr uint8_t kOpcodes[] = {0xa4, 0xa6, 0xaa, 0xac, 0xae};
  const uint8_t opcode = kOpcodes[b.pick(5)];
  const unsigned rep = b.pick(3);  // none, F3, F2
  if (b.chance(30)) b.raw({0x67});
  if (rep == 1) b.raw({0xf3});
  if (rep == 2) b.raw({0xf2});
  if (size == 2) b.raw({0x66});
  if (size == 8) b.raw({0x48});
  b.raw({width_opcode(size, opcode)});
  const bool compares = opcode == 0xa6 || opcode == 0xae;
  if (compares && (rep == 0 || count > 0)) b.effect(kAll, 0);
  b.raw({0xfc});
}

void stack(Builder& b) {
  switch (b.pick(8)) {
    case 7: {  // JMP/CALL r/m64 to the next instruction (its address from a RIP-relative LEA)
      static constexpr uint8_t kTargets[] = {0, 1, 2, 3, 5, 6, 7};
      const uint8_t reg = kTargets[b.pick(std::size(kTargets))];
      const bool call = b.chance(50);
      const bool memory = b.chance(50);
      const auto displacement = static_cast<uint8_t>(b.pick(14) * 8);
      const auto lea = [&](uint8_t distance) {
        b.raw({0x48, 0x8d, static_cast<uint8_t>(0x05 | reg << 3), distance, 0, 0, 0});
      };
      if (memory) {
        lea(8);
        b.raw({0x49, 0x89, static_cast<uint8_t>(0x47 | reg << 3), displacement});  // mov [r15 + d], reg
        b.raw({0x41, 0xff, static_cast<uint8_t>(call ? 0x57 : 0x67), displacement});
      } else {
        lea(2);
        b.raw({0xff, static_cast<uint8_t>((call ? 0xd0 : 0xe0) | reg)});
      }
      if (call) b.raw({static_cast<uint8_t>(0x58 | reg)});  // POP the return address
      return;
    }
    case 0: {
      const uint8_t reg = b.any_register();
      if (reg & 8) b.raw({0x41});
      b.raw({static_cast<uint8_t>(0x50 | (reg & 7))});
      return;
    }
    case 1: {
      const uint8_t reg = b.any_register();
      if (b.chance(50)) b.raw({0x66});
      if (reg & 8) b.raw({0x41});
      b.raw({static_cast<uint8_t>(0x50 | (reg & 7))});
      if (reg & 8) b.raw({0x41});
      b.raw({static_cast<uint8_t>(0x58 | (reg & 7))});
      return;
    }
    case 2:
      if (b.chance(50)) { b.raw({0x6a}); b.immediate(1, b.random_value()); }
      else { b.raw({0x68}); b.immediate(4, b.random_value()); }
      return;
    case 3: {  // PUSH m / POP m
      Operand rm = b.rm_operand(true, 8);
      rm.memory = true;
      b.instruction(4, {0xff}, 6, rm);
      b.instruction(4, {0x8f}, 0, rm);
      return;
    }
    case 4:
      b.need_flags(kAll);
      b.raw({0x9c});  // PUSHF
      return;
    case 5:  // CALL to the next instruction, then POP
      b.raw({0xe8, 0, 0, 0, 0});
      b.raw({0x58});
      return;
    default:  // ENTER n, 0 / LEAVE
      b.raw({0xc8});
      b.immediate(2, b.pick(64));
      b.raw({0x00});
      b.raw({0xc9});
      return;
  }
}


// A selector worth loading: any GDT index up to past the host's 16-entry GDT, sometimes in the
// (absent) LDT, with any RPL, or null.
uint16_t any_selector(Builder& b) {
  if (b.chance(10)) return static_cast<uint16_t>(b.pick(4));
  const uint16_t table = b.chance(10) ? 4 : 0;
  return static_cast<uint16_t>((b.pick(20) << 3) | table | b.pick(4));
}

// User-mode system behaviour (CPL 3 under a 64-bit kernel): what POPF may change, segment
// loads and their faults, LAR/LSL/VERR/VERW, instructions that #GP or #UD at CPL 3, software
// interrupts through the host kernel's IDT, and alignment checks once RFLAGS.AC is set.
void system(Builder& b, const GeneratorOptions& options) {
  switch (b.pick(12)) {
    case 0: {  // POPF of any value; with TF set, the single-step trap after the next instruction
      constexpr uint64_t kTf = 0x100;
      const uint8_t reg = b.any_register();
      uint64_t value = b.random_value();
      if (b.chance(50)) value &= 0x3fffff;
      const bool single_step = b.chance(15);
      value = single_step ? value | kTf : value & ~kTf;
      if (!options.nt) value &= ~uint64_t{0x4000};
      b.raw({static_cast<uint8_t>((reg & 8) ? 0x49 : 0x48), static_cast<uint8_t>(0xb8 | (reg & 7))});
      b.immediate(8, value);
      if (reg & 8) b.raw({0x41});
      b.raw({static_cast<uint8_t>(0x50 | (reg & 7)), 0x9d});  // push reg; popfq
      b.effect(kAll, 0);
      // Something to step over, so the trap never falls on the harness's own code after it.
      if (single_step) b.raw({0x90});
      return;
    }
    case 1: {  // PUSHF; POP reg
      b.need_flags(kAll);
      const uint8_t reg = b.any_register();
      b.raw({0x9c});
      if (reg & 8) b.raw({0x41});
      b.raw({static_cast<uint8_t>(0x58 | (reg & 7))});
      return;
    }
    case 2: case 3: {  // MOV Sreg, r16 (ES, CS, SS, DS, GS: never FS, the host's TLS)
      static constexpr uint8_t kTargets[] = {0, 1, 2, 3, 5};
      const uint8_t reg = b.any_register();
      b.set_register(reg, any_selector(b));
      b.instruction(4, {0x8e}, kTargets[b.pick(5)], Operand{false, reg, 0});
      return;
    }
    case 4: {  // MOV r/m, Sreg at 16, 32 or 64 bits (memory stores are always 16)
      static constexpr uint8_t kSizes[] = {2, 4, 8};
      b.instruction(kSizes[b.pick(3)], {0x8c}, static_cast<uint8_t>(b.pick(6)), b.rm_operand());
      return;
    }
    case 5: {  // LAR / LSL
      static constexpr uint8_t kSizes[] = {2, 4, 8};
      const uint8_t source = b.any_register();
      b.set_register(source, b.chance(80) ? any_selector(b) : static_cast<uint32_t>(b.random_value()));
      b.instruction(kSizes[b.pick(3)], {0x0f, static_cast<uint8_t>(b.chance(50) ? 0x02 : 0x03)}, b.any_register(),
                    Operand{false, source, 0});
      b.effect(kZf, 0);
      return;
    }
    case 6: {  // VERR / VERW
      const uint8_t source = b.any_register();
      b.set_register(source, any_selector(b));
      b.instruction(2, {0x0f, 0x00}, static_cast<uint8_t>(b.chance(50) ? 4 : 5), Operand{false, source, 0});
      b.effect(kZf, 0);
      return;
    }
    case 7: {  // PUSH GS / POP GS, PUSH FS; a selector through the stack into GS
      const uint8_t reg = b.any_register();
      b.set_register(reg, any_selector(b));
      if (reg & 8) b.raw({0x41});
      b.raw({static_cast<uint8_t>(0x50 | (reg & 7))});
      b.raw({0x0f, 0xa9});  // POP GS
      // PUSH FS/GS may write only the selector's 16 bits (SDM vol. 2B, PUSH): zero the slot
      // first (PUSH 0; LEA RSP, [RSP + 8]) so either behaviour leaves the same stack.
      b.raw({0x6a, 0x00, 0x48, 0x8d, 0x64, 0x24, 0x08});
      b.raw({0x0f, static_cast<uint8_t>(b.chance(50) ? 0xa0 : 0xa8)});
      return;
    }
    case 8: {  // Privileged or invalid at CPL 3 in 64-bit mode: #GP(0) or #UD
      static constexpr std::initializer_list<uint8_t> kForms[] = {
          {0xf4},                    // HLT
          {0xfa}, {0xfb},            // CLI, STI (IOPL 0)
          {0xec}, {0xee}, {0xe4, 0x80}, {0xe7, 0x71}, {0x6c},  // IN/OUT/INS with no I/O permission
          {0x0f, 0x32}, {0x0f, 0x30},                 // RDMSR, WRMSR
          {0x0f, 0x20, 0xc0}, {0x0f, 0x22, 0xd8},     // MOV rax, CR0; MOV CR3, rax
          {0x0f, 0x21, 0xf8}, {0x0f, 0x06},           // MOV rax, DR7; CLTS
          {0x0f, 0x08}, {0x0f, 0x09},                 // INVD, WBINVD
          {0x0f, 0x01, 0xf8}, {0x0f, 0x07},           // SWAPGS, SYSRET
          {0x0f, 0x00, 0xd0}, {0x0f, 0x00, 0xd8},     // LLDT ax, LTR ax
          {0x41, 0x0f, 0x01, 0x57, 0x10},             // LGDT [r15 + 16]
          {0x41, 0x0f, 0x01, 0x7f, 0x20},             // INVLPG [r15 + 32]
          {0x0f, 0x0b}, {0xce},                       // UD2; INTO (invalid in 64-bit mode)
          {0x06}, {0x07}, {0x0e}, {0x16}, {0x17}, {0x1e}, {0x1f},  // PUSH/POP ES, CS, SS, DS
          {0x27}, {0x37}, {0x60}, {0xd4, 0x0a},       // DAA, AAA, PUSHA, AAM
      };
      const auto& form = kForms[b.pick(std::size(kForms))];
      b.code().insert(b.code().end(), form.begin(), form.end());
      return;
    }
    case 9: {  // INT3, INT1 (ICEBP), INT n through gates user mode may or may not use
      switch (b.pick(3)) {
        case 0: b.raw({0xcc}); return;
        case 1: b.raw({0xf1}); return;
        default: {
          uint8_t vector = static_cast<uint8_t>(b.pick(256));
          if (!options.int_n) {
            b.raw({0xcc});
            return;
          }
          if (vector == 0x80) vector = 0x81;  // INT 0x80 is a real system call on the host
          b.raw({0xcd, vector});
          return;
        }
      }
    }
    default: {  // a data access at any alignment: #AC(0) when RFLAGS.AC is on
      static constexpr uint8_t kSizes[] = {2, 4, 8};
      Operand rm = b.rm_operand(true);
      rm.memory = true;
      b.instruction(kSizes[b.pick(3)], {static_cast<uint8_t>(b.chance(50) ? 0x8b : 0x89)}, b.any_register(), rm);
      return;
    }
  }
}

}  // namespace

GeneratedSequence generate_sequence(std::mt19937_64& random, InstructionClass kind, int length,
                                    uint64_t data_base, uint64_t data_size, GeneratorOptions options) {
  Builder builder(random, data_base, data_size);
  for (int i = 0; i < length; ++i) {
    switch (kind) {
      case InstructionClass::kAlu: alu(builder); break;
      case InstructionClass::kShift: shift(builder); break;
      case InstructionClass::kMultiplyDivide: multiply_divide(builder); break;
      case InstructionClass::kBit: bit(builder); break;
      case InstructionClass::kMove: move(builder); break;
      case InstructionClass::kString: string(builder); break;
      case InstructionClass::kStack: stack(builder); break;
      case InstructionClass::kSystem: system(builder, options); break;
    }
  }
  return {std::move(builder.code()), builder.defined};
}

}  // namespace lamina::cpu::x86::testing
