#pragma once
// ExitSite: the record behind one exit of a translated block (its end, and the taken path of
// a final Jcc), lying in the code cache right after the exit's code. The exit checks inline
// that the record's generation and RIP are the current ones and that the budget lets it go on
// (a posted request ends the budget: CpuCore::post_requests; a handler that sets anything else
// the run loop must see ends its block through the handler stub instead:
// Translator::handler_stub); then it adds the block's instructions to the retired count and
// takes its `jmp rel32`, patched by JitEngine::chain to the successor's body: a direct jump,
// no lookup. Otherwise the exit goes to the chaining stub's
// site entry (links, jump cache, JitEngine::chain, which patches the record when its
// generation was stale). A patch is only ever followed under the BlockCache generation it was
// made in, which moves on every event that can make it wrong (a dropped block, TLB flush,
// INVLPG of a linked page, mode or CS change, code cache flush, another vCPU's code write):
// no invalidation has to find and unpatch the jump. The exit's code expects the successor's
// RIP in rcx (stored to CpuState already), so the RIP compare needs no load.
//
// Ownership: lives in CodeCache memory, written only through its writable mapping (CodeCache::
// patch). Thread-safety: one vCPU's cache, used only by its thread.

#include <cstddef>
#include <cstdint>

#include "cpu/x86/block_cache.h"

namespace lamina::cpu::x86::jit {

struct ExitSite {
  const void* chain_entry;  // the chaining stub's site entry, jumped to through this slot
  uint64_t generation;      // the generation the patch was made in; 0: not patched
  uint64_t rip;             // the successor's RIP
  Block* source;            // the block this exit ends
  uint32_t count;           // the source block's instruction count
  int16_t jump_offset;      // from this record to the rel32 of the exit's patched jump
  // A direct exit (Jcc/JMP rel) of 64-bit code lying in one page, whose target lies in that
  // page too: its successor there may be patched under the global generation
  // (JitEngine::same_page_successor).
  bool same_page;
  uint8_t reserved = 0;
};
static_assert(sizeof(ExitSite) == 40);

// What the exit check answers in eax.
enum class ExitCheck : uint32_t { kEnter = 0, kLookUp = 1, kPatch = 2 };

}  // namespace lamina::cpu::x86::jit
