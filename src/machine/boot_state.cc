#include "machine/boot_state.h"

#include <fmt/format.h>

namespace lamina::machine {

std::string describe(const BootState& state) {
  return fmt::format(
      "{} rip={:#x} rsp={:#x} rax={:#x} rbx={:#x} rsi={:#x} cr0={:#x} cr3={:#x} cr4={:#x} "
      "efer={:#x} cs={:#x} (attributes {:#x}) ds={:#x} gdt={:#x}/{:#x}",
      state.mode == CpuMode::kLong64 ? "long mode" : "32-bit protected mode", state.rip,
      state.rsp, state.rax, state.rbx, state.rsi, state.cr0, state.cr3, state.cr4, state.efer,
      state.cs.selector, state.cs.attributes, state.ds.selector, state.gdt.base, state.gdt.limit);
}

}  // namespace lamina::machine
