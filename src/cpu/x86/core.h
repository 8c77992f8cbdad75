#pragma once
// CpuCore: the interpreter's working set for one vCPU: architectural state, soft TLB
// (system/tlb), block cache and the helpers every instruction handler uses (registers, effective
// addresses, segmented and linear memory access, stack). Handlers are free functions over CpuCore; the
// public face is Cpu (cpu.h).
//
// Guest exceptions are thrown as GuestFault from deep inside an instruction and caught at the
// instruction boundary by the run loop, which rolls RIP back and delivers them.
//
// Ownership: owns its state, TLB and blocks; borrows guest memory and the environment, which
// must outlive it. Thread-safety: used only by its vCPU's thread, but for post_requests (any
// thread, through Cpu::post).

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <expected>
#include <optional>
#include <span>
#include <utility>

#include "base/guest_memory.h"
#include "cpu/x86/block_cache.h"
#include "cpu/x86/cpu_environment.h"
#include "cpu/x86/cpu_state.h"
#include "cpu/x86/exception_vectors.h"
#include "cpu/x86/instruction.h"
#include "cpu/x86/shared_code_pages.h"
#include "cpu/x86/system/cpuid_model.h"
#include "cpu/x86/system/debug_registers.h"
#include "cpu/x86/system/msr_file.h"
#include "cpu/x86/system/segment_checks.h"
#include "cpu/x86/system/task_state.h"
#include "cpu/x86/system/tlb.h"

namespace lamina::cpu::x86 {


// An exception raised by the instruction being executed (SDM vol. 3A, 6.3).
struct GuestFault {
  uint8_t vector;
  uint32_t error_code;
  bool has_error_code;
};
[[noreturn]] void raise_fault(uint8_t vector);
[[noreturn]] void raise_fault(uint8_t vector, uint32_t error_code);
// A fault found by a system/ check: selector faults, which all carry an error code.
[[noreturn]] inline void raise_fault(const Fault& fault) {
  raise_fault(fault.vector, fault.error_code);
}
// The value of a system/ check, or its fault raised.
template <typename T>
T checked(std::expected<T, Fault> result) {
  if (!result) raise_fault(result.error());
  return std::move(*result);
}

// The page walker's access types serve the core's segmented accesses too.
using Access = AccessType;

struct CpuCore {
  CpuCore(GuestMemory& guest_memory, CpuEnvironment& cpu_environment, const CpuidModel& model,
          uint32_t index, MsrHooks hooks);

  CpuState state;
  GuestMemory& memory;
  CpuEnvironment& environment;
  const CpuidModel& cpuid_model;
  uint32_t vcpu_index;
  MsrFile msr_file;  // the rules over state.msr and the FS/GS bases (one store)
  BlockCache blocks;
  SharedCodePages* shared_code = nullptr;  // cross-vCPU code invalidation (may be null)
  const Cpu* owner = nullptr;

  // Start of the instruction being executed (faults report it); RIP already points past it.
  uint64_t instruction_rip = 0;
  // Set by an instruction that changes how the following code must be decoded or checked
  // (mode switch, CR writes, self-modifying store into the running block): leave the block.
  bool stop_block = false;
  // Set with stop_block by a Jcc taken before its block's end (select_side_exit_handler): the
  // block ended there, but may be chained from.
  bool side_exit = false;
  // Set by deliver(): the instruction raised an interrupt itself (INT n), no single-step trap.
  bool event_delivered = false;
  // Any DR7 breakpoint enabled (debug.cc): every block takes the run loop's checked path. Data
  // breakpoints also keep their pages out of the read/write TLB, so those accesses reach the
  // slow path. Kept beside the flags the run loop writes per block (one cache line).
  bool breakpoints_armed = false;
  // The block being executed (its invalidation by a store must stop it). Translated code does
  // not write it when it goes from block to block: the run loop sets it before entering, and
  // each handler call (Translator::handler_stub) and the chaining stub's way back to the run
  // loop set it, so it is right wherever it is read (a handler, the run loop).
  Block* running_block = nullptr;
  uint64_t retired = 0;
  // Set by Cpu::run for translated code, which goes from block to block without the run loop
  // while nothing needs it: the retired count at which it must go back to the run loop. A
  // posted request (post_requests) sets it to 0 as well, so translated code's one compare
  // between blocks sees both the budget and the requests. Written from other threads.
  std::atomic<uint64_t> retired_limit{0};
  static_assert(std::atomic<uint64_t>::is_always_lock_free && sizeof(std::atomic<uint64_t>) == 8,
                "translated code reads retired_limit as a plain qword");
  // The Cpu's requests word.
  std::atomic<uint32_t>* requests = nullptr;
  // Posts request bits (any thread) and ends translated code's run at its next block boundary.
  // seq_cst, against arm_retired_limit: if the run loop's load of the requests after it arms
  // misses these bits, the arming store came before the 0 stored here, which then stays.
  void post_requests(uint32_t bits) {
    requests->fetch_or(bits, std::memory_order_seq_cst);
    retired_limit.store(0, std::memory_order_seq_cst);
  }
  // The run loop (the vCPU's thread) sets the limit, then must load the requests (seq_cst)
  // before it runs translated code: a request a poster's 0 raced with is seen there.
  void arm_retired_limit(uint64_t end) { retired_limit.store(end, std::memory_order_seq_cst); }
  // An interrupt request that came while IF was clear is parked here rather than left in
  // `requests` (cpu.cc, take_requests): translated code would otherwise leave every block to
  // look at an interrupt it cannot take (memtest86+, which runs with IF clear while the
  // firmware's timer interrupt waits, ran at dispatcher speed). Whatever may set IF calls
  // interrupt_window_may_open(), which puts the request back.
  bool interrupt_parked = false;
  void interrupt_window_may_open() {
    if (interrupt_parked && (state.rflags & rflags::kIf)) {
      interrupt_parked = false;
      post_requests(request::kInterrupt);
    }
  }
  CodeMode code_mode = CodeMode::k16;
  // How code is fetched when the chaining generation last moved on in update_mode(): a CS or
  // segment reload that leaves all of it as it was (a kernel's SWAPGS, IRET to itself) keeps
  // chained successors; a privilege change between user and supervisor only selects the links
  // of that side (BlockCache::set_user_context).
  struct FetchContext {
    CodeMode mode = CodeMode::k16;
    uint64_t cs_base = 0;
    uint32_t cs_limit = 0;
    uint64_t cr0 = 0, cr4 = 0;
    bool operator==(const FetchContext&) const = default;
  };
  FetchContext fetch_context;
  // Applied to every physical address the core computes: bit 20 is clear while A20 is off.
  uint64_t physical_address_mask = ~uint64_t{0};
  // Segment bases as used for addressing (0 for ES/CS/SS/DS in 64-bit mode).
  std::array<uint64_t, 6> effective_base{};

  // False when another vCPU stored into the block's pages since it was translated (cpu.cc).
  bool block_current(const Block* block) const;

  // ---- debug and alignment checks (debug.cc) ----
  // After a write to DR0-DR3, DR7 or CR4, and after a state change from outside.
  void update_breakpoints();
  // After CR0.AM, EFLAGS.AC or the CPL may have changed (update_mode() does it too).
  void update_alignment_check();
  // Records the I/O breakpoints an IN/OUT/INS/OUTS of `port` hits.
  void check_io_breakpoints(uint16_t port, uint8_t size) {
    if (breakpoints.io_mask != 0) note_breakpoint_hits(match_io(breakpoints, port, size));
  }
  void note_breakpoint_hits(uint8_t hits) {
    if (hits == 0) return;
    debug_hits |= hits;
    stop_block = true;  // the #DB trap comes right after this instruction
  }
  // A page whose data accesses must take the checked slow path (not cached in the TLB).
  bool data_page_checked(uint64_t linear, bool user) const {
    return (alignment_check && user) ||
           (breakpoints.data_mask != 0 &&
            data_breakpoint_in_page(breakpoints, linear & ~uint64_t{0xfff}));
  }
  // The page walker's registers, with the A20 gate for the paging-structure addresses.
  PagingRegisters paging_registers() const {
    PagingRegisters registers = state.paging_registers();
    registers.a20_mask = physical_address_mask;
    return registers;
  }
  // Linear address of the code at `rip` in the current code segment.
  uint64_t code_linear(uint64_t rip) const {
    const uint64_t linear = effective_base[kCs] + rip;
    return code_mode == CodeMode::k64 ? linear : linear & 0xffffffffu;
  }

  // ---- registers ----
  template <typename T>
  T read_register(uint8_t index, bool rex) const {
    if constexpr (sizeof(T) == 1) {
      if (!rex && index >= 4 && index < 8) return static_cast<T>(state.gpr[index - 4] >> 8);
    }
    return static_cast<T>(state.gpr[index]);
  }
  template <typename T>
  void write_register(uint8_t index, bool rex, T value) {
    if constexpr (sizeof(T) == 1) {
      if (!rex && index >= 4 && index < 8) {
        uint64_t& full = state.gpr[index - 4];
        full = (full & ~uint64_t{0xff00}) | (uint64_t{value} << 8);
        return;
      }
      state.gpr[index] = (state.gpr[index] & ~uint64_t{0xff}) | value;
    } else if constexpr (sizeof(T) == 2) {
      state.gpr[index] = (state.gpr[index] & ~uint64_t{0xffff}) | value;
    } else {
      state.gpr[index] = value;  // 32-bit writes zero-extend (SDM vol. 1, 3.4.1.1)
    }
  }
  // Sized access by byte count (1, 2, 4, 8) for handlers not templated on size.
  uint64_t read_register_sized(uint8_t index, uint8_t size, bool rex) const;
  void write_register_sized(uint8_t index, uint8_t size, bool rex, uint64_t value);

  uint64_t effective_address(const Instruction& in) const {
    uint64_t address = static_cast<uint64_t>(in.displacement);
    if (in.base < 16) {
      address += state.gpr[in.base];
    } else if (in.base == kRipRegister) {
      address += state.rip;
    }
    if (in.index < 16) address += state.gpr[in.index] << in.scale;
    if (in.address_size == 4) return address & 0xffffffffu;
    if (in.address_size == 2) return address & 0xffffu;
    return address;
  }

  // ---- segmented memory ----
  uint64_t linear_address(uint8_t segment, uint64_t offset, uint32_t size, Access access) {
    if (code_mode == CodeMode::k64) {
      const uint64_t linear = effective_base[segment] + offset;
      if (static_cast<uint64_t>(static_cast<int64_t>(linear << 16) >> 16) != linear)
        raise_fault(segment == kSs ? vector::kStackFault : vector::kGeneralProtection, 0);
      return linear;
    }
    return legacy_linear_address(segment, offset, size, access);
  }
  uint64_t legacy_linear_address(uint8_t segment, uint64_t offset, uint32_t size, Access access);

  template <typename T>
  T read(uint8_t segment, uint64_t offset) {
    return read_linear<T>(linear_address(segment, offset, sizeof(T), Access::kRead));
  }
  template <typename T>
  void write(uint8_t segment, uint64_t offset, T value) {
    write_linear<T>(linear_address(segment, offset, sizeof(T), Access::kWrite), value);
  }
  uint64_t read_sized(uint8_t segment, uint64_t offset, uint8_t size);
  void write_sized(uint8_t segment, uint64_t offset, uint8_t size, uint64_t value);

  // ---- linear memory through the soft TLB ----
  bool user_access() const { return state.cpl == 3; }
  template <typename T>
  T read_linear(uint64_t linear) {
    if ((linear & 0xfff) <= 4096 - sizeof(T)) {
      if (const std::byte* host = tlb.lookup(linear, AccessType::kRead, user_access())) {
        T value;
        std::memcpy(&value, host, sizeof(T));
        return value;
      }
    }
    return static_cast<T>(read_linear_slow(linear, sizeof(T), user_access()));
  }
  template <typename T>
  void write_linear(uint64_t linear, T value) {
    if ((linear & 0xfff) <= 4096 - sizeof(T)) {
      if (std::byte* host = tlb.lookup(linear, AccessType::kWrite, user_access())) {
        std::memcpy(host, &value, sizeof(T));
        return;
      }
    }
    write_linear_slow(linear, sizeof(T), uint64_t{value}, user_access());
  }
  // Explicit data accesses off the TLB's fast path: alignment check and data breakpoints.
  uint64_t read_linear_slow(uint64_t linear, uint8_t size, bool user);
  void write_linear_slow(uint64_t linear, uint8_t size, uint64_t value, bool user);
  // Supervisor-mode (implicit) accesses: descriptor tables, IDT, TSS; neither alignment
  // checked nor matched against data breakpoints.
  uint64_t read_system(uint64_t linear, uint8_t size) {
    return read_linear_unchecked(linear, size, false);
  }
  void write_system(uint64_t linear, uint8_t size, uint64_t value) {
    write_linear_unchecked(linear, size, value, false);
  }
  uint64_t read_linear_unchecked(uint64_t linear, uint8_t size, bool user);
  void write_linear_unchecked(uint64_t linear, uint8_t size, uint64_t value, bool user);
  // Host pointer for an atomic read-modify-write of `size` bytes that stays in one RAM page;
  // nullptr when the operand is MMIO or crosses a page (then the access is not atomic).
  std::byte* writable_host_pointer(uint64_t linear, uint8_t size);
  // Translates for an access (walks on a TLB miss, raising #PF); returns the physical address.
  uint64_t translate(uint64_t linear, Access access, bool user);
  // Copies up to `count` code bytes from `linear` without crossing a page end; sets the
  // physical address and whether it is RAM (blocks from MMIO are not cached).
  size_t fetch_code(uint64_t linear, uint8_t* out, size_t count, uint64_t& physical, bool& ram);

  // The TLB flushes; each also starts a new block-chaining generation, since chained blocks
  // assume the linear-to-physical mappings they were made under.
  void flush_tlb(bool include_global);
  void invalidate_tlb_page(uint64_t linear);
  // Sends writes to a physical page that now holds translated code to the slow path.
  void protect_code_page(uint64_t physical_page) { tlb.trap_writes_to_physical(physical_page); }
  // Guest-physical address of the code at `linear` from the TLB, else by a walk (may fault).
  uint64_t code_physical(uint64_t linear);

  // ---- stack ----
  uint8_t stack_address_size() const;
  void push(uint64_t value, uint8_t size) {
    if (code_mode == CodeMode::k64 && size == 8) {  // the common case, inline
      const uint64_t top = state.gpr[kRsp] - 8;
      write<uint64_t>(kSs, top, value);
      state.gpr[kRsp] = top;
      return;
    }
    push_slow(value, size);
  }
  uint64_t pop(uint8_t size) {
    if (code_mode == CodeMode::k64 && size == 8) {
      const uint64_t value = read<uint64_t>(kSs, state.gpr[kRsp]);
      state.gpr[kRsp] += 8;
      return value;
    }
    return pop_slow(size);
  }
  void push_slow(uint64_t value, uint8_t size);
  uint64_t pop_slow(uint8_t size);
  uint64_t stack_pointer() const;
  void set_stack_pointer(uint64_t value);

  // ---- mode bookkeeping ----
  // Recomputes code_mode and effective_base after CS, CR0, EFER or a segment base changed.
  void update_mode();
  uint64_t read_rflags() const { return state.read_rflags(); }

  // ---- segmentation and far transfers (segmentation.cc, far_transfer.cc, far_return.cc) ----
  // The privilege and type rules are system/segment_checks; these read the tables for them.
  // The 8-byte descriptor named by a non-null `selector` in the GDT or LDT; nullopt for a null
  // selector, or when its bytes are not all within the table's limit or the LDT is unusable
  // (the checks turn that into #GP or #TS with the selector).
  std::optional<uint64_t> read_descriptor(uint16_t selector) {
    if (selector_is_null(selector)) return std::nullopt;
    return read_descriptor_bytes(selector, 0);
  }
  // The upper 8 bytes of a 16-byte IA-32e system descriptor or call gate (SDM 7.2.3, 5.8.3.1).
  std::optional<uint64_t> read_descriptor_high(uint16_t selector) {
    return read_descriptor_bytes(selector, 8);
  }
  std::optional<uint64_t> read_descriptor_bytes(uint16_t selector, uint32_t offset);
  // The hidden part the core keeps for a checked segment, and back (for the checks that look
  // at loaded registers).
  static SegmentCache segment_cache(const LoadedSegment& segment);
  static LoadedSegment loaded_segment(const SegmentCache& cache);
  // Sets the accessed bit of the descriptor in its table when clear (SDM 3.4.5.1).
  void mark_accessed(uint16_t selector, uint64_t descriptor);
  // Loads a checked data or stack segment register (`descriptor`: what the check was given).
  void install_segment(uint8_t segment, const LoadedSegment& loaded,
                       std::optional<uint64_t> descriptor);
  // MOV/POP/LxS to a data or stack segment register, with the protected-mode checks.
  void load_segment(uint8_t segment, uint16_t selector);
  // Loads CS (already checked) and switches CPL and code mode.
  void set_code_segment(const SegmentCache& cache, uint8_t cpl);
  void far_jump(uint16_t selector, uint64_t offset, uint8_t operand_size);
  void far_call(uint16_t selector, uint64_t offset, uint8_t operand_size);
  void far_return(uint8_t operand_size, uint16_t release_bytes);
  void interrupt_return(uint8_t operand_size);
  // The stack of privilege level `new_cpl`, or IST entry `ist` (1-7) of a 64-bit TSS, from the
  // current TSS (system/descriptors' layouts): #TS(TR) when it lies past the TSS limit.
  struct InnerStack {
    uint64_t pointer = 0;
    uint16_t selector = 0;  // outside IA-32e mode
  };
  InnerStack tss_inner_stack(uint8_t new_cpl, uint8_t ist);
  // #GP(0) unless `offset` is a valid RIP in `code` (within its limit; canonical for 64-bit).
  void check_code_offset(const SegmentCache& code, uint64_t offset) const;
  void push_return_address(uint16_t code_selector, uint64_t return_rip, uint8_t size);
  void protected_far_transfer(FarTransfer transfer, uint16_t selector, uint64_t offset,
                              uint8_t operand_size);
  void through_call_gate(FarTransfer transfer, uint16_t selector, uint64_t low);
  // The protected-mode end of far RET and IRET: checks and loads CS:RIP and, for a return to an
  // outer level (or `always_pop_stack`: IRET in 64-bit mode), SS:RSP from `stack_slot`.
  void complete_return(uint16_t selector, uint64_t offset, uint8_t operand_size,
                       uint64_t stack_slot, uint16_t release_bytes, bool always_pop_stack);
  // IRET from CPL 0 to virtual-8086 mode, its nine-dword frame at `top` (far_return.cc).
  void return_to_virtual_8086(uint64_t top);

  // MOV to CR0/CR3/CR4 (system_handlers.cc): system/control_registers' checks, the paging
  // transition and the TLB flush it asks for; a task switch loads CR3 the same way.
  void write_paging_control(uint8_t index, uint64_t value);

  // ---- hardware task switches (task_switch.cc, SDM vol. 3A ch. 7) ----
  // Far JMP/CALL to a TSS descriptor or through a task gate (`target` checked, `descriptor` raw).
  void far_task_switch(FarTransfer transfer, uint16_t selector, const FarTarget& target,
                       uint64_t descriptor);
  // An interrupt or exception through a task gate in the IDT.
  void event_task_switch(uint16_t tss_selector, uint8_t vector, bool has_error_code,
                         uint32_t error_code, bool external);
  // IRET with EFLAGS.NT outside IA-32e mode: back to the task the back-link names.
  void return_to_previous_task();
  // SDM 7.3: saves the current task into its TSS and loads the one at `selector`; an event's
  // error code is pushed on the new task's stack.
  void switch_task(uint16_t selector, uint64_t descriptor, TaskSwitchReason reason,
                   std::optional<uint32_t> error_code);
  void load_task_segments(const TaskImage& next);
  void read_task_image(uint64_t base, std::span<uint8_t> image);
  void set_tss_busy(uint16_t selector, bool busy);

  // ---- exceptions and interrupts (exceptions.cc) ----
  // Delivers an exception or interrupt through the IVT/IDT. `software` is INT n/INT3/INTO
  // (gate DPL checked, RIP after the instruction pushed); `external` is every other event
  // (interrupts, NMI, exceptions, INT1): faults while delivering it carry EXT in their selector
  // error codes (SDM 6.13); `fault` is a fault-class exception,
  // whose pushed RFLAGS image has RF set (SDM 17.3.1.1) so IRET back to the instruction
  // does not hit its instruction breakpoint again.
  void deliver(uint8_t vector, bool has_error_code, uint32_t error_code, bool software,
               bool external, bool fault = false);
  // deliver's work, without the EXT bit added to the faults it raises.
  void enter_handler(uint8_t vector, bool has_error_code, uint32_t error_code, bool software,
                     bool external, bool fault);

 private:
  struct PageTarget {
    uint64_t physical;
    std::byte* host;  // nullptr for MMIO
  };
  // Translates and, for RAM, fills the TLBs the access allows.
  PageTarget translate_page(uint64_t linear, Access access, bool user);
  // After a store through translate_page's host pointer landed: another vCPU may have
  // translated the page again between the write's note_write and the store (it then read the
  // old bytes and marked the page as code once more); it is told again, now that the store
  // is visible (SharedCodePages' protocol: store, then bump, then request).
  void note_store_landed(uint64_t physical);

 public:
  // The one soft TLB (system/tlb): per privilege, read, write and fetch tags and one addend.
  Tlb tlb;

  // ---- debug and alignment check state (debug.cc), after the TLBs: the hot fields above keep
  // their places ----
  // DR7's enabled breakpoints, decoded from state.dr and CR4.DE by update_breakpoints().
  BreakpointSet breakpoints;
  // DR6 B0-B3 of the data and I/O breakpoints the current instruction hit (#DB trap after it).
  uint8_t debug_hits = 0;
  // CR0.AM, EFLAGS.AC and CPL 3: user data accesses must be aligned (#AC(0), SDM 6.15 vector
  // 17). User read/write entries are then kept out of the TLB so each access is checked.
  bool alignment_check = false;
};

}  // namespace lamina::cpu::x86
