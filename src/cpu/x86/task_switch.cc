// Hardware task switches (SDM vol. 3A ch. 7).
#include "cpu/x86/core.h"

namespace lamina::cpu::x86 {

void CpuCore::far_task_switch(FarTransfer, uint16_t selector, const FarTarget&, uint64_t) {
  raise_fault(vector::kGeneralProtection, selector & ~3u);
}

void CpuCore::event_task_switch(uint16_t, uint8_t vector_number, bool, uint32_t, bool external) {
  raise_fault(vector::kGeneralProtection, idt_error_code(vector_number, external));
}

}  // namespace lamina::cpu::x86
