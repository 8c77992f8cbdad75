#pragma once
// Translator: turns one decoded Block into host x86-64 code that does exactly what Cpu::run's
// handler loop does for it. Hot integer instructions (MOV, ADD/SUB/AND/OR/XOR/CMP/TEST, INC/DEC,
// LEA, shifts by an immediate, IMUL, MOVZX/MOVSX, Jcc/JMP; in 64-bit mode also loads, stores,
// PUSH/POP, CALL/RET, read-modify-write ALU forms and JMP/CALL r/m64 through the soft TLB;
// the forms of translator_data.cc and the other translator_*.cc files, chosen by the
// LAMINA_JIT_PROFILE counts: shifts by CL, DIV, atomics, SSE float, stack and system forms) are
// generated inline (a run of stack accesses with one TLB lookup: translator_stack_run.cc), keeping guest registers in host registers across register-only and memory
// forms (translator_registers.cc) and storing the flags as the handlers do wherever something
// may read them; every other instruction, and the rare path of an inlined one (a TLB miss,
// MMIO, a branch target that faults), calls its interpreter handler through runtime.h's
// noexcept thunk with every register in CpuState.
//
// The code is one function `uint32_t (CpuCore*)`, position independent (calls go through
// registers), so it runs wherever CodeCache puts it. It returns how many instructions
// completed, with kFaulted set when the next one raised an exception (kept in the ExitRecord).
// Guest RIP is advanced lazily across inlined instructions and written before any handler runs,
// so a handler or a fault sees the interpreter's RIP and instruction_rip.
//
// Ownership: borrows the core and the exit record (both outlive it); owns its scratch buffer.
// Thread-safety: one per vCPU, used only by its thread.

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <variant>
#include <vector>

#include <xbyak/xbyak.h>

#include "cpu/x86/core.h"
#include "cpu/x86/jit/jump_cache.h"
#include "cpu/x86/jit/profile.h"
#include "cpu/x86/jit/runtime.h"

namespace lamina::cpu::x86::jit {

// An SSE form translator_simd.cc runs inline, and how.
enum class SimdKind : uint8_t {
  kNone,
  kLoad,             // xmm <- xmm/m (16 bytes, or MOVQ's 8 with the upper half cleared)
  kStore,            // xmm/m <- xmm
  kMoveFromGeneral,  // MOVD/MOVQ xmm, r/m32|64
  kMoveToGeneral,    // MOVD/MOVQ r/m32|64, xmm
  kMoveMask,         // PMOVMSKB r32, xmm
  kBinary,           // xmm op= xmm/m128 (imm8), the host's same instruction
  kShiftImmediate,   // PSxx xmm, imm8
  kScalarMove,       // MOVSS/MOVSD: a register's low lane merged, memory's zero-extended
  kStringCompare,    // PCMPISTRI (ECX) / PCMPISTRM (XMM0), their flags materialized
};
struct SimdForm {
  SimdKind kind = SimdKind::kNone;
  uint8_t prefix = 0, opcode = 0;
  uint8_t escape = 0;      // the three-byte maps' second byte (0x38, 0x3a); 0: the 0F map
  uint8_t size = 0;        // memory operand bytes
  bool aligned = false;    // a 16-byte memory operand must be 16-byte aligned
  bool immediate = false;  // an imm8 follows (PSHUFD and friends)
};

class Translator {
 public:
  static constexpr uint32_t kFaulted = 0x10000;
  using Code = uint32_t (*)(CpuCore* core);

  // Where translated code asks for its successor when its inline lookups (the block's link
  // bodies, the jump cache) miss: `function(context, block, completed, site)` returns the body
  // of the next translation to jump to, or null to return; with a `site` (an ExitSite whose
  // generation is stale) it patches that exit to the body. `jump_cache` is the engine's.
  struct Chain {
    void* context;
    const void* function;
    const JumpCache::Entry* jump_cache;
    uint64_t* stub_entries;  // counts the exits that took the chaining stub
  };

  Translator(CpuCore& core, ExitRecord& record, Chain chain);
  // Where the body of every translation starts (after the prologue, which is the same for
  // all): chained blocks jump there, keeping the first block's frame.
  size_t body_offset() const { return body_offset_; }

  // The chaining stub every block's end jumps to (one per vCPU, installed by the engine where
  // it stays; set_chain_stub tells the translator where): it makes the run loop's
  // between-blocks check (the budget, which a posted request ends too: the checked path's
  // conditions end their block in the handler stub) and jumps
  // straight into the successor's body found through the block's links or the jump cache;
  // otherwise it calls Chain::function, which may still find one, or returns to the run loop
  // (with the finished block as the core's running_block).
  // `links_offset` is where Block::links lie in a Block. Valid until the next call.
  // Entered from an exit site (exit_site.h) with its record in rdi and the exit check's answer
  // in eax.
  std::span<const std::byte> chain_stub(int32_t links_offset);
  void set_chain_stub(const void* stub) { chain_stub_ = stub; }
  // The stub every handler call goes through (sets the core's running_block to the calling
  // block, calls lamina_jit_call_handler with the core and exit record; returns 0 to go on, 1 raised, 2 the block must end: stop_block, or state the
  // run loop must see before the next block, emit_handler_state_check). Valid until the next
  // call.
  std::span<const std::byte> handler_stub();
  void set_handler_stub(const void* stub) { handler_stub_ = stub; }
  // translator_simd.cc: the SSE form `in` is, when it is one inlined in 64-bit mode.
  static SimdForm simd_form(const Instruction& in);
  // With a profile, every handler call first counts itself there (profile.h).
  void set_profile(JitProfile* profile) { profile_ = profile; }

  // The host code for `block`, valid until the next call; empty when it cannot be generated
  // (the block then runs on the interpreter).
  std::span<const std::byte> translate(const Block& block);

 private:
  // A host register that caches a guest one (general registers, translator_registers.cc; XMM
  // registers, translator_xmm.cc).
  struct CachedRegister {
    int8_t guest = -1;  // the guest register held, or -1
    bool dirty = false;
    uint32_t used = 0;
  };
  // A free slot of `slots`, else the least recently used one.
  static size_t slot_to_take(std::span<const CachedRegister> slots);
  // Which guest register each host register slot holds (-1: none), with kMappedDirty when it
  // differs from CpuState.
  using RegisterMapping = std::array<int8_t, 9>;
  static constexpr int8_t kMappedGuest = 0x1f, kMappedDirty = 0x20;
  // Offsets of the fields generated code touches, from the core it runs on.
  struct Layout {
    int32_t rip, instruction_rip, stop_block, gpr, cs_limit;
    int32_t flags_result, flags_first, flags_second, flags_op, flags_size, flags_carry;
    int32_t cpl, tlb_table, effective_base, flags_materialized;
    // The between-blocks checks of inline chaining (translator_chain.cc).
    int32_t retired, retired_limit, generation, global_generation, running_block, event_delivered;
    int32_t halted, waiting_for_startup, interrupt_shadow, rflags, breakpoints_armed;
    // translator_simd.cc, translator_sse_float.cc
    int32_t cr0, cr4, xmm, mxcsr;
    // translator_stack.cc: segment[0].selector, and the distance between two segments.
    int32_t segment_selectors, segment_stride;
  };
  // What the lazy flags hold when the block reaches this point, if an inlined instruction of
  // this block set them (a handler, or the code before the block, leaves them unknown).
  struct KnownFlags {
    FlagOp op;
    uint8_t size;
  };

  // A forward jump's condition: the Jcc condition code (SDM vol. 2A, Jcc: 0x70 + cc), or an
  // unconditional JMP.
  enum class Jump : uint8_t { kAboveOrEqual = 0x3, kEqual = 0x4, kNotEqual = 0x5, kAlways = 0x10 };
  // A forward jump target patched by hand: the jumps to it record where their displacement
  // ends, and bind() fills them in. An Xbyak::Label allocates hash-map nodes for its
  // definition and for each use before it, a large part of translation time for the targets
  // every block has (exit sites, handler exits). Holds at most kJumps jumps.
  struct ForwardTarget {
    static constexpr size_t kJumps = 8;
    std::array<uint32_t, kJumps> ends{};
    std::array<uint8_t, kJumps> sizes{};
    size_t count = 0;
  };
  // Emits the jump with a zero displacement (rel32 when `near`, else rel8) and returns the
  // offset just past it; patch_jump points it at the current position.
  size_t emit_forward_jump(Jump condition, bool near);
  void patch_jump(size_t end, uint8_t size);
  void jump_to(ForwardTarget& target, Jump condition, bool near);
  void bind(ForwardTarget& target);

  // One translation of the block (translate() makes a second for a loop of one block).
  void emit_pass(const Block& block);
  void emit_block(const Block& block);
  // Instruction `index` of the block as emit_block's loop emits it (register-only, a cached
  // memory form, another inline form or its handler).
  void emit_instruction(const Block& block, size_t index);
  // translator_liveness.cc: which instructions run as register-only inline code (no memory
  // access, no handler, no way to fault), and which of them store their lazy flags: the
  // liveness of each of the six status flags, backwards from the block's end (where all are
  // live; a handler, a fault, a memory form, whose slow path may fault, and any form not known
  // there read all of them).
  bool register_only(const Instruction& in) const;
  static bool overwrites_flags(const Instruction& in);
  static bool leaves_flags(const Instruction& in);
  // What an instruction does to the flags (bit masks of CF PF AF ZF SF OF): the bits it sets
  // when it stores its flags, those it always overwrites, those it always reads, and those it
  // keeps from the flags before (reads) only when it stores its own.
  struct FlagEffect {
    uint8_t writes, kills, reads, merges;
  };
  FlagEffect flag_effect(const Instruction& in, bool carry_known_clear) const;
  // Once per block, before its passes: flag_liveness_ and flags_live_at_start_.
  void compute_flag_liveness(const Block& block);
  // Whether instruction `index` must store its flags: a bit it writes is live after it.
  bool flags_needed(size_t index) const;
  struct FlagLiveness {
    bool stores = false;             // flags_needed
    bool carry_known_clear = false;  // INC/DEC after a logic operation: CF clear, not read
  };
  // Per instruction of the block being translated (a vector reused from block to block).
  std::vector<FlagLiveness> flag_liveness_;
  uint8_t flags_live_at_start_ = 0;  // the bits some instruction reads before all are overwritten
  // Forms of translator_data.cc: the hint NOPs (0F 0D, 0F 18-1F: no memory access), ADC/SBB of
  // registers and immediates, and shifts/rotates of a register run as the host instruction
  // alone (register-only when nothing reads their flags).
  static bool hint_nop(const Instruction& in);
  static bool carry_alu(const Instruction& in);
  static bool shift_without_flags(const Instruction& in);
  // The register-only emitters; false when `in` is not one of their forms.
  bool emit_register_only(const Instruction& in);
  // translator_chain.cc: the end of a block that ran to its end (RIP in CpuState and in rcx,
  // registers written back): an exit site; `same_page`: a direct exit within the block's page
  // (same_page_exit); `count`: the instructions completed on this way out (the block's, or
  // those up to a mid-block Jcc for its side exit).
  void emit_chain(const Block& block, bool same_page, uint32_t count);
  // rcx = RIP past the block (the pending bytes added), stored to CpuState.
  void emit_exit_rip();
  // Whether RIP at the block's start + `target` stays in the start's page in 64-bit code
  // (then canonical for every RIP the block runs at), and whether moreover the whole block
  // lies in that page (a same-page exit site).
  bool target_in_start_page(int64_t target) const;
  bool same_page_exit(int64_t target) const;
  // Assembles the template of an exit site (emit_chain's) in code_: for a count above 127
  // (`wide`), for a same-page exit (no RIP compare).
  void assemble_exit_site(bool wide, bool same_page);
  static size_t exit_site_index(bool wide, bool same_page) { return (wide ? 1 : 0) + (same_page ? 2 : 0); }
  // The frame every translation opens with (rbx: the core; the callee-saved registers).
  void emit_prologue();
  // Returns from translated code (the frame is the same in every body and the stub).
  void emit_epilogue();
  // A JMP rel32 back to `target`, an offset already emitted.
  void emit_backward_jump(size_t target);
  // Appends bytes assembled earlier (one copy, not Xbyak's byte-at-a-time db).
  void emit_bytes(std::span<const uint8_t> bytes);
  // A final branch whose target is this block's own start (a loop of one block), with no
  // handler call in the block: the budget check, then straight back to the body. Falls
  // through (RIP already the target) when it says stop.
  void emit_self_loop();
  // The between-blocks check (the chaining stub, the exit sites, a one-block loop's back
  // edge): rax = the retired count after `count` more instructions (a register or an
  // immediate); jumps to `stop` when that reaches the core's retired_limit, which a posted
  // request sets to 0 (CpuCore::post_requests). Clobbers only rax; `count_end_` is where the
  // immediate count ends.
  void emit_budget_check(std::variant<Xbyak::Reg64, uint32_t> count, ForwardTarget& stop, bool near = true);
  // Jumps to `bail` when the vCPU must go back to the run loop for state a handler set
  // (halted, waiting for SIPI, an interrupt shadow, armed breakpoints, TF/RF).
  void emit_handler_state_check(ForwardTarget& bail);
  bool branches_to_own_start(const Instruction& in, size_t index) const;
  // Whether the final branch `in` may keep the cached registers over the back edge: a second
  // pass whose registers sit where it preloaded them, and no C call in the branch.
  bool keeps_registers_over_back_edge(const Instruction& in, size_t index) const;
  // Whether the current INC/DEC, the one before a one-block loop's final Jcc, may leave its
  // flags unstored until the loop is left: second pass, CF known clear, the Jcc reads no CF,
  // and nothing in the body reads the flags before overwriting them all.
  bool defers_step_flags() const;
  // Stores the deferred INC/DEC's lazy flags as store_flags would have (on a way out).
  void store_deferred_step_flags();
  // One instruction inline; false when it is not one the translator inlines.
  bool emit_inline(const Instruction& in, size_t index);
  void emit_handler_call(const Instruction& in, size_t index);
  // The handler call of an inlined instruction's rare path, RIP already past it.
  void emit_handler_call_after_advance(const Instruction& in, size_t index);
  void emit_call_and_checks(const Instruction& in, size_t index, int32_t rip_delta);
  // Where a handler call at `index` goes when the handler stub returns nonzero: `jump_end`
  // is the end of its JNZ rel32, patched when the exit is emitted after the block.
  struct HandlerExit {
    size_t jump_end;
    uint32_t index;
  };
  // Cleared by every pass; a vector, so its storage is reused from block to block.
  std::vector<HandlerExit> handler_exits_;

  // translator_integer.cc
  bool emit_move(const Instruction& in);
  // The guest register `index` (`size` bytes) = `value`, zero-extended as a MOV of that size.
  void move_immediate(uint8_t index, uint8_t size, bool rex, uint64_t value);
  bool emit_alu(const Instruction& in);
  bool emit_step(const Instruction& in);
  bool emit_lea(const Instruction& in);
  // translator_data.cc
  bool emit_data(const Instruction& in);
  bool emit_negate(const Instruction& in);
  bool emit_shift_without_flags(const Instruction& in);
  // ROL/ROR of a register by an immediate whose flags are read (outside register-only code):
  // CF and OF replaced in the materialized flags, as shift_handlers.cc's update_flags does.
  bool emit_rotate(const Instruction& in);
  bool emit_carry_alu(const Instruction& in);
  // esi = CF as the lazy flags hold it (from the known producer, else a C call).
  void emit_carry_into_esi();
  // SETcc and CMOVcc of registers (outside register-only code: may call lamina_jit_condition).
  // CMOVcc also from memory in 64-bit mode (read whether or not it moves, as the handler does).
  bool emit_condition_forms(const Instruction& in, size_t index);
  // translator_shift.cc: SHL/SHR/SAR by an immediate and IMUL r, r/m[, imm] on registers,
  // whose flags the handlers store materialized.
  bool emit_shift(const Instruction& in);
  bool emit_multiply(const Instruction& in);
  // SHL/SHR/SAR by CL, of memory by 1 or an immediate, SHLD/SHRD (32/64-bit), with their
  // flags when something of this block may see them.
  bool emit_shift_count_forms(const Instruction& in, size_t index);
  // How OF of a shift is built (store_shift_flags): SHL, SHR, SAR, SHLD/SHRD.
  enum class ShiftFlags : uint8_t { kLeft, kRight, kArithmetic, kDouble };
  // After the host shift (its CF live): the materialized flags as set_logic_flags stores them,
  // from rax (the operand before) and rdx (the result).
  void store_shift_flags(ShiftFlags kind, uint8_t size);
  // rax = the shifted operand (a register, or [rdi] for memory); the result in rdx stored back.
  void load_shift_operand(const Instruction& in, uint8_t size);
  void store_shift_result(const Instruction& in, uint8_t size);
  // translator_divide.cc: DIV/IDIV r/m32|64; #DE cases (zero divisor, a quotient that does
  // not fit, IDIV's unusual dividends) run the handler.
  bool emit_divide(const Instruction& in, size_t index);
  // translator_atomic.cc: XCHG, CMPXCHG and XADD with a memory operand (64-bit mode), LOCK or
  // not, as host atomics on the TLB's host pointer (aligned operands only).
  bool emit_atomic(const Instruction& in, size_t index);
  // translator_flags.cc: the lazy flags of an unknown producer, inline when they are stored
  // materialized, else through runtime.h (clobbers the caller-saved registers).
  // Host flags for `condition` from the materialized flags in rax (clobbers rax, rcx).
  void emit_sahf_flags(uint8_t condition);
  // rax = the materialized flags, or a jump to `other` when the lazy flags are not stored so.
  void emit_materialized_or(const Xbyak::Label& other);
  // eax = `condition` (0/1), tested (ZF clear when it holds).
  void emit_unknown_condition(uint8_t condition);
  // eax = CF.
  void emit_unknown_carry();
  // rax = LazyFlags::materialize().
  void emit_unknown_materialized_flags();
  // The host flags as the stored operation left CF, ZF, SF and OF: SUB/CMP and ADD (and INC/DEC
  // when `steps`, all but CF) redone on their operands at the top of 64-bit registers, a logic
  // operation's TEST of its result (then to `logic_done` when given); any other to `other`.
  void emit_stored_operation_in_host_flags(const Xbyak::Label& other, bool steps, const Xbyak::Label* logic_done);
  // rax, rdx = the stored fields `first`, `second` shifted left by 64 - 8 * the stored size.
  void emit_operands_at_top(int32_t first, int32_t second);
  // cl = 64 - 8 * the stored operation's size.
  void emit_operand_shift_into_cl();
  // SETcc of `condition` into `to` (translator_data.cc).
  void set_condition(uint8_t condition, const Xbyak::Reg8& to);
  // translator_stack.cc: PUSH imm, PUSH r/m64, LEAVE, MOV r, Sreg (64-bit mode).
  bool emit_stack_forms(const Instruction& in, size_t index);
  // translator_system.cc: RDTSC, CLI and PUSHF (64-bit mode).
  bool emit_system(const Instruction& in, size_t index);
  // translator_string.cc: REP MOVS and REP STOS forwards within pages (64-bit mode).
  bool emit_repeat_string(const Instruction& in, size_t index);
  // ecx |= SF, ZF, PF of the host flags (as set by a TEST of the result); stores ecx as the
  // materialized flags.
  void store_materialized_flags();
  void emit_alu_operation(int operation, uint8_t size, bool writes, uint8_t destination,
                          bool destination_rex);
  // With its flags dead and registers cached: the operation straight on the host registers
  // (no operands or flags stored). False for forms it cannot do so (AH-BH, a 64-bit
  // immediate that does not fit 32 bits); the caller then emits the general form.
  bool emit_alu_on_host(int operation, uint8_t size, uint8_t destination, bool destination_rex,
                        uint8_t source, std::optional<uint64_t> immediate);
  // translator_memory.cc (64-bit mode: the soft TLB's fast path inline, everything else —
  // a miss, MMIO, a page crossing, a fault — through the handler). The forms below down to
  // emit_stack keep the cached guest registers (emit_cached_memory); their slow paths are
  // emitted out of line after the block's end (emit_deferred_slow_paths).
  bool emit_cached_memory(const Instruction& in, size_t index);
  bool emit_memory_move(const Instruction& in, size_t index);
  // ALU forms that only read memory (reg op= m; CMP/TEST m, reg/imm) in 64-bit mode.
  bool emit_alu_memory(const Instruction& in, size_t index);
  // MOVZX/MOVSX from a register, or (64-bit mode) from memory through the TLB.
  bool emit_extend_register(const Instruction& in);
  // ADD/OR/AND/SUB/XOR m, reg/imm and INC/DEC m (64-bit mode), through the TLB's write slot.
  bool emit_alu_memory_write(const Instruction& in, size_t index);
  // JMP/CALL r/m64 (64-bit mode).
  bool emit_indirect_branch(const Instruction& in, size_t index);
  bool emit_extend(const Instruction& in, size_t index);
  bool emit_stack(const Instruction& in, size_t index);
  // CALL rel and RET (no immediate) with 64-bit operands: the return address through the TLB,
  // RSP in its cached register.
  bool emit_call_return(const Instruction& in, size_t index);
  // translator_stack_run.cc: a run of stack accesses (PUSH/POP r64, MOV to or from [RSP+d],
  // moves between them that leave RSP alone, ADD/SUB RSP, imm, a final CALL rel or RET) with
  // one TLB lookup for all its bytes; on a miss, a copy of the run emitted the per-instruction
  // way.
  struct StackRun {
    size_t end = 0;           // the index past the run's last instruction
    int32_t low = 0, high = 0;  // its bytes: [RSP + low, RSP + high) for RSP at its start
    bool writes = false;
    size_t accesses = 0;
  };
  StackRun stack_run(const Block& block, size_t first) const;
  void emit_stack_run(const Block& block, size_t first, const StackRun& run);
  // Jumps to `slow` unless rax is canonical (clobbers rcx).
  void emit_canonical_check(const Xbyak::Reg64& reg, const Xbyak::Label& slow);
  // rax = the linear address of the memory operand (clobbers rcx; the base and index from
  // the host registers while caching_). Emits no jump: a non-canonical address misses the
  // TLB (tlb.h), so the lookup's `slow` takes it to the handler, which raises #GP/#SS.
  void emit_linear_address(const Instruction& in, const Xbyak::Label& slow);
  // rdx = the host address of `size` bytes at linear rax for `type`, or a jump to `slow`
  // (rax kept; clobbers rcx and rsi). `size` may span more than one operand (a stack run).
  void emit_tlb_lookup(AccessType type, uint8_t size, const Xbyak::Label& slow);
  // The same lookup leaving rdx = host address - linear, for a [rdx + rax] operand. While
  // caching_, it records the register mapping its jumps leave with (slow_path_mapping_).
  void emit_tlb_host_offset(AccessType type, uint32_t size, const Xbyak::Label& slow);
  // The handler for an inlined access's slow path; RIP is left as the fast path leaves it.
  void emit_slow_path(const Instruction& in, size_t index);
  // Ends an inlined fast path: it jumps to `done` over the out-of-line `slow` path, which
  // runs the instruction's handler (emit_slow_path).
  void join_slow_path(const Instruction& in, size_t index, Xbyak::Label& slow, Xbyak::Label& done);
  // The slow path of a form that keeps the cached registers, emitted after the block's end:
  // the fast path falls through to `done`; `slow` writes back the registers dirty at its
  // jumps (`at_jump`), runs the handler and loads `at_join` again before jumping back.
  struct DeferredSlowPath {
    Xbyak::Label slow, done;
    const Instruction* in = nullptr;
    size_t index = 0;
    uint64_t pending_rip = 0;
    RegisterMapping at_jump{}, at_join{};
    // The stored flags the fast path leaves in the host flags too (an ALU form of memory whose
    // flags are stored), set in the host flags again after the handler.
    std::optional<KnownFlags> host_flags;
    // Something jumps to `slow` (not so for the accesses of a fused stack run).
    bool reachable = true;
    // A branch's handler sets RIP itself: no step back to the fast path's RIP after it.
    bool branch = false;
  };
  DeferredSlowPath& begin_deferred_slow_path();
  void end_deferred_slow_path(const Instruction& in, size_t index, DeferredSlowPath& path);
  void emit_deferred_slow_paths();
  // emit_tlb_host_offset for the access of `path`'s form; inside a fused stack run
  // (fused_stack_), rdx = the run's host offset instead: no lookup, no jump.
  void emit_access_host_offset(AccessType type, uint8_t size, DeferredSlowPath& path);
  std::deque<DeferredSlowPath> deferred_slow_paths_;
  RegisterMapping slow_path_mapping_{};  // the mapping at the last TLB lookup's jumps

  // translator_bits.cc: BSF/BSR, BT/BTS/BTR/BTC and MUL of registers.
  bool emit_bit_scan(const Instruction& in, size_t index);
  bool emit_bit_test(const Instruction& in, size_t index);
  bool emit_multiply_accumulator(const Instruction& in, size_t index);
  // `to` = the r/m operand of a bit instruction: a register, or memory through the TLB (the
  // host address left in rdi), else a jump to `slow`.
  void load_bit_operand(const Xbyak::Reg64& to, const Instruction& in, uint8_t size, AccessType type,
                        const Xbyak::Label& slow);
  // r8 = the materialized flags before the instruction (a C call); stores r8 as the flags.
  void emit_flags_before_into_r8();
  void store_r8_as_materialized_flags();
  // translator_simd.cc (64-bit mode).
  bool emit_simd(const Instruction& in, size_t index);
  Xbyak::Address xmm_register(uint8_t index) const;
  // Jumps to `slow` unless SSE may run (CR0.EM, CR0.TS clear, CR4.OSFXSR set); emits nothing
  // when an earlier inlined SSE form of this run of code checked already (simd_checked_).
  void emit_simd_available_check(const Xbyak::Label& slow);
  // rdx = the host address of the memory operand, or a jump to `slow` (misaligned, TLB miss).
  void emit_simd_memory(const Instruction& in, const SimdForm& form, AccessType type, uint8_t size,
                        const Xbyak::Label& slow);
  // The guest's own operation on host registers: ModRM reg = `reg` (an xmm, or a group
  // digit), rm = xmm `rm`, with the REX prefix xmm8-15 need.
  void emit_host_simd(const SimdForm& form, uint8_t reg, uint8_t rm, std::optional<uint8_t> immediate);
  // translator_xmm.cc: guest XMM registers cached in host xmm2-xmm15 across inlined SSE forms
  // and the register-only code between them. simd_slot returns the host register holding
  // guest `guest` (loaded from CpuState when `load`), taking the least recently used slot
  // (stored first when dirty); take every slot an instruction needs before its first jump to
  // its slow path.
  Xbyak::Xmm simd_slot(uint8_t guest, bool load);
  void mark_xmm_written(uint8_t guest);
  // Stores the dirty cached XMM registers, the cache staying as it is (one path of several).
  void store_dirty_xmms();
  // Loads every cached XMM register from CpuState again (after a C call clobbered them).
  void reload_xmms();
  // Writes back the dirty ones and forgets the cache (before any other instruction).
  void forget_xmms();
  // Forgets the cache without code.
  void drop_xmms();
  // `mov rax, function; call rax`, the cached XMM registers stored before and loaded after.
  void emit_runtime_call(const void* function);
  static constexpr size_t kCachedXmms = 14;
  std::array<CachedRegister, kCachedXmms> cached_xmms_{};
  std::array<int8_t, 16> xmm_slot_of_{};
  uint32_t xmm_clock_ = 0;
  // translator_sse_float.cc (64-bit mode): SSE floating-point arithmetic, CMPcc, (U)COMIS and
  // CVTSI2SS/SD as the host's instruction on the XMM cache's registers under the guest's
  // MXCSR, when it masks every exception.
  bool emit_sse_float(const Instruction& in, size_t index);
  static bool sse_float(const Instruction& in);
  // The guest's MXCSR in the host: its control bits (flags clear) go in at the first float
  // form after the host's was in place and stay, over inlined code and chained blocks, until
  // the next C call or return to the run loop. The frame's two slots: the host's MXCSR, and
  // the guest's as loaded (0 while the host's is in place; set to 0 by the prologue).
  static constexpr int32_t kHostMxcsrSlot = 16, kGuestMxcsrSlot = 20;
  // When the guest's is in: ORs the flags the host raised into the guest's MXCSR and loads
  // the host's (frame: the block frame's distance from RSP; clobbers `scratch` and the flags).
  void emit_mxcsr_switch_out(int32_t frame, const Xbyak::Reg32& scratch);
  // When the host's is in: jumps to `slow` unless the guest's MXCSR masks every exception,
  // else loads its control bits (clobbers eax, ecx and the flags).
  void emit_mxcsr_switch_in(const Xbyak::Label& slow);

  // translator_branch.cc
  bool emit_branch(const Instruction& in, size_t index);
  // A Jcc before the block's end (64-bit code: translate_block runs on past a Jcc whose
  // fall-through lies in the page): whether `index` is one, and its code, whose taken way is
  // a side exit (registers written back there, an exit site counting up to the Jcc) and whose
  // fall-through goes on with the registers cached and the flag producer known.
  bool side_exit_branch(const Instruction& in, size_t index) const;
  void emit_side_exit_branch(const Instruction& in, size_t index);
  // A side exit's code, out of line after the block (emit_side_exits): the Jcc's rel32 ends
  // at `jump_end`; the registers dirty in `mapping` are written back there.
  struct SideExit {
    size_t jump_end = 0;
    const Instruction* in = nullptr;
    size_t index = 0;
    RegisterMapping mapping{};
    uint32_t past = 0;  // RIP past the Jcc from the base
    bool from_stack = false;  // the base: RIP at the body's entry in the frame, else CpuState's
  };
  void emit_side_exits();
  std::vector<SideExit> side_exits_;
  // Sets the host flags as the lazy flags' condition `code` needs them, or returns false.
  bool emit_host_flags_for(uint8_t code);
  bool host_flags_available(uint8_t code) const;
  // Records that the current instruction's host operation left its stored flags in the host
  // flags, unless a write of AH-BH (a rotate of the cached register) came after it.
  void note_host_flags(uint8_t destination, uint8_t size, bool rex);
  // Whether the host flags are still those of the instruction before `index`, for `code`.
  bool host_flags_set_by_previous(size_t index, uint8_t code) const;

  // Registers and fields.
  // Inline: every emitter calls it, and translation time is the JIT's start-up cost.
  Xbyak::Address field(int32_t offset, uint8_t size) const {
    using Xbyak::util::rbx;
    switch (size) {
      case 1: return code_.byte[rbx + offset];
      case 2: return code_.word[rbx + offset];
      case 4: return code_.dword[rbx + offset];
      default: return code_.qword[rbx + offset];
    }
  }
  Xbyak::Address guest_register(uint8_t index, uint8_t size, bool rex) const;
  void load_register(const Xbyak::Reg64& to, uint8_t index, uint8_t size, bool rex);
  void store_register(uint8_t index, uint8_t size, bool rex, const Xbyak::Reg64& from);
  static Xbyak::Reg sized(const Xbyak::Reg64& reg, uint8_t size);
  // translator_registers.cc: while `caching_` (a register-only instruction or a memory form
  // of emit_cached_memory), guest registers live in host registers (r12-r15, rbp, r8-r11),
  // loaded on first use and written back (forget_registers) before any other instruction, and
  // at the block's end, so handlers, faults and the next block always find them in CpuState
  // (a cached memory form's slow path writes them back before its handler).
  Xbyak::Reg64 cached_register(uint8_t index, bool load);
  void evict(size_t slot);
  void forget_registers();
  void forget_caller_saved_registers();
  // AH, CH, DH, BH: byte 1 of registers 0-3, not a host register of their own.
  static bool high_byte(uint8_t index, uint8_t size, bool rex);
  // The cached guest register `index` now differs from CpuState.
  void mark_written(uint8_t index);
  // Stores the registers `mapping` marks dirty from their host registers (code only).
  void write_back_mapping(const RegisterMapping& mapping);
  // After a C call made with the registers of `before` in place: loads the slots of
  // `mapping` the call may have clobbered (caller-saved), that held another register before
  // it, or that the handler may have written (dirty: what the fast path wrote), from CpuState.
  void reload_mapping_after_call(const RegisterMapping& before, const RegisterMapping& mapping);
  RegisterMapping current_mapping() const;
  // Stores the dirty cached registers, the cache staying as it is (for one path of several).
  void write_back_registers();
  // Forgets the cache without code (every path has written it back).
  void drop_registers();
  // Loads the guest registers of `mapping` into their slots (clean), as at a loop's entry.
  void preload_registers(const RegisterMapping& mapping);
  static bool holds_caller_saved(const RegisterMapping& mapping);
  // rax += the 64-bit guest register (cached or in CpuState).
  void add_guest_register(const Xbyak::Reg64& to, uint8_t index);
  void zero_extend(const Xbyak::Reg64& reg, uint8_t size);
  // INC/DEC of the `size`-byte value in rax: rdx = the result (zero-extended), rcx = 1, the
  // operands store_flags(kInc/kDec) reads.
  void emit_step(uint8_t size, bool increment);
  void store_flags(FlagOp op, uint8_t size, bool keep_carry);
  // Adds the pending RIP to CpuState's; `keep_host_flags`: without changing the host flags.
  void flush_rip(bool keep_host_flags = false);

  CpuCore& core_;
  ExitRecord& record_;
  Chain chain_;
  const void* chain_stub_ = nullptr;
  const void* handler_stub_ = nullptr;
  JitProfile* profile_ = nullptr;
  bool in_slow_path_ = false;  // the handler call being emitted is an inlined form's slow path
  size_t body_offset_ = 0;
  Layout layout_;
  Xbyak::CodeGenerator code_;
  // Offsets in the translation being emitted: the epilogue, and the point after the preloads
  // where a one-block loop's back edge goes (the body starts at body_offset_).
  size_t epilogue_offset_ = 0;
  size_t loop_entry_offset_ = 0;
  // Code every block has, assembled once by the constructor (translation time): the prologue,
  // the epilogue, and an exit site's code before its record, for a block of up to 127
  // instructions (an imm8 count) or a longer one, with or without the RIP compare
  // (exit_site_index); emit_chain copies one and fills in the count and the record's
  // RIP-relative displacements.
  struct ExitSiteTemplate {
    std::vector<uint8_t> bytes;
    size_t count_end = 0;  // the end of the budget check's count immediate
    uint8_t count_size = 0;
    size_t generation_field = 0;  // the disp32 of the generation load, which a patch rewrites
    size_t lea_end = 0;           // the LEA of the record's address
    size_t jump_field = 0;        // the rel32 JitEngine::chain patches
  };
  std::vector<uint8_t> prologue_, epilogue_;
  std::array<ExitSiteTemplate, 4> exit_sites_{};
  size_t count_end_ = 0;  // emit_budget_check: where its immediate count ended
  std::optional<RegisterMapping> preload_;            // this pass loads these at the body
  std::optional<RegisterMapping> self_loop_mapping_;  // the mapping a back edge left with
  RegisterMapping mapping_before_last_{};            // the mapping before the last instruction
  bool branch_calls_out_ = false;  // the final branch calls lamina_jit_condition
  // The final branch of a one-block loop keeps the registers over its back edge and writes
  // them back only on its other paths.
  bool registers_over_back_edge_ = false;
  // The loop counter's INC/DEC whose lazy flags are not stored yet (defers_step_flags): the
  // result is the cached register, CF clear (a logic operation came before).
  struct DeferredStep {
    uint8_t index;
    uint8_t size;
    bool increment;
  };
  std::optional<DeferredStep> deferred_step_;
  size_t current_index_ = 0;  // the instruction being emitted
  bool rip_on_stack_ = false;      // the body's starting RIP is kept at [rsp]
  bool rip_flushed_ = false;       // RIP was written since the body's start
  const Block* block_ = nullptr;  // the block being translated
  uint64_t block_bytes_ = 0;      // its length in guest bytes
  uint64_t pending_rip_ = 0;  // bytes of inlined instructions not yet added to RIP
  std::optional<KnownFlags> known_flags_;
  // The instruction whose code left the host flags as its stored lazy flags (known_flags_)
  // give them, only MOVs after its operation (and on its slow path, if any, set again after
  // the handler): a Jcc right after it branches on them (host_flags_set_by_previous).
  // SIZE_MAX: none.
  size_t host_flags_producer_ = SIZE_MAX;
  bool called_handlers_ = false;  // a full handler call in this block
  // The block ends in a Jcc whose not-taken way is the block's end: a direct exit.
  bool fallthrough_direct_ = false;
  // CR0/CR4 were checked for SSE since the block's start or the last full handler call.
  bool simd_checked_ = false;
  bool flags_live_ = true;        // the current instruction's flags must be stored
  bool caching_ = false;          // the current instruction may keep registers in host ones
  static constexpr size_t kCachedRegisters = 9;
  std::array<CachedRegister, kCachedRegisters> cached_{};
  std::array<int8_t, 16> slot_of_{};
  uint32_t use_clock_ = 0;
  CodeMode mode_ = CodeMode::k64;
  // The frame slot (from the host RSP) of a fused stack run's host offset, host - linear.
  static constexpr int32_t kStackRunOffsetSlot = 8;
  bool fused_stack_ = false;           // emitting the fused copy of a stack run
  bool stack_offset_in_rdx_ = false;   // rdx still holds that run's host offset
  size_t fused_accesses_ = 0;          // accesses emitted with that offset
  // What emitting an instruction changes in the translator, saved to emit a stack run twice.
  struct EmitState {
    std::array<CachedRegister, kCachedRegisters> cached;
    std::array<int8_t, 16> slot_of;
    uint32_t use_clock;
    uint64_t pending_rip;
    std::optional<KnownFlags> known_flags;
    std::optional<DeferredStep> deferred_step;
    bool rip_flushed;
    RegisterMapping mapping_before_last;
  };
  EmitState current_emit_state() const;
  void restore_emit_state(const EmitState& state);
};

}  // namespace lamina::cpu::x86::jit
