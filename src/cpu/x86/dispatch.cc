// Routes a decoded instruction to its handler and decides where basic blocks end.
#include "cpu/x86/handlers.h"

namespace lamina::cpu::x86 {

Handler select_handler(const Instruction& in) {
  // 0F AE is shared: fences and CLFLUSH are the core's, FXSAVE/LDMXCSR/... the SIMD unit's.
  const bool core_part_of_simd_map = in.opcode == 0x1ae && (!in.memory || in.group_index() == 7);
  if (!core_part_of_simd_map) {
    if (Handler handler = select_simd_handler(in)) return handler;
  }
  using Selector = Handler (*)(const Instruction&);
  static constexpr Selector kSelectors[] = {
      &select_alu_handler,       &select_data_handler,   &select_shift_handler,
      &select_muldiv_handler,    &select_bit_handler,    &select_string_handler,
      &select_control_handler,   &select_stack_handler,  &select_atomic_handler,
      &select_system_handler,    &select_fast_system_call_handler,
      &select_descriptor_handler, &select_bcd_handler,
  };
  for (const Selector selector : kSelectors) {
    if (Handler handler = selector(in)) return handler;
  }
  return &invalid_opcode;
}

bool ends_block(const Instruction& in) {
  const uint16_t op = in.opcode;
  if ((op >= 0x70 && op <= 0x7f) || (op >= 0x180 && op <= 0x18f)) return true;
  switch (op) {
    case 0xe0: case 0xe1: case 0xe2: case 0xe3: case 0xe8: case 0xe9: case 0xea: case 0xeb:
    case 0x9a: case 0xc2: case 0xc3: case 0xca: case 0xcb: case 0xcc: case 0xcd: case 0xce:
    case 0xcf: case 0xf1: case 0xf4:
    case 0x105: case 0x107: case 0x134: case 0x135: case 0x10b: case 0x1ff: case 0x1b9:
      return true;
    case 0xff: return in.group_index() >= 2 && in.group_index() <= 5;
    default: return false;
  }
}

}  // namespace lamina::cpu::x86
