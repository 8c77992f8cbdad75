// The CPU model as a table and reduced to a backend's support: the table is CpuidModel's own
// answers, and a reduction drops exactly the flags whose bits the backend lacks, with what
// depended on them.
#include "cpu/x86/system/cpuid_table.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace lamina::cpu::x86 {
namespace {

// A backend that runs every bit except `missing` in leaf/register.
CpuidSupport all_but(uint32_t leaf, CpuidRegister name, uint32_t missing) {
  CpuidSupport support;
  support.feature_bits = [=](const CpuidWord& word) -> uint32_t {
    return word.leaf == leaf && word.name == name ? ~missing : ~0u;
  };
  return support;
}

bool has(const std::vector<std::string>& list, const std::string& text) {
  return std::ranges::find(list, text) != list.end();
}

TEST(CpuidTable, IsTheModelsAnswersAtReset) {
  CpuFeatures features;
  features.vcpu_count = 4;
  features.xsave = true;
  features.avx = true;
  auto model = CpuidModel::create(features);
  ASSERT_TRUE(model);
  const auto table = cpuid_table(*model, 2);
  const CpuidState reset{.vcpu_index = 2, .apic_enabled = true, .osxsave = false, .xcr0 = 1};
  for (uint32_t leaf : {0u, 1u, 7u, 0x40000000u, 0x40000010u, 0x80000000u, 0x80000001u,
                        0x80000004u, 0x80000008u}) {
    const CpuidEntry* entry = find_leaf(table, leaf, 0);
    ASSERT_NE(entry, nullptr) << std::hex << leaf;
    EXPECT_EQ(entry->value, model->query(leaf, 0, reset)) << std::hex << leaf;
  }
  // Leaf 0xD has three subleaves, each marked as such; 7 is indexed too.
  for (uint32_t subleaf = 0; subleaf <= 2; ++subleaf) {
    const CpuidEntry* entry = find_leaf(table, 0xd, subleaf);
    ASSERT_NE(entry, nullptr);
    EXPECT_TRUE(entry->indexed);
    EXPECT_EQ(entry->value, model->query(0xd, subleaf, reset));
  }
  EXPECT_TRUE(find_leaf(table, 7, 0)->indexed);
  EXPECT_EQ(find_leaf(table, 1, 0)->value.ebx >> 24, 2u);  // the vCPU's APIC ID
  EXPECT_EQ(find_leaf(table, 0x80000009, 0), nullptr);     // past the maximum
}

TEST(CpuidTable, WholeSupportKeepsTheModel) {
  CpuFeatures features;
  auto reduced = reduce_to_support(features, all_but(1, CpuidRegister::kEcx, 0));
  ASSERT_TRUE(reduced);
  EXPECT_TRUE(reduced->dropped.empty());
  auto a = CpuidModel::create(reduced->features);
  auto b = CpuidModel::create(features);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(cpuid_table(*a, 0), cpuid_table(*b, 0));
}

TEST(CpuidTable, DropsAMissingFeatureAndWhatBuildsOnIt) {
  CpuFeatures features;
  // CPUID.1:ECX bit 19 is SSE4.1: SSE4.2 needs it.
  auto reduced = reduce_to_support(features, all_but(1, CpuidRegister::kEcx, 1u << 19));
  ASSERT_TRUE(reduced);
  EXPECT_FALSE(reduced->features.sse4_1);
  EXPECT_FALSE(reduced->features.sse4_2);
  EXPECT_TRUE(reduced->features.ssse3);
  EXPECT_TRUE(reduced->features.popcnt);
  EXPECT_TRUE(has(reduced->dropped, "sse4_1"));
  EXPECT_TRUE(has(reduced->dropped, "SSE4.2 requires SSE4.1"));
  EXPECT_EQ(reduced->dropped.size(), 2u);
  // The reduced table is the model's minus those bits: model ∩ support.
  auto model = CpuidModel::create(features);
  auto smaller = CpuidModel::create(reduced->features);
  ASSERT_TRUE(model && smaller);
  const uint32_t full_ecx = model->query(1, 0, {}).ecx;
  EXPECT_EQ(smaller->query(1, 0, {}).ecx, full_ecx & ~((1u << 19) | (1u << 20)));
}

TEST(CpuidTable, AFeatureInTwoLeavesNeedsBoth) {
  CpuFeatures features;
  // NX is 0x80000001 EDX bit 20 only; PAT is mirrored (leaf 1 and 0x80000001 EDX bit 16):
  // missing from the extended leaf alone, it goes.
  auto reduced =
      reduce_to_support(features, all_but(0x80000001, CpuidRegister::kEdx, (1u << 16)));
  ASSERT_TRUE(reduced);
  EXPECT_FALSE(reduced->features.pat);
  EXPECT_TRUE(reduced->features.nx);
  EXPECT_EQ(reduced->dropped, std::vector<std::string>{"pat"});
}

TEST(CpuidTable, XsaveComponentsAndAvx) {
  CpuFeatures features;
  features.xsave = true;
  features.avx = true;
  // A backend without AVX state in XCR0 (leaf 0xD EAX bit 2) loses AVX, not XSAVE.
  auto reduced = reduce_to_support(features, all_but(0xd, CpuidRegister::kEax, 1u << 2));
  ASSERT_TRUE(reduced);
  EXPECT_FALSE(reduced->features.avx);
  EXPECT_TRUE(reduced->features.xsave);
  // Without XSAVE (leaf 1 ECX bit 26), AVX goes with it.
  reduced = reduce_to_support(features, all_but(1, CpuidRegister::kEcx, 1u << 26));
  ASSERT_TRUE(reduced);
  EXPECT_FALSE(reduced->features.xsave);
  EXPECT_FALSE(reduced->features.avx);
  EXPECT_TRUE(has(reduced->dropped, "AVX requires XSAVE"));
}

TEST(CpuidTable, AddressWidthIsCapped) {
  CpuFeatures features;
  CpuidSupport support = all_but(1, CpuidRegister::kEcx, 0);
  support.physical_address_bits = 39;
  auto reduced = reduce_to_support(features, support);
  ASSERT_TRUE(reduced);
  EXPECT_EQ(reduced->features.physical_address_bits, 39);
  EXPECT_TRUE(has(reduced->dropped, "physical address bits 40 -> 39"));
}

TEST(CpuidTable, RefusesAnInvalidModel) {
  CpuFeatures features;
  features.vendor = "short";
  EXPECT_FALSE(reduce_to_support(features, all_but(1, CpuidRegister::kEcx, 0)).has_value());
}

TEST(CpuidTable, FeatureWords) {
  EXPECT_TRUE(is_feature_word(1, 0, CpuidRegister::kEcx));
  EXPECT_TRUE(is_feature_word(0x80000001, 0, CpuidRegister::kEdx));
  EXPECT_FALSE(is_feature_word(1, 0, CpuidRegister::kEax));  // the signature
  EXPECT_FALSE(is_feature_word(0, 0, CpuidRegister::kEbx));  // the vendor
}

}  // namespace
}  // namespace lamina::cpu::x86
