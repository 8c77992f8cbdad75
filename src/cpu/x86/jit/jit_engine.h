#pragma once
// JitEngine: runs a vCPU's decoded blocks as translated host code. A block is translated on its
// translate_on_run-th run on this path (Translator), its code kept in the vCPU's CodeCache and
// recorded on the Block with the cache's epoch; when the cache is full it is flushed whole and
// every block translates again when it next runs. A block dropped by BlockCache (its page
// written, a stale cross-vCPU generation) takes its code pointer with it, so that code is
// never entered again.
//
// Ownership: owns the code cache and translator; borrows the core, which must outlive it.
// Thread-safety: one per vCPU, used only by its thread.

#include <cstddef>
#include <cstdint>
#include <memory>

#include "base/error.h"
#include "cpu/x86/core.h"
#include "cpu/x86/jit/code_cache.h"
#include "cpu/x86/jit/exit_site.h"
#include "cpu/x86/jit/jump_cache.h"
#include "cpu/x86/jit/perf_map.h"
#include "cpu/x86/jit/profile.h"
#include "cpu/x86/jit/runtime.h"

namespace lamina::cpu::x86::jit {

class Translator;

// The outcome of running one block: how many instructions completed, and whether the next one
// raised an exception (taken from the engine with take_exception()).
struct BlockRun {
  size_t completed = 0;
  bool stopped_by_exception = false;
};

class JitEngine {
 public:

  // Blocks translate on their `translate_on_run`th run (1: at once).
  static Result<std::unique_ptr<JitEngine>> create(CpuCore& core, size_t cache_bytes,
                                                   uint32_t translate_on_run = 1);
  ~JitEngine();
  JitEngine(const JitEngine&) = delete;
  JitEngine& operator=(const JitEngine&) = delete;

  // Runs `block` from its first instruction, as Cpu::run's handler loop would; false in
  // `translated` when the block could not be translated (the caller interprets it). When a
  // block completes, translated code goes on to its successor itself (chain()) while the run
  // loop has nothing to do; `completed` then counts the instructions of last_block(), the
  // earlier blocks' being added to the core's retired count already.
  BlockRun run(Block& block, bool& translated);
  // The block translated code ran last: the core's running_block, which it sets on its way out.
  Block* last_block() const { return core_.running_block; }
  // Rethrows what stopped the last block (a GuestFault, or a host error as it was thrown).
  [[noreturn]] void rethrow_exception();

  const CodeCache& cache() const { return *cache_; }
  uint64_t translations() const { return translations_; }
  // Exits patched to jump straight to their successor (exit_site.h), all told.
  uint64_t patched_exits() const { return patched_exits_; }
  // Exits that went to the chaining stub instead of their patched jump (not patched, stale,
  // another RIP, the budget, an indirect exit), all told.
  uint64_t stub_entries() const { return stub_entries_; }

 private:
  JitEngine(CpuCore& core, std::unique_ptr<CodeCache> cache, std::unique_ptr<CodeCache> stubs,
            uint32_t translate_on_run);
  const std::byte* code_for(Block& block);
  // Called by translated code when `finished` ran to its end and its inline chaining (the
  // links' bodies, the jump cache) found nothing: the body of the successor's translation when
  // the run loop would go straight there (no request, budget left, no checked path, a current
  // chained block already translated), else null (back to the loop). Fills the link's body
  // and the jump cache, so the next time the inline path finds it.
  // With `site` (an exit whose record is from an older generation) the exit is patched to the
  // body found.
  static const std::byte* chain(JitEngine* engine, Block* finished, uint32_t completed,
                                const ExitSite* site) noexcept;
  // The current block at `rip` when the run loop would find it without walking the page
  // tables (64-bit code, its page in the TLB), else null.
  Block* find_block(uint64_t rip) const;
  // Whether links to `block`, found at `rip`, may be recorded under the global generation.
  bool on_global_page(uint64_t rip, const Block& block) const;
  // Whether `site`, an exit of `finished`, may be patched to `next` at `rip` under the global
  // generation: a direct exit of 64-bit code within one page to a block in that same page.
  static bool same_page_successor(const ExitSite& site, const Block& finished, uint64_t rip,
                                  const Block& next);
  void patch(const ExitSite& site, const std::byte* body, uint64_t generation, uint64_t rip,
             JitProfile::PatchKind kind);
  // Marks a same-page `site` look_up_only: its successor does not hold at every RIP, so it is
  // never patched (exit_site.h).
  void keep_unpatched(const ExitSite& site);

  CpuCore& core_;
  std::unique_ptr<CodeCache> cache_;
  // The chaining and handler stubs (Translator::chain_stub, handler_stub), apart from the
  // flushed cache.
  std::unique_ptr<CodeCache> stubs_;
  ExitRecord record_;
  JumpCache jump_cache_;
  // LAMINA_JIT_PROFILE's counters (null when off); declared before the translator, whose
  // code points into it.
  std::unique_ptr<JitProfile> profile_;
  std::unique_ptr<Translator> translator_;
  std::unique_ptr<PerfMap> perf_map_;  // LAMINA_JIT_PERF_MAP's files (null when off)
  uint32_t translate_on_run_;
  uint64_t translations_ = 0;
  uint64_t patched_exits_ = 0;
  uint64_t stub_entries_ = 0;  // written by the chaining stub
};

}  // namespace lamina::cpu::x86::jit
