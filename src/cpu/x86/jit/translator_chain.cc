// Inline block chaining: at the end of a block that ran to its end (and at the side exit of
// each Jcc it runs on past), an exit site
// (exit_site.h) whose patched direct jump goes straight into the successor's body after the
// run loop's between-blocks checks (the shared exit check); when its record does not match,
// the chaining stub finds the successor through this block's two links or the jump cache
// (indirect exits), else asks JitEngine::chain, which patches the record. A link's body and a
// jump cache entry are only used while the BlockCache's chaining generation (or its global
// generation, for a successor on a global page) is the one they were recorded under: those
// move on every event that can make them wrong (a dropped block, TLB flush or CR3 load, mode
// or CS change, code cache flush, another vCPU's write to a code page), so no invalidation
// ever has to find and unpatch code.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>

#include "cpu/x86/jit/exit_site.h"
#include "cpu/x86/jit/translator.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

constexpr uint32_t kTrapFlags = 0x100 | 0x10000;  // TF, RF (SDM vol. 3A, 2.3)

}  // namespace

void Translator::emit_chain(const Block& block, bool same_page, uint32_t count) {
  // An exit site (exit_site.h): the exit check, then the jump that JitEngine::chain patches to
  // the successor's body (first to the stub's site entry). Its code is the same for every
  // block but for the count and the record's displacements: a copy of the template
  // assemble_exit_site made, filled in. RIP is in rcx.
  const ExitSiteTemplate& site = exit_sites_[exit_site_index(count > 127, same_page)];
  const size_t start = code_.getSize();
  emit_bytes(site.bytes);
  code_.rewrite(start + site.count_end - site.count_size, count, site.count_size);
  code_.align(8);
  const size_t at = code_.getSize();
  code_.rewrite(start + site.lea_end - 4, at - (start + site.lea_end), 4);
  // The site's code is a few dozen bytes: its fields lie less than 128 bytes before the record.
  const auto back = [&](size_t field) {
    const auto offset = static_cast<int64_t>(start + field) - static_cast<int64_t>(at);
    if (offset != static_cast<int8_t>(offset)) throw Xbyak::Error(Xbyak::ERR_INTERNAL);
    return static_cast<int8_t>(offset);
  };
  const ExitSite record{
      .chain_entry = chain_stub_,
      .source = const_cast<Block*>(&block),
      .count = count,
      .jump_offset = back(site.jump_field),
      .generation_offset = back(site.generation_field),
      .same_page = same_page,
  };
  emit_bytes({reinterpret_cast<const uint8_t*>(&record), sizeof(record)});
}

void Translator::emit_exit_rip() {
  // RIP after the block's last instruction into rcx and CpuState (one load, no
  // read-modify-write of RIP that the exit check would load again).
  code_.mov(rcx, field(layout_.rip, 8));
  if (pending_rip_ != 0) {
    rip_flushed_ = true;
    code_.add(rcx, static_cast<uint32_t>(pending_rip_));
    code_.mov(field(layout_.rip, 8), rcx);
    pending_rip_ = 0;
  }
}

bool Translator::target_in_start_page(int64_t target) const {
  // 64-bit code: every RIP this block runs at has the page offset of its physical address
  // (blocks are keyed by it), and the page it starts in is canonical (code was fetched from
  // it), so a target `target` bytes from the block's start that stays in that page is
  // canonical whatever RIP the block runs at.
  if (mode_ != CodeMode::k64) return false;
  const int64_t offset = static_cast<int64_t>(block_->physical & 0xfff) + target;
  return offset >= 0 && offset < 4096;
}

bool Translator::same_page_exit(int64_t target) const {
  // The whole block in one page and the target in it (target_in_start_page): JitEngine::chain
  // may then record the patch under the global generation (exit_site.h).
  return target_in_start_page(target) && (block_->physical & 0xfff) + block_bytes_ <= 4096;
}

void Translator::assemble_exit_site(bool wide, bool same_page) {
  ExitSiteTemplate& site = exit_sites_[exit_site_index(wide, same_page)];
  code_.reset();
  // The check inline: a handler that sets what the run loop must see (halted, an interrupt
  // shadow, TF, armed breakpoints, stop_block, event_delivered) ends the block through its
  // handler exit (handler_stub), and a posted request ends the budget, so the budget is all an
  // exit must look at besides its record. The hot way from block to block is then
  // straight-line code (no taken branch) and a direct jump that writes nothing but the
  // retired count: instruction_rip and running_block are written where they are read (the
  // handler stub, the chaining stub on the way out). Whatever says no goes to one tail, the
  // stub's site entry, which looks again at what it was (chain_stub).
  ForwardTarget out;
  // The record holds under the generation this load reads: BlockCache's, or its global one
  // for a patch that holds in every address space (JitEngine::patch points the displacement
  // at the one the patch was made in). The displacement must be a disp32 to take either.
  // What it is compared with, and the RIP, are immediates the patch writes (exit_site.h),
  // assembled with a placeholder that needs the 64-bit form and set to "not patched" below.
  constexpr uint64_t kPlaceholder = 0x8000000000000001;
  code_.mov(rdx, field(layout_.generation, 8));
  site.generation_field = code_.getSize() - 4;
  int32_t displacement = 0;
  std::memcpy(&displacement, code_.getCode() + site.generation_field, 4);
  if (displacement != layout_.generation) throw Xbyak::Error(Xbyak::ERR_INTERNAL);
  code_.mov(rax, kPlaceholder);
  if (code_.getSize() - 8 != site.generation_field + kExitGenerationValueAt) throw Xbyak::Error(Xbyak::ERR_INTERNAL);
  code_.cmp(rdx, rax);
  jump_to(out, Jump::kNotEqual, false);
  // RIP is in rcx already (emit_exit_rip, emit_branch). A same-page exit's successor is the
  // same at every RIP its block runs at (exit_site.h), so it compares none.
  if (!same_page) {
    code_.mov(rax, kPlaceholder);
    if (code_.getSize() - 8 != site.generation_field + kExitRipValueAt) throw Xbyak::Error(Xbyak::ERR_INTERNAL);
    code_.cmp(rcx, rax);
    jump_to(out, Jump::kNotEqual, false);
  }
  // A count of 1 takes the imm8 form of the ADD, 128 the imm32 one (emit_chain writes it).
  emit_budget_check(wide ? 128u : 1u, out, false);
  site.count_end = count_end_;
  site.count_size = wide ? 4 : 1;
  code_.mov(field(layout_.retired, 8), rax);
  // Not patched yet: to the stub, which sees the stale record.
  jump_to(out, Jump::kAlways, true);
  site.jump_field = code_.getSize() - 4;
  bind(out);
  code_.lea(rdi, ptr[rip]);
  site.lea_end = code_.getSize();
  code_.jmp(qword[rdi + offsetof(ExitSite, chain_entry)]);
  site.bytes.assign(code_.getCode(), code_.getCode() + code_.getSize());
  // Not patched: generation 0 is never one, RIP ~0 never canonical.
  const auto set = [&](int at, uint64_t value) {
    std::memcpy(site.bytes.data() + site.generation_field + static_cast<size_t>(at), &value, sizeof(value));
  };
  set(kExitGenerationValueAt, 0);
  if (!same_page) set(kExitRipValueAt, ~uint64_t{0});
}

std::span<const std::byte> Translator::chain_stub(int32_t links_offset) {
  code_.reset();
  ForwardTarget slow, call_chain, enter;
  Xbyak::Label to_loop;
  // Jumped to from an exit site whose check said no, in the translated code's frame: rdi the
  // site's record. r8/r9 keep the block and its instruction count (nothing is cached in host
  // registers any more).
  code_.mov(rax, reinterpret_cast<uint64_t>(chain_.stub_entries));
  code_.inc(qword[rax]);
  code_.mov(r8, qword[rdi + offsetof(ExitSite, source)]);
  code_.mov(r9d, dword[rdi + offsetof(ExitSite, count)]);
  // The exit's generation check again, as it made it (the load's displacement, which the
  // patch pointed at the generation it was made in): a record it found stale (or not patched
  // yet) is looked at and patched by the engine (rcx the record), unless it said it never
  // would (look_up_only). A current one said no for another RIP or the budget: the links and
  // the jump cache, as for an indirect exit.
  ForwardTarget record_current;
  code_.mov(rcx, rdi);
  code_.movsx(rsi, byte[rdi + offsetof(ExitSite, generation_offset)]);
  code_.movsxd(rax, dword[rdi + rsi]);
  code_.mov(rdx, qword[rbx + rax]);
  code_.cmp(rdx, qword[rdi + rsi + kExitGenerationValueAt]);
  jump_to(record_current, Jump::kEqual, false);
  code_.cmp(byte[rdi + offsetof(ExitSite, look_up_only)], 0);
  jump_to(call_chain, Jump::kEqual, true);
  bind(record_current);
  // What else the run loop looks at between blocks only a handler sets, and the handler stub
  // ends the block then: the budget (which a posted request ends too) is all that is left.
  emit_budget_check(r9, slow);
  // rcx: RIP, rdx: the generation, r10: the global generation (BlockCache::current); the
  // hit leaves the body in rdi.
  code_.mov(rcx, field(layout_.rip, 8));
  code_.mov(rdx, field(layout_.generation, 8));
  code_.mov(r10, field(layout_.global_generation, 8));
  for (int32_t link = 0; link < 2; ++link) {
    ForwardTarget next, current;
    code_.lea(rsi, ptr[r8 + links_offset + link * static_cast<int32_t>(sizeof(Block::Link))]);
    code_.cmp(rcx, qword[rsi + offsetof(Block::Link, rip)]);
    jump_to(next, Jump::kNotEqual, false);
    code_.cmp(rdx, qword[rsi + offsetof(Block::Link, generation)]);
    jump_to(current, Jump::kEqual, false);
    code_.cmp(r10, qword[rsi + offsetof(Block::Link, generation)]);
    jump_to(next, Jump::kNotEqual, false);
    bind(current);
    code_.mov(rdi, qword[rsi + offsetof(Block::Link, body)]);
    code_.test(rdi, rdi);
    jump_to(next, Jump::kEqual, false);
    jump_to(enter, Jump::kAlways, true);
    bind(next);
  }
  // JumpCache::index_of(rip) * sizeof(Entry).
  code_.mov(rsi, rcx);
  code_.shr(rsi, 12);
  code_.xor_(esi, ecx);
  code_.and_(esi, JumpCache::kEntries - 1);
  code_.shl(esi, 5);
  code_.mov(rdi, reinterpret_cast<uint64_t>(chain_.jump_cache));
  code_.add(rsi, rdi);
  code_.cmp(rcx, qword[rsi + offsetof(JumpCache::Entry, rip)]);
  jump_to(slow, Jump::kNotEqual, true);
  ForwardTarget entry_current;
  code_.cmp(rdx, qword[rsi + offsetof(JumpCache::Entry, generation)]);
  jump_to(entry_current, Jump::kEqual, false);
  code_.cmp(r10, qword[rsi + offsetof(JumpCache::Entry, generation)]);
  jump_to(slow, Jump::kNotEqual, true);
  bind(entry_current);
  code_.mov(rdi, qword[rsi + offsetof(JumpCache::Entry, body)]);
  // What JitEngine::chain does on the way into the successor, as a patched exit does.
  bind(enter);
  code_.mov(field(layout_.retired, 8), rax);
  code_.jmp(rdi);
  // No inline successor: the engine looks (and fills the link or jump cache for next time);
  // with a record in rcx (call_chain) it patches that too. The count waits in the frame's
  // spare slot across the call. The finished block is the running one for the run loop
  // when the engine finds nothing (JitEngine::last_block).
  bind(slow);
  code_.xor_(ecx, ecx);
  bind(call_chain);
  emit_mxcsr_switch_out(0, eax);  // C++ runs with the host's MXCSR
  code_.mov(field(layout_.running_block, 8), r8);
  code_.mov(dword[rsp], r9d);
  code_.mov(rdi, reinterpret_cast<uint64_t>(chain_.context));
  code_.mov(rsi, r8);
  code_.mov(edx, r9d);
  code_.mov(rax, reinterpret_cast<uint64_t>(chain_.function));
  code_.call(rax);
  code_.test(rax, rax);
  code_.jz(to_loop);
  code_.jmp(rax);
  code_.L(to_loop);
  code_.mov(eax, dword[rsp]);
  emit_epilogue();
  return {reinterpret_cast<const std::byte*>(code_.getCode()), code_.getSize()};
}

bool Translator::branches_to_own_start(const Instruction& in, size_t index) const {
  // The target is RIP after the branch plus the displacement; RIP after the last instruction
  // is the block's start plus its length. Only without handler calls: nothing but a handler
  // changes the mode, the mapping of this code, TF or the other checked-path conditions, and
  // a store that drops this block stops it before it gets here.
  return index + 1 == block_->instructions.size() && !called_handlers_ &&
         static_cast<int64_t>(in.immediate) == -static_cast<int64_t>(block_bytes_);
}

bool Translator::keeps_registers_over_back_edge(const Instruction& in, size_t index) const {
  const uint16_t op = in.opcode;
  const bool conditional = (op >= 0x70 && op <= 0x7f) || (op >= 0x180 && op <= 0x18f);
  const bool direct = conditional || op == 0xe9 || op == 0xeb;
  return direct && !in.lock && preload_ && rip_on_stack_ && !rip_flushed_ && *preload_ == current_mapping() &&
         branches_to_own_start(in, index) && (!conditional || host_flags_available(static_cast<uint8_t>(op & 15)));
}

bool Translator::defers_step_flags() const {
  const auto& instructions = block_->instructions;
  if (!caching_ || !preload_ || !rip_on_stack_ || rip_flushed_ || current_index_ + 2 != instructions.size()) return false;
  if (!known_flags_ || known_flags_->op != FlagOp::kLogic) return false;
  const Instruction& branch = instructions.back();
  const uint16_t op = branch.opcode;
  const bool conditional = (op >= 0x70 && op <= 0x7f) || (op >= 0x180 && op <= 0x18f);
  // Jcc on CF (B, AE, BE, A) would need the kept carry in the host flags.
  const uint8_t pair = (op & 15) >> 1;
  if (!conditional || branch.lock || pair == 1 || pair == 3) return false;
  if (!branches_to_own_start(branch, instructions.size() - 1)) return false;
  // The flags stay stale in CpuState over the back edge: the body must overwrite every one
  // before anything reads it.
  return flags_live_at_start_ == 0;
}

void Translator::store_deferred_step_flags() {
  if (!deferred_step_) return;
  const DeferredStep& step = *deferred_step_;
  // As emit_step stores them: result, the value before, 1, the operation and size; CF clear.
  const Xbyak::Reg64 value = cached_register(step.index, true);
  code_.mov(rdx, value);
  zero_extend(rdx, step.size);
  code_.mov(rax, rdx);
  if (step.increment) {
    code_.sub(rax, 1);
  } else {
    code_.add(rax, 1);
  }
  zero_extend(rax, step.size);
  code_.mov(field(layout_.flags_result, 8), rdx);
  code_.mov(field(layout_.flags_first, 8), rax);
  code_.mov(field(layout_.flags_second, 8), 1);
  code_.mov(field(layout_.flags_op, 1), static_cast<uint8_t>(step.increment ? FlagOp::kInc : FlagOp::kDec));
  code_.mov(field(layout_.flags_size, 1), step.size);
  code_.mov(field(layout_.flags_carry, 1), 0);
}

void Translator::emit_handler_state_check(ForwardTarget& bail) {
  // What a handler may have set (HLT, INIT, STI/MOV SS, MOV DR, POPF/IRET setting TF or RF):
  // each sends the vCPU to the run loop instead of into the next block.
  code_.cmp(field(layout_.halted, 1), 0);
  jump_to(bail, Jump::kNotEqual, true);
  code_.cmp(field(layout_.waiting_for_startup, 1), 0);
  jump_to(bail, Jump::kNotEqual, true);
  code_.cmp(field(layout_.interrupt_shadow, 1), 0);
  jump_to(bail, Jump::kNotEqual, true);
  code_.cmp(field(layout_.breakpoints_armed, 1), 0);
  jump_to(bail, Jump::kNotEqual, true);
  code_.test(field(layout_.rflags, 4), kTrapFlags);
  jump_to(bail, Jump::kNotEqual, true);
}

void Translator::emit_budget_check(std::variant<Xbyak::Reg64, uint32_t> count, ForwardTarget& stop, bool near) {
  // The budget (Cpu::run's instruction limit): rax is the retired count after the block. Any
  // request (interrupt, kick, INIT, a code write...) sets the limit to 0 and so goes back to
  // the run loop too (CpuCore::post_requests).
  code_.mov(rax, field(layout_.retired, 8));
  if (const auto* reg = std::get_if<Xbyak::Reg64>(&count)) {
    code_.add(rax, *reg);
  } else {
    code_.add(rax, std::get<uint32_t>(count));
  }
  count_end_ = code_.getSize();
  code_.cmp(rax, field(layout_.retired_limit, 8));
  jump_to(stop, Jump::kAboveOrEqual, near);
}

void Translator::emit_self_loop() {
  ForwardTarget stop;
  emit_budget_check(static_cast<uint32_t>(block_->instructions.size()), stop);
  // instruction_rip is left alone: nothing reads it before the next handler call, a chain or
  // the run loop writes it.
  code_.mov(field(layout_.retired, 8), rax);
  // The registers were written back before the branch but are still in their host
  // registers: when they sit where this pass preloaded them (and no C call since has
  // clobbered a caller-saved one), the next round starts with them in place.
  const bool clobbered = branch_calls_out_ && holds_caller_saved(mapping_before_last_);
  if (preload_ && *preload_ == mapping_before_last_ && !clobbered) {
    emit_backward_jump(loop_entry_offset_);
  } else {
    emit_backward_jump(body_offset_);
    const bool holds_any = std::any_of(mapping_before_last_.begin(), mapping_before_last_.end(),
                                       [](int8_t guest) { return guest >= 0; });
    if (!preload_ && !clobbered && holds_any) self_loop_mapping_ = mapping_before_last_;
  }
  bind(stop);
}

}  // namespace lamina::cpu::x86::jit
