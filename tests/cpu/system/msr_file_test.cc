#include "cpu/x86/system/msr_file.h"

#include <gtest/gtest.h>

#include "cpu/x86/system/control_bits.h"

namespace lamina::cpu::x86 {
namespace {

const Fault kGp0{13, 0};

class MsrFileTest : public ::testing::Test {
 protected:
  MsrFile make(bool bootstrap = true) {
    MsrHooks hooks;
    hooks.clock = [this] { return clock_; };
    hooks.paging_enabled = [this] { return paging_; };
    hooks.read_tsc_deadline = [this] { return deadline_; };
    hooks.write_tsc_deadline = [this](uint64_t value) {
      deadline_ = value;
      ++deadline_writes_;
    };
    return MsrFile(features_, bootstrap, hooks);
  }
  CpuFeatures features_;
  uint64_t clock_ = 0;
  bool paging_ = false;
  uint64_t deadline_ = 0;
  int deadline_writes_ = 0;
};

TEST_F(MsrFileTest, UnknownMsrsRaiseGeneralProtection) {
  MsrFile msrs = make();
  for (uint32_t index : {0x3au, 0x12345u, 0x48u, 0xc0000104u, 0x20fu + 1, 0x6e0u}) {
    EXPECT_EQ(msrs.read(index).error(), kGp0) << std::hex << index;
    EXPECT_EQ(msrs.write(index, 0).error(), kGp0) << std::hex << index;
  }
}

TEST_F(MsrFileTest, EferBitsAndLongModeRules) {
  MsrFile msrs = make();
  EXPECT_EQ(*msrs.read(msr::kEfer), 0u);
  ASSERT_TRUE(msrs.write(msr::kEfer, efer::kSce | efer::kLme | efer::kNxe).has_value());
  EXPECT_EQ(msrs.efer(), efer::kSce | efer::kLme | efer::kNxe);
  // Reserved bits (1, SVME since SVM is not advertised, 63) fault and change nothing.
  for (uint64_t bad : {uint64_t{2}, efer::kSvme, efer::kFfxsr, uint64_t{1} << 63}) {
    EXPECT_EQ(msrs.write(msr::kEfer, bad).error(), kGp0);
  }
  EXPECT_EQ(msrs.efer(), efer::kSce | efer::kLme | efer::kNxe);
  // LMA is status: the core sets it; WRMSR cannot change it.
  msrs.set_long_mode_active(true);
  ASSERT_TRUE(msrs.write(msr::kEfer, efer::kSce | efer::kLme | efer::kNxe).has_value());
  EXPECT_EQ(msrs.efer() & efer::kLma, efer::kLma);
  ASSERT_TRUE(
      msrs.write(msr::kEfer, efer::kSce | efer::kLme | efer::kNxe | efer::kLma).has_value());
  // LME cannot change while paging is on.
  paging_ = true;
  EXPECT_EQ(msrs.write(msr::kEfer, efer::kSce).error(), kGp0);
  EXPECT_TRUE(msrs.write(msr::kEfer, efer::kLme).has_value());  // SCE/NXE may change
  features_.nx = false;
  paging_ = false;
  EXPECT_EQ(make().write(msr::kEfer, efer::kNxe).error(), kGp0);
}

TEST_F(MsrFileTest, SyscallAndBaseMsrsNeedCanonicalAddresses) {
  MsrFile msrs = make();
  ASSERT_TRUE(msrs.write(msr::kStar, 0x0023001000000000).has_value());
  EXPECT_EQ(msrs.star(), 0x0023001000000000u);
  ASSERT_TRUE(msrs.write(msr::kLstar, 0xffffffff81a00000).has_value());
  EXPECT_EQ(*msrs.read(msr::kLstar), 0xffffffff81a00000u);
  for (uint32_t index : {msr::kLstar, msr::kCstar, msr::kFsBase, msr::kGsBase, msr::kKernelGsBase,
                         msr::kSysenterEip, msr::kSysenterEsp}) {
    EXPECT_EQ(msrs.write(index, 0x0000800000000000).error(), kGp0) << std::hex << index;
    EXPECT_TRUE(msrs.write(index, 0x00007fffffffffff).has_value()) << std::hex << index;
  }
  ASSERT_TRUE(msrs.write(msr::kSfmask, 0xffffffff00047700).has_value());
  EXPECT_EQ(msrs.sfmask(), 0x47700u);
  ASSERT_TRUE(msrs.write(msr::kGsBase, 0x1000).has_value());
  ASSERT_TRUE(msrs.write(msr::kKernelGsBase, 0xffff888000000000).has_value());
  msrs.swap_gs();
  EXPECT_EQ(msrs.gs_base(), 0xffff888000000000u);
  EXPECT_EQ(*msrs.read(msr::kKernelGsBase), 0x1000u);
  // Without long mode these MSRs do not exist.
  features_.long_mode = false;
  EXPECT_EQ(make().read(msr::kLstar).error(), kGp0);
  EXPECT_EQ(make().write(msr::kFsBase, 0).error(), kGp0);
}

TEST_F(MsrFileTest, PatAcceptsOnlyValidMemoryTypes) {
  MsrFile msrs = make();
  EXPECT_EQ(*msrs.read(msr::kPat), 0x0007040600070406u);
  ASSERT_TRUE(msrs.write(msr::kPat, 0x0007010600070106).has_value());  // Linux's WC slot
  EXPECT_EQ(msrs.pat(), 0x0007010600070106u);
  EXPECT_EQ(msrs.write(msr::kPat, 0x0007040600070402).error(), kGp0);
  EXPECT_EQ(msrs.write(msr::kPat, 0x0307040600070406).error(), kGp0);
  EXPECT_EQ(msrs.write(msr::kPat, 0x0807040600070406).error(), kGp0);
  EXPECT_EQ(msrs.pat(), 0x0007010600070106u);
  EXPECT_TRUE(is_valid_pat_type(7));
  EXPECT_FALSE(is_valid_mtrr_type(7));
}

TEST_F(MsrFileTest, Mtrrs) {
  MsrFile msrs = make();
  EXPECT_EQ(*msrs.read(msr::kMtrrCap), 0x508u);  // 8 variable, fixed, WC
  EXPECT_EQ(msrs.write(msr::kMtrrCap, 0x508).error(), kGp0);
  ASSERT_TRUE(msrs.write(msr::kMtrrDefType, 0xc06).has_value());  // E, FE, write-back
  EXPECT_EQ(*msrs.read(msr::kMtrrDefType), 0xc06u);
  EXPECT_EQ(msrs.write(msr::kMtrrDefType, 0xc02).error(), kGp0);  // type 2 reserved
  EXPECT_EQ(msrs.write(msr::kMtrrDefType, 0x206).error(), kGp0);  // bit 9 reserved
  ASSERT_TRUE(msrs.write(msr::kMtrrFix64k00000, 0x0606060606060606).has_value());
  ASSERT_TRUE(msrs.write(0x26f, 0x0505050505050505).has_value());
  EXPECT_EQ(*msrs.read(0x26f), 0x0505050505050505u);
  EXPECT_EQ(msrs.write(msr::kMtrrFix16kA0000, 0x0006060606060606 | (uint64_t{3} << 56)).error(),
            kGp0);
  EXPECT_EQ(msrs.read(0x260).error(), kGp0);  // a hole between the fixed ranges
  // Variable range 3: base 0xc0000000 uncacheable, 1 GiB mask, valid.
  ASSERT_TRUE(msrs.write(0x206, 0xc0000000).has_value());
  ASSERT_TRUE(msrs.write(0x207, 0xffc0000800).has_value());
  EXPECT_EQ(*msrs.read(0x207), 0xffc0000800u);
  EXPECT_EQ(msrs.write(0x206, 0xc0000100).error(), kGp0);         // bits 11:8 reserved
  EXPECT_EQ(msrs.write(0x206, 0xc0000003).error(), kGp0);         // type 3 reserved
  EXPECT_EQ(msrs.write(0x206, uint64_t{1} << 40).error(), kGp0);  // beyond MAXPHYADDR
  EXPECT_EQ(msrs.write(0x207, 0xffc0000801).error(), kGp0);       // bits 10:0 reserved
  features_.mtrr = false;
  EXPECT_EQ(make().read(msr::kMtrrCap).error(), kGp0);
}

TEST_F(MsrFileTest, ApicBase) {
  EXPECT_EQ(*make(true).read(msr::kApicBase), 0xfee00900u);
  MsrFile ap = make(false);
  EXPECT_EQ(*ap.read(msr::kApicBase), 0xfee00800u);
  ASSERT_TRUE(ap.write(msr::kApicBase, 0xfed00000).has_value());  // disabled and moved
  EXPECT_EQ(ap.apic_base(), 0xfed00000u);
  // The BSP flag is not changed by writes.
  ASSERT_TRUE(ap.write(msr::kApicBase, 0xfee00900).has_value());
  EXPECT_EQ(ap.apic_base(), 0xfee00800u);
  EXPECT_EQ(ap.write(msr::kApicBase, 0xfee00c00).error(), kGp0);  // x2APIC not advertised
  EXPECT_EQ(ap.write(msr::kApicBase, 0xfee00801).error(), kGp0);
  EXPECT_EQ(ap.write(msr::kApicBase, (uint64_t{1} << 40) | 0x800).error(), kGp0);
}

TEST_F(MsrFileTest, TscIsAnOffsetAgainstTheClock) {
  MsrFile msrs = make();
  clock_ = 500;
  EXPECT_EQ(*msrs.read(msr::kTsc), 500u);
  ASSERT_TRUE(msrs.write(msr::kTsc, 1000).has_value());
  clock_ = 700;
  EXPECT_EQ(*msrs.read(msr::kTsc), 1200u);
  EXPECT_EQ(msrs.tsc(), 1200u);
  // Writing a smaller value than the clock wraps the offset and still reads back right.
  ASSERT_TRUE(msrs.write(msr::kTsc, 10).has_value());
  clock_ = 710;
  EXPECT_EQ(msrs.tsc(), 20u);
  ASSERT_TRUE(msrs.write(msr::kTscAux, 3).has_value());
  EXPECT_EQ(msrs.tsc_aux(), 3u);
  EXPECT_EQ(msrs.write(msr::kTscAux, uint64_t{1} << 32).error(), kGp0);
  features_.rdtscp = false;
  EXPECT_EQ(make().read(msr::kTscAux).error(), kGp0);
}

TEST_F(MsrFileTest, TscDeadlineGoesToTheLapic) {
  EXPECT_EQ(make().write(msr::kTscDeadline, 5).error(), kGp0);  // not advertised
  features_.tsc_deadline = true;
  MsrFile msrs = make();
  ASSERT_TRUE(msrs.write(msr::kTscDeadline, 123456).has_value());
  EXPECT_EQ(deadline_, 123456u);
  EXPECT_EQ(deadline_writes_, 1);
  deadline_ = 0;  // the LAPIC fired and cleared it
  EXPECT_EQ(*msrs.read(msr::kTscDeadline), 0u);
  // Advertised but without a LAPIC hooked up: still #GP rather than a silent value.
  MsrFile unhooked(features_, true);
  EXPECT_EQ(unhooked.read(msr::kTscDeadline).error(), kGp0);
}

TEST_F(MsrFileTest, StoredOnlyMsrsAndVendorSpecificOnes) {
  MsrFile msrs = make();
  EXPECT_EQ(*msrs.read(msr::kMiscEnable), 1u);
  ASSERT_TRUE(msrs.write(msr::kMiscEnable, 0x801).has_value());
  EXPECT_EQ(*msrs.read(msr::kMiscEnable), 0x801u);
  ASSERT_TRUE(msrs.write(msr::kBiosSignId, 0x1234).has_value());
  EXPECT_EQ(*msrs.read(msr::kBiosSignId), 0u);
  ASSERT_TRUE(msrs.write(msr::kSysenterCs, 0x10).has_value());
  EXPECT_EQ(msrs.sysenter_cs(), 0x10u);
  ASSERT_TRUE(msrs.write(msr::kAmdHwcr, 0x1000000).has_value());
  EXPECT_EQ(*msrs.read(msr::kAmdHwcr), 0x1000000u);
  EXPECT_EQ(*msrs.read(msr::kAmdIntPendingMessage), 0u);
  features_.vendor = "GenuineIntel";
  EXPECT_EQ(make().read(msr::kAmdSyscfg).error(), kGp0);
  EXPECT_EQ(make().read(msr::kAmdIntPendingMessage).error(), kGp0);
}

TEST_F(MsrFileTest, AmdLegacyPerformanceCountersStoreAndCountNothing) {
  MsrFile msrs = make();
  for (uint32_t i = 0; i < 4; ++i) {
    const uint32_t select = msr::kAmdPerfEventSelect0 + i, counter = msr::kAmdPerfCounter0 + i;
    EXPECT_EQ(*msrs.read(select), 0u);
    EXPECT_EQ(*msrs.read(counter), 0u);
    // Enable (22), OS+USR (17:16), event 0x76 (cycles); reserved bit 21 is dropped.
    ASSERT_TRUE(msrs.write(select, 0x530076 | (uint64_t{1} << 21)).has_value());
    EXPECT_EQ(*msrs.read(select), 0x530076u);
    // Counters are 48 bits.
    ASSERT_TRUE(msrs.write(counter, 0xffff800000000000 + i).has_value());
    clock_ += 1'000'000;
    EXPECT_EQ(*msrs.read(counter), 0x800000000000u + i) << "a counter counts nothing";
  }
  // Without PERFCTR_CORE the core range does not exist.
  for (uint32_t index = msr::kAmdCorePerfControl0; index < msr::kAmdCorePerfControl0 + 12;
       ++index) {
    EXPECT_EQ(msrs.read(index).error(), kGp0) << std::hex << index;
    EXPECT_EQ(msrs.write(index, 0).error(), kGp0) << std::hex << index;
  }
  EXPECT_EQ(msrs.read(msr::kAmdPerfEventSelect0 + 8).error(), kGp0);
  // RDPMC reads the same counters, the legacy four only.
  EXPECT_EQ(*msrs.read_performance_counter(2), 0x800000000002u);
  EXPECT_EQ(msrs.read_performance_counter(4).error(), kGp0);
  features_.vendor = "GenuineIntel";
  EXPECT_EQ(make().read(msr::kAmdPerfCounter0).error(), kGp0);
}

TEST_F(MsrFileTest, PerfctrCoreCountersOnlyWhenAdvertisedAndAliasTheLegacyOnes) {
  features_.perfctr_core = true;
  MsrFile msrs = make();
  for (uint32_t i = 0; i < kAmdCoreCounters; ++i) {
    ASSERT_TRUE(msrs.write(msr::kAmdCorePerfControl0 + 2 * i, 0x430000 + i).has_value());
    ASSERT_TRUE(msrs.write(msr::kAmdCorePerfControl0 + 2 * i + 1, 100 + i).has_value());
  }
  for (uint32_t i = 0; i < kAmdCoreCounters; ++i) {
    EXPECT_EQ(*msrs.read(msr::kAmdCorePerfControl0 + 2 * i), 0x430000u + i);
    EXPECT_EQ(*msrs.read(msr::kAmdCorePerfControl0 + 2 * i + 1), 100u + i);
  }
  // AMD APM vol. 2 13.2.2: the legacy MSRs are the first four core counters.
  EXPECT_EQ(*msrs.read(msr::kAmdPerfEventSelect0 + 3), 0x430003u);
  EXPECT_EQ(*msrs.read(msr::kAmdPerfCounter0 + 2), 102u);
  EXPECT_EQ(*msrs.read_performance_counter(5), 105u);
  EXPECT_EQ(msrs.read_performance_counter(6).error(), kGp0);
  EXPECT_EQ(msrs.read(msr::kAmdCorePerfControl0 + 12).error(), kGp0);
}

TEST_F(MsrFileTest, MachineCheckRegistersFollowTheArchitecture) {
  MsrFile msrs = make();
  const uint64_t banks = features_.machine_check_banks;
  ASSERT_GT(banks, 0u);
  EXPECT_EQ(*msrs.read(msr::kMcgCap), banks | 0x100) << "bank count and MCG_CTL_P";
  EXPECT_EQ(msrs.write(msr::kMcgCap, 0).error(), kGp0) << "read-only";
  EXPECT_EQ(*msrs.read(msr::kMcgStatus), 0u);
  ASSERT_TRUE(msrs.write(msr::kMcgStatus, 0).has_value());
  EXPECT_EQ(msrs.write(msr::kMcgStatus, 0x10).error(), kGp0);
  ASSERT_TRUE(msrs.write(msr::kMcgCtl, ~uint64_t{0}).has_value());
  EXPECT_EQ(*msrs.read(msr::kMcgCtl), ~uint64_t{0});
  EXPECT_EQ(msrs.write(msr::kMcgCtl, 0xff).error(), kGp0);
  for (uint32_t bank = 0; bank < banks; ++bank) {
    const uint32_t ctl = msr::kMc0Ctl + 4 * bank;
    // MCi_CTL reports everything after reset, as KVM and QEMU set it; the rest reads 0.
    EXPECT_EQ(*msrs.read(ctl), ~uint64_t{0});
    for (uint32_t part = 1; part < 4; ++part) EXPECT_EQ(*msrs.read(ctl + part), 0u);
    ASSERT_TRUE(msrs.write(ctl, ~uint64_t{0}).has_value());
    EXPECT_EQ(*msrs.read(ctl), ~uint64_t{0});
    EXPECT_EQ(msrs.write(ctl, 0x1234).error(), kGp0);
    ASSERT_TRUE(msrs.write(ctl, ~uint64_t{0x400}).has_value()) << "Linux's K8 GART workaround";
    ASSERT_TRUE(msrs.write(ctl + 1, 0).has_value());
    EXPECT_EQ(msrs.write(ctl + 1, 1).error(), kGp0) << "MCi_STATUS takes only 0";
    ASSERT_TRUE(msrs.write(ctl + 2, 0xabc).has_value());
    EXPECT_EQ(*msrs.read(ctl + 2), 0xabcu);
  }
  EXPECT_EQ(msrs.read(msr::kMc0Ctl + 4 * banks).error(), kGp0) << "past the last bank";
  // AMD HWCR.McStatusWrEn allows injecting a status.
  ASSERT_TRUE(msrs.write(msr::kAmdHwcr, uint64_t{1} << 18).has_value());
  ASSERT_TRUE(msrs.write(msr::kMc0Ctl + 1, 0x8000000000000000).has_value());
  EXPECT_EQ(*msrs.read(msr::kMc0Ctl + 1), 0x8000000000000000u);
  features_.mca = false;
  EXPECT_EQ(make().read(msr::kMcgCap).error(), kGp0);
  EXPECT_EQ(make().read(msr::kMc0Ctl).error(), kGp0);
}

TEST_F(MsrFileTest, StateRoundTrips) {
  MsrFile msrs = make();
  ASSERT_TRUE(msrs.write(msr::kLstar, 0xffffffff81000000).has_value());
  ASSERT_TRUE(msrs.write(0x201, 0xff00000800).has_value());
  ASSERT_TRUE(msrs.write(msr::kTsc, 777).has_value());
  ASSERT_TRUE(msrs.write(msr::kAmdPerfCounter0 + 1, 55).has_value());
  ASSERT_TRUE(msrs.write(msr::kMc0Ctl + 6, 66).has_value());
  MsrState saved = msrs.state();
  MsrFile other = make(false);
  EXPECT_NE(other.state(), saved);
  other.restore(saved);
  EXPECT_EQ(other.state(), saved);
  EXPECT_EQ(*other.read(0x201), 0xff00000800u);
  EXPECT_EQ(other.tsc(), 777u);
}

}  // namespace
}  // namespace lamina::cpu::x86
