#include "cpu/x86/jit/jit_engine.h"

#include <chrono>
#include <utility>

#include "cpu/x86/jit/translator.h"

namespace lamina::cpu::x86::jit {
Result<std::unique_ptr<JitEngine>> JitEngine::create(CpuCore& core, size_t cache_bytes,
                                                     uint32_t translate_on_run) {
  auto cache = CodeCache::create(cache_bytes);
  if (!cache) return fail(cache.error());
  auto stubs = CodeCache::create(4096);
  if (!stubs) return fail(stubs.error());
  auto engine = std::unique_ptr<JitEngine>(new JitEngine(core, std::move(*cache), std::move(*stubs), translate_on_run));
  // Where Block::links lie in a Block (not standard layout, so not offsetof).
  const Block probe;
  const auto links_offset = static_cast<int32_t>(reinterpret_cast<const std::byte*>(&probe.links[0]) -
                                                 reinterpret_cast<const std::byte*>(&probe));
  const std::byte* stub = engine->stubs_->install(engine->translator_->chain_stub(links_offset));
  if (stub == nullptr) return fail(ErrorCode::kInternal, "JIT chaining stub: does not fit its page");
  engine->translator_->set_chain_stub(stub);
  const std::byte* handler = engine->stubs_->install(engine->translator_->handler_stub());
  if (handler == nullptr) return fail(ErrorCode::kInternal, "JIT handler stub: does not fit its page");
  engine->translator_->set_handler_stub(handler);
  return engine;
}

JitEngine::JitEngine(CpuCore& core, std::unique_ptr<CodeCache> cache, std::unique_ptr<CodeCache> stubs,
                     uint32_t translate_on_run)
    : core_(core),
      cache_(std::move(cache)),
      stubs_(std::move(stubs)),
      profile_(JitProfile::from_environment(core.vcpu_index)),
      translator_(std::make_unique<Translator>(
          core, record_,
          Translator::Chain{this, reinterpret_cast<const void*>(&JitEngine::chain),
                            jump_cache_.entries(), &stub_entries_})),
      perf_map_(PerfMap::from_environment()),
      translate_on_run_(translate_on_run) {
  translator_->set_profile(profile_.get());
}

JitEngine::~JitEngine() {
  if (profile_ != nullptr) profile_->write(core_.retired, core_.blocks.generation() >> 32);
}

const std::byte* JitEngine::code_for(Block& block) {
  if (block.code != nullptr && block.code_epoch == cache_->epoch()) return block.code;
  block.code = nullptr;
  // Code that runs once and is rewritten or dropped (a guest churning code, code in MMIO) stays
  // interpreted and costs no cache space when translate_on_run is 2 or more.
  if (++block.runs < translate_on_run_) {
    if (profile_ != nullptr) profile_->note_interpreted_block();
    return nullptr;
  }
  const auto start = profile_ != nullptr ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  const std::span<const std::byte> code = translator_->translate(block);
  if (profile_ != nullptr) profile_->note_translation(std::chrono::steady_clock::now() - start, code.size());
  if (code.empty()) return nullptr;
  const std::byte* installed = cache_->install(code);
  if (installed == nullptr) {
    // Full: drop every translation (their blocks see the new epoch) and start again; the new
    // chaining generation retires every link body and jump cache entry pointing into it.
    cache_->flush();
    if (profile_ != nullptr) profile_->note_flush();
    core_.blocks.new_generation();
    installed = cache_->install(code);
    if (installed == nullptr) return nullptr;
  }
  ++translations_;
  if (perf_map_ != nullptr) perf_map_->note(installed, code, core_.state.rip, block);
  block.code = installed;
  block.code_epoch = cache_->epoch();
  return installed;
}

const std::byte* JitEngine::chain(JitEngine* engine, Block* finished, uint32_t completed,
                                  const ExitSite* site) noexcept {
  CpuCore& core = engine->core_;
  CpuState& state = core.state;
  JitProfile* profile = engine->profile_.get();
  // What Cpu::run looks at between blocks; anything there sends the block back to it.
  if (core.requests->load(std::memory_order_relaxed) != 0 || state.waiting_for_startup ||
      state.halted || core.retired + completed >= core.retired_limit.load(std::memory_order_relaxed) || core.blocks.has_retired() ||
      state.interrupt_shadow || (state.rflags & (rflags::kTf | rflags::kRf)) != 0 ||
      core.breakpoints_armed) {
    if (profile != nullptr) profile->note_chain_call(JitProfile::ChainOutcome::kStopped);
    return nullptr;
  }
  const uint64_t generation = core.blocks.generation();
  Block* next = nullptr;
  Block::Link* found = nullptr;
  for (Block::Link& link : finished->links) {
    if (link.rip == state.rip && core.blocks.current(link.generation) && core.block_current(link.block)) {
      next = link.block;
      found = &link;
      break;
    }
  }
  // An indirect target, or a third successor: the jump cache holds what the run loop found.
  if (next == nullptr) {
    next = engine->jump_cache_.find(state.rip, generation, core.blocks.global_generation());
    if (next != nullptr && !core.block_current(next)) next = nullptr;
  }
  // Nothing of this generation: the run loop's own lookup, where it needs no walk, so that a
  // new generation costs one call here per successor instead of a trip through the run loop.
  const bool looked_up = next == nullptr;
  if (looked_up) next = engine->find_block(state.rip);
  if (next == nullptr || next->code == nullptr || next->code_epoch != engine->cache_->epoch()) {
    if (profile != nullptr) profile->note_chain_call(JitProfile::ChainOutcome::kNotFound);
    return nullptr;
  }
  if (profile != nullptr) profile->note_chain_call(JitProfile::ChainOutcome::kFound);
  const std::byte* body = next->code + engine->translator_->body_offset();
  const bool global = engine->on_global_page(state.rip, *next);
  const uint64_t recorded = global ? core.blocks.global_generation() : generation;
  if (looked_up) {
    // As the run loop links the block it ran before to the one it found.
    found = &finished->links[finished->next_link];
    finished->next_link ^= 1;
    *found = Block::Link{state.rip, recorded, next, nullptr};
  }
  // From now on translated code follows it inline while the generation holds.
  if (found != nullptr) {
    found->body = body;
    found->generation = recorded;
  }
  engine->jump_cache_.record(state.rip, recorded, body, next);
  core.blocks.note_linked(state.rip, *next);
  if (site != nullptr) {
    if (profile != nullptr) profile->note_stale_site();
    // A direct exit to the block's own page holds in every address space of the epoch too
    // (same_page_successor); its link and jump cache entry above, keyed by RIP alone, do not.
    // A same-page site compares no RIP, so it takes no patch that needs one.
    const bool same_page = same_page_successor(*site, *finished, state.rip, *next);
    const auto kind = global      ? JitProfile::PatchKind::kGlobalPage
                      : same_page ? JitProfile::PatchKind::kSamePage
                                  : JitProfile::PatchKind::kAddressSpace;
    if (site->same_page && !same_page) {
      engine->keep_unpatched(*site);
    } else {
      engine->patch(*site, body, global || same_page ? core.blocks.global_generation() : generation, state.rip,
                    kind);
    }
  }
  // Nothing else to write on the way in, as for a patched exit: instruction_rip and
  // running_block are set by the next handler call (or by the chaining stub on the way out),
  // and stop_block and event_delivered are clear (a handler that sets them ends its block).
  core.retired += completed;
  return body;
}

Block* JitEngine::find_block(uint64_t rip) const {
  // As Cpu::run's find_block, in 64-bit code (RIP is linear) and from the TLB only: a page
  // that is not there must be walked, which may fault, and that is the run loop's business.
  if (core_.code_mode != CodeMode::k64) return nullptr;
  const TlbPage* entry = core_.tlb.find(rip);
  if (entry == nullptr || !entry->permits(AccessType::kExecute, core_.user_access())) return nullptr;
  Block* block = core_.blocks.find(entry->physical_page() | (rip & 0xfff), CodeMode::k64);
  if (block == nullptr || !core_.block_current(block)) return nullptr;
  // A block found by its first page whose last instruction runs into the next: that page must
  // still map to the block's last page here (else the run loop decodes it again).
  constexpr uint64_t kPage = ~uint64_t{0xfff};
  if (!within_one_page(*block)) {
    const TlbPage* next = core_.tlb.find((rip & kPage) + 0x1000);
    if (next == nullptr || !next->permits(AccessType::kExecute, core_.user_access()) ||
        next->physical_page() != (block->last_page & kPage)) {
      return nullptr;
    }
  }
  return block;
}

bool JitEngine::on_global_page(uint64_t rip, const Block& block) const {
  // 64-bit code (RIP is linear), the whole block in the page the TLB holds for `rip`: its
  // translation then outlives a CR3 load, and so may a link to the block.
  if (core_.code_mode != CodeMode::k64 || !within_one_page(block)) return false;
  const TlbPage* entry = core_.tlb.find(rip);
  return entry != nullptr && entry->global() && entry->physical_page() == (block.physical & ~uint64_t{0xfff});
}

bool JitEngine::same_page_successor(const ExitSite& site, const Block& finished, uint64_t rip,
                                    const Block& next) {
  // `finished` ran (64-bit code) at a RIP whose page maps to its physical page, with the
  // page offset of its physical address: it was entered through a lookup, a link or jump
  // cache entry keyed by that RIP, or a patched exit whose successor holds at that RIP (this
  // argument, inductively), and what it ran could change that mapping only by a MOV CR3
  // (which ends its block) or an INVLPG of the page (which starts a new epoch when a patch of
  // the epoch leads into the page, below). The site's target lies at a fixed offset from the
  // block's start within that linear page (the translator checked the page offsets:
  // same_page), so it maps to the same physical page at the same offset, whatever RIP the
  // block runs at, in any address space: the block there is `next` (when it lies in that
  // page too: a block's bytes in the next page would map differently elsewhere), and the
  // site needs no RIP compare (it has none). What can make the patch wrong moves the epoch,
  // and with it the global generation: `next` dropped (it is linked in the epoch:
  // note_linked), an INVLPG of the target's page (marked by note_linked), a TLB flush, a
  // mode, CS, CR0 or CR4 change, a code cache flush, another vCPU's code write. The
  // privilege side is in the global generation too.
  constexpr uint64_t kPage = ~uint64_t{0xfff};
  return site.same_page && site.source == &finished && finished.mode == CodeMode::k64 &&
         next.mode == CodeMode::k64 && within_one_page(finished) && within_one_page(next) &&
         next.physical == ((finished.physical & kPage) | (rip & 0xfff));
}

void JitEngine::keep_unpatched(const ExitSite& site) {
  const auto* record = reinterpret_cast<const std::byte*>(&site);
  if (site.look_up_only || !cache_->contains(record)) return;
  ExitSite updated = site;
  updated.look_up_only = true;
  cache_->patch(record, std::as_bytes(std::span(&updated, 1)));
}

void JitEngine::patch(const ExitSite& site, const std::byte* body, uint64_t generation,
                      uint64_t rip, JitProfile::PatchKind kind) {
  const auto* record = reinterpret_cast<const std::byte*>(&site);
  const std::byte* field = record + site.jump_offset;
  const std::byte* generation_field = record + site.generation_offset;
  // The rel32 of a jmp ends at field + 4; the cache is far smaller than 2 GiB, but a record
  // that is not the cache's own is left alone rather than trusted.
  const int64_t distance = body - (field + 4);
  if (!cache_->contains(record) || !cache_->contains(field) || !cache_->contains(generation_field) ||
      !cache_->contains(generation_field + kExitRipValueAt + 7) || !cache_->contains(body) ||
      distance != static_cast<int32_t>(distance)) {
    return;
  }
  const auto jump = static_cast<int32_t>(distance);
  // The exit's generation load ([rbx+disp32], rbx the core) reads the generation the patch
  // holds under, and the check compares it and RIP with its immediates (exit_site.h).
  const uint64_t* compared = generation == core_.blocks.global_generation() ? core_.blocks.global_generation_address()
                                                                             : core_.blocks.generation_address();
  const auto displacement = static_cast<int32_t>(reinterpret_cast<const std::byte*>(compared) -
                                                 reinterpret_cast<const std::byte*>(&core_));
  // The generation last: until it is current (it is stale now) the exit follows neither the
  // jump nor the displacement.
  if (!cache_->patch(field, std::as_bytes(std::span(&jump, 1))) ||
      !cache_->patch(generation_field, std::as_bytes(std::span(&displacement, 1))) ||
      (!site.same_page && !cache_->patch(generation_field + kExitRipValueAt, std::as_bytes(std::span(&rip, 1)))) ||
      !cache_->patch(generation_field + kExitGenerationValueAt, std::as_bytes(std::span(&generation, 1)))) {
    return;
  }
  ++patched_exits_;
  if (profile_ != nullptr) profile_->note_patch(kind);
}

BlockRun JitEngine::run(Block& block, bool& translated) {
  const std::byte* code = code_for(block);
  translated = code != nullptr;
  if (!translated) return {};
  if (profile_ != nullptr) profile_->note_run();
  // What the run loop found for this RIP, for the inline lookups of indirect exits.
  jump_cache_.record(core_.state.rip, core_.blocks.generation(), code + translator_->body_offset(), &block);
  core_.blocks.note_linked(core_.state.rip, block);
  const auto function = reinterpret_cast<Translator::Code>(const_cast<std::byte*>(code));
  const uint32_t result = function(&core_);
  return BlockRun{result & ~Translator::kFaulted, (result & Translator::kFaulted) != 0};
}

void JitEngine::rethrow_exception() {
  if (record_.other) {
    std::exception_ptr other = std::exchange(record_.other, nullptr);
    record_.fault.reset();
    std::rethrow_exception(other);
  }
  const GuestFault fault = *record_.fault;
  record_.fault.reset();
  throw fault;
}

}  // namespace lamina::cpu::x86::jit
