#include "cpu/x86/jit/runtime.h"

namespace lamina::cpu::x86::jit {

extern "C" uint32_t lamina_jit_call_handler(CpuCore* core, const Instruction* instruction,
                                            ExitRecord* record) noexcept {
  try {
    instruction->handler(*core, *instruction);
    return 0;
  } catch (const GuestFault& fault) {
    record->fault = fault;
  } catch (...) {
    record->other = std::current_exception();
  }
  return 1;
}

extern "C" uint32_t lamina_jit_condition(const CpuCore* core, uint32_t code) noexcept {
  return core->state.flags.condition(static_cast<uint8_t>(code)) ? 1 : 0;
}

extern "C" uint64_t lamina_jit_materialized_flags(const CpuCore* core) noexcept {
  return core->state.flags.materialize();
}

extern "C" uint64_t lamina_jit_read_time_stamp(const CpuCore* core) noexcept { return core->msr_file.tsc(); }

extern "C" uint32_t lamina_jit_carry(const CpuCore* core) noexcept {
  return core->state.flags.cf() ? 1 : 0;
}

}  // namespace lamina::cpu::x86::jit
