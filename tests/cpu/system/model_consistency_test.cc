// The CPU model is one struct (CpuFeatures); CPUID, the MSR file and the control-register
// checks must agree on it: software may only turn on what CPUID advertises, and everything
// advertised must be usable.
#include <gtest/gtest.h>

#include "cpu/x86/system/control_bits.h"
#include "cpu/x86/system/control_registers.h"
#include "cpu/x86/system/cpuid_model.h"
#include "cpu/x86/system/msr_file.h"

namespace lamina::cpu::x86 {
namespace {

bool has(const CpuidResult& result, int reg, unsigned bit) {
  uint32_t value = reg == 1 ? result.ebx : reg == 2 ? result.ecx : result.edx;
  return ((value >> bit) & 1) != 0;
}

// Every CR4 bit next to the CPUID bit that advertises it (SDM Vol. 3A 2.5 / CPUID tables).
struct Cr4Feature {
  uint64_t cr4_bit;
  uint32_t leaf;
  int reg;  // 1 ebx, 2 ecx, 3 edx
  unsigned cpuid_bit;
};
constexpr Cr4Feature kCr4Features[] = {
    {cr4::kVme, 1, 3, 1},         {cr4::kPvi, 1, 3, 1},      {cr4::kTsd, 1, 3, 4},
    {cr4::kDe, 1, 3, 2},          {cr4::kPse, 1, 3, 3},      {cr4::kPae, 1, 3, 6},
    {cr4::kMce, 1, 3, 7},         {cr4::kPge, 1, 3, 13},     {cr4::kOsfxsr, 1, 3, 24},
    {cr4::kOsxmmexcpt, 1, 3, 25}, {cr4::kFsgsbase, 7, 1, 0}, {cr4::kPcide, 1, 2, 17},
    {cr4::kOsxsave, 1, 2, 26},    {cr4::kSmep, 7, 1, 7},     {cr4::kSmap, 7, 1, 20},
    {cr4::kLa57, 7, 2, 16},
};

void check_model(const CpuFeatures& features) {
  auto model = CpuidModel::create(features);
  if (!model) return;  // an invalid combination is rejected before anything uses it
  uint64_t writable = cr4_writable_bits(features);
  for (const Cr4Feature& f : kCr4Features) {
    bool advertised = has(model->query(f.leaf, 0, {}), f.reg, f.cpuid_bit);
    EXPECT_EQ((writable & f.cr4_bit) != 0, advertised)
        << "CR4 bit " << std::hex << f.cr4_bit << " vs CPUID " << f.leaf << "." << f.reg << "["
        << std::dec << f.cpuid_bit << "]";
  }
  CpuidResult extended = model->query(0x80000001, 0, {});
  MsrFile msrs(features, true);
  EXPECT_EQ(msrs.write(msr::kEfer, efer::kSce).has_value(), has(extended, 3, 11));
  EXPECT_EQ(msrs.write(msr::kEfer, efer::kNxe).has_value(), has(extended, 3, 20));
  EXPECT_EQ(msrs.write(msr::kEfer, efer::kLme).has_value(), has(extended, 3, 29));
  CpuidResult basic = model->query(1, 0, {});
  EXPECT_EQ(msrs.read(msr::kPat).has_value(), has(basic, 3, 16));
  EXPECT_EQ(msrs.read(msr::kMtrrCap).has_value(), has(basic, 3, 12));
  EXPECT_EQ(msrs.read(msr::kTsc).has_value(), has(basic, 3, 4));
  EXPECT_EQ(msrs.read(msr::kApicBase).has_value(), has(basic, 3, 9));
  EXPECT_EQ(msrs.read(msr::kTscAux).has_value(), has(extended, 3, 27));
  EXPECT_EQ(msrs.read(msr::kLstar).has_value(), has(extended, 3, 29));
}

TEST(ModelConsistency, DefaultModel) { check_model(CpuFeatures{}); }

TEST(ModelConsistency, EveryOptionalFeatureOnAndOff) {
  // Flip each flag of the model in turn (models the validator rejects are skipped).
  bool CpuFeatures::*flags[] = {
      &CpuFeatures::vme,     &CpuFeatures::de,       &CpuFeatures::pse,    &CpuFeatures::tsc,
      &CpuFeatures::pae,     &CpuFeatures::mce,      &CpuFeatures::apic,   &CpuFeatures::mtrr,
      &CpuFeatures::pge,     &CpuFeatures::pat,      &CpuFeatures::fxsr,   &CpuFeatures::sse,
      &CpuFeatures::xsave,   &CpuFeatures::fsgsbase, &CpuFeatures::smep,   &CpuFeatures::smap,
      &CpuFeatures::syscall, &CpuFeatures::nx,       &CpuFeatures::rdtscp, &CpuFeatures::long_mode,
  };
  int checked = 0;
  for (auto flag : flags) {
    CpuFeatures features;
    features.*flag = !(features.*flag);
    if (CpuidModel::create(features)) ++checked;
    check_model(features);
  }
  EXPECT_GT(checked, 15);
}

}  // namespace
}  // namespace lamina::cpu::x86
