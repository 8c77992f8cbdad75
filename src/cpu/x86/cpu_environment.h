#pragma once
// The narrow interfaces through which the CPU core reaches the world outside guest RAM: port
// I/O, MMIO for guest-physical addresses that are not RAM, the interrupt controller and the
// clock. cpu/x86 knows nothing of devices; the machine implements these.
//
// Thread-safety: every method is called on the calling vCPU's thread; implementations shared by
// several vCPUs synchronize internally.

#include <cstdint>
#include <optional>

namespace lamina::cpu::x86 {

class CpuEnvironment {
 public:
  virtual ~CpuEnvironment() = default;

  // Port I/O of `size` bytes (1, 2 or 4). Unclaimed ports read all ones.
  virtual uint32_t io_read(uint16_t port, uint8_t size) = 0;
  virtual void io_write(uint16_t port, uint8_t size, uint32_t value) = 0;

  // Accesses of `size` bytes (1, 2, 4 or 8) to guest-physical addresses outside RAM. An access
  // never crosses a page; unclaimed reads return all ones.
  virtual uint64_t mmio_read(uint64_t physical, uint8_t size) = 0;
  virtual void mmio_write(uint64_t physical, uint8_t size, uint64_t value) = 0;

  // The interrupt controller's side (the local APIC or the PIC's INTR line).
  // True when a maskable interrupt is ready for this vCPU; the core asks only when RFLAGS.IF
  // allows it to take one.
  virtual bool interrupt_pending() = 0;
  // Acknowledges the highest-priority pending interrupt and returns its vector (INTA).
  virtual uint8_t acknowledge_interrupt() = 0;
  // Takes a pending NMI (edge: true once per NMI).
  virtual bool take_nmi() { return false; }

  // Time-stamp counter value for RDTSC/RDTSCP (before the guest's IA32_TSC offset).
  virtual uint64_t read_tsc() = 0;

  // MSRs the platform implements (the local APIC's: IA32_APIC_BASE, IA32_TSC_DEADLINE, the
  // x2APIC range). For an index platform_msr() claims, a nullopt read or a false write is #GP;
  // the core still keeps its own copy of IA32_APIC_BASE in step.
  virtual bool platform_msr(uint32_t) const { return false; }
  virtual std::optional<uint64_t> read_platform_msr(uint32_t) { return std::nullopt; }
  virtual bool write_platform_msr(uint32_t, uint64_t) { return false; }
};

// Requests another thread may post to a running vCPU (Cpu::post). The core looks at them at
// basic-block boundaries, so a request is seen within one block.
namespace request {
inline constexpr uint32_t kKick = 1u << 0;       // return from run() with CpuExit::kKicked
inline constexpr uint32_t kInterrupt = 1u << 1;  // an interrupt may be pending: ask the controller
inline constexpr uint32_t kNmi = 1u << 2;        // ask take_nmi()
inline constexpr uint32_t kInit = 1u << 3;       // INIT: reset to the wait-for-SIPI state
inline constexpr uint32_t kStartup = 1u << 4;    // SIPI (vector given with post_startup)
inline constexpr uint32_t kFlushWrites = 1u << 5;  // drop write-TLB entries (SharedCodePages)
inline constexpr uint32_t kA20 = 1u << 6;          // the A20 gate changed (Cpu::set_a20_enabled)
// A vCPU wrote a page holding translated code (SharedCodePages): chained successors may be stale.
inline constexpr uint32_t kCodeWritten = 1u << 7;
}  // namespace request

}  // namespace lamina::cpu::x86
