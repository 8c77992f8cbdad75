#pragma once
// ExitSite: the record behind one exit of a translated block (its end, the taken path of a
// final Jcc, and the side exit of each Jcc the block runs on past), lying in the code cache
// right after the exit's code. The exit checks inline that the generation its patch was made
// in is current and that the patch's RIP is the exit's (not for a same-page exit: below),
// both immediates in its code (kExitGenerationValueAt), and that the budget lets it go on (a posted request ends the budget:
// CpuCore::post_requests; a handler that sets anything else the run loop must see ends its
// block through the handler stub instead: Translator::handler_stub); then it adds the block's
// instructions to the retired count and takes its `jmp rel32`, patched by JitEngine::chain to
// the successor's body: a direct jump, no lookup. Otherwise the exit goes to the chaining
// stub's site entry, which tells a stale record (neither generation: JitEngine::chain finds
// the successor and patches the record) from a current one that said no (another RIP, the
// budget: links, jump cache). A patch is only ever followed under the BlockCache generation
// it was made in, which moves on every event that can make it wrong (a dropped block, TLB
// flush, INVLPG of a linked page, mode or CS change, code cache flush, another vCPU's code
// write): no invalidation has to find and unpatch the jump. The generation compared is the
// address space's or the global one (a successor on a global page, or a same-page exit): the
// patch rewrites the displacement of the exit's generation load, so either kind is one
// compare on the hot path. The exit's code expects the successor's RIP in rcx
// (stored to CpuState already), so the RIP compare needs no load.
//
// A same-page exit (a direct exit of 64-bit code whose block and target lie in one page) has
// no RIP compare: its successor's physical address is fixed by its block's, whatever RIP the
// block runs at, and it is patched only to a successor that holds at every such RIP, under
// the global generation (JitEngine::same_page_successor), else never (look_up_only).
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
  uint32_t count;           // the instructions completed this way out (up to a side exit's Jcc)
  int8_t jump_offset;       // from this record to the rel32 of the exit's patched jump
  // From this record to the disp32 of the exit's generation load ([rbx+disp32]): the patch
  // points it at the generation it was made in (BlockCache's generation or global one).
  int8_t generation_offset;
  // A direct exit (Jcc/JMP rel) of 64-bit code lying in one page, whose target lies in that
  // page too: its code compares no RIP, and it is patched only under the global generation
  // (JitEngine::same_page_successor).
  bool same_page;
  // A same-page exit whose successor did not hold at every RIP (it straddles its page): the
  // engine never patches it, the chaining stub finds its successors by links and jump cache.
  bool look_up_only = false;
};
static_assert(sizeof(ExitSite) == 24);

// What the exit compares with is in its own code, not in the record: the generation load's
// disp32 (at generation_offset) is followed by `mov rax, imm64` with the generation the patch
// was made in (0, never a generation, until patched) and `cmp rdx, rax; jne`; an exit that
// compares RIP then has `mov rax, imm64` with the successor's RIP and `cmp rcx, rax; jne`
// (SDM vol. 2A: REX.W B8+r io, 39 /r, 75 cb). The record lies on a data cache line of its own,
// and hot user code runs through thousands of exits: two loads of it per exit were ~11% of a
// `seq` run's samples on an AMD EPYC host, where the immediates come with the code's fetch.
// Offsets from the displacement's first byte:
constexpr int kExitGenerationValueAt = 4 + 2;
constexpr int kExitRipValueAt = kExitGenerationValueAt + 8 + 3 + 2 + 2;

}  // namespace lamina::cpu::x86::jit
