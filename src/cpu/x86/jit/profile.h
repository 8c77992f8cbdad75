#pragma once
// JitProfile: an opt-in count, per instruction form, of how often translated code called an
// interpreter handler (a form the translator does not inline) or took an inlined form's slow
// path (a TLB miss, MMIO, a page crossing, a fault), and of translations and their host time.
// It decides what to inline next. Off unless LAMINA_JIT_PROFILE names a file: then the
// translator emits one counter increment before each handler call (none when off), and the
// engine appends the top forms to that file when its vCPU goes away.
//
// Ownership: owns its counters; their addresses are stable (the translator bakes them into
// code). Thread-safety: one per vCPU, used only by its thread (the counters are plain adds).

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "cpu/x86/instruction.h"

namespace lamina::cpu::x86::jit {

class JitProfile {
 public:
  // A profile writing to the file LAMINA_JIT_PROFILE names, or null when it names none.
  static std::unique_ptr<JitProfile> from_environment(uint32_t vcpu_index);
  JitProfile(std::string path, uint32_t vcpu_index);

  // The counter generated code increments when `in` calls its handler: a form not inlined,
  // or (`slow_path`) the rare path of an inlined one.
  uint64_t* handler_counter(const Instruction& in, bool slow_path);
  void note_translation(std::chrono::nanoseconds took, size_t code_bytes);
  void note_flush() { ++flushes_; }
  void note_interpreted_block() { ++interpreted_blocks_; }
  // JitEngine::chain's outcome: a successor found (its link or the jump cache), none (back
  // to the run loop), or a between-blocks condition (request, budget...) that sends it there.
  enum class ChainOutcome { kFound, kNotFound, kStopped };
  void note_chain_call(ChainOutcome outcome) { ++chain_outcomes_[static_cast<size_t>(outcome)]; }
  void note_run() { ++runs_; }
  // An exit patched under the address space's generation, or under the global one: its
  // successor on a global page, or a direct exit within its block's page (exit_site.h).
  enum class PatchKind { kAddressSpace, kGlobalPage, kSamePage };
  void note_patch(PatchKind kind) { ++patches_[static_cast<size_t>(kind)]; }
  // A chain call from an exit whose record was from an older generation (to be patched).
  void note_stale_site() { ++stale_sites_; }

  // Appends the report (totals, then the forms by calls) to the file; `retired` is the vCPU's
  // instruction count, for the calls' share.
  void write(uint64_t retired, uint64_t epochs) const;

  // "add r/m32 mem" and the like: the mnemonic and the operand form (for the report; tests).
  static std::string describe(const Instruction& in);

 private:
  struct Counts {
    uint64_t calls = 0;
    uint64_t slow_paths = 0;
    std::string form;
  };
  std::string path_;
  uint32_t vcpu_index_;
  // Keyed by the form (opcode, group digit, memory, size, prefixes, mode): node-based, so a
  // counter's address stays put while others are added.
  std::unordered_map<uint64_t, Counts> forms_;
  uint64_t translations_ = 0;
  uint64_t translation_nanoseconds_ = 0;
  uint64_t code_bytes_ = 0;
  uint64_t flushes_ = 0;
  uint64_t interpreted_blocks_ = 0;
  std::array<uint64_t, 3> chain_outcomes_{};
  uint64_t runs_ = 0;
  std::array<uint64_t, 3> patches_{};
  uint64_t stale_sites_ = 0;
};

}  // namespace lamina::cpu::x86::jit
