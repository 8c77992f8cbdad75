#include "test_machine.h"

#include <cstring>
#include <cstdlib>
#include <stdexcept>
#include <string_view>

namespace lamina::cpu::x86::testing {

uint64_t segment_descriptor(uint32_t base, uint32_t limit, uint16_t attributes) {
  uint64_t value = limit & 0xffff;
  value |= uint64_t{base & 0xffffff} << 16;
  value |= (uint64_t{attributes} & 0xff) << 40;
  value |= uint64_t{(limit >> 16) & 0xf} << 48;
  value |= ((uint64_t{attributes} >> 12) & 0xf) << 52;
  value |= uint64_t{base >> 24} << 56;
  return value;
}

namespace {
GuestMemory make_memory(uint64_t size) {
  auto memory = GuestMemory::create({RamRegion{0, size}});
  if (!memory) throw std::runtime_error(memory.error().message());
  return std::move(*memory);
}

CpuConfiguration with_test_engine(CpuConfiguration configuration) {
  // ctest runs the CPU's test programs once per engine (tests/CMakeLists.txt: ENGINES).
  const char* engine = std::getenv("LAMINA_TEST_CPU_ENGINE");
  if (engine != nullptr && std::string_view(engine) == "jit") configuration.engine = CpuEngine::kJit;
  // Straight-line test code runs once: translate it all.
  configuration.translate_on_run = 1;
  return configuration;
}
}  // namespace

TestMachine::TestMachine(uint64_t ram_size, CpuConfiguration configuration)
    : memory_(make_memory(ram_size)),
      cpu_(std::make_unique<Cpu>(memory_, environment_, with_test_engine(std::move(configuration)))) {}

void TestMachine::write(uint64_t physical, std::span<const uint8_t> bytes) {
  std::memcpy(memory_.host_pointer(physical, bytes.size()), bytes.data(), bytes.size());
  cpu_->invalidate_code(physical, bytes.size());
}
void TestMachine::write64(uint64_t physical, uint64_t value) {
  std::memcpy(memory_.host_pointer(physical, 8), &value, 8);
}
void TestMachine::write32(uint64_t physical, uint32_t value) {
  std::memcpy(memory_.host_pointer(physical, 4), &value, 4);
}
void TestMachine::enter_protected_mode(uint64_t gdt, uint16_t gdt_limit, uint64_t idt,
                                       SegmentCache task) {
  CpuState& s = cpu_->state();
  s.cr0 = cr0::kPe | cr0::kEt;
  s.gdtr = {gdt, gdt_limit};
  s.idtr = {idt, 0x7ff};
  s.segment[kCs] = SegmentCache{0x08, 0, 0xffffffff, kCode32};
  for (uint8_t seg : {kEs, kSs, kDs, kFs, kGs}) s.segment[seg] = SegmentCache{0x10, 0, 0xffffffff, kData32};
  s.tr = task;
  s.ldtr = SegmentCache{0, 0, 0, 0};
  s.cpl = 0;
  cpu_->state_changed();
}
uint64_t TestMachine::read64(uint64_t physical) {
  uint64_t value = 0;
  std::memcpy(&value, memory_.host_pointer(physical, 8), 8);
  return value;
}
uint8_t TestMachine::read8(uint64_t physical) {
  return std::to_integer<uint8_t>(*memory_.host_pointer(physical, 1));
}

uint64_t TestMachine::table_for(uint64_t table, unsigned index) {
  const uint64_t entry = read64(table + index * 8);
  if (entry & 1) return entry & 0x000ffffffffff000ull;
  if (next_table_ >= kTablePoolEnd) throw std::runtime_error("test page-table pool exhausted");
  const uint64_t fresh = next_table_;
  next_table_ += 0x1000;
  std::memset(memory_.host_pointer(fresh, 0x1000), 0, 0x1000);
  write64(table + index * 8, fresh | 0x7);  // present, writable, user: leaves decide
  return fresh;
}

void TestMachine::map_page(uint64_t linear, uint64_t physical, bool user, bool writable, bool executable) {
  uint64_t table = kTableRoot;
  for (int level = 3; level > 0; --level) table = table_for(table, (linear >> (12 + 9 * level)) & 511);
  uint64_t entry = (physical & ~uint64_t{0xfff}) | 1;
  if (writable) entry |= 2;
  if (user) entry |= 4;
  if (!executable) entry |= uint64_t{1} << 63;
  write64(table + ((linear >> 12) & 511) * 8, entry);
}

void TestMachine::map_range(uint64_t linear, uint64_t physical, uint64_t size, bool user, bool writable) {
  for (uint64_t offset = 0; offset < size; offset += 0x1000) map_page(linear + offset, physical + offset, user, writable);
}

void TestMachine::enter_long_mode(uint8_t cpl, uint64_t identity_bytes) {
  std::memset(memory_.host_pointer(kTableRoot, 0x1000), 0, 0x1000);
  next_table_ = kTableRoot + 0x1000;
  map_range(0, 0, identity_bytes);
  const uint64_t gdt[] = {
      0,
      segment_descriptor(0, 0xfffff, kCode64),
      segment_descriptor(0, 0xfffff, kData32),
      segment_descriptor(0, 0xfffff, kCode64 | 0x60),
      segment_descriptor(0, 0xfffff, kData32 | 0x60),
      segment_descriptor(0, 0xfffff, kCode32 | 0x60),
      segment_descriptor(static_cast<uint32_t>(kTss), 0x67, 0x0089),
      0,  // upper half of the 16-byte TSS descriptor
  };
  for (size_t i = 0; i < std::size(gdt); ++i) write64(kGdt + i * 8, gdt[i]);
  std::memset(memory_.host_pointer(kIdt, 0x1000), 0, 0x1000);
  std::memset(memory_.host_pointer(kTss, 0x68), 0, 0x68);

  CpuState& s = cpu_->state();
  s.cr0 = cr0::kPe | cr0::kPg | cr0::kEt | cr0::kNe | cr0::kWp | cr0::kMp;
  s.cr4 = cr4::kPae | cr4::kOsfxsr | cr4::kOsxmmexcpt;
  s.cr3 = kTableRoot;
  s.msr.efer = efer::kLme | efer::kLma | efer::kSce | efer::kNxe;
  s.gdtr = {kGdt, static_cast<uint16_t>(sizeof(gdt) - 1)};
  s.idtr = {kIdt, 0xfff};
  const uint16_t code = cpl == 3 ? 0x1b : 0x08;
  const uint16_t data = cpl == 3 ? 0x23 : 0x10;
  s.segment[kCs] = SegmentCache{code, 0, 0xffffffff, static_cast<uint16_t>(kCode64 | (cpl << 5))};
  for (uint8_t seg : {kEs, kSs, kDs, kFs, kGs})
    s.segment[seg] = SegmentCache{data, 0, 0xffffffff, static_cast<uint16_t>(kData32 | (cpl << 5))};
  s.tr = SegmentCache{0x30, kTss, 0x67, 0x8b};
  s.ldtr = SegmentCache{0, 0, 0, 0};
  s.cpl = cpl;
  s.write_rflags(rflags::kFixed1);
  cpu_->state_changed();
}

void TestMachine::set_long_gate(uint8_t vector, uint64_t handler, uint8_t ist, uint8_t dpl, bool trap) {
  const uint64_t low = (handler & 0xffff) | (uint64_t{0x08} << 16) | (uint64_t{ist} << 32) |
                       (uint64_t{trap ? 0xfu : 0xeu} << 40) | (uint64_t{dpl} << 45) | (uint64_t{1} << 47) |
                       ((handler & 0xffff0000ull) << 32);
  write64(kIdt + vector * 16, low);
  write64(kIdt + vector * 16 + 8, handler >> 32);
}

}  // namespace lamina::cpu::x86::testing
