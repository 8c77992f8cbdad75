// Runs of stack accesses in 64-bit mode (function prologues, epilogues and calls): PUSH/POP of
// a register, MOV between a register or an immediate and [RSP + disp], the moves between them
// that leave RSP alone or ADD/SUB it an immediate (a frame), and a final CALL rel or RET. Their bytes lie at offsets from RSP at the
// run's start known when translating, so one soft-TLB lookup of the whole range (the page of
// its lowest byte compared with the page of its highest: a crossing misses) lets each access
// go straight to its slot. The run is emitted twice: the fused copy after that lookup, and the
// per-instruction copy its miss jumps to (each access with its own lookup and slow path), so a
// fault in the middle of a run leaves the guest state exactly as the interpreter does. Both
// copies start from the same translator state and join with the fused copy's mapping.
#include "cpu/x86/jit/translator.h"

#include <algorithm>
#include <optional>

#include "cpu/x86/handlers.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

// A run whose bytes span more than this is cut (such a range rarely lies in one page).
constexpr int32_t kMaxRunBytes = 512;

// What one instruction of a run does with the stack: the bytes it accesses, from RSP before
// it, and how it moves RSP; `last`: a branch, the run's (and block's) end.
struct StackAccess {
  int32_t offset = 0;
  uint8_t size = 0;
  bool write = false;
  int32_t moves = 0;
  bool last = false;
};

std::optional<StackAccess> stack_access(const Instruction& in) {
  if (in.lock || in.handler == &invalid_opcode) return std::nullopt;
  const uint16_t op = in.opcode;
  if (op >= 0x50 && op <= 0x5f && in.operand_size == 8) {
    // PUSH RSP and POP RSP read or write RSP besides moving it: left to the per-instruction way.
    if (((op & 7) | (in.rm & 8)) == kRsp) return std::nullopt;
    if (op < 0x58) return StackAccess{.offset = -8, .size = 8, .write = true, .moves = -8};
    return StackAccess{.offset = 0, .size = 8, .write = false, .moves = 8};
  }
  if (op == 0xe8 && in.operand_size == 8) {
    return StackAccess{.offset = -8, .size = 8, .write = true, .moves = -8, .last = true};
  }
  if (op == 0xc3 && in.immediate == 0 && in.operand_size == 8) {
    return StackAccess{.offset = 0, .size = 8, .write = false, .moves = 8, .last = true};
  }
  // emit_memory_move's forms with the address RSP + disp (SS: base 0).
  const bool load = op == 0x8a || op == 0x8b;
  const bool store = op == 0x88 || op == 0x89 || ((op == 0xc6 || op == 0xc7) && in.group_index() == 0);
  if ((!load && !store) || !in.memory || in.base != kRsp || in.index < 16 || in.address_size != 8 ||
      in.segment == kFs || in.segment == kGs) {
    return std::nullopt;
  }
  if (load && in.reg == kRsp) return std::nullopt;
  if (in.displacement < -kMaxRunBytes || in.displacement > kMaxRunBytes) return std::nullopt;
  return StackAccess{.offset = static_cast<int32_t>(in.displacement),
                     .size = static_cast<uint8_t>((op & 1) ? in.operand_size : 1),
                     .write = store};
}

// The register a register-only move (MOV, MOVZX/MOVSX/MOVSXD, LEA, NOP) writes, if it is one.
std::optional<uint8_t> move_destination(const Instruction& in) {
  const uint16_t op = in.opcode;
  if (op == 0x88 || op == 0x89 || op == 0xc6 || op == 0xc7) return in.rm;
  if (op == 0x8a || op == 0x8b || op == 0x8d || op == 0x63 || op == 0x1b6 || op == 0x1b7 || op == 0x1be ||
      op == 0x1bf) {
    return in.reg;
  }
  // The register in the opcode's low bits, REX.B in rm (decoder.cc).
  if (op == 0x90 || (op >= 0xb0 && op <= 0xbf)) return static_cast<uint8_t>((op & 7) | (in.rm & 8));
  return std::nullopt;
}

// ADD/SUB RSP, imm (a frame allocated or freed): how far it moves RSP.
std::optional<int32_t> stack_adjustment(const Instruction& in) {
  const uint16_t op = in.opcode;
  if ((op != 0x81 && op != 0x83) || in.memory || in.rm != kRsp || in.operand_size != 8) return std::nullopt;
  if (in.group_index() != 0 && in.group_index() != 5) return std::nullopt;
  // The imm8/imm32, sign-extended by the decoder.
  const auto amount = static_cast<int64_t>(in.immediate);
  if (amount < -kMaxRunBytes || amount > kMaxRunBytes) return std::nullopt;
  return static_cast<int32_t>(in.group_index() == 0 ? amount : -amount);
}

}  // namespace

Translator::StackRun Translator::stack_run(const Block& block, size_t first) const {
  StackRun run{.end = first};
  if (mode_ != CodeMode::k64) return run;
  int32_t moved = 0;  // RSP's distance from its value at the run's start
  int32_t low = 0, high = 0;
  const auto& instructions = block.instructions;
  for (size_t index = first; index < instructions.size(); ++index) {
    const Instruction& in = instructions[index];
    if (const std::optional<StackAccess> access = stack_access(in)) {
      const int32_t start = moved + access->offset;
      const int32_t new_low = run.accesses == 0 ? start : std::min(low, start);
      const int32_t new_high = run.accesses == 0 ? start + access->size : std::max(high, start + access->size);
      if (new_high - new_low > kMaxRunBytes) break;
      low = new_low;
      high = new_high;
      moved += access->moves;
      run.writes = run.writes || access->write;
      ++run.accesses;
      run.end = index + 1;
      if (access->last) break;
      continue;
    }
    // Inside the run (trailing ones are not part of it): a move that leaves RSP alone (RSP is
    // exact in its host register all along: it may read it), or one that moves RSP by a
    // constant, so that the slots after it are still known.
    if (index == first || !register_only(in)) break;
    if (const std::optional<int32_t> adjustment = stack_adjustment(in)) {
      moved += *adjustment;
      continue;
    }
    const std::optional<uint8_t> destination = move_destination(in);
    if (!leaves_flags(in) || !destination || *destination == kRsp) break;
  }
  run.low = low;
  run.high = high;
  return run;
}

void Translator::emit_stack_run(const Block& block, size_t first, const StackRun& run) {
  // What emit_instruction does first for the run's first instruction (a stack access), so that
  // nothing comes between the lookup and that access.
  store_deferred_step_flags();
  deferred_step_.reset();
  // RSP in its host register before the copies part: both start with one mapping.
  const Xbyak::Reg64 stack = cached_register(kRsp, true);
  Xbyak::Label copy, done;
  code_.lea(rax, ptr[stack + run.low]);
  // x86 has no write-only pages: the write pointer serves the run's reads as well.
  emit_tlb_host_offset(run.writes ? AccessType::kWrite : AccessType::kRead,
                       static_cast<uint32_t>(run.high - run.low), copy);
  code_.mov(qword[rsp + kStackRunOffsetSlot], rdx);
  const EmitState start = current_emit_state();
  fused_stack_ = true;
  stack_offset_in_rdx_ = true;
  for (size_t index = first; index < run.end; ++index) {
    const size_t before = fused_accesses_;
    emit_instruction(block, index);
    if (stack_access(block.instructions[index])) {
      // An access that took another way would be unchecked against the lookup's range: a
      // translator bug, and the block is left to the interpreter.
      if (fused_accesses_ != before + 1) throw Xbyak::Error(Xbyak::ERR_INTERNAL);
    } else {
      stack_offset_in_rdx_ = false;  // a move's code may use rdx
    }
  }
  fused_stack_ = false;
  const EmitState fused = current_emit_state();
  code_.jmp(done, CodeGenerator::T_NEAR);

  // A miss, a crossing, a page the run may not access: the per-instruction way.
  code_.L(copy);
  restore_emit_state(start);
  for (size_t index = first; index < run.end; ++index) emit_instruction(block, index);
  const RegisterMapping copied = current_mapping();
  const std::optional<KnownFlags> copied_flags = known_flags_;
  const uint64_t copied_rip = pending_rip_;
  const bool copied_flush = rip_flushed_;
  restore_emit_state(fused);
  // Both copies make the same cache requests, so the mappings agree; if not, through CpuState.
  if (copied != current_mapping()) {
    write_back_mapping(copied);
    RegisterMapping none;
    none.fill(-1);
    reload_mapping_after_call(none, current_mapping());
  }
  if (copied_rip != pending_rip_) throw Xbyak::Error(Xbyak::ERR_INTERNAL);
  const bool same_flags = copied_flags.has_value() == known_flags_.has_value() &&
                          (!known_flags_ || (copied_flags->op == known_flags_->op && copied_flags->size == known_flags_->size));
  if (!same_flags) known_flags_.reset();
  rip_flushed_ = rip_flushed_ || copied_flush;
  code_.L(done);
}

Translator::EmitState Translator::current_emit_state() const {
  return EmitState{.cached = cached_,
                   .slot_of = slot_of_,
                   .use_clock = use_clock_,
                   .pending_rip = pending_rip_,
                   .known_flags = known_flags_,
                   .deferred_step = deferred_step_,
                   .rip_flushed = rip_flushed_,
                   .mapping_before_last = mapping_before_last_};
}

void Translator::restore_emit_state(const EmitState& state) {
  cached_ = state.cached;
  slot_of_ = state.slot_of;
  use_clock_ = state.use_clock;
  pending_rip_ = state.pending_rip;
  known_flags_ = state.known_flags;
  deferred_step_ = state.deferred_step;
  rip_flushed_ = state.rip_flushed;
  mapping_before_last_ = state.mapping_before_last;
}

}  // namespace lamina::cpu::x86::jit
