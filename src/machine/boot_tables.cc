#include "machine/boot_tables.h"

#include <array>
#include <vector>

#include "base/byte_order.h"

namespace lamina::machine {

namespace {

// Descriptor encodings (Intel SDM vol. 3, section 3.4.5): base 0, limit 0xFFFFF with G=1.
constexpr uint64_t kCode32Descriptor = 0x00CF9B000000FFFF;  // P, S, type 0xB (exec/read, A), D
constexpr uint64_t kCode64Descriptor = 0x00AF9B000000FFFF;  // as above with L=1, D=0
constexpr uint64_t kDataDescriptor = 0x00CF93000000FFFF;    // P, S, type 0x3 (read/write, A)

// Page-table entry bits (Intel SDM vol. 3, section 4.5).
constexpr uint64_t kPresent = 1 << 0;
constexpr uint64_t kWritable = 1 << 1;
constexpr uint64_t kLargePage = 1 << 7;

// Access rights in the VMX layout for the hidden segment state (see boot_state.h).
constexpr uint16_t kCode32Attributes = 0xB | (1 << 4) | (1 << 7) | (1 << 14) | (1 << 15);
constexpr uint16_t kCode64Attributes = 0xB | (1 << 4) | (1 << 7) | (1 << 13) | (1 << 15);
constexpr uint16_t kDataAttributes = 0x3 | (1 << 4) | (1 << 7) | (1 << 14) | (1 << 15);

SegmentState flat(uint16_t selector, uint16_t attributes) {
  return SegmentState{selector, 0, 0xFFFFFFFF, attributes};
}

void fill_segments(BootState& state, uint16_t code_selector, uint16_t code_attributes) {
  state.cs = flat(code_selector, code_attributes);
  const SegmentState data = flat(kBootDataSelector, kDataAttributes);
  state.ds = state.es = state.ss = state.fs = state.gs = data;
}

}  // namespace

Result<void> write_boot_gdt(GuestMemory& memory, uint64_t address) {
  std::array<std::byte, kBootGdtBytes> gdt{};
  store_le<uint64_t>(&gdt[kBootCode32Selector], kCode32Descriptor);
  store_le<uint64_t>(&gdt[kBootCode64Selector], kCode64Descriptor);
  store_le<uint64_t>(&gdt[kBootDataSelector], kDataDescriptor);
  return memory.write(address, gdt);
}

Result<void> write_identity_page_tables(GuestMemory& memory, uint64_t address) {
  if (address % 4096 != 0) return fail(ErrorCode::kInternal, "page tables must be page-aligned");
  std::vector<std::byte> tables(kBootPageTablesBytes);
  const uint64_t pdpt = address + 4096;
  const uint64_t first_pd = address + 2 * 4096;
  store_le<uint64_t>(&tables[0], pdpt | kPresent | kWritable);
  for (uint64_t gib = 0; gib < 4; ++gib) {
    store_le<uint64_t>(&tables[4096 + gib * 8], (first_pd + gib * 4096) | kPresent | kWritable);
    for (uint64_t entry = 0; entry < 512; ++entry) {
      const uint64_t physical = (gib << 30) | (entry << 21);
      store_le<uint64_t>(&tables[(2 + gib) * 4096 + entry * 8],
                         physical | kPresent | kWritable | kLargePage);
    }
  }
  return memory.write(address, tables);
}

BootState long_mode_boot_state(uint64_t gdt_address, uint64_t page_tables_address) {
  BootState state;
  state.mode = CpuMode::kLong64;
  state.cr0 = 0x80000011;  // PG | ET | PE
  state.cr3 = page_tables_address;
  state.cr4 = 0x20;        // PAE
  state.efer = 0x500;      // LMA | LME
  state.gdt = {gdt_address, kBootGdtBytes - 1};
  state.identity_mapped_bytes = kIdentityMappedBytes;
  fill_segments(state, kBootCode64Selector, kCode64Attributes);
  return state;
}

BootState protected_mode_boot_state(uint64_t gdt_address) {
  BootState state;
  state.mode = CpuMode::kProtected32;
  state.cr0 = 0x11;  // ET | PE
  state.gdt = {gdt_address, kBootGdtBytes - 1};
  fill_segments(state, kBootCode32Selector, kCode32Attributes);
  return state;
}

}  // namespace lamina::machine
