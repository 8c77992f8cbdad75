#include "cpu/x86/system/cpuid_table.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

namespace lamina::cpu::x86 {
namespace {

// Every flag of CpuFeatures, with its name for the log. Positions in CPUID are not listed here:
// they are CpuidModel's, found by turning the flag off and comparing the leaves.
struct FeatureFlag {
  const char* name;
  bool CpuFeatures::*flag;
};
constexpr FeatureFlag kFeatureFlags[] = {
    {"fpu", &CpuFeatures::fpu},
    {"vme", &CpuFeatures::vme},
    {"de", &CpuFeatures::de},
    {"pse", &CpuFeatures::pse},
    {"tsc", &CpuFeatures::tsc},
    {"msr", &CpuFeatures::msr},
    {"pae", &CpuFeatures::pae},
    {"mce", &CpuFeatures::mce},
    {"cx8", &CpuFeatures::cx8},
    {"apic", &CpuFeatures::apic},
    {"sep", &CpuFeatures::sep},
    {"mtrr", &CpuFeatures::mtrr},
    {"pge", &CpuFeatures::pge},
    {"mca", &CpuFeatures::mca},
    {"cmov", &CpuFeatures::cmov},
    {"pat", &CpuFeatures::pat},
    {"pse36", &CpuFeatures::pse36},
    {"clflush", &CpuFeatures::clflush},
    {"mmx", &CpuFeatures::mmx},
    {"fxsr", &CpuFeatures::fxsr},
    {"sse", &CpuFeatures::sse},
    {"sse2", &CpuFeatures::sse2},
    {"sse3", &CpuFeatures::sse3},
    {"pclmulqdq", &CpuFeatures::pclmulqdq},
    {"ssse3", &CpuFeatures::ssse3},
    {"cx16", &CpuFeatures::cx16},
    {"sse4_1", &CpuFeatures::sse4_1},
    {"sse4_2", &CpuFeatures::sse4_2},
    {"x2apic", &CpuFeatures::x2apic},
    {"movbe", &CpuFeatures::movbe},
    {"popcnt", &CpuFeatures::popcnt},
    {"tsc_deadline", &CpuFeatures::tsc_deadline},
    {"aes", &CpuFeatures::aes},
    {"xsave", &CpuFeatures::xsave},
    {"avx", &CpuFeatures::avx},
    {"rdrand", &CpuFeatures::rdrand},
    {"fsgsbase", &CpuFeatures::fsgsbase},
    {"bmi1", &CpuFeatures::bmi1},
    {"smep", &CpuFeatures::smep},
    {"bmi2", &CpuFeatures::bmi2},
    {"erms", &CpuFeatures::erms},
    {"smap", &CpuFeatures::smap},
    {"pcid", &CpuFeatures::pcid},
    {"la57", &CpuFeatures::la57},
    {"syscall", &CpuFeatures::syscall},
    {"nx", &CpuFeatures::nx},
    {"mmxext", &CpuFeatures::mmxext},
    {"ffxsr", &CpuFeatures::ffxsr},
    {"gigabyte_pages", &CpuFeatures::gigabyte_pages},
    {"rdtscp", &CpuFeatures::rdtscp},
    {"long_mode", &CpuFeatures::long_mode},
    {"lahf_lm", &CpuFeatures::lahf_lm},
    {"abm", &CpuFeatures::abm},
    {"sse4a", &CpuFeatures::sse4a},
    {"prefetchw", &CpuFeatures::prefetchw},
    {"perfctr_core", &CpuFeatures::perfctr_core},
    {"invariant_tsc", &CpuFeatures::invariant_tsc},
};

constexpr size_t kWordCount = std::size(kFeatureWords);
using FeatureWordValues = std::array<uint32_t, kWordCount>;

// The reset state every table is taken in (cpuid_table.h).
CpuidState reset_state(uint32_t vcpu_index) {
  return CpuidState{.vcpu_index = vcpu_index, .apic_enabled = true, .osxsave = false, .xcr0 = 1};
}

FeatureWordValues feature_words(const CpuFeatures& features) {
  const CpuidModel model = CpuidModel::unchecked(features);
  FeatureWordValues values{};
  for (size_t index = 0; index < kWordCount; ++index) {
    const CpuidWord& word = kFeatureWords[index];
    values[index] = register_value(model.query(word.leaf, word.subleaf, reset_state(0)), word.name);
  }
  return values;
}

// `features` without what builds on `flag` (AVX on XSAVE, SSE4.2 on SSE4.1 on ...).
CpuFeatures without_dependents(CpuFeatures features, bool CpuFeatures::*flag) {
  for (const FeatureDependency& dependency : kFeatureDependencies) {
    if (dependency.prerequisite == flag && features.*dependency.feature) {
      features = without_dependents(features, dependency.feature);
      features.*dependency.feature = false;
    }
  }
  return features;
}

// Whether the backend runs every bit `flag` itself turns on: the bits that go with it when
// what builds on it is gone already (so XSAVE's leaf 0xD bits are x87 and SSE, not AVX's).
bool supported(const CpuFeatures& features, bool CpuFeatures::*flag,
               const CpuidSupport& support) {
  const CpuFeatures base = without_dependents(features, flag);
  CpuFeatures without = base;
  without.*flag = false;
  const FeatureWordValues with = feature_words(base);
  const FeatureWordValues cleared = feature_words(without);
  for (size_t index = 0; index < kWordCount; ++index) {
    const uint32_t bits = with[index] & ~cleared[index];
    if ((bits & ~support.feature_bits(kFeatureWords[index])) != 0) return false;
  }
  return true;
}

}  // namespace

uint32_t register_value(const CpuidResult& result, CpuidRegister name) {
  switch (name) {
    case CpuidRegister::kEax: return result.eax;
    case CpuidRegister::kEbx: return result.ebx;
    case CpuidRegister::kEcx: return result.ecx;
    case CpuidRegister::kEdx: return result.edx;
  }
  return 0;
}

uint32_t& register_value(CpuidResult& result, CpuidRegister name) {
  switch (name) {
    case CpuidRegister::kEax: return result.eax;
    case CpuidRegister::kEbx: return result.ebx;
    case CpuidRegister::kEcx: return result.ecx;
    case CpuidRegister::kEdx: break;
  }
  return result.edx;
}

std::string_view register_name(CpuidRegister name) {
  switch (name) {
    case CpuidRegister::kEax: return "EAX";
    case CpuidRegister::kEbx: return "EBX";
    case CpuidRegister::kEcx: return "ECX";
    case CpuidRegister::kEdx: return "EDX";
  }
  return "?";
}

bool is_feature_word(uint32_t leaf, uint32_t subleaf, CpuidRegister name) {
  return std::ranges::any_of(kFeatureWords, [&](const CpuidWord& word) {
    return word.leaf == leaf && word.subleaf == subleaf && word.name == name;
  });
}

std::vector<CpuidEntry> cpuid_table(const CpuidModel& model, uint32_t vcpu_index) {
  const CpuidState state = reset_state(vcpu_index);
  std::vector<CpuidEntry> table;
  auto add = [&](uint32_t leaf, uint32_t subleaf, bool indexed) {
    table.push_back(CpuidEntry{leaf, subleaf, indexed, model.query(leaf, subleaf, state)});
  };
  for (uint32_t leaf = 0; leaf <= model.max_basic_leaf(); ++leaf) {
    if (leaf == cpuid_leaf::kStructuredFeatures) {
      add(leaf, 0, true);
    } else if (leaf == cpuid_leaf::kXsave) {
      for (uint32_t subleaf = 0; subleaf <= 2; ++subleaf) add(leaf, subleaf, true);
    } else {
      add(leaf, 0, false);
    }
  }
  add(cpuid_leaf::kHypervisor, 0, false);
  add(cpuid_leaf::kHypervisorTiming, 0, false);
  for (uint32_t leaf = cpuid_leaf::kExtendedMax; leaf <= model.max_extended_leaf(); ++leaf) {
    add(leaf, 0, false);
  }
  return table;
}

const CpuidEntry* find_leaf(std::span<const CpuidEntry> table, uint32_t leaf, uint32_t subleaf) {
  for (const CpuidEntry& entry : table) {
    if (entry.leaf == leaf && (entry.subleaf == subleaf || !entry.indexed)) return &entry;
  }
  return nullptr;
}

Result<ReducedFeatures> reduce_to_support(const CpuFeatures& features,
                                          const CpuidSupport& support) {
  if (auto valid = CpuidModel::create(features); !valid) return fail(valid.error());
  ReducedFeatures reduced{features, {}};
  for (const FeatureFlag& flag : kFeatureFlags) {
    if (!(features.*flag.flag) || supported(features, flag.flag, support)) continue;
    reduced.features.*flag.flag = false;
    reduced.dropped.emplace_back(flag.name);
  }
  // A dropped prerequisite takes what builds on it (SSE4.2 without SSE4.1), until none is left.
  for (bool changed = true; changed;) {
    changed = false;
    for (const FeatureDependency& dependency : kFeatureDependencies) {
      CpuFeatures& f = reduced.features;
      if (f.*dependency.feature && !(f.*dependency.prerequisite)) {
        f.*dependency.feature = false;
        reduced.dropped.push_back(dependency.text);
        changed = true;
      }
    }
  }
  if (reduced.features.physical_address_bits > support.physical_address_bits) {
    reduced.dropped.push_back(fmt::format("physical address bits {} -> {}",
                                          reduced.features.physical_address_bits,
                                          support.physical_address_bits));
    reduced.features.physical_address_bits = support.physical_address_bits;
  }
  if (auto valid = CpuidModel::create(reduced.features); !valid) return fail(valid.error());
  return reduced;
}

}  // namespace lamina::cpu::x86
