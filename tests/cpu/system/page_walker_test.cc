#include "cpu/x86/system/page_walker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "cpu/x86/system/control_bits.h"

namespace lamina::cpu::x86 {
namespace {

// Entry bits spelled out from the SDM tables, independent of the walker's own constants.
constexpr uint64_t P = 1, RW = 2, US = 4, A = 0x20, D = 0x40, PS = 0x80, G = 0x100;
constexpr uint64_t XD = uint64_t{1} << 63;
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;

namespace pf = page_fault_error;

const AccessContext kSupervisorRead{AccessType::kRead, false};
const AccessContext kSupervisorWrite{AccessType::kWrite, false};
const AccessContext kSupervisorFetch{AccessType::kExecute, false};
const AccessContext kUserRead{AccessType::kRead, true};
const AccessContext kUserWrite{AccessType::kWrite, true};
const AccessContext kUserFetch{AccessType::kExecute, true};

class PageWalkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // 16 MiB of low RAM, and 4 MiB at 64 GiB to check physical addresses above 4 GiB.
    auto created = GuestMemory::create({{0, 16 * kMiB}, {64 * kGiB, 4 * kMiB}});
    ASSERT_TRUE(created.has_value()) << created.error().message();
    memory_.emplace(std::move(*created));
  }

  void put32(uint64_t address, uint64_t value) {
    uint32_t narrow = static_cast<uint32_t>(value);
    std::memcpy(memory_->host_pointer(address, 4), &narrow, 4);
  }
  void put64(uint64_t address, uint64_t value) {
    std::memcpy(memory_->host_pointer(address, 8), &value, 8);
  }
  uint64_t get32(uint64_t address) {
    uint32_t value;
    std::memcpy(&value, memory_->host_pointer(address, 4), 4);
    return value;
  }
  uint64_t get64(uint64_t address) {
    uint64_t value;
    std::memcpy(&value, memory_->host_pointer(address, 8), 8);
    return value;
  }

  std::expected<Translation, PageFault> walk(uint64_t linear, const AccessContext& context,
                                             const PagingFeatures& features = {}) {
    return walk_page_tables(registers_, *memory_, linear, context, features);
  }
  uint32_t fault_code(uint64_t linear, const AccessContext& context) {
    auto result = walk(linear, context);
    EXPECT_FALSE(result.has_value()) << "expected a #PF at " << std::hex << linear;
    return result ? 0xdeadu : result.error().error_code;
  }

  // 32-bit paging: PD at 0x1000, PT at 0x2000 mapping linear 0x00400000.. (PDE 1).
  void build_32bit() {
    registers_ = {.cr0 = cr0::kPg | cr0::kPe, .cr3 = 0x1000, .cr4 = 0, .efer = 0};
    put32(0x1000 + 1 * 4, 0x2000 | P | RW | US);
    put32(0x2000 + 5 * 4, 0x00345000 | P | RW | US);  // 0x00405000 -> 0x00345000
    put32(0x2000 + 6 * 4, 0x00346000 | P | US);       // read-only user page
    put32(0x2000 + 7 * 4, 0x00347000 | P | RW);       // supervisor page
  }

  // PAE paging: PDPT at 0x1000 (32-byte aligned), PD at 0x2000, PT at 0x3000.
  void build_pae() {
    registers_ = {.cr0 = cr0::kPg | cr0::kPe, .cr3 = 0x1000, .cr4 = cr4::kPae, .efer = 0};
    put64(0x1000 + 8 * 1, 0x2000 | P);  // 0x40000000..0x7fffffff
    put64(0x2000 + 8 * 0, 0x3000 | P | RW | US);
    put64(0x3000 + 8 * 1, 0x00501000 | P | RW | US);  // 0x40001000 -> 0x501000
    put64(0x3000 + 8 * 2, 0x00502000 | P | RW | US | XD);
    put64(0x2000 + 8 * 1, 0x00600000 | P | RW | US | PS);  // 0x40200000 2 MiB -> 0x600000
  }

  // 4-level paging: PML4 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000.
  void build_long() {
    registers_ = {.cr0 = cr0::kPg | cr0::kPe | cr0::kWp,
                  .cr3 = 0x1000,
                  .cr4 = cr4::kPae,
                  .efer = efer::kLme | efer::kLma | efer::kNxe};
    put64(0x1000 + 8 * 0x1ff, 0x2000 | P | RW | US);  // 0xffff'ff80'0000'0000
    put64(0x2000 + 8 * 0, 0x3000 | P | RW | US);
    put64(0x3000 + 8 * 0, 0x4000 | P | RW | US);
    put64(0x4000 + 8 * 3, 0x00703000 | P | RW | US);  // ...0000'3000 -> 0x703000
    put64(0x4000 + 8 * 4, 0x00704000 | P | RW);       // supervisor
    put64(0x3000 + 8 * 1, 0x00800000 | P | RW | PS);  // ...0020'0000 2 MiB -> 0x800000
    put64(0x2000 + 8 * 1, 16 * kGiB | P | RW | PS);   // ...4000'0000 1 GiB -> 16 GiB
  }
  static constexpr uint64_t kLongBase = 0xffffff8000000000;

  std::optional<GuestMemory> memory_;
  PagingRegisters registers_;
};

TEST_F(PageWalkerTest, PagingDisabledIsIdentityWithin32Bits) {
  registers_ = {.cr0 = cr0::kPe, .cr3 = 0, .cr4 = 0, .efer = 0};
  EXPECT_FALSE(paging_enabled(registers_));
  auto result = walk(0x1'2345'6789, kUserWrite);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->physical, 0x2345'6789u);
  EXPECT_TRUE(result->writable && result->user && result->executable);
}

TEST(Canonical, Bits63To47MustMatch) {
  EXPECT_TRUE(is_canonical(0));
  EXPECT_TRUE(is_canonical(0x00007fffffffffff));
  EXPECT_FALSE(is_canonical(0x0000800000000000));
  EXPECT_FALSE(is_canonical(0xffff7fffffffffff));
  EXPECT_TRUE(is_canonical(0xffff800000000000));
  EXPECT_TRUE(is_canonical(~uint64_t{0}));
  EXPECT_FALSE(is_canonical(0x8000000000000000));
}

// With A20 off every paging-structure address has bit 20 clear: CR3 = 1 MiB + 0x1000 reads the
// tables at 0x1000 (the empty copy at 1 MiB + 0x1000 would be #PF), the PDPTE load too.
TEST_F(PageWalkerTest, A20MaskAppliesToTableAddresses) {
  build_long();
  registers_.cr3 = kMiB + 0x1000;
  EXPECT_FALSE(walk(kLongBase + 0x3000, kSupervisorRead).has_value());
  registers_.a20_mask = ~kMiB;
  auto translation = walk(kLongBase + 0x3000, kSupervisorRead);
  ASSERT_TRUE(translation.has_value());
  EXPECT_EQ(translation->physical, 0x703000u);
  build_32bit();
  registers_.cr3 = kMiB + 0x1000;
  registers_.a20_mask = ~kMiB;
  EXPECT_TRUE(walk(0x00405000, kSupervisorRead).has_value());
  build_pae();
  registers_.cr3 = kMiB + 0x1000;
  registers_.a20_mask = ~kMiB;
  EXPECT_TRUE(walk(0x40001000, kSupervisorRead).has_value()) << "PDPTEs read at walk time";
  const auto pdptes = load_pae_pdptes(registers_, *memory_);
  ASSERT_TRUE(pdptes.has_value());
  EXPECT_EQ((*pdptes)[1], 0x2000 | P);
}

TEST_F(PageWalkerTest, ModesFollowControlRegisters) {
  build_32bit();
  EXPECT_EQ(paging_mode(registers_), PagingMode::k32Bit);
  build_pae();
  EXPECT_EQ(paging_mode(registers_), PagingMode::kPae);
  build_long();
  EXPECT_EQ(paging_mode(registers_), PagingMode::kFourLevel);
}

TEST_F(PageWalkerTest, Bit32TranslatesAndSetsAccessedAndDirty) {
  build_32bit();
  auto read = walk(0x00405abc, kUserRead);
  ASSERT_TRUE(read.has_value());
  EXPECT_EQ(read->physical, 0x00345abcu);
  EXPECT_EQ(read->page_size, 4096u);
  EXPECT_TRUE(read->writable && read->user && read->executable);
  EXPECT_FALSE(read->dirty);
  EXPECT_EQ(get32(0x1004) & (A | D), A);
  EXPECT_EQ(get32(0x2014) & (A | D), A);
  auto write = walk(0x00405000, kUserWrite);
  ASSERT_TRUE(write.has_value());
  EXPECT_TRUE(write->dirty);
  EXPECT_EQ(get32(0x2014) & (A | D), A | D);
  // D is only set on the entry that maps the page, never on the PDE of a page table.
  EXPECT_EQ(get32(0x1004) & D, 0u);
}

TEST_F(PageWalkerTest, Bit32NotPresentErrorCodes) {
  build_32bit();
  EXPECT_EQ(fault_code(0x00800000, kSupervisorRead), 0u);  // PDE 2 not present
  EXPECT_EQ(fault_code(0x00800000, kUserWrite), pf::kUser | pf::kWrite);
  EXPECT_EQ(fault_code(0x00408000, kSupervisorWrite), pf::kWrite);  // PTE 8 not present
  auto result = walk(0x00408123, kUserRead);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().linear, 0x00408123u);
  // A faulting walk sets no accessed flag (our documented choice).
  EXPECT_EQ(get32(0x1004) & A, 0u);
}

TEST_F(PageWalkerTest, Bit32ProtectionAndWriteProtect) {
  build_32bit();
  EXPECT_EQ(fault_code(0x00407000, kUserRead), pf::kPresent | pf::kUser);
  EXPECT_EQ(fault_code(0x00406000, kUserWrite), pf::kPresent | pf::kUser | pf::kWrite);
  // Supervisor writes to a read-only page succeed with CR0.WP = 0 and fault with WP = 1.
  EXPECT_TRUE(walk(0x00406000, kSupervisorWrite).has_value());
  registers_.cr0 |= cr0::kWp;
  EXPECT_EQ(fault_code(0x00406000, kSupervisorWrite), pf::kPresent | pf::kWrite);
  EXPECT_TRUE(walk(0x00407000, kSupervisorWrite).has_value());
  // A read-only PDE makes every page under it read-only.
  put32(0x1004, 0x2000 | P | US);
  EXPECT_EQ(fault_code(0x00405000, kUserWrite), pf::kPresent | pf::kUser | pf::kWrite);
  // No NX in 32-bit paging: fetches are allowed and I/D stays clear even with EFER.NXE.
  registers_.efer = efer::kNxe;
  EXPECT_TRUE(walk(0x00405000, kUserFetch).has_value());
  EXPECT_EQ(fault_code(0x00407000, kUserFetch), pf::kPresent | pf::kUser);
}

TEST_F(PageWalkerTest, Bit32LargePagesNeedPse) {
  build_32bit();
  put32(0x1000 + 3 * 4, 0x00c00000 | P | RW | PS | G);  // 0x00c00000 4 MiB
  put32(0x00c00000 + 4 * 0x155, 0x00123000 | P);        // what the PDE would point to as a PT
  // CR4.PSE = 0: PS is ignored and the PDE is a page-table pointer.
  auto small = walk(0x00d55010, kSupervisorRead);
  ASSERT_TRUE(small.has_value());
  EXPECT_EQ(small->physical, 0x00123010u);
  EXPECT_FALSE(small->global);
  registers_.cr4 = cr4::kPse;
  auto large = walk(0x00d55010, kSupervisorWrite);
  ASSERT_TRUE(large.has_value());
  EXPECT_EQ(large->physical, 0x00d55010u);
  EXPECT_EQ(large->page_size, 4 * kMiB);
  EXPECT_FALSE(large->global);  // G needs CR4.PGE
  EXPECT_EQ(get32(0x100c) & (A | D), A | D);
  registers_.cr4 = cr4::kPse | cr4::kPge;
  EXPECT_TRUE(walk(0x00d55010, kSupervisorRead)->global);
}

TEST_F(PageWalkerTest, Bit32Pse36AndReservedBits) {
  build_32bit();
  registers_.cr4 = cr4::kPse;
  // PDE bits 20:13 are physical bits 39:32: 0x10 << 13 puts the page at 64 GiB.
  put32(0x1000 + 4 * 4, 0x00000000 | (0x10u << 13) | P | PS);
  auto high = walk(0x01000004, kSupervisorRead);
  ASSERT_TRUE(high.has_value());
  EXPECT_EQ(high->physical, 64 * kGiB + 4);
  // Without PSE-36 those bits are reserved.
  PagingFeatures no_pse36;
  no_pse36.pse36 = false;
  auto reserved = walk(0x01000004, kSupervisorRead, no_pse36);
  ASSERT_FALSE(reserved.has_value());
  EXPECT_EQ(reserved.error().error_code, pf::kPresent | pf::kReserved);
  // Bit 21 is always reserved.
  put32(0x1000 + 4 * 4, (1u << 21) | P | PS);
  EXPECT_EQ(fault_code(0x01000004, kUserWrite),
            pf::kPresent | pf::kReserved | pf::kUser | pf::kWrite);
  // With MAXPHYADDR 36 only bits 16:13 carry address bits.
  PagingFeatures narrow;
  narrow.physical_address_bits = 36;
  put32(0x1000 + 4 * 4, (0x10u << 13) | P | PS);
  EXPECT_FALSE(walk(0x01000004, kSupervisorRead, narrow).has_value());
  put32(0x1000 + 4 * 4, (0x8u << 13) | P | PS);
  EXPECT_EQ(walk(0x01000004, kSupervisorRead, narrow)->physical, 32 * kGiB + 4);
}

TEST_F(PageWalkerTest, Bit32AddressesWrapAt4GiB) {
  build_32bit();
  auto wrapped = walk(0x1'0040'5008, kSupervisorRead);
  ASSERT_TRUE(wrapped.has_value());
  EXPECT_EQ(wrapped->physical, 0x00345008u);
  auto fault = walk(0x1'0080'0000, kSupervisorRead);
  ASSERT_FALSE(fault.has_value());
  EXPECT_EQ(fault.error().linear, 0x00800000u);
}

TEST_F(PageWalkerTest, TableOutsideRamIsReservedBitFault) {
  build_32bit();
  put32(0x1000 + 4 * 5, 0x7000'0000 | P | RW);  // page table in a hole
  auto result = walk(0x01400000, kSupervisorRead);
  ASSERT_FALSE(result.has_value());
  EXPECT_TRUE(result.error().table_outside_ram);
  EXPECT_EQ(result.error().error_code, pf::kPresent | pf::kReserved);
  registers_.cr3 = 0x9000'0000;
  EXPECT_TRUE(walk(0, kSupervisorRead).error().table_outside_ram);
  // A final physical address outside RAM is fine: that is MMIO, for the core to route.
  put32(0x2000 + 4 * 9, 0xfee00000 | P | RW);
  registers_.cr3 = 0x1000;
  EXPECT_EQ(walk(0x00409000, kSupervisorWrite)->physical, 0xfee00000u);
}

TEST_F(PageWalkerTest, PaeTranslatesSmallAndLargePages) {
  build_pae();
  auto small = walk(0x40001234, kUserWrite);
  ASSERT_TRUE(small.has_value());
  EXPECT_EQ(small->physical, 0x00501234u);
  EXPECT_EQ(get64(0x2000) & A, A);
  EXPECT_EQ(get64(0x3008) & (A | D), A | D);
  EXPECT_EQ(get64(0x1008) & A, 0u);  // PAE PDPTEs have no accessed flag (bits 8:5 reserved)
  // PS is honoured in PAE paging without CR4.PSE.
  auto large = walk(0x40212345, kUserRead);
  ASSERT_TRUE(large.has_value());
  EXPECT_EQ(large->physical, 0x00612345u);
  EXPECT_EQ(large->page_size, 2 * kMiB);
  EXPECT_EQ(fault_code(0x80000000, kSupervisorRead), 0u);  // PDPTE 2 not present
}

TEST_F(PageWalkerTest, PaeExecuteDisable) {
  build_pae();
  // NXE = 0: XD is a reserved bit, and fetches carry no I/D.
  EXPECT_EQ(fault_code(0x40002000, kUserRead), pf::kPresent | pf::kReserved | pf::kUser);
  EXPECT_EQ(fault_code(0x40002000, kSupervisorFetch), pf::kPresent | pf::kReserved);
  EXPECT_EQ(fault_code(0x40005000, kSupervisorFetch), 0u);
  registers_.efer = efer::kNxe;
  EXPECT_TRUE(walk(0x40002000, kUserRead).has_value());
  EXPECT_FALSE(walk(0x40002000, kUserRead)->executable);
  EXPECT_EQ(fault_code(0x40002000, kUserFetch), pf::kPresent | pf::kUser | pf::kInstructionFetch);
  EXPECT_EQ(fault_code(0x40002000, kSupervisorFetch), pf::kPresent | pf::kInstructionFetch);
  // I/D is reported on any fetch fault once NX is on, including not-present ones.
  EXPECT_EQ(fault_code(0x40005000, kSupervisorFetch), pf::kInstructionFetch);
  EXPECT_TRUE(walk(0x40001000, kUserFetch).has_value());
}

TEST_F(PageWalkerTest, PaeReservedBits) {
  build_pae();
  put64(0x3000 + 8 * 1, (uint64_t{1} << 40) | 0x00501000 | P | RW | US);  // above MAXPHYADDR
  EXPECT_EQ(fault_code(0x40001000, kSupervisorRead), pf::kPresent | pf::kReserved);
  put64(0x3000 + 8 * 1, (uint64_t{1} << 55) | 0x00501000 | P);  // 62:M are reserved in PAE
  EXPECT_EQ(fault_code(0x40001000, kSupervisorRead), pf::kPresent | pf::kReserved);
  put64(0x2000 + 8 * 1, 0x00600000 | (1u << 13) | P | PS);  // 2 MiB page: bits 20:13
  EXPECT_EQ(fault_code(0x40200000, kSupervisorRead), pf::kPresent | pf::kReserved);
  // A reserved bit in a not-present entry is not looked at.
  put64(0x2000 + 8 * 1, 0x00600000 | (1u << 13) | PS);
  EXPECT_EQ(fault_code(0x40200000, kSupervisorRead), 0u);
  put64(0x1000 + 8 * 1, 0x2000 | P | RW);  // PDPTE bits 2:1 reserved
  EXPECT_EQ(fault_code(0x40001000, kSupervisorRead), pf::kPresent | pf::kReserved);
}

TEST_F(PageWalkerTest, PaePdpteRegisters) {
  build_pae();
  auto loaded = load_pae_pdptes(registers_, *memory_);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ((*loaded)[1], 0x2000 | P);
  registers_.pae_pdptes = *loaded;
  registers_.pae_pdptes_loaded = true;
  // The registers, not memory, are used once loaded (SDM 4.4.1).
  put64(0x1000 + 8 * 1, 0);
  EXPECT_EQ(walk(0x40001000, kSupervisorRead)->physical, 0x501000u);
  registers_.pae_pdptes_loaded = false;
  EXPECT_EQ(fault_code(0x40001000, kSupervisorRead), 0u);
  // Loading fails (#GP(0)) for a present PDPTE with reserved bits, not for a non-present one.
  put64(0x1000 + 8 * 2, 0x5000 | (1u << 5));
  EXPECT_TRUE(load_pae_pdptes(registers_, *memory_).has_value());
  put64(0x1000 + 8 * 2, 0x5000 | P | (1u << 5));
  EXPECT_FALSE(load_pae_pdptes(registers_, *memory_).has_value());
  registers_.cr3 = 0x7000'0000;
  EXPECT_FALSE(load_pae_pdptes(registers_, *memory_).has_value());
}

TEST_F(PageWalkerTest, LongModeTranslatesAllPageSizes) {
  build_long();
  auto small = walk(kLongBase + 0x3456, kUserWrite);
  ASSERT_TRUE(small.has_value());
  EXPECT_EQ(small->physical, 0x703456u);
  for (uint64_t entry : {0x1ff8, 0x2000, 0x3000}) EXPECT_EQ(get64(entry) & (A | D), A);
  EXPECT_EQ(get64(0x4018) & (A | D), A | D);
  auto two = walk(kLongBase + 0x2fffff, kSupervisorWrite);
  ASSERT_TRUE(two.has_value());
  EXPECT_EQ(two->physical, 0x8fffffu);
  EXPECT_EQ(two->page_size, 2 * kMiB);
  EXPECT_EQ(get64(0x3008) & (A | D), A | D);
  auto one = walk(kLongBase + kGiB + 0x12345678, kSupervisorRead);
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(one->physical, 16 * kGiB + 0x12345678);
  EXPECT_EQ(one->page_size, kGiB);
  EXPECT_EQ(get64(0x2008) & (A | D), A);
  // Only bits 47:0 select the entries: canonical checking is the core's job.
  EXPECT_EQ(walk(0x0000ff8000003000, kUserRead)->physical, 0x703000u);
}

// The pages (4 KiB units) marked in the dirty log since the last look.
std::vector<uint64_t> marked_pages(GuestMemory& memory) {
  std::vector<uint64_t> pages;
  const std::vector<uint64_t> words = memory.dirty_log().take();
  for (size_t word = 0; word < words.size(); ++word) {
    for (unsigned bit = 0; bit < 64; ++bit) {
      if ((words[word] >> bit) & 1) pages.push_back((word * 64 + bit) * 4096);
    }
  }
  return pages;
}

TEST_F(PageWalkerTest, DirtyLogMarksOnlyTablesWhoseFlagsTheWalkSet) {
  build_long();
  memory_->dirty_log().start();
  // First walk: A on every level, D on the PTE: all four table pages written.
  ASSERT_TRUE(walk(kLongBase + 0x3000, kUserWrite).has_value());
  EXPECT_EQ(marked_pages(*memory_), (std::vector<uint64_t>{0x1000, 0x2000, 0x3000, 0x4000}));
  // Again: every flag is set already, nothing is written.
  ASSERT_TRUE(walk(kLongBase + 0x3000, kUserWrite).has_value());
  ASSERT_TRUE(walk(kLongBase + 0x3000, kUserRead).has_value());
  EXPECT_EQ(marked_pages(*memory_), std::vector<uint64_t>{});
  // A read of another page of the same table sets only that PTE's A; its D stays clear.
  ASSERT_TRUE(walk(kLongBase + 0x4000, kSupervisorRead).has_value());
  EXPECT_EQ(marked_pages(*memory_), std::vector<uint64_t>{0x4000});
  EXPECT_EQ(get64(0x4020) & (A | D), A);
  // The first write to it sets D (A was set): written again.
  ASSERT_TRUE(walk(kLongBase + 0x4000, kSupervisorWrite).has_value());
  EXPECT_EQ(marked_pages(*memory_), std::vector<uint64_t>{0x4000});
  EXPECT_EQ(get64(0x4020) & (A | D), A | D);
  // A faulting walk sets nothing and marks nothing.
  EXPECT_FALSE(walk(kLongBase + 0x4000, kUserRead).has_value());
  EXPECT_EQ(marked_pages(*memory_), std::vector<uint64_t>{});
}

TEST_F(PageWalkerTest, LongModeReservedAndIgnoredBits) {
  build_long();
  PagingFeatures no_gigabyte;
  no_gigabyte.gigabyte_pages = false;
  auto rejected = walk(kLongBase + kGiB, kSupervisorRead, no_gigabyte);
  ASSERT_FALSE(rejected.has_value());
  EXPECT_EQ(rejected.error().error_code, pf::kPresent | pf::kReserved);
  put64(0x2000 + 8 * 1, 16 * kGiB | (1u << 13) | P | PS);  // 1 GiB page: bits 29:13 reserved
  EXPECT_EQ(fault_code(kLongBase + kGiB, kSupervisorRead), pf::kPresent | pf::kReserved);
  put64(0x1000 + 8 * 0x1ff, 0x2000 | P | RW | US | PS);  // PS reserved in a PML4E
  EXPECT_EQ(fault_code(kLongBase + 0x3000, kUserRead), pf::kPresent | pf::kReserved | pf::kUser);
  put64(0x1000 + 8 * 0x1ff, 0x2000 | P | RW | US | (uint64_t{1} << 57));  // 62:52 ignored
  EXPECT_TRUE(walk(kLongBase + 0x3000, kUserRead).has_value());
  put64(0x4000 + 8 * 3, 0x00703000 | (uint64_t{1} << 51) | P | RW | US);  // 51:M reserved
  EXPECT_EQ(fault_code(kLongBase + 0x3000, kUserRead), pf::kPresent | pf::kReserved | pf::kUser);
  PagingFeatures wide;
  wide.physical_address_bits = 52;
  EXPECT_TRUE(walk(kLongBase + 0x3000, kUserRead, wide).has_value());
}

TEST_F(PageWalkerTest, LongModeRightsCombineAcrossLevels) {
  build_long();
  EXPECT_EQ(fault_code(kLongBase + 0x4000, kUserRead), pf::kPresent | pf::kUser);
  EXPECT_EQ(fault_code(kLongBase + 0x4000, kUserFetch),
            pf::kPresent | pf::kUser | pf::kInstructionFetch);
  EXPECT_TRUE(walk(kLongBase + 0x4000, kSupervisorFetch).has_value());
  // XD in the PDPTE covers the whole 1 GiB below it.
  put64(0x2000, 0x3000 | P | RW | US | XD);
  auto data = walk(kLongBase + 0x3000, kUserWrite);
  ASSERT_TRUE(data.has_value());
  EXPECT_FALSE(data->executable);
  EXPECT_EQ(fault_code(kLongBase + 0x3000, kSupervisorFetch), pf::kPresent | pf::kInstructionFetch);
  // U/S clear in the PML4E makes everything supervisor-only.
  put64(0x1000 + 8 * 0x1ff, 0x2000 | P | RW);
  EXPECT_EQ(fault_code(kLongBase + 0x3000, kUserRead), pf::kPresent | pf::kUser);
  // R/W clear in the PD with CR0.WP = 1 stops supervisor writes too.
  put64(0x1000 + 8 * 0x1ff, 0x2000 | P | RW | US);
  put64(0x2000, 0x3000 | P | RW | US);
  put64(0x3000, 0x4000 | P | US);
  EXPECT_EQ(fault_code(kLongBase + 0x3000, kSupervisorWrite), pf::kPresent | pf::kWrite);
}

TEST_F(PageWalkerTest, SmepAndSmap) {
  build_long();
  registers_.cr4 |= cr4::kSmep;
  EXPECT_EQ(fault_code(kLongBase + 0x3000, kSupervisorFetch), pf::kPresent | pf::kInstructionFetch);
  EXPECT_TRUE(walk(kLongBase + 0x4000, kSupervisorFetch).has_value());
  EXPECT_TRUE(walk(kLongBase + 0x3000, kSupervisorRead).has_value());  // SMEP is fetch only
  registers_.cr4 |= cr4::kSmap;
  EXPECT_EQ(fault_code(kLongBase + 0x3000, kSupervisorRead), pf::kPresent);
  EXPECT_EQ(fault_code(kLongBase + 0x3000, kSupervisorWrite), pf::kPresent | pf::kWrite);
  AccessContext with_ac{AccessType::kRead, false, true};
  EXPECT_TRUE(walk(kLongBase + 0x3000, with_ac).has_value());
  with_ac.type = AccessType::kWrite;
  EXPECT_TRUE(walk(kLongBase + 0x3000, with_ac).has_value());
  EXPECT_TRUE(walk(kLongBase + 0x3000, kUserWrite).has_value());  // SMAP is supervisor only
  EXPECT_TRUE(walk(kLongBase + 0x4000, kSupervisorWrite).has_value());
}

TEST_F(PageWalkerTest, ConcurrentFlagUpdatesKeepOtherWriters) {
  build_long();
  // Another "vCPU" flips a software-available bit (9) and clears A/D while we walk with writes.
  // A plain read-modify-write in the walker would write a stale bit 9 back (a race on two
  // shared host cores: this catches it often, not always).
  constexpr int kToggles = 200000;
  auto* pte = reinterpret_cast<uint64_t*>(memory_->host_pointer(0x4018, 8));
  std::atomic<bool> done{false};
  std::thread other([&] {
    std::atomic_ref<uint64_t> ref(*pte);
    for (int i = 0; i < kToggles; ++i) {
      ref.fetch_xor(uint64_t{1} << 9);
      ref.fetch_and(~(A | D));
    }
    done = true;
  });
  int walks = 0;
  while (!done || walks < 100) {
    ASSERT_TRUE(walk(kLongBase + 0x3000, kUserWrite).has_value());
    ++walks;
  }
  other.join();
  EXPECT_EQ(get64(0x4018) & (uint64_t{1} << 9), 0u);  // an even number of flips
  ASSERT_TRUE(walk(kLongBase + 0x3000, kUserWrite).has_value());
  EXPECT_EQ(get64(0x4018) & (A | D), A | D);
}

}  // namespace
}  // namespace lamina::cpu::x86
