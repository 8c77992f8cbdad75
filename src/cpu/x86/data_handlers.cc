// Data movement: MOV (all forms), LEA, XCHG, MOVZX/MOVSX/MOVSXD, CMOVcc, SETcc, CBW..CQO,
// LAHF/SAHF, the carry/direction flag instructions, BSWAP, XLAT, NOPs, MOV to/from segment
// registers and LDS/LES/LFS/LGS/LSS (SDM vol. 2).
#include "cpu/x86/handlers.h"
#include "cpu/x86/operands.h"

namespace lamina::cpu::x86 {
namespace {

template <typename T>
void move_rm_reg(CpuCore& core, const Instruction& in) { write_rm<T>(core, in, read_reg<T>(core, in)); }
template <typename T>
void move_reg_rm(CpuCore& core, const Instruction& in) { write_reg<T>(core, in, read_rm<T>(core, in)); }
template <typename T>
void move_rm_immediate(CpuCore& core, const Instruction& in) {
  write_rm<T>(core, in, static_cast<T>(in.immediate));
}

// B0-BF: MOV r, imm (register in the opcode's low bits, extended by REX.B).
template <typename T>
void move_register_immediate(CpuCore& core, const Instruction& in) {
  const uint8_t index = static_cast<uint8_t>((in.opcode_byte() & 7) | (in.rm & 8));
  core.write_register<T>(index, in.rex, static_cast<T>(in.immediate));
}

// A0-A3: MOV AL/eAX <-> moffs.
template <typename T, bool kLoad>
void move_offset(CpuCore& core, const Instruction& in) {
  if (kLoad) {
    core.write_register<T>(kRax, false, core.read<T>(in.segment, in.immediate));
  } else {
    core.write<T>(in.segment, in.immediate, core.read_register<T>(kRax, false));
  }
}

template <typename T>
void load_effective_address(CpuCore& core, const Instruction& in) {
  write_reg<T>(core, in, static_cast<T>(core.effective_address(in)));
}

// XCHG with a memory operand is locked whether or not LOCK is given (SDM vol. 2, XCHG).
template <typename T>
void exchange(CpuCore& core, const Instruction& in) {
  const T source = read_reg<T>(core, in);
  if (!in.memory) {
    write_reg<T>(core, in, core.read_register<T>(in.rm, in.rex));
    core.write_register<T>(in.rm, in.rex, source);
    return;
  }
  const uint64_t offset = core.effective_address(in);
  const uint64_t linear = core.linear_address(in.segment, offset, sizeof(T), Access::kWrite);
  std::byte* host = core.writable_host_pointer(linear, sizeof(T));
  T old;
  if (host != nullptr && reinterpret_cast<uintptr_t>(host) % sizeof(T) == 0) {
    old = std::atomic_ref<T>(*reinterpret_cast<T*>(host)).exchange(source);
  } else {
    old = core.read<T>(in.segment, offset);
    core.write<T>(in.segment, offset, source);
  }
  write_reg<T>(core, in, old);
}

// 90-97: XCHG rAX, r (90 without REX.B is NOP; F3 90 is PAUSE).
template <typename T>
void exchange_accumulator(CpuCore& core, const Instruction& in) {
  const uint8_t index = static_cast<uint8_t>((in.opcode_byte() & 7) | (in.rm & 8));
  const T a = core.read_register<T>(kRax, false);
  core.write_register<T>(kRax, false, core.read_register<T>(index, false));
  core.write_register<T>(index, false, a);
}

void no_operation(CpuCore&, const Instruction&) {}

template <typename Destination, typename Source, bool kSigned>
void move_extend(CpuCore& core, const Instruction& in) {
  const Source value = read_rm<Source>(core, in);
  Destination result;
  if constexpr (kSigned) {
    using SignedSource = std::make_signed_t<Source>;
    using SignedDestination = std::make_signed_t<Destination>;
    result = static_cast<Destination>(static_cast<SignedDestination>(static_cast<SignedSource>(value)));
  } else {
    result = static_cast<Destination>(value);
  }
  write_reg<Destination>(core, in, result);
}

template <typename T>
void conditional_move(CpuCore& core, const Instruction& in) {
  const T value = read_rm<T>(core, in);
  if (core.state.flags.condition(in.opcode_byte() & 0xf)) {
    write_reg<T>(core, in, value);
  } else if constexpr (sizeof(T) == 4) {
    write_reg<T>(core, in, read_reg<T>(core, in));  // zero-extends even when not taken
  }
}

void set_condition(CpuCore& core, const Instruction& in) {
  write_rm<uint8_t>(core, in, core.state.flags.condition(in.opcode_byte() & 0xf) ? 1 : 0);
}

// 98: CBW/CWDE/CDQE; 99: CWD/CDQ/CQO.
void convert_accumulator(CpuCore& core, const Instruction& in) {
  uint64_t& rax = core.state.gpr[kRax];
  switch (in.operand_size) {
    case 2: core.write_register<uint16_t>(kRax, false, static_cast<uint16_t>(static_cast<int8_t>(rax))); break;
    case 4: core.write_register<uint32_t>(kRax, false, static_cast<uint32_t>(static_cast<int16_t>(rax))); break;
    default: rax = static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(rax))); break;
  }
}
void convert_to_double(CpuCore& core, const Instruction& in) {
  const uint64_t rax = core.state.gpr[kRax];
  switch (in.operand_size) {
    case 2: core.write_register<uint16_t>(kRdx, false, (rax & 0x8000) ? 0xffff : 0); break;
    case 4: core.write_register<uint32_t>(kRdx, false, (rax & 0x80000000u) ? 0xffffffffu : 0); break;
    default: core.state.gpr[kRdx] = (rax >> 63) ? ~uint64_t{0} : 0; break;
  }
}

// LAHF/SAHF: AH <-> SF ZF AF PF CF (bit 1 reads as 1).
void load_flags_into_ah(CpuCore& core, const Instruction&) {
  const uint8_t value = static_cast<uint8_t>((core.state.flags.materialize() & 0xd5) | 2);
  core.write_register<uint8_t>(4, false, value);
}
void store_ah_into_flags(CpuCore& core, const Instruction&) {
  const uint64_t ah = core.read_register<uint8_t>(4, false);
  update_flags(core, rflags::kSf | rflags::kZf | rflags::kAf | rflags::kPf | rflags::kCf, ah);
}

void complement_carry(CpuCore& core, const Instruction&) {
  update_flags(core, rflags::kCf, core.state.flags.cf() ? 0 : rflags::kCf);
}
void clear_carry(CpuCore& core, const Instruction&) { update_flags(core, rflags::kCf, 0); }
void set_carry(CpuCore& core, const Instruction&) { update_flags(core, rflags::kCf, rflags::kCf); }
void clear_direction(CpuCore& core, const Instruction&) { core.state.rflags &= ~rflags::kDf; }
void set_direction(CpuCore& core, const Instruction&) { core.state.rflags |= rflags::kDf; }

void byte_swap(CpuCore& core, const Instruction& in) {
  const uint8_t index = static_cast<uint8_t>((in.opcode_byte() & 7) | (in.rm & 8));
  if (in.operand_size == 8) {
    core.state.gpr[index] = std::byteswap(core.state.gpr[index]);
  } else if (in.operand_size == 4) {
    core.write_register<uint32_t>(index, false, std::byteswap(static_cast<uint32_t>(core.state.gpr[index])));
  } else {
    core.write_register<uint16_t>(index, false, 0);  // undefined; zero like current CPUs
  }
}

void translate_byte(CpuCore& core, const Instruction& in) {
  uint64_t offset = core.state.gpr[kRbx] + (core.state.gpr[kRax] & 0xff);
  if (in.address_size == 4) offset &= 0xffffffffu;
  if (in.address_size == 2) offset &= 0xffff;
  core.write_register<uint8_t>(kRax, false, core.read<uint8_t>(in.segment, offset));
}

// 8C: MOV r/m, Sreg (a register destination gets the zero-extended selector).
void move_from_segment(CpuCore& core, const Instruction& in) {
  const uint16_t selector = core.state.segment[in.group_index()].selector;
  if (in.memory) {
    core.write<uint16_t>(in.segment, core.effective_address(in), selector);
  } else {
    core.write_register_sized(in.rm, in.operand_size == 2 ? 2 : 4, false, selector);
  }
}

// 8E: MOV Sreg, r/m. Loading SS inhibits interrupts and debug exceptions for one instruction
// (SDM 6.8.3).
void move_to_segment(CpuCore& core, const Instruction& in) {
  const uint8_t segment = in.group_index();
  core.load_segment(segment, read_rm<uint16_t>(core, in));
  if (segment == kSs) {
    core.state.interrupt_shadow = true;
    core.state.debug_shadow = true;
    core.stop_block = true;
  }
}

// LDS/LES/LSS/LFS/LGS r, m16:16/32/64.
void load_far_pointer(CpuCore& core, const Instruction& in) {
  uint8_t segment = kDs;
  switch (in.opcode) {
    case 0xc4: segment = kEs; break;
    case 0x1b2: segment = kSs; break;
    case 0x1b4: segment = kFs; break;
    case 0x1b5: segment = kGs; break;
    default: break;
  }
  const uint64_t offset = core.effective_address(in);
  const uint64_t pointer = core.read_sized(in.segment, offset, in.operand_size);
  const uint16_t selector = core.read<uint16_t>(in.segment, offset + in.operand_size);
  core.load_segment(segment, selector);
  core.write_register_sized(in.reg, in.operand_size, in.rex, pointer);
}

void move_sign_extend_dword(CpuCore& core, const Instruction& in) {
  if (in.operand_size == 8) {
    const auto value = static_cast<int32_t>(read_rm<uint32_t>(core, in));
    core.state.gpr[in.reg] = static_cast<uint64_t>(static_cast<int64_t>(value));
  } else if (in.operand_size == 4) {
    write_reg<uint32_t>(core, in, read_rm<uint32_t>(core, in));
  } else {
    write_reg<uint16_t>(core, in, read_rm<uint16_t>(core, in));
  }
}

}  // namespace

Handler select_data_handler(const Instruction& in) {
  const uint16_t op = in.opcode;
  const uint8_t size = in.operand_size;
  switch (op) {
    case 0x88: return &move_rm_reg<uint8_t>;
    case 0x89: return pick_by_size(size, []<typename T>() -> Handler { return &move_rm_reg<T>; });
    case 0x8a: return &move_reg_rm<uint8_t>;
    case 0x8b: return pick_by_size(size, []<typename T>() -> Handler { return &move_reg_rm<T>; });
    case 0xc6: return &move_rm_immediate<uint8_t>;
    case 0xc7: return pick_by_size(size, []<typename T>() -> Handler { return &move_rm_immediate<T>; });
    case 0xa0: return &move_offset<uint8_t, true>;
    case 0xa1: return pick_by_size(size, []<typename T>() -> Handler { return &move_offset<T, true>; });
    case 0xa2: return &move_offset<uint8_t, false>;
    case 0xa3: return pick_by_size(size, []<typename T>() -> Handler { return &move_offset<T, false>; });
    case 0x8d: return pick_by_size(size, []<typename T>() -> Handler { return &load_effective_address<T>; });
    case 0x86: return &exchange<uint8_t>;
    case 0x87: return pick_by_size(size, []<typename T>() -> Handler { return &exchange<T>; });
    case 0x90:
      if (!(in.rm & 8)) return &no_operation;  // NOP and PAUSE; XCHG r8, rAX with REX.B
      return pick_by_size(size, []<typename T>() -> Handler { return &exchange_accumulator<T>; });
    case 0x98: return &convert_accumulator;
    case 0x99: return &convert_to_double;
    case 0x9e: return &store_ah_into_flags;
    case 0x9f: return &load_flags_into_ah;
    case 0xf5: return &complement_carry;
    case 0xf8: return &clear_carry;
    case 0xf9: return &set_carry;
    case 0xfc: return &clear_direction;
    case 0xfd: return &set_direction;
    case 0xd7: return &translate_byte;
    case 0x8c: return &move_from_segment;
    case 0x8e: return &move_to_segment;
    case 0xc4: case 0xc5: case 0x1b2: case 0x1b4: case 0x1b5: return &load_far_pointer;
    case 0x63: return in.mode == CodeMode::k64 ? &move_sign_extend_dword : nullptr;
    case 0x10d: case 0x118: case 0x119: case 0x11a: case 0x11b: case 0x11c: case 0x11d:
    case 0x11e: case 0x11f:
      return &no_operation;  // PREFETCHh and the reserved hint NOPs
    case 0x1b6: return pick_by_size(size, []<typename T>() -> Handler { return &move_extend<T, uint8_t, false>; });
    case 0x1be: return pick_by_size(size, []<typename T>() -> Handler { return &move_extend<T, uint8_t, true>; });
    case 0x1b7: return pick_by_size(size, []<typename T>() -> Handler { return &move_extend<T, uint16_t, false>; });
    case 0x1bf: return pick_by_size(size, []<typename T>() -> Handler { return &move_extend<T, uint16_t, true>; });
    case 0x1c3: return size == 8 ? &move_rm_reg<uint64_t> : &move_rm_reg<uint32_t>;  // MOVNTI
    default: break;
  }
  if (op >= 0x91 && op <= 0x97)
    return pick_by_size(size, []<typename T>() -> Handler { return &exchange_accumulator<T>; });
  if (op >= 0xb0 && op <= 0xb7) return &move_register_immediate<uint8_t>;
  if (op >= 0xb8 && op <= 0xbf)
    return pick_by_size(size, []<typename T>() -> Handler { return &move_register_immediate<T>; });
  if (op >= 0x140 && op <= 0x14f)
    return pick_by_size(size, []<typename T>() -> Handler { return &conditional_move<T>; });
  if (op >= 0x190 && op <= 0x19f) return &set_condition;
  if (op >= 0x1c8 && op <= 0x1cf) return &byte_swap;
  return nullptr;
}

}  // namespace lamina::cpu::x86
