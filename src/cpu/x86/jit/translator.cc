// The block frame, handler calls and the register/field helpers of the Translator.
#include "cpu/x86/jit/translator.h"

#include <cstddef>
#include <cstring>

#include "cpu/x86/handlers.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;

// Scratch space for one block: 64 instructions of the longest inline forms fit many times.
constexpr size_t kScratchBytes = 256 * 1024;

int32_t offset_of(const CpuCore& core, const void* field) {
  return static_cast<int32_t>(static_cast<const std::byte*>(field) -
                              reinterpret_cast<const std::byte*>(&core));
}

}  // namespace

Translator::Translator(CpuCore& core, ExitRecord& record, Chain chain)
    // DontSetProtectRWE: the scratch buffer stays plain read/write memory; code only ever
    // executes from CodeCache's executable mapping.
    : core_(core), record_(record), chain_(chain), code_(kScratchBytes, Xbyak::DontSetProtectRWE) {
  const LazyFlags& flags = core.state.flags;
  layout_ = Layout{
      .rip = offset_of(core, &core.state.rip),
      .instruction_rip = offset_of(core, &core.instruction_rip),
      .stop_block = offset_of(core, &core.stop_block),
      .gpr = offset_of(core, core.state.gpr.data()),
      .cs_limit = offset_of(core, &core.state.segment[kCs].limit),
      .flags_result = offset_of(core, &flags.result),
      .flags_first = offset_of(core, &flags.first),
      .flags_second = offset_of(core, &flags.second),
      .flags_op = offset_of(core, &flags.op),
      .flags_size = offset_of(core, &flags.size),
      .flags_carry = offset_of(core, &flags.carry_in),
      .cpl = offset_of(core, &core.state.cpl),
      .tlb_table = offset_of(core, core.tlb.current_table()),
      .effective_base = offset_of(core, core.effective_base.data()),
      .flags_materialized = offset_of(core, &flags.materialized),
      .retired = offset_of(core, &core.retired),
      .retired_limit = offset_of(core, &core.retired_limit),
      .generation = offset_of(core, core.blocks.generation_address()),
      .global_generation = offset_of(core, core.blocks.global_generation_address()),
      .running_block = offset_of(core, &core.running_block),
      .event_delivered = offset_of(core, &core.event_delivered),
      .halted = offset_of(core, &core.state.halted),
      .waiting_for_startup = offset_of(core, &core.state.waiting_for_startup),
      .interrupt_shadow = offset_of(core, &core.state.interrupt_shadow),
      .rflags = offset_of(core, &core.state.rflags),
      .breakpoints_armed = offset_of(core, &core.breakpoints_armed),
      .cr0 = offset_of(core, &core.state.cr0),
      .cr4 = offset_of(core, &core.state.cr4),
      .xmm = offset_of(core, core.state.simd.xmm.data()),
      .mxcsr = offset_of(core, &core.state.simd.mxcsr),
      .segment_selectors = offset_of(core, &core.state.segment[0].selector),
      .segment_stride = static_cast<int32_t>(sizeof(SegmentCache)),
  };
  code_.reset();
  emit_prologue();
  prologue_.assign(code_.getCode(), code_.getCode() + code_.getSize());
  code_.reset();
  emit_epilogue();
  epilogue_.assign(code_.getCode(), code_.getCode() + code_.getSize());
  for (const bool same_page : {false, true}) {
    assemble_exit_site(false, same_page);
    assemble_exit_site(true, same_page);
  }
  code_.reset();
}

std::span<const std::byte> Translator::translate(const Block& block) {
  block_ = &block;
  block_bytes_ = 0;
  for (const Instruction& in : block.instructions) block_bytes_ += in.length;
  mode_ = block.mode;
  compute_flag_liveness(block);
  preload_.reset();
  try {
    emit_pass(block);
    // A loop of one block: again, with the registers it ends with loaded before the body,
    // so that its back edge can keep them (emit_self_loop).
    if (self_loop_mapping_) {
      preload_ = self_loop_mapping_;
      emit_pass(block);
    }
  } catch (const Xbyak::Error&) {
    // Out of scratch space or an encoding the library refuses: the interpreter runs it.
    preload_.reset();
    return {};
  }
  preload_.reset();
  return {reinterpret_cast<const std::byte*>(code_.getCode()), code_.getSize()};
}

void Translator::emit_pass(const Block& block) {
  code_.reset();
  handler_exits_.clear();
  deferred_slow_paths_.clear();
  side_exits_.clear();
  pending_rip_ = 0;
  known_flags_.reset();
  host_flags_producer_ = SIZE_MAX;
  called_handlers_ = false;
  simd_checked_ = false;
  branch_calls_out_ = false;
  registers_over_back_edge_ = false;
  fallthrough_direct_ = false;
  deferred_step_.reset();
  rip_flushed_ = false;
  // A second pass is made for a loop of one block only (no handler call, so nothing but
  // the final branch moves RIP).
  rip_on_stack_ = preload_.has_value();
  self_loop_mapping_.reset();
  mapping_before_last_.fill(-1);
  // A translation abandoned by an exception may have left these set.
  flags_live_ = true;
  caching_ = false;
  fused_stack_ = false;
  emit_block(block);
}

void Translator::emit_block(const Block& block) {
  emit_bytes(prologue_);
  body_offset_ = code_.getSize();
  cached_.fill(CachedRegister{});
  slot_of_.fill(-1);
  drop_xmms();
  if (rip_on_stack_) {
    // The RIP this body starts at, for the final branch (translator_branch.cc); the slot
    // is the 8 bytes of alignment below the pushes.
    code_.mov(rax, field(layout_.rip, 8));
    code_.mov(qword[rsp], rax);
  }
  if (preload_) preload_registers(*preload_);
  loop_entry_offset_ = code_.getSize();
  const size_t count = block.instructions.size();
  for (size_t index = 0; index < count;) {
    // Prologues, epilogues and calls: one TLB lookup for a run of stack accesses. Both of its
    // copies start from the same translator state, with no XMM register cached.
    if (const StackRun run = stack_run(block, index); run.accesses > 1) {
      forget_xmms();
      emit_stack_run(block, index, run);
      index = run.end;
      continue;
    }
    emit_instruction(block, index);
    ++index;
  }
  forget_registers();
  forget_xmms();
  emit_exit_rip();
  // The way out past a final Jcc not taken is a direct exit to the next instruction.
  emit_chain(block, fallthrough_direct_ && same_page_exit(static_cast<int64_t>(block_bytes_)),
             static_cast<uint32_t>(count));
  epilogue_offset_ = code_.getSize();
  emit_bytes(epilogue_);
  emit_deferred_slow_paths();
  emit_side_exits();
  // The early exits, out of the straight-line path. After handler `index`: raised (1), the next one faulted; stopped (2), it completed.
  for (const HandlerExit& exit : handler_exits_) {
    patch_jump(exit.jump_end, 4);
    code_.cmp(eax, 1);
    const size_t raised = emit_forward_jump(Jump::kEqual, false);
    code_.mov(eax, exit.index + 1);
    emit_backward_jump(epilogue_offset_);
    patch_jump(raised, 1);
    code_.mov(eax, exit.index | kFaulted);
    emit_backward_jump(epilogue_offset_);
  }
}

void Translator::emit_instruction(const Block& block, size_t index) {
  const Instruction& in = block.instructions[index];
  current_index_ = index;
  if (index + 1 == block.instructions.size()) mapping_before_last_ = current_mapping();
  // A shift or rotate whose flags nothing reads is register-only too (the host instruction).
  const bool register_form = register_only(in) || (!in.lock && in.handler != &invalid_opcode &&
                                                   shift_without_flags(in) && !flags_needed(index));
  // Cached XMM registers stay across inlined SSE forms and register-only code only.
  if (!register_form && (mode_ != CodeMode::k64 || (simd_form(in).kind == SimdKind::kNone && !sse_float(in))))
    forget_xmms();
  if (register_form) {
    flags_live_ = flags_needed(index);
    caching_ = true;
    const bool inlined = emit_register_only(in);
    caching_ = false;
    flags_live_ = true;
    // The liveness above assumed it inlined: a disagreement is a translator bug, and the
    // block is left to the interpreter rather than run with a flag store missing.
    if (!inlined) throw Xbyak::Error(Xbyak::ERR_INTERNAL);
    return;
  }
  if (side_exit_branch(in, index)) {
    // Not taken, the block goes on: the registers stay cached, the flags' producer known.
    store_deferred_step_flags();
    deferred_step_.reset();
    emit_side_exit_branch(in, index);
    return;
  }
  registers_over_back_edge_ = keeps_registers_over_back_edge(in, index);
  if (!registers_over_back_edge_) {
    // The deferred flags go to CpuState with the registers unless the branch keeps both.
    store_deferred_step_flags();
    deferred_step_.reset();
    // The inlined memory forms keep the cached registers (their slow paths write back).
    if (emit_cached_memory(in, index)) return;
    forget_registers();
  }
  if (!emit_inline(in, index)) emit_handler_call(in, index);
  if (registers_over_back_edge_) drop_registers();
  registers_over_back_edge_ = false;
  deferred_step_.reset();
}

size_t Translator::emit_forward_jump(Jump condition, bool near) {
  // SDM vol. 2A, JMP and Jcc: EB rel8, E9 rel32, 70+cc rel8, 0F 80+cc rel32.
  const auto code = static_cast<uint8_t>(condition);
  if (condition == Jump::kAlways) {
    code_.db(near ? 0xe9 : 0xeb);
  } else if (near) {
    code_.db(0x0f);
    code_.db(0x80 | code);
  } else {
    code_.db(0x70 | code);
  }
  if (near) {
    code_.dd(0);
  } else {
    code_.db(0);
  }
  return code_.getSize();
}

void Translator::patch_jump(size_t end, uint8_t size) {
  const size_t distance = code_.getSize() - end;
  // A short jump reaches 127 bytes on (a translator bug past that: the block is interpreted).
  if (size == 1 && distance > 127) throw Xbyak::Error(Xbyak::ERR_LABEL_IS_TOO_FAR);
  code_.rewrite(end - size, distance, size);
}

void Translator::jump_to(ForwardTarget& target, Jump condition, bool near) {
  if (target.count == ForwardTarget::kJumps) throw Xbyak::Error(Xbyak::ERR_INTERNAL);
  target.ends[target.count] = static_cast<uint32_t>(emit_forward_jump(condition, near));
  target.sizes[target.count] = near ? 4 : 1;
  ++target.count;
}

void Translator::bind(ForwardTarget& target) {
  for (size_t jump = 0; jump < target.count; ++jump)
    patch_jump(target.ends[jump], target.sizes[jump]);
  target.count = 0;
}

void Translator::emit_prologue() {
  // rbx: the core; r12-r15 and rbp: cached guest registers (translator_registers.cc). Six
  // pushes and 24 bytes leave the stack 16-byte aligned for the calls (SysV ABI); the 24 are
  // the slots of [rsp] (a loop's RIP, the chaining stub's count), of kStackRunOffsetSlot and
  // of kHostMxcsrSlot/kGuestMxcsrSlot.
  code_.push(rbx);
  code_.push(rbp);
  code_.push(r12);
  code_.push(r13);
  code_.push(r14);
  code_.push(r15);
  code_.sub(rsp, 24);
  code_.mov(rbx, rdi);
  // Entered from C++: the host's MXCSR is in place (emit_mxcsr_switch_in).
  code_.mov(dword[rsp + kGuestMxcsrSlot], 0);
}

void Translator::emit_bytes(std::span<const uint8_t> bytes) {
  const size_t at = code_.getSize();
  // Throws past the scratch buffer's end, as db would (the block is then interpreted).
  code_.setSize(at + bytes.size());
  // The scratch buffer is this translator's own writable memory (DontSetProtectRWE).
  std::memcpy(const_cast<uint8_t*>(code_.getCode()) + at, bytes.data(), bytes.size());
}

void Translator::emit_backward_jump(size_t target) {
  // SDM vol. 2A, JMP: E9 rel32, relative to the end of the instruction.
  code_.db(0xe9);
  code_.dd(static_cast<uint32_t>(target - (code_.getSize() + 4)));
}

void Translator::emit_epilogue() {
  // No MXCSR to switch back: the epilogue is reached only through a handler call's exit and
  // the chaining stub's call into the engine, both made with the host's MXCSR in place.
  code_.add(rsp, 24);
  code_.pop(r15);
  code_.pop(r14);
  code_.pop(r13);
  code_.pop(r12);
  code_.pop(rbp);
  code_.pop(rbx);
  code_.ret();
}

bool Translator::emit_register_only(const Instruction& in) {
  return emit_move(in) || emit_alu(in) || emit_step(in) || emit_lea(in) || emit_shift(in) ||
         emit_multiply(in) || emit_extend_register(in) || emit_data(in) || emit_negate(in) ||
         emit_carry_alu(in) || emit_shift_without_flags(in);
}

bool Translator::emit_inline(const Instruction& in, size_t index) {
  // XCHG, CMPXCHG and XADD of memory are host atomics, LOCK or not.
  if (emit_atomic(in, index)) return true;
  // LOCK on these forms is #UD, and an unimplemented form raises it: the handler's business.
  if (in.lock || in.handler == &invalid_opcode) return false;
  return emit_branch(in, index) || emit_condition_forms(in, index) ||
         emit_rotate(in) || emit_simd(in, index) || emit_bit_scan(in, index) || emit_bit_test(in, index) ||
         emit_multiply_accumulator(in, index) || emit_shift_count_forms(in, index) || emit_divide(in, index) ||
         emit_sse_float(in, index) || emit_system(in, index) || emit_repeat_string(in, index) ||
         emit_stack_forms(in, index);
}

bool Translator::emit_cached_memory(const Instruction& in, size_t index) {
  if (mode_ != CodeMode::k64 || in.lock || in.handler == &invalid_opcode) return false;
  // The fast path cannot fault, so its flags are dead as a register-only producer's are when
  // later register-only instructions overwrite every bit first (the slow path's handler
  // stores its own).
  flags_live_ = flags_needed(index);
  caching_ = true;
  const bool inlined = emit_memory_move(in, index) || emit_alu_memory(in, index) || emit_extend(in, index) ||
                       emit_alu_memory_write(in, index) || emit_stack(in, index) ||
                       emit_call_return(in, index) || emit_indirect_branch(in, index);
  caching_ = false;
  flags_live_ = true;
  return inlined;
}

void Translator::emit_handler_call(const Instruction& in, size_t index) {
  // As the interpreter: instruction_rip is where it starts, RIP already points past it.
  const auto delta = static_cast<int32_t>(pending_rip_);
  pending_rip_ = 0;
  // An inlined form's slow path runs that form's own handler, which sets none of what the
  // full exit check looks for (HLT, a shadow, TF, breakpoints): one that stops the block
  // (a store into its code, a data breakpoint hit) or raises leaves through the handler exits.
  if (!in_slow_path_) called_handlers_ = true;
  // A handler may change CR0 or CR4 (an inlined form's slow path runs its own instruction's).
  if (!in_slow_path_) simd_checked_ = false;
  emit_call_and_checks(in, index, delta);
}

void Translator::emit_handler_call_after_advance(const Instruction& in, size_t index) {
  // RIP is past the instruction already: instruction_rip is RIP - length, RIP stays.
  in_slow_path_ = true;
  emit_call_and_checks(in, index, -static_cast<int32_t>(in.length));
  in_slow_path_ = false;
}

void Translator::emit_call_and_checks(const Instruction& in, size_t index, int32_t rip_delta) {
  // The handler stub (handler_stub) sets instruction_rip = RIP + rip_delta and RIP past the
  // instruction, and returns 0 to go on, 1 when the handler raised, 2 when it ended the
  // block (mode change, a store into this block's code, a #DB trap due).
  if (profile_ != nullptr) {
    code_.mov(rax, reinterpret_cast<uint64_t>(profile_->handler_counter(in, in_slow_path_)));
    code_.inc(qword[rax]);
  }
  code_.mov(rsi, reinterpret_cast<uint64_t>(&in));
  code_.mov(rdx, static_cast<int64_t>(rip_delta));
  code_.mov(rcx, reinterpret_cast<uint64_t>(block_));
  // Cached XMM registers (an inlined SSE form's slow path) go to CpuState for the handler,
  // and come back from it after (host XMM registers are caller-saved; it may write them).
  emit_runtime_call(handler_stub_);
  code_.test(eax, eax);
  handler_exits_.push_back(
      HandlerExit{emit_forward_jump(Jump::kNotEqual, true), static_cast<uint32_t>(index)});
  known_flags_.reset();
}

std::span<const std::byte> Translator::handler_stub() {
  code_.reset();
  Xbyak::Label raised;
  // rsi: the instruction, rdx: instruction_rip's distance from RIP, rcx: its block (the
  // running block, which chained transitions leave unwritten: CpuCore::running_block).
  code_.mov(field(layout_.running_block, 8), rcx);
  code_.mov(rax, field(layout_.rip, 8));
  code_.add(rax, rdx);
  code_.mov(field(layout_.instruction_rip, 8), rax);
  code_.movzx(ecx, byte[rsi + offsetof(Instruction, length)]);
  code_.add(rax, rcx);
  code_.mov(field(layout_.rip, 8), rax);
  // Called from a block's body (the call's return address makes 8 bytes to realign). The
  // handler runs with the host's MXCSR and finds the guest's flags merged.
  emit_mxcsr_switch_out(8, eax);
  code_.sub(rsp, 8);
  code_.mov(rdi, rbx);
  code_.mov(rdx, reinterpret_cast<uint64_t>(&record_));
  code_.mov(rax, reinterpret_cast<uint64_t>(&lamina_jit_call_handler));
  code_.call(rax);
  code_.add(rsp, 8);
  code_.test(eax, eax);
  code_.jnz(raised);
  // A handler that leaves what the run loop must see before the next block (HLT, an
  // interrupt shadow, TF/RF, armed breakpoints) ends it here, also one that did not set
  // stop_block, so every exit site needs only the light check (emit_chain).
  ForwardTarget stopped;
  code_.cmp(field(layout_.stop_block, 1), 0);
  jump_to(stopped, Jump::kNotEqual, false);
  emit_handler_state_check(stopped);
  code_.ret();
  bind(stopped);
  code_.mov(eax, 2);
  code_.ret();
  code_.L(raised);
  code_.mov(eax, 1);
  code_.ret();
  return {reinterpret_cast<const std::byte*>(code_.getCode()), code_.getSize()};
}

void Translator::flush_rip(bool keep_host_flags) {
  if (pending_rip_ == 0) return;
  rip_flushed_ = true;
  if (keep_host_flags) {
    code_.mov(rax, field(layout_.rip, 8));
    code_.lea(rax, ptr[rax + static_cast<uint32_t>(pending_rip_)]);
    code_.mov(field(layout_.rip, 8), rax);
  } else {
    code_.add(field(layout_.rip, 8), static_cast<uint32_t>(pending_rip_));
  }
  pending_rip_ = 0;
}

Xbyak::Address Translator::guest_register(uint8_t index, uint8_t size, bool rex) const {
  // Without REX, byte registers 4-7 are AH, CH, DH, BH: byte 1 of registers 0-3.
  if (size == 1 && !rex && index >= 4 && index < 8) return field(layout_.gpr + 8 * (index - 4) + 1, 1);
  return field(layout_.gpr + 8 * index, size);
}

Xbyak::Reg Translator::sized(const Xbyak::Reg64& reg, uint8_t size) {
  switch (size) {
    case 1: return reg.cvt8();
    case 2: return reg.cvt16();
    case 4: return reg.cvt32();
    default: return reg;
  }
}

void Translator::zero_extend(const Xbyak::Reg64& reg, uint8_t size) {
  if (size == 1) code_.movzx(reg.cvt32(), reg.cvt8());
  if (size == 2) code_.movzx(reg.cvt32(), reg.cvt16());
  if (size == 4) code_.mov(reg.cvt32(), reg.cvt32());
}

void Translator::emit_step(uint8_t size, bool increment) {
  code_.mov(ecx, 1);
  code_.mov(rdx, rax);
  if (increment) {
    code_.add(sized(rdx, size), 1);
  } else {
    code_.sub(sized(rdx, size), 1);
  }
  zero_extend(rdx, size);
}

void Translator::store_flags(FlagOp op, uint8_t size, bool keep_carry) {
  if (!flags_live_) {
    // Overwritten by a later instruction of this block before anything can see them; only
    // the kind is kept for a following INC/DEC, which takes CF from a logic operation as clear.
    if (op == FlagOp::kLogic) {
      known_flags_ = KnownFlags{op, size};
    } else {
      known_flags_.reset();
    }
    return;
  }
  // As LazyFlags::set: result in rdx, first operand in rax, second in rcx (zero-extended).
  code_.mov(field(layout_.flags_result, 8), rdx);
  code_.mov(field(layout_.flags_first, 8), rax);
  code_.mov(field(layout_.flags_second, 8), rcx);
  // op, size and carry_in are adjacent bytes with LazyFlags' padding after them: one store of
  // op and size (and a clear carry) instead of two or three.
  static_assert(offsetof(LazyFlags, size) == offsetof(LazyFlags, op) + 1 &&
                offsetof(LazyFlags, carry_in) == offsetof(LazyFlags, op) + 2 &&
                offsetof(LazyFlags, carry_in) + 2 <= sizeof(LazyFlags) && sizeof(FlagOp) == 1);
  const uint32_t op_and_size = static_cast<uint32_t>(op) | uint32_t{size} << 8;
  if (keep_carry) {
    code_.mov(field(layout_.flags_op, 2), static_cast<uint16_t>(op_and_size));
  } else {
    code_.mov(field(layout_.flags_op, 4), op_and_size);  // carry_in 0, a padding byte
  }
  known_flags_ = KnownFlags{op, size};
}

}  // namespace lamina::cpu::x86::jit
