#pragma once
// VcpuEnvironment: how one vCPU reaches the PC around it. Port I/O goes to the machine's I/O
// bus; MMIO goes to this vCPU's own local APIC page first (each CPU's APIC answers only its own
// accesses, SDM vol. 3A 11.4.1) and then to the shared MMIO bus; interrupts, NMIs and the APIC
// MSRs come from that LAPIC (which asks the 8259 through ExtINT); the TSC is LocalApic::tsc_at
// of the machine clock, the same definition the LAPIC's TSC-deadline timer uses.
//
// Ownership: borrows the buses, the LAPIC and the clock, which outlive the vCPU.
// Thread-safety: called on its vCPU's thread only; the devices synchronize internally.

#include <cstdint>
#include <optional>

#include "cpu/x86/cpu_environment.h"
#include "hw/bus.h"
#include "hw/clock.h"
#include "hw/local_apic.h"

namespace lamina::machine {

class VcpuEnvironment final : public cpu::x86::CpuEnvironment {
 public:
  VcpuEnvironment(hw::Bus& io, hw::Bus& mmio, hw::LocalApic& apic, const hw::Clock& clock)
      : io_(io), mmio_(mmio), apic_(apic), clock_(clock) {}

  uint32_t io_read(uint16_t port, uint8_t size) override;
  void io_write(uint16_t port, uint8_t size, uint32_t value) override;
  uint64_t mmio_read(uint64_t physical, uint8_t size) override;
  void mmio_write(uint64_t physical, uint8_t size, uint64_t value) override;

  bool interrupt_pending() override { return apic_.has_pending_interrupt(); }
  uint8_t acknowledge_interrupt() override { return apic_.acknowledge(); }
  bool take_nmi() override { return apic_.take_nmi(); }
  uint64_t read_tsc() override { return apic_.tsc_at(clock_.now_ns()); }

  bool platform_msr(uint32_t index) const override { return hw::LocalApic::handles_msr(index); }
  std::optional<uint64_t> read_platform_msr(uint32_t index) override {
    return apic_.read_msr(index);
  }
  bool write_platform_msr(uint32_t index, uint64_t value) override {
    return apic_.write_msr(index, value);
  }

 private:
  // The offset in this vCPU's APIC page, when the access falls in it.
  std::optional<uint64_t> apic_offset(uint64_t physical, uint8_t size) const;

  hw::Bus& io_;
  hw::Bus& mmio_;
  hw::LocalApic& apic_;
  const hw::Clock& clock_;
};

}  // namespace lamina::machine
