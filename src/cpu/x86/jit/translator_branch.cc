// Inline near branches: Jcc and JMP with a relative target. The condition comes from the host
// flags when an inlined instruction of this block set the lazy flags: as its own host operation
// left them when it is the instruction just before (only MOVs after it), else from the operation
// redone on the stored operands, which gives the host the same six flags (materialized flags
// are loaded by SAHF and an overflowing ADD); otherwise from the lazy flags through runtime.h.
// A target that fails its check (non-canonical, past the CS limit) takes the handler, which
// raises the #GP exactly as the interpreter does.
#include "cpu/x86/jit/translator.h"

#include "cpu/x86/handlers.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

void jump_if(CodeGenerator& code, uint8_t condition, const Xbyak::Label& label) {
  constexpr auto kNear = CodeGenerator::T_NEAR;
  switch (condition & 15) {
    case 0x0: code.jo(label, kNear); break;
    case 0x1: code.jno(label, kNear); break;
    case 0x2: code.jb(label, kNear); break;
    case 0x3: code.jnb(label, kNear); break;
    case 0x4: code.jz(label, kNear); break;
    case 0x5: code.jnz(label, kNear); break;
    case 0x6: code.jbe(label, kNear); break;
    case 0x7: code.jnbe(label, kNear); break;
    case 0x8: code.js(label, kNear); break;
    case 0x9: code.jns(label, kNear); break;
    case 0xa: code.jp(label, kNear); break;
    case 0xb: code.jnp(label, kNear); break;
    case 0xc: code.jl(label, kNear); break;
    case 0xd: code.jnl(label, kNear); break;
    case 0xe: code.jle(label, kNear); break;
    default: code.jnle(label, kNear); break;
  }
}

bool reads_carry(uint8_t condition) {
  const uint8_t pair = (condition & 15) >> 1;
  return pair == 1 || pair == 3;
}

}  // namespace

bool Translator::host_flags_available(uint8_t condition) const {
  if (!known_flags_) return false;
  switch (known_flags_->op) {
    case FlagOp::kSub: case FlagOp::kAdd: case FlagOp::kLogic: case FlagOp::kAdc: case FlagOp::kSbb:
    case FlagOp::kMaterialized: return true;
    case FlagOp::kInc: case FlagOp::kDec: return !reads_carry(condition);
    default: return false;
  }
}

void Translator::note_host_flags(uint8_t destination, uint8_t size, bool rex) {
  if (flags_live_ && !(caching_ && high_byte(destination, size, rex))) host_flags_producer_ = current_index_;
}

bool Translator::host_flags_set_by_previous(size_t index, uint8_t condition) const {
  // Between the two, only the Jcc's own MOVs: the registers written back, RIP (flush_rip).
  return host_flags_producer_ + 1 == index && host_flags_available(condition);
}

bool Translator::emit_host_flags_for(uint8_t condition) {
  if (!known_flags_) return false;
  const uint8_t size = known_flags_->size;
  switch (known_flags_->op) {
    case FlagOp::kSub:
      code_.mov(rax, field(layout_.flags_first, 8));
      code_.mov(rcx, field(layout_.flags_second, 8));
      code_.cmp(sized(rax, size), sized(rcx, size));
      return true;
    case FlagOp::kAdd:
      code_.mov(rax, field(layout_.flags_first, 8));
      code_.mov(rcx, field(layout_.flags_second, 8));
      code_.add(sized(rax, size), sized(rcx, size));
      return true;
    case FlagOp::kAdc:
    case FlagOp::kSbb:
      // The operation again with the kept carry in the host CF.
      code_.mov(rax, field(layout_.flags_first, 8));
      code_.mov(rcx, field(layout_.flags_second, 8));
      code_.movzx(edx, field(layout_.flags_carry, 1));
      code_.bt(edx, 0);
      if (known_flags_->op == FlagOp::kAdc) {
        code_.adc(sized(rax, size), sized(rcx, size));
      } else {
        code_.sbb(sized(rax, size), sized(rcx, size));
      }
      return true;
    case FlagOp::kLogic:
      // TEST clears CF and OF and sets ZF, SF, PF from the result, as a logic operation does.
      code_.mov(rax, field(layout_.flags_result, 8));
      code_.test(sized(rax, size), sized(rax, size));
      return true;
    case FlagOp::kInc:
    case FlagOp::kDec:
      // The host's INC/DEC leave CF alone; its value here would not be the guest's.
      if (reads_carry(condition)) return false;
      code_.mov(rax, field(layout_.flags_first, 8));
      if (known_flags_->op == FlagOp::kInc) {
        code_.inc(sized(rax, size));
      } else {
        code_.dec(sized(rax, size));
      }
      return true;
    case FlagOp::kMaterialized: {
      // SAHF loads SF, ZF, AF, PF and CF from byte 0 of the flags; OF (bit 11) is set by an
      // ADD of 0x7f to it that overflows exactly when it is 1, before.
      code_.mov(rax, field(layout_.flags_materialized, 8));
      emit_sahf_flags(condition);
      return true;
    }
    default: return false;
  }
}

bool Translator::emit_branch(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  const bool conditional = (op >= 0x70 && op <= 0x7f) || (op >= 0x180 && op <= 0x18f);
  if (!conditional && op != 0xe9 && op != 0xeb) return false;
  const uint8_t condition = static_cast<uint8_t>(op & 15);
  const bool final_branch = index + 1 == block_->instructions.size();
  // Only a Jcc goes on past itself (emit_side_exit_branch); a branch before the end that is
  // not one is a translator bug, and the block is interpreted.
  if (!final_branch) throw Xbyak::Error(Xbyak::ERR_INTERNAL);
  // RIP past the branch: the not-taken result, and the base of the target.
  pending_rip_ += in.length;
  const bool from_stack = rip_on_stack_ && !rip_flushed_;
  const bool host_flags = conditional && host_flags_set_by_previous(index, condition);
  // RIP is not written before the branch: each way out computes its own from a base, RIP at
  // the body's entry (the copy in the frame: a one-block loop then carries no dependency
  // through memory from one round's RIP store to the next's load) or RIP in CpuState, plus
  // `past`; the taken way stores only its target.
  if (!from_stack && !final_branch) flush_rip(host_flags);
  const uint32_t past = static_cast<uint32_t>(pending_rip_);
  pending_rip_ = 0;
  const Xbyak::Address base = from_stack ? qword[rsp] : field(layout_.rip, 8);
  const auto store_rip_past = [&] {
    if (past == 0) return;
    code_.mov(rax, base);
    code_.add(rax, past);
    code_.mov(field(layout_.rip, 8), rax);
  };
  Xbyak::Label taken, done, slow;
  if (conditional) {
    if (deferred_step_ || host_flags) {
      // The instruction just before left these host flags (a deferred INC/DEC all but CF,
      // which this Jcc ignores).
      jump_if(code_, condition, taken);
    } else if (emit_host_flags_for(condition)) {
      jump_if(code_, condition, taken);
    } else {
      branch_calls_out_ = true;
      emit_unknown_condition(condition);
      code_.jnz(taken, CodeGenerator::T_NEAR);
    }
    store_rip_past();
    code_.jmp(done, CodeGenerator::T_NEAR);
  }
  code_.L(taken);
  const auto displacement = static_cast<int64_t>(in.immediate);
  // The target's distance from the block's start (the branch ends the block), and from base.
  const int64_t target = static_cast<int64_t>(block_bytes_) + displacement;
  const int64_t from_base = static_cast<int64_t>(past) + displacement;
  // A target in the page the block starts in is canonical (target_in_start_page). In 16- and
  // 32-bit code the limit check stays: blocks are found by physical address without looking
  // at the CS limit again, so that the block's bytes lie within it is not known here.
  const bool in_page = final_branch && in.operand_size == 8 && target_in_start_page(target);
  // A target equal to the base (a one-block loop's back edge) in 64-bit code: CpuState holds
  // it already (the frame's copy is RIP at the body's entry, and nothing in the body wrote RIP
  // then: a slow path's handler steps it back), so there is nothing to compute, check or store.
  const bool rip_kept = in_page && from_base == 0;
  if (!rip_kept) {
    // The target into rcx (the exit check compares it with its record's RIP), in one ADD
    // when the distance fits an imm32.
    code_.mov(rcx, base);
    if (from_base == static_cast<int32_t>(from_base)) {
      if (from_base != 0) code_.add(rcx, static_cast<int32_t>(from_base));
    } else {
      code_.add(rcx, past);
      code_.mov(rax, in.immediate);
      code_.add(rcx, rax);
    }
    // checked_target (operands.h): cut to the operand size, then canonical or within CS's
    // limit.
    zero_extend(rcx, in.operand_size);
    if (mode_ == CodeMode::k64) {
      if (!in_page) {
        code_.mov(rax, rcx);
        code_.shl(rax, 16);
        code_.sar(rax, 16);
        code_.cmp(rax, rcx);
        code_.jne(slow, CodeGenerator::T_NEAR);
      }
    } else {
      code_.mov(eax, field(layout_.cs_limit, 4));
      code_.cmp(rcx, rax);
      code_.ja(slow, CodeGenerator::T_NEAR);
    }
    code_.mov(field(layout_.rip, 8), rcx);
  }
  if (branches_to_own_start(in, index)) emit_self_loop();
  // The way out (a loop's when the budget says stop): RIP, the target, into rcx for the exit.
  if (rip_kept) code_.mov(rcx, base);
  if (final_branch && !registers_over_back_edge_) {
    // The block's last instruction: the taken path gets its own exit site, so each direction
    // keeps its own patched jump (the other one is the block's end).
    emit_chain(*block_, in_page && same_page_exit(target), static_cast<uint32_t>(block_->instructions.size()));
  } else {
    code_.jmp(done, CodeGenerator::T_NEAR);
  }
  Xbyak::Label after;
  code_.L(slow);
  store_rip_past();
  if (registers_over_back_edge_) {
    store_deferred_step_flags();
    write_back_registers();
  }
  emit_handler_call_after_advance(in, index);
  code_.jmp(after, CodeGenerator::T_NEAR);
  code_.L(done);
  // Every other way out but the back edge: the flags and registers go back to CpuState.
  if (registers_over_back_edge_) {
    store_deferred_step_flags();
    write_back_registers();
  }
  code_.L(after);
  known_flags_.reset();
  // The block's end after a final Jcc not taken is a direct exit too.
  fallthrough_direct_ = conditional && final_branch;
  return true;
}

bool Translator::side_exit_branch(const Instruction& in, size_t index) const {
  const uint16_t op = in.opcode;
  const bool conditional = (op >= 0x70 && op <= 0x7f) || (op >= 0x180 && op <= 0x18f);
  return conditional && index + 1 < block_->instructions.size() && mode_ == CodeMode::k64 &&
         in.operand_size == 8 && !in.lock && in.handler != &invalid_opcode;
}

void Translator::emit_side_exit_branch(const Instruction& in, size_t index) {
  const auto condition = static_cast<uint8_t>(in.opcode & 15);
  const bool host_flags = host_flags_set_by_previous(index, condition);
  // RIP is not written on the way on: the fall-through leaves it pending.
  pending_rip_ += in.length;
  // Taken, a jump to the side exit out of line (emit_side_exits), so that the way on is one
  // jump not taken and the hot code stays compact.
  size_t taken = 0;
  if (host_flags) {
    taken = emit_forward_jump(static_cast<Jump>(condition), true);
  } else if (host_flags_available(condition)) {
    emit_host_flags_for(condition);
    taken = emit_forward_jump(static_cast<Jump>(condition), true);
  } else {
    // The condition may call C: the caller-saved registers are given up first, on both ways.
    forget_caller_saved_registers();
    emit_unknown_condition(condition);
    taken = emit_forward_jump(Jump::kNotEqual, true);
  }
  side_exits_.push_back(SideExit{.jump_end = taken,
                                 .in = &in,
                                 .index = index,
                                 .mapping = current_mapping(),
                                 .past = static_cast<uint32_t>(pending_rip_),
                                 .from_stack = rip_on_stack_ && !rip_flushed_});
}

void Translator::emit_side_exits() {
  for (const SideExit& exit : side_exits_) {
    const Instruction& in = *exit.in;
    patch_jump(exit.jump_end, 4);
    // Every flag was stored before the Jcc (flag liveness: a branch reads all); the registers
    // dirty at the Jcc go to CpuState here only (on the way on they stay cached and dirty).
    write_back_mapping(exit.mapping);
    const Xbyak::Address base = exit.from_stack ? qword[rsp] : field(layout_.rip, 8);
    const auto displacement = static_cast<int64_t>(in.immediate);
    int64_t end = 0;  // the fall-through's distance from the block's start
    for (size_t at = 0; at <= exit.index; ++at) end += block_->instructions[at].length;
    const int64_t target = end + displacement;
    const int64_t from_base = static_cast<int64_t>(exit.past) + displacement;
    const bool in_page = target_in_start_page(target);
    code_.mov(rcx, base);
    if (from_base == static_cast<int32_t>(from_base)) {
      if (from_base != 0) code_.add(rcx, static_cast<int32_t>(from_base));
    } else {
      code_.add(rcx, exit.past);
      code_.mov(rax, in.immediate);
      code_.add(rcx, rax);
    }
    ForwardTarget slow;
    if (!in_page) {
      // checked_target: a non-canonical target is the Jcc's #GP.
      code_.mov(rax, rcx);
      code_.shl(rax, 16);
      code_.sar(rax, 16);
      code_.cmp(rax, rcx);
      jump_to(slow, Jump::kNotEqual, true);
    }
    code_.mov(field(layout_.rip, 8), rcx);
    const size_t site = code_.getSize();
    emit_chain(*block_, in_page && same_page_exit(target), static_cast<uint32_t>(exit.index + 1));
    if (in_page) continue;
    bind(slow);
    // The handler raises the #GP with RIP past the Jcc, the registers and flags in CpuState;
    // should it return, the exit goes wherever it left RIP, counting the Jcc.
    code_.mov(rax, base);
    if (exit.past != 0) code_.add(rax, exit.past);
    code_.mov(field(layout_.rip, 8), rax);
    emit_handler_call_after_advance(in, exit.index);
    code_.mov(rcx, field(layout_.rip, 8));
    emit_backward_jump(site);
  }
}

}  // namespace lamina::cpu::x86::jit
