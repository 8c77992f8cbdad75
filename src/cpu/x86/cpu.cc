// The run loop: block lookup/translation, block execution, requests and interrupts at block
// boundaries, and exception delivery with the double- and triple-fault rules (SDM 6.15,
// table 6-5).
#include "cpu/x86/cpu.h"

#include <fmt/format.h>

#include "cpu/x86/core.h"
#include "cpu/x86/decoder.h"
#include "cpu/x86/handlers.h"
#include "cpu/x86/jit/jit_engine.h"
#include "base/log.h"

namespace lamina::cpu::x86 {
namespace {

constexpr size_t kMaxBlockInstructions = 64;
// Conditional branches a 64-bit block runs on past (side exits), at most.
constexpr size_t kMaxSideExits = 2;

bool contributory(uint8_t vector_number) {
  return vector_number == 0 || (vector_number >= 10 && vector_number <= 13);
}

// SDM table 6-5: which second exception during delivery of a first one is a double fault.
bool makes_double_fault(uint8_t first, uint8_t second) {
  if (contributory(first)) return contributory(second);
  if (first == vector::kPageFault) return contributory(second) || second == vector::kPageFault;
  return false;
}

// Fault-class exceptions (SDM table 6-1): the saved RIP is the faulting instruction's.
// #DB is a trap or an instruction-breakpoint fault (RF as it is; see run()), #DF and #MC
// are aborts.
bool fault_class(uint8_t vector_number) {
  switch (vector_number) {
    case 0:
    case 5:
    case 6:
    case 7:
    case 10:
    case 11:
    case 12:
    case 13:
    case 14:
    case 16:
    case 17:
    case 19:
    case 20:
    case 21: return true;
    default: return false;
  }
}

bool has_error_code(uint8_t vector_number) {
  return vector_number == 8 || (vector_number >= 10 && vector_number <= 14) || vector_number == 17;
}

// A conditional branch with a relative target (Jcc rel8/rel32; not LOOP/JCXZ) of the 64-bit
// operand size, which a block may run on past.
bool runs_on_past(const Instruction& in) {
  const uint16_t op = in.opcode;
  const bool conditional = (op >= 0x70 && op <= 0x7f) || (op >= 0x180 && op <= 0x18f);
  return conditional && !in.lock && in.operand_size == 8;
}

// Decodes a basic block starting at RIP; faults (fetch #PF, #UD, CS limit) are raised only
// for the first instruction, later ones end the block before them.
Block* translate_block(CpuCore& core) {
  auto block = std::make_unique<Block>();
  block->mode = core.code_mode;
  uint64_t rip = core.state.rip;
  bool cacheable = true;
  size_t side_exits = 0;
  for (size_t count = 0; count < kMaxBlockInstructions; ++count) {
    const bool first = count == 0;
    const uint64_t linear = core.code_linear(rip);
    uint8_t bytes[15];
    uint64_t physical = 0;
    bool ram = true;
    size_t available = 0;
    try {
      available = core.fetch_code(linear, bytes, sizeof(bytes), physical, ram);
    } catch (const GuestFault&) {
      if (first) throw;
      break;
    }
    if (first) {
      block->physical = physical;
      // Marked before decoding: a store by another vCPU from now on bumps the generation.
      if (core.shared_code != nullptr && ram && core.shared_code->tracked(physical))
        block->first_generation = block->last_generation = core.shared_code->mark_code(physical, core.owner);
    }
    if (!ram) cacheable = false;
    Instruction instruction;
    DecodeStatus status = decode(std::span<const uint8_t>(bytes, available), core.code_mode, instruction);
    uint64_t last_page = physical & ~uint64_t{0xfff};
    const bool crosses_page = status == DecodeStatus::kTruncated;
    if (crosses_page) {
      // The instruction continues on the next page.
      try {
        uint64_t next_physical = 0;
        bool next_ram = true;
        available += core.fetch_code(linear + available, bytes + available, sizeof(bytes) - available,
                                     next_physical, next_ram);
        if (!next_ram) cacheable = false;
        last_page = next_physical & ~uint64_t{0xfff};
        if (core.shared_code != nullptr && next_ram && core.shared_code->tracked(last_page))
          block->last_generation = core.shared_code->mark_code(last_page, core.owner);
      } catch (const GuestFault&) {
        if (first) throw;
        break;
      }
      status = decode(std::span<const uint8_t>(bytes, available), core.code_mode, instruction);
    }
    if (status != DecodeStatus::kOk) {
      if (first) raise_fault(vector::kInvalidOpcode);
      break;
    }
    if (core.code_mode != CodeMode::k64 && rip + instruction.length - 1 > core.state.segment[kCs].limit) {
      if (first) raise_fault(vector::kGeneralProtection, 0);
      break;
    }
    // 64-bit code runs on past a conditional branch, so that the path not taken stays in one
    // block: taken, its handler ends the block there (select_side_exit_handler; the JIT's side
    // exit). The page check below still ends the block where the fall-through lies in
    // another page.
    // At most kMaxSideExits of them: past that the blocks overlap more than they gain (boot +
    // mixed workload, LAMINA_JIT_PROFILE and CPU seconds, interleaved: unbounded 96 MiB of
    // code, a flush of the 64 MiB cache and 5.7-5.9 s; at most 3: 62 MiB, 5.2-5.4 s; 2:
    // 60 MiB, 4.9-5.2 s; 1: 59 MiB, 5.2-7.0 s; none: 63 MiB, 7.9 s).
    const bool ends = ends_block(instruction);
    const bool runs_on = ends && core.code_mode == CodeMode::k64 && runs_on_past(instruction) &&
                         side_exits++ < kMaxSideExits;
    instruction.handler = runs_on ? select_side_exit_handler(instruction) : select_handler(instruction);
    block->instructions.push_back(instruction);
    block->last_page = last_page;
    block->crosses_page = crosses_page;
    rip += instruction.length;
    if (ends && !runs_on) break;
    // Never run on into another page without translating it, nor past an instruction that
    // crossed into it (even onto the block's own physical page: within_one_page holds only of
    // the block's last instruction).
    if (crosses_page || ((linear + instruction.length) & 0xfff) == 0) break;
  }
  // A Jcc that ends the block after all (the page's end, the cap, nothing decodable after it)
  // takes the plain handler, which leaves the block as its last instruction.
  if (Instruction& last = block->instructions.back(); core.code_mode == CodeMode::k64 && runs_on_past(last))
    last.handler = select_handler(last);
  if (!cacheable) {
    // Code in MMIO is executed once and not kept.
    Block* raw = block.get();
    core.blocks.insert(std::move(block));
    core.blocks.invalidate_page(raw->physical & ~uint64_t{0xfff}, raw);
    return raw;
  }
  // A page that holds blocks already has no write pointers in the TLB (a write walk drops its
  // blocks before it fills them), so only a page becoming a code page needs the TLB pass.
  for (const uint64_t page : {block->physical & ~uint64_t{0xfff}, block->last_page}) {
    if (!core.blocks.is_code_page(page)) core.protect_code_page(page);
  }
  return core.blocks.insert(std::move(block));
}

void drop_stale(CpuCore& core, const Block* block) {
  const uint64_t first = block->physical & ~uint64_t{0xfff};
  const uint64_t last = block->last_page & ~uint64_t{0xfff};
  core.blocks.invalidate_page(first, nullptr);
  if (last != first) core.blocks.invalidate_page(last, nullptr);
}

// Whether the page after `linear`'s maps to the last page of `block`, which starts at `linear`,
// when its last instruction runs into that page. Blocks are found by their first page alone,
// and another address space (or a remapping since) may map the next page elsewhere; its bytes
// decide, not its last page (both pages may map one physical page where it was decoded). A
// next page that does not translate (a fault) does not match: the block is decoded again and
// ends before the instruction, whose fetch then faults where it starts.
bool next_page_matches(CpuCore& core, const Block& block, uint64_t linear) {
  constexpr uint64_t kPage = ~uint64_t{0xfff};
  if (within_one_page(block)) return true;
  uint64_t next = (linear & kPage) + 0x1000;
  if (core.code_mode != CodeMode::k64) next &= 0xffffffff;
  try {
    return (core.code_physical(next) & kPage) == (block.last_page & kPage);
  } catch (const GuestFault&) {
    return false;
  }
}

Block* find_block(CpuCore& core) {
  const uint64_t linear = core.code_linear(core.state.rip);
  // A fetch-TLB miss walks (and may fault) here, so that blocks survive TLB flushes.
  const uint64_t physical = core.code_physical(linear);
  if (Block* block = core.blocks.find(physical, core.code_mode)) {
    if (core.block_current(block) && next_page_matches(core, *block, linear)) return block;
    drop_stale(core, block);
  }
  return translate_block(core);
}

}  // namespace

bool CpuCore::block_current(const Block* block) const {
  if (shared_code == nullptr || !shared_code->tracked(block->physical)) return true;
  if (shared_code->generation(block->physical) != block->first_generation) return false;
  return (block->last_page & ~uint64_t{0xfff}) == (block->physical & ~uint64_t{0xfff}) ||
         !shared_code->tracked(block->last_page) ||
         shared_code->generation(block->last_page) == block->last_generation;
}

namespace {
const CpuidModel& model_or_default(const CpuConfiguration& configuration, std::optional<CpuidModel>& storage) {
  if (configuration.model != nullptr) return *configuration.model;
  // The default features are a valid model; failing here would be a bug in cpu/x86/system.
  storage.emplace(CpuidModel::create(CpuFeatures{}).value());
  return *storage;
}
}  // namespace

Cpu::Cpu(GuestMemory& memory, CpuEnvironment& environment, CpuConfiguration configuration) {
  const CpuidModel& model = model_or_default(configuration, default_model_);
  MsrHooks hooks = std::move(configuration.msr_hooks);
  if (!hooks.clock) hooks.clock = [&environment] { return environment.read_tsc(); };
  core_ = std::make_unique<CpuCore>(memory, environment, model, configuration.vcpu_index, std::move(hooks));
  core_->shared_code = configuration.shared_code;
  core_->owner = this;
  core_->requests = &requests_;
  if (configuration.engine == CpuEngine::kJit) {
    auto engine = jit::JitEngine::create(*core_, configuration.code_cache_bytes,
                                         configuration.translate_on_run);
    // Without its code cache (the host refused the memory) the vCPU still runs, interpreted.
    if (engine) {
      jit_ = std::move(*engine);
    } else {
      log_warn("vCPU {}: {}; interpreting", configuration.vcpu_index, engine.error().message());
    }
  }
  if (core_->shared_code != nullptr) core_->shared_code->attach(this);
  reset();
}

Cpu::~Cpu() {
  if (core_->shared_code != nullptr) core_->shared_code->detach(this);
}

CpuState& Cpu::state() { return core_->state; }
const CpuState& Cpu::state() const { return core_->state; }
uint64_t Cpu::instructions_retired() const { return core_->retired; }
size_t Cpu::cached_blocks() const { return core_->blocks.size(); }
CpuEngine Cpu::engine() const { return jit_ != nullptr ? CpuEngine::kJit : CpuEngine::kInterpreter; }
const jit::JitEngine* Cpu::jit() const { return jit_.get(); }

void Cpu::post(uint32_t requests) { core_->post_requests(requests); }

void Cpu::state_changed() {
  core_->flush_tlb(true);
  core_->update_mode();
  core_->update_breakpoints();
  core_->interrupt_window_may_open();
}

void Cpu::reset() {
  CpuState& state = core_->state;
  state = CpuState{};
  state.msr = msr_power_on_state(core_->vcpu_index == 0);
  x86::reset(state.simd);
  // EDX holds the processor signature (CPUID.1:EAX) after RESET and INIT (SDM 9.1.4).
  state.gpr[kRdx] = core_->cpuid_model.query(1, 0, CpuidState{}).eax;
  for (SegmentCache& segment : state.segment) segment = SegmentCache{0, 0, 0xffff, 0x93};
  state.segment[kCs] = SegmentCache{0xf000, 0xffff0000, 0xffff, 0x9b};
  state.rip = 0xfff0;
  core_->blocks.clear();
  state_changed();
}

void Cpu::invalidate_code(uint64_t physical, uint64_t length) {
  if (length == 0) return;
  const uint64_t first = physical & ~uint64_t{0xfff};
  const uint64_t last = (physical + length - 1) & ~uint64_t{0xfff};
  for (uint64_t page = first;; page += 0x1000) {
    core_->blocks.invalidate_page(page, nullptr);
    if (core_->shared_code != nullptr && core_->shared_code->tracked(page)) core_->shared_code->note_write(page, this);
    if (page == last) break;
  }
}

// Delivers an exception or external interrupt, escalating to #DF and to a triple fault.
bool Cpu::deliver_event(uint8_t vector_number, bool error, uint32_t error_code, bool external,
                        bool fault_frame, CpuExit& exit) {
  CpuCore& core = *core_;
  uint8_t current = vector_number;
  bool current_error = error;
  uint32_t current_code = error_code;
  bool current_external = external;
  bool current_fault = fault_frame;
  for (int attempt = 0; attempt < 3; ++attempt) {
    try {
      core.deliver(current, current_error, current_code, false, current_external, current_fault);
      return true;
    } catch (const GuestFault& second) {
      if (current == vector::kDoubleFault) break;
      if (makes_double_fault(current, second.vector)) {
        current = vector::kDoubleFault;
        current_error = true;
        current_code = 0;
      } else {
        current = second.vector;
        current_error = second.has_error_code;
        current_code = second.error_code;
      }
      current_external = true;  // a fault while delivering an event is delivered as one too
      current_fault = fault_class(current);
    }
  }
  exit.kind = CpuExit::Kind::kTripleFault;
  exit.reason = fmt::format("triple fault delivering vector {} at {:04x}:{:x} (CR0 {:x}, CR2 {:x})",
                            vector_number, core.state.segment[kCs].selector, core.state.rip,
                            core.state.cr0, core.state.cr2);
  return false;
}

// Requests and interrupts at a block boundary; true means run() must return `exit`.
bool Cpu::take_requests(CpuExit& exit) {
  CpuCore& core = *core_;
  CpuState& state = core.state;
  const uint32_t pending = requests_.load(std::memory_order_acquire);
  if (pending & request::kFlushWrites) {
    requests_.fetch_and(~request::kFlushWrites);
    core.tlb.trap_all_writes();
  }
  if (pending & request::kCodeWritten) {
    requests_.fetch_and(~request::kCodeWritten);
    core.blocks.new_generation();
  }
  if (pending & request::kA20) {
    requests_.fetch_and(~request::kA20);
    const bool enabled = a20_enabled_.load(std::memory_order_relaxed);
    core.physical_address_mask = enabled ? ~uint64_t{0} : ~(uint64_t{1} << 20);
    core.flush_tlb(true);
  }
  if (pending & request::kInit) {
    requests_.fetch_and(~request::kInit);
    // INIT resets the registers but keeps the MSRs, except EFER (AMD APM vol. 2 table 14-1).
    const MsrState msrs = state.msr;
    reset();
    state.msr = msrs;
    state.msr.efer = 0;
    state.waiting_for_startup = true;
  }
  if (pending & request::kStartup) {
    requests_.fetch_and(~request::kStartup);
    if (state.waiting_for_startup) {
      // SIPI: start at vector * 4096 in real mode (SDM 10.4.4 / MP spec B.4.2).
      const uint8_t startup = startup_vector_.load(std::memory_order_relaxed);
      state.segment[kCs] = SegmentCache{static_cast<uint16_t>(startup << 8), uint64_t{startup} << 12, 0xffff, 0x9b};
      state.rip = 0;
      state.waiting_for_startup = false;
      state_changed();
    }
  }
  // After INIT and SIPI, so a vCPU kicked to a stop (a pause for a checkpoint) holds no
  // startup message outside its CpuState.
  if (pending & request::kKick) {
    requests_.fetch_and(~request::kKick);
    exit.kind = CpuExit::Kind::kKicked;
    return true;
  }
  if (state.waiting_for_startup) {
    exit.kind = CpuExit::Kind::kWaitForStartup;
    return true;
  }
  if (state.interrupt_shadow) return false;
  // NMIs are blocked from delivery of one until the next IRET (SDM 6.7.1); the request stays.
  if ((pending & request::kNmi) && !state.nmi_blocked) {
    requests_.fetch_and(~request::kNmi);
    if (core.environment.take_nmi()) {
      core.instruction_rip = state.rip;
      if (!deliver_event(vector::kNmi, false, 0, true, false, exit)) return true;
      state.nmi_blocked = true;
    }
  }
  if ((pending & request::kInterrupt) && !(state.rflags & rflags::kIf)) {
    // Parked until IF is set (CpuCore::interrupt_window_may_open): the controller keeps the
    // interrupt pending meanwhile, and a request posted after the load above is parked too.
    core.interrupt_parked = true;
    requests_.fetch_and(~request::kInterrupt);
  }
  if ((pending & request::kInterrupt) && (state.rflags & rflags::kIf)) {
    requests_.fetch_and(~request::kInterrupt);
    if (core.environment.interrupt_pending()) {
      const uint8_t vector_number = core.environment.acknowledge_interrupt();
      // More may be pending behind this one: look again at the next boundary.
      core.post_requests(request::kInterrupt);
      core.instruction_rip = state.rip;
      if (!deliver_event(vector_number, false, 0, true, false, exit)) return true;
    }
  }
  return false;
}

bool Cpu::deliver_pending_events(CpuExit& exit) {
  CpuCore& core = *core_;
  PendingEvents& events = core.state.pending_events;
  core.instruction_rip = core.state.rip;
  // An event whose delivery had begun goes first, as the hardware re-injects it (SDM Vol. 3C
  // 27.2.4: IDT-vectoring information); an exception before an interrupt.
  if (events.exception) {
    events.exception = false;
    const uint8_t number = events.exception_vector;
    if (!deliver_event(number, events.exception_has_error_code, events.exception_error_code,
                       false, fault_class(number) || number == vector::kDebug, exit)) {
      return false;
    }
  }
  if (events.interrupt) {
    events.interrupt = false;
    if (!deliver_event(events.interrupt_vector, false, 0, true, false, exit)) return false;
  }
  // NMIs wait for the IRET that unblocks them (SDM 6.7.1) and for no shadow; the next run()
  // looks again.
  if (events.nmi && !core.state.nmi_blocked && !core.state.interrupt_shadow) {
    events.nmi = false;
    if (!deliver_event(vector::kNmi, false, 0, true, false, exit)) return false;
    core.state.nmi_blocked = true;
  }
  return true;
}

CpuExit Cpu::run(uint64_t instruction_budget) {
  CpuCore& core = *core_;
  CpuExit exit;
  if (core.state.pending_events.any() && !core.state.waiting_for_startup) [[unlikely]] {
    if (!deliver_pending_events(exit)) return exit;
    core.state.halted = core.state.halted && core.state.pending_events.any();
  }
  const uint64_t start = core.retired;
  const uint64_t end = start + instruction_budget;
  Block* previous = nullptr;
  // Every IF-setting instruction reopens the window itself; this bounds what a missed one
  // could cost to one time slice.
  core.interrupt_window_may_open();
  for (;;) {
    // Translated code's limit, again after a request set it to 0; the requests are loaded
    // after it (CpuCore::arm_retired_limit).
    if (core.retired_limit.load(std::memory_order_relaxed) != end) core.arm_retired_limit(end);
    // A vCPU waiting for its SIPI (an AP from creation, or a restored one) runs nothing.
    if ((requests_.load(std::memory_order_seq_cst) != 0 || core.state.waiting_for_startup) &&
        take_requests(exit)) {
      break;
    }
    // A request left pending (an NMI blocked until IRET, an interrupt behind a shadow) sends
    // translated code back after every block, as the requests word itself would.
    if (requests_.load(std::memory_order_relaxed) != 0) core.retired_limit.store(0, std::memory_order_relaxed);
    if (core.state.halted) {
      exit.kind = CpuExit::Kind::kHalted;
      break;
    }
    if (core.retired >= end) {
      exit.kind = CpuExit::Kind::kBudgetExhausted;
      break;
    }
    if (core.blocks.has_retired()) {
      core.blocks.release_retired();
      previous = nullptr;
    }
    const Instruction* cursor = nullptr;
    const Instruction* begin = nullptr;
    core.instruction_rip = core.state.rip;
    try {
      Block* block = nullptr;
      if (previous != nullptr) {
        // Chained successor: same RIP after the same block, nothing invalidated since.
        for (const Block::Link& link : previous->links) {
          if (link.rip == core.state.rip && core.blocks.current(link.generation) &&
              core.block_current(link.block)) {
            block = link.block;
            break;
          }
        }
      }
      if (block == nullptr) {
        block = find_block(core);
        if (previous != nullptr) {
          Block::Link& link = previous->links[previous->next_link];
          previous->next_link ^= 1;
          link = {core.state.rip, core.blocks.generation(), block};
          core.blocks.note_linked(core.state.rip, *block);
        }
      }
      previous = block;
      const bool shadow = core.state.interrupt_shadow;
      core.state.interrupt_shadow = false;
      // One cheap test keeps the debug checks off the hot path: TF (single step), RF (an
      // instruction breakpoint to skip), an interrupt shadow or an enabled DR7 breakpoint.
      const bool checked = shadow || (core.state.rflags & (rflags::kTf | rflags::kRf)) != 0 ||
                           core.breakpoints_armed;
      if (checked) [[unlikely]] {
        previous = nullptr;
        if (!begin_checked_step(*block, shadow, exit)) break;
        if (checked_step_.count == 0) continue;
      }
      begin = block->instructions.data();
      const Instruction* const last =
          begin + (checked ? checked_step_.count : block->instructions.size());
      core.running_block = block;
      core.stop_block = false;
      core.event_delivered = false;
      bool translated = false;
      if (jit_ != nullptr && !checked) {
        const jit::BlockRun outcome = jit_->run(*block, translated);
        if (translated) {
          // Translated code may have gone on through chained blocks: the last is the loop's.
          block = jit_->last_block();
          previous = block;
          begin = block->instructions.data();
        }
        cursor = begin + outcome.completed;
        // The exception is rethrown here so that it is delivered below exactly as one thrown
        // by a handler of the loop.
        if (outcome.stopped_by_exception) jit_->rethrow_exception();
      }
      if (!translated) {
        for (cursor = begin; cursor != last;) {
          const Instruction& instruction = *cursor;
          core.instruction_rip = core.state.rip;
          core.state.rip += instruction.length;
          instruction.handler(core, instruction);
          ++cursor;
          if (core.stop_block) break;
        }
      }
      // A Jcc taken before the block's end (one the block runs on past) ended it through
      // stop_block; the block is still one to chain from.
      if (core.side_exit) [[unlikely]] {
        core.side_exit = false;
        core.stop_block = false;
      }
      core.retired += static_cast<uint64_t>(cursor - begin);
      if (checked && !finish_checked_step(exit)) [[unlikely]]
        break;
    } catch (const GuestFault& fault) {
      previous = nullptr;
      // A code breakpoint outranks the faults of fetching and decoding its instruction (SDM
      // table 6-2); the block lookup faulted before the checked path could look.
      const uint8_t code_breakpoints = cursor == nullptr ? due_instruction_breakpoints() : 0;
      if (cursor != nullptr) core.retired += static_cast<uint64_t>(cursor - begin);
      // A delivery counts against the budget: a fault loop (a handler that faults at once)
      // must still end run().
      ++core.retired;
      core.state.rip = core.instruction_rip;
      core.state.interrupt_shadow = false;
      // A faulting instruction completes nothing: its breakpoint hits and the #DB traps a
      // MOV SS held before it are dropped.
      core.debug_hits = 0;
      core.state.debug_shadow = false;
      core.state.pending_debug = 0;
      const bool error = fault.has_error_code || has_error_code(fault.vector);
      // A #DB raised by an instruction is general detect (MOV DR with DR7.GD), a fault.
      const bool fault_frame = fault_class(fault.vector) || fault.vector == vector::kDebug;
      if (code_breakpoints != 0) [[unlikely]] {
        if (!raise_instruction_breakpoint(code_breakpoints, exit)) break;
      } else if (!deliver_event(fault.vector, error, fault.error_code, true, fault_frame, exit)) {
        break;
      }
    }
    core.running_block = nullptr;
    // A block invalidated by its own stores, or a new mode, must not be chained from.
    if (core.stop_block) previous = nullptr;
  }
  exit.instructions = core.retired - start;
  return exit;
}

}  // namespace lamina::cpu::x86
