#pragma once
// Test support: a small machine around one Cpu: guest RAM, an environment that records port
// I/O and hands out queued interrupts, a page-table builder and helpers to enter real,
// protected or long mode directly (as a loader would).

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "base/guest_memory.h"
#include "cpu/x86/cpu.h"

namespace lamina::cpu::x86::testing {

class RecordingEnvironment : public CpuEnvironment {
 public:
  uint32_t io_read(uint16_t port, uint8_t size) override {
    io_reads.push_back({port, size});
    return port_value;
  }
  void io_write(uint16_t port, uint8_t size, uint32_t value) override {
    io_writes.push_back({port, size, value});
  }
  uint64_t mmio_read(uint64_t physical, uint8_t size) override {
    mmio_reads.push_back({physical, size});
    return mmio_value;
  }
  void mmio_write(uint64_t physical, uint8_t size, uint64_t value) override {
    mmio_writes.push_back({physical, size, value});
  }
  bool interrupt_pending() override { return !interrupts.empty(); }
  uint8_t acknowledge_interrupt() override {
    const uint8_t vector = interrupts.front();
    interrupts.pop_front();
    return vector;
  }
  uint64_t read_tsc() override { return tsc += 1000; }
  bool take_nmi() override {
    if (nmis == 0) return false;
    --nmis;
    return true;
  }

  struct PortAccess { uint16_t port; uint8_t size; uint32_t value = 0; };
  struct MmioAccess { uint64_t physical; uint8_t size; uint64_t value = 0; };
  std::vector<PortAccess> io_reads, io_writes;
  std::vector<MmioAccess> mmio_reads, mmio_writes;
  uint32_t port_value = 0xffffffff;
  uint64_t mmio_value = ~uint64_t{0};
  std::deque<uint8_t> interrupts;
  int nmis = 0;
  uint64_t tsc = 0;
};

// Descriptor encodings for test GDTs (SDM vol. 3A, figure 3-8).
uint64_t segment_descriptor(uint32_t base, uint32_t limit, uint16_t attributes);
inline constexpr uint16_t kCode64 = 0xa09b, kCode32 = 0xc09b, kData32 = 0xc093, kCode16 = 0x009b,
                          kData16 = 0x0093;

class TestMachine {
 public:
  explicit TestMachine(uint64_t ram_size = 16 << 20, CpuConfiguration configuration = {});

  GuestMemory& memory() { return memory_; }
  RecordingEnvironment& environment() { return environment_; }
  Cpu& cpu() { return *cpu_; }
  CpuState& state() { return cpu_->state(); }

  void write(uint64_t physical, std::span<const uint8_t> bytes);
  void write64(uint64_t physical, uint64_t value);
  void write32(uint64_t physical, uint32_t value);
  uint64_t read64(uint64_t physical);
  uint32_t read32(uint64_t physical) { return static_cast<uint32_t>(read64(physical)); }
  uint8_t read8(uint64_t physical);

  // Page tables for 4-level paging rooted at `root` (allocated from `table_pool`).
  void map_page(uint64_t linear, uint64_t physical, bool user, bool writable, bool executable = true);
  void map_range(uint64_t linear, uint64_t physical, uint64_t size, bool user = true, bool writable = true);

  // Enters 64-bit mode at CPL `cpl` with a GDT of: null, code64 (0x08), data (0x10),
  // code64 DPL3 (0x1b), data DPL3 (0x23), code32 DPL3 (0x2b as used by SYSRET), TSS (0x30).
  // The first 1 MiB... `identity_bytes` of RAM are identity mapped.
  void enter_long_mode(uint8_t cpl = 0, uint64_t identity_bytes = 8 << 20);
  // Flat 32-bit protected mode at CPL 0 (CS 0x08, the data segments 0x10) with the GDT and IDT
  // the test wrote and TR `task`; no LDT.
  void enter_protected_mode(uint64_t gdt, uint16_t gdt_limit, uint64_t idt, SegmentCache task);
  // Sets a 64-bit interrupt gate for `vector` at `handler` (IST index, DPL).
  void set_long_gate(uint8_t vector, uint64_t handler, uint8_t ist = 0, uint8_t dpl = 0, bool trap = false);

  static constexpr uint64_t kGdt = 0x1000, kIdt = 0x2000, kTss = 0x3000, kTableRoot = 0x10000;
  static constexpr uint64_t kTablePoolEnd = 0x80000;

 private:
  uint64_t table_for(uint64_t table, unsigned index);
  GuestMemory memory_;
  RecordingEnvironment environment_;
  std::unique_ptr<Cpu> cpu_;
  uint64_t next_table_ = kTableRoot + 0x1000;
};

}  // namespace lamina::cpu::x86::testing
