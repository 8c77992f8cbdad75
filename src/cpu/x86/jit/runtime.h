#pragma once
// The C++ side that translated code calls: every call from generated code goes through one of
// these noexcept functions, so no C++ exception ever unwinds through generated code (it has no
// unwind information). A handler's GuestFault, or any other exception, is caught here and kept
// in an ExitRecord; the generated code then returns to Cpu::run, which rethrows it where the
// interpreter would have caught it.
//
// Thread-safety: that of the CpuCore passed in (its vCPU's thread).

#include <cstdint>
#include <exception>
#include <optional>

#include "cpu/x86/core.h"

namespace lamina::cpu::x86::jit {

// What stopped a translated block early, for the run loop to rethrow.
struct ExitRecord {
  std::optional<GuestFault> fault;
  std::exception_ptr other;  // anything but a GuestFault (a host error: rethrown as it is)
};

// Runs the instruction's interpreter handler; 0 when it completed, 1 when it threw (recorded).
extern "C" uint32_t lamina_jit_call_handler(CpuCore* core, const Instruction* instruction,
                                            ExitRecord* record) noexcept;
// The Jcc condition `code` (0-15) on the core's lazy flags, for flags the translator cannot
// see statically: 1 taken, 0 not.
extern "C" uint32_t lamina_jit_condition(const CpuCore* core, uint32_t code) noexcept;
// The six arithmetic flags as RFLAGS bits (LazyFlags::materialize), for an inlined ROL/ROR
// that replaces only CF and OF.
extern "C" uint64_t lamina_jit_materialized_flags(const CpuCore* core) noexcept;
// The time stamp counter RDTSC reads (MsrFile::tsc), for an inlined RDTSC.
extern "C" uint64_t lamina_jit_read_time_stamp(const CpuCore* core) noexcept;
// The lazy carry flag (INC/DEC keep it as carry_in) when the translator cannot see it.
extern "C" uint32_t lamina_jit_carry(const CpuCore* core) noexcept;

}  // namespace lamina::cpu::x86::jit
