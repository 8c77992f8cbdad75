#pragma once
// A CpuEnvironment for accelerator tests: records port I/O, MMIO and platform-MSR writes, answers
// reads with set values, and holds a queue of interrupt vectors and NMIs that another thread may
// fill (so it synchronizes internally). IA32_APIC_BASE is a platform MSR here, as in the machine.
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

#include "cpu/x86/cpu_environment.h"

namespace lamina::accel::testing {

class TestEnvironment final : public cpu::x86::CpuEnvironment {
 public:
  struct Access {
    uint64_t address;
    uint8_t size;
    uint64_t value;
    bool operator==(const Access&) const = default;
  };

  uint32_t io_read(uint16_t port, uint8_t size) override {
    std::lock_guard lock(mutex_);
    io_reads.push_back({port, size, 0});
    return port_value;
  }
  void io_write(uint16_t port, uint8_t size, uint32_t value) override {
    std::lock_guard lock(mutex_);
    io_writes.push_back({port, size, value});
  }
  uint64_t mmio_read(uint64_t physical, uint8_t size) override {
    std::lock_guard lock(mutex_);
    mmio_reads.push_back({physical, size, 0});
    return mmio_value;
  }
  void mmio_write(uint64_t physical, uint8_t size, uint64_t value) override {
    std::lock_guard lock(mutex_);
    mmio_writes.push_back({physical, size, value});
  }
  bool interrupt_pending() override {
    std::lock_guard lock(mutex_);
    return !interrupts.empty();
  }
  uint8_t acknowledge_interrupt() override {
    std::lock_guard lock(mutex_);
    if (interrupts.empty()) return 0xff;
    const uint8_t vector = interrupts.front();
    interrupts.pop_front();
    return vector;
  }
  bool take_nmi() override {
    std::lock_guard lock(mutex_);
    if (nmis == 0) return false;
    --nmis;
    return true;
  }
  uint64_t read_tsc() override { return 0; }
  // IA32_APIC_BASE, and the x2APIC range, which answers reads with 0x800 + the index and
  // refuses writes of odd values (so a test can see #GP come from the platform).
  bool platform_msr(uint32_t index) const override {
    return index == 0x1b || (index >= 0x800 && index <= 0x8ff);
  }
  std::optional<uint64_t> read_platform_msr(uint32_t index) override {
    std::lock_guard lock(mutex_);
    if (index == 0x1b) return apic_base;
    if (index >= 0x800 && index <= 0x8ff) return 0x800 + index;
    return std::nullopt;
  }
  bool write_platform_msr(uint32_t index, uint64_t value) override {
    std::lock_guard lock(mutex_);
    if (index != 0x1b && (index < 0x800 || index > 0x8ff)) return false;
    if (index != 0x1b && (value & 1) != 0) return false;
    if (index == 0x1b) apic_base = value;
    msr_writes.push_back({index, 8, value});
    return true;
  }

  void push_interrupt(uint8_t vector) {
    std::lock_guard lock(mutex_);
    interrupts.push_back(vector);
  }
  std::vector<uint64_t> written_values(uint16_t port) {
    std::lock_guard lock(mutex_);
    std::vector<uint64_t> values;
    for (const Access& access : io_writes) {
      if (access.address == port) values.push_back(access.value);
    }
    return values;
  }

  // Read and written by the test while no vCPU runs, or under the lock through the helpers.
  std::vector<Access> io_reads, io_writes, mmio_reads, mmio_writes, msr_writes;
  uint32_t port_value = 0xffffffff;
  uint64_t mmio_value = ~uint64_t{0};
  std::deque<uint8_t> interrupts;
  int nmis = 0;
  uint64_t apic_base = 0xfee00900;

 private:
  mutable std::mutex mutex_;
};

}  // namespace lamina::accel::testing
