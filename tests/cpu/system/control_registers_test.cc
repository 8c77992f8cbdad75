#include "cpu/x86/system/control_registers.h"

#include <gtest/gtest.h>

#include <cstring>

#include "cpu/x86/system/control_bits.h"

namespace lamina::cpu::x86 {
namespace {

const Fault kGp0{13, 0};

class ControlRegistersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto created = GuestMemory::create({{0, 1 << 20}});
    ASSERT_TRUE(created.has_value());
    memory_.emplace(std::move(*created));
    // A valid PAE PDPT at 0x3000: entry 0 present, pointing at 0x4000.
    put64(0x3000, 0x4000 | 1);
  }
  void put64(uint64_t address, uint64_t value) {
    std::memcpy(memory_->host_pointer(address, 8), &value, 8);
  }
  std::expected<ControlRegisterWrite, Fault> cr0(const PagingRegisters& current, uint64_t value,
                                                 bool mode_64 = false) {
    return write_cr0(current, value, mode_64, features_, *memory_);
  }

  CpuFeatures features_;
  std::optional<GuestMemory> memory_;
};

TEST_F(ControlRegistersTest, Cr0InvalidCombinations) {
  PagingRegisters real{};
  EXPECT_EQ(cr0(real, cr0::kPg).error(), kGp0);                        // PG without PE
  EXPECT_EQ(cr0(real, cr0::kPe | cr0::kNw).error(), kGp0);             // NW without CD
  EXPECT_EQ(cr0(real, cr0::kPe | (uint64_t{1} << 32)).error(), kGp0);  // bits 63:32
  auto protected_mode = cr0(real, cr0::kPe | cr0::kCd | cr0::kNw | (1u << 6));
  ASSERT_TRUE(protected_mode.has_value());
  // Reserved low bits are dropped; ET is hardwired to 1.
  EXPECT_EQ(protected_mode->registers.cr0, cr0::kPe | cr0::kCd | cr0::kNw | cr0::kEt);
  EXPECT_EQ(protected_mode->flush, TlbFlush::kNone);
}

TEST_F(ControlRegistersTest, EnteringAndLeavingLongMode) {
  PagingRegisters before{.cr0 = cr0::kPe | cr0::kEt, .cr3 = 0x1000, .cr4 = 0, .efer = efer::kLme};
  EXPECT_EQ(cr0(before, cr0::kPe | cr0::kPg).error(), kGp0);  // LME without PAE
  before.cr4 = cr4::kPae;
  auto entered = cr0(before, cr0::kPe | cr0::kPg | cr0::kWp);
  ASSERT_TRUE(entered.has_value());
  EXPECT_EQ(entered->registers.efer, efer::kLme | efer::kLma);
  EXPECT_EQ(entered->flush, TlbFlush::kAll);
  EXPECT_FALSE(entered->registers.pae_pdptes_loaded);  // 4-level paging has no PDPTE registers
  PagingRegisters in_long = entered->registers;
  // 64-bit mode cannot clear PG; compatibility mode can, which leaves IA-32e mode.
  EXPECT_EQ(cr0(in_long, cr0::kPe, true).error(), kGp0);
  auto left = cr0(in_long, cr0::kPe, false);
  ASSERT_TRUE(left.has_value());
  EXPECT_EQ(left->registers.efer, efer::kLme);
  // Toggling TS does not touch the TLB; WP does.
  EXPECT_EQ(cr0(in_long, in_long.cr0 | cr0::kTs)->flush, TlbFlush::kNone);
  EXPECT_EQ(cr0(in_long, in_long.cr0 & ~cr0::kWp)->flush, TlbFlush::kAll);
}

TEST_F(ControlRegistersTest, PaePagingLoadsPdptes) {
  PagingRegisters before{.cr0 = cr0::kPe | cr0::kEt, .cr3 = 0x3000, .cr4 = cr4::kPae, .efer = 0};
  auto on = cr0(before, cr0::kPe | cr0::kPg);
  ASSERT_TRUE(on.has_value());
  EXPECT_TRUE(on->registers.pae_pdptes_loaded);
  EXPECT_EQ(on->registers.pae_pdptes[0], 0x4001u);
  // A reserved bit in a present PDPTE makes the load, and so the MOV, fail.
  put64(0x3008, 0x5000 | 1 | (1u << 5));
  EXPECT_EQ(cr0(before, cr0::kPe | cr0::kPg).error(), kGp0);
  EXPECT_EQ(write_cr3(on->registers, 0x3000, features_, *memory_).error(), kGp0);
  put64(0x3008, 0);
  // MOV to CR3 reloads them and flushes non-global entries.
  put64(0x3000, 0x6000 | 1);
  auto reloaded = write_cr3(on->registers, 0x3000, features_, *memory_);
  ASSERT_TRUE(reloaded.has_value());
  EXPECT_EQ(reloaded->registers.pae_pdptes[0], 0x6001u);
  EXPECT_EQ(reloaded->flush, TlbFlush::kNonGlobal);
  // Switching from 32-bit paging to PAE paging through CR4 loads them too.
  PagingRegisters bit32{.cr0 = cr0::kPe | cr0::kPg | cr0::kEt, .cr3 = 0x3000, .cr4 = 0, .efer = 0};
  auto switched = write_cr4(bit32, cr4::kPae, features_, *memory_);
  ASSERT_TRUE(switched.has_value());
  EXPECT_TRUE(switched->registers.pae_pdptes_loaded);
  EXPECT_EQ(switched->flush, TlbFlush::kAll);
}

TEST_F(ControlRegistersTest, Cr3ReservedBits) {
  PagingRegisters long_mode{.cr0 = cr0::kPe | cr0::kPg | cr0::kEt,
                            .cr3 = 0x1000,
                            .cr4 = cr4::kPae,
                            .efer = efer::kLme | efer::kLma};
  EXPECT_EQ(write_cr3(long_mode, uint64_t{1} << 40, features_, *memory_).error(), kGp0);
  EXPECT_EQ(write_cr3(long_mode, uint64_t{1} << 63, features_, *memory_).error(), kGp0);
  auto ok = write_cr3(long_mode, 0xff'ffff'f018, features_, *memory_);
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->registers.cr3, 0xff'ffff'f018u);
  PagingRegisters legacy{.cr0 = cr0::kPe | cr0::kPg | cr0::kEt, .cr3 = 0, .cr4 = 0, .efer = 0};
  EXPECT_EQ(write_cr3(legacy, 0x1'0000'2000, features_, *memory_)->registers.cr3, 0x2000u);
}

TEST_F(ControlRegistersTest, Cr4ReservedBitsFollowTheModel) {
  PagingRegisters current{.cr0 = cr0::kPe | cr0::kEt, .cr3 = 0, .cr4 = 0, .efer = 0};
  for (uint64_t bit : {cr4::kOsxsave, cr4::kSmep, cr4::kSmap, cr4::kPcide, cr4::kVme, cr4::kLa57,
                       uint64_t{1} << 13 /* VMXE */, uint64_t{1} << 32}) {
    EXPECT_EQ(write_cr4(current, bit, features_, *memory_).error(), kGp0) << std::hex << bit;
  }
  auto sse = write_cr4(current, cr4::kOsfxsr | cr4::kOsxmmexcpt | cr4::kPge | cr4::kPse, features_,
                       *memory_);
  ASSERT_TRUE(sse.has_value());
  EXPECT_EQ(sse->flush, TlbFlush::kAll);  // PGE and PSE changed
  EXPECT_EQ(
      write_cr4(sse->registers, sse->registers.cr4 & ~cr4::kOsfxsr, features_, *memory_)->flush,
      TlbFlush::kNone);
  features_.smep = true;
  features_.smap = true;
  EXPECT_EQ(write_cr4(current, cr4::kSmap, features_, *memory_)->flush, TlbFlush::kAll);
  EXPECT_EQ(cr4_writable_bits(features_) & cr4::kSmep, cr4::kSmep);
}

TEST_F(ControlRegistersTest, Cr4InLongMode) {
  PagingRegisters long_mode{.cr0 = cr0::kPe | cr0::kPg | cr0::kEt,
                            .cr3 = 0x1000,
                            .cr4 = cr4::kPae,
                            .efer = efer::kLme | efer::kLma};
  EXPECT_EQ(write_cr4(long_mode, 0, features_, *memory_).error(), kGp0);  // clearing PAE
  EXPECT_TRUE(write_cr4(long_mode, cr4::kPae | cr4::kPge, features_, *memory_).has_value());
  features_.pcid = true;  // not something the model may advertise, but the rule is checked
  long_mode.cr3 = 0x1001;
  EXPECT_EQ(write_cr4(long_mode, cr4::kPae | cr4::kPcide, features_, *memory_).error(), kGp0);
  long_mode.cr3 = 0x1000;
  EXPECT_TRUE(write_cr4(long_mode, cr4::kPae | cr4::kPcide, features_, *memory_).has_value());
}

TEST(EferFlush, NxeChangesFlushEverything) {
  EXPECT_EQ(flush_after_efer_write(0, efer::kNxe), TlbFlush::kAll);
  EXPECT_EQ(flush_after_efer_write(efer::kNxe, efer::kNxe | efer::kSce), TlbFlush::kNone);
}

}  // namespace
}  // namespace lamina::cpu::x86
