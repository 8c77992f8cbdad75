#pragma once
// ExitSite: the record behind one exit of a translated block (its end, and the taken path of
// a final Jcc), lying in the code cache right after the exit's code. The exit checks inline
// that the generation and RIP its patch was made for are the current ones and that the budget
// lets it go on (a posted request ends the budget: CpuCore::post_requests; a handler that sets
// anything else the run loop must see ends its block through the handler stub instead:
// Translator::handler_stub); then it adds the block's instructions to the retired count and
// takes its `jmp rel32`, patched by JitEngine::chain to the successor's body: a direct jump,
// no lookup. Otherwise the exit goes to the chaining stub's site entry (links, jump cache,
// JitEngine::chain, which patches the exit when its generation was stale). A patch is only
// ever followed under the BlockCache generation it was made in, which moves on every event
// that can make it wrong (a dropped block, TLB flush, INVLPG of a linked page, mode or CS
// change, code cache flush, another vCPU's code write): no invalidation has to find and
// unpatch the jump. The exit's code expects the successor's RIP in rcx (stored to CpuState
// already), so the RIP compare needs no load.
//
// What the check compares with is not read from this record but patched into the check's own
// instructions (ExitCheck*At below): the generation field it loads (the address space's or
// the global one), the generation and the RIP as 64-bit immediates. A record lies on a data
// cache line of its own, and hot user code runs through thousands of exits: reading two
// fields of it per exit cost about a tenth of a `seq` run's time in data cache misses, where
// the immediates come with the code's own fetch.
//
// Ownership: lives in CodeCache memory, written only through its writable mapping (CodeCache::
// patch). Thread-safety: one vCPU's cache, used only by its thread.

#include <cstddef>
#include <cstdint>

#include "cpu/x86/block_cache.h"

namespace lamina::cpu::x86::jit {

struct ExitSite {
  const void* chain_entry;  // the chaining stub's site entry, jumped to through this slot
  Block* source;            // the block this exit ends
  uint32_t count;           // the source block's instruction count
  int16_t jump_offset;      // from this record to the rel32 of the exit's patched jump
  int16_t check_offset;     // from this record to the exit check's first instruction
  // A direct exit (Jcc/JMP rel) of 64-bit code lying in one page, whose target lies in that
  // page too: its successor there may be patched under the global generation
  // (JitEngine::same_page_successor).
  bool same_page;
};
static_assert(sizeof(ExitSite) == 32);

// The exit check's first instructions and the operands JitEngine::patch writes, as offsets
// from the check's start (SDM vol. 2A, MOV and CMP encodings):
//   mov rdx, [rbx + disp32]   48 8b 93 disp32   the generation field: the address space's or
//                                               the global one (BlockCache::generation/global)
//   mov rax, imm64            48 b8 imm64       the generation the patch holds under (0, never
//                                               a generation, until patched)
//   cmp rdx, rax; jne patch   48 39 c2, 0f 85 rel32
//   mov rax, imm64            48 b8 imm64       the successor's RIP
//   cmp rcx, rax; jne look_up
constexpr size_t kExitCheckGenerationFieldAt = 3;
constexpr size_t kExitCheckGenerationAt = 9;
constexpr size_t kExitCheckRipAt = 28;

// What the exit check answers in eax.
enum class ExitCheck : uint32_t { kEnter = 0, kLookUp = 1, kPatch = 2 };

}  // namespace lamina::cpu::x86::jit
