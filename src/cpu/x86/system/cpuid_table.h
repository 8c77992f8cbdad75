#pragma once
// A CPU model as a table of CPUID leaves, for a backend that loads CPUID rather than computing
// it (KVM_SET_CPUID2) and for comparing what two machines present (migration); and the model
// reduced to what a backend can run. There is one model, CpuidModel: the table is its answers
// for a vCPU at reset, and a reduction clears CpuFeatures flags and lets CpuidModel recompute, so
// every backend presents the same leaves for the same features.
//
// Thread-safety: pure functions and values.

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "cpu/x86/system/cpu_features.h"
#include "cpu/x86/system/cpuid_model.h"

namespace lamina::cpu::x86 {

enum class CpuidRegister : uint8_t { kEax, kEbx, kEcx, kEdx };
uint32_t register_value(const CpuidResult& result, CpuidRegister name);
uint32_t& register_value(CpuidResult& result, CpuidRegister name);
std::string_view register_name(CpuidRegister name);

struct CpuidEntry {
  uint32_t leaf = 0;
  uint32_t subleaf = 0;
  // The leaf has subleaves (ECX selects; KVM_CPUID_FLAG_SIGNIFCANT_INDEX).
  bool indexed = false;
  CpuidResult value;
  friend bool operator==(const CpuidEntry&, const CpuidEntry&) = default;
};

// One register of one leaf.
struct CpuidWord {
  uint32_t leaf = 0;
  uint32_t subleaf = 0;
  CpuidRegister name = CpuidRegister::kEax;
};

// The registers whose bits each say that an instruction set, a mode or a register exists: what a
// backend may lack, and what a guest may have started to use. Every other register identifies
// the CPU (vendor, signature, brand) or describes the VM (topology, caches, address sizes).
inline constexpr CpuidWord kFeatureWords[] = {
    {1, 0, CpuidRegister::kEcx},          {1, 0, CpuidRegister::kEdx},
    {7, 0, CpuidRegister::kEbx},          {7, 0, CpuidRegister::kEcx},
    {7, 0, CpuidRegister::kEdx},          {0xd, 0, CpuidRegister::kEax},  // XCR0 components
    {0x80000001, 0, CpuidRegister::kEcx}, {0x80000001, 0, CpuidRegister::kEdx},
    {0x80000007, 0, CpuidRegister::kEdx},
};
bool is_feature_word(uint32_t leaf, uint32_t subleaf, CpuidRegister name);

// vCPU `vcpu_index`'s leaves at reset (xAPIC enabled, CR4.OSXSAVE clear, XCR0 = x87): every leaf
// up to the model's basic, hypervisor and extended maxima; leaf 7 subleaf 0 and leaf 0xD
// subleaves 0-2 are `indexed`. A leaf missing from the table reads as zeros (the model's AMD
// behaviour, which KVM also follows for a guest whose vendor is not Intel).
std::vector<CpuidEntry> cpuid_table(const CpuidModel& model, uint32_t vcpu_index);
// The entry for leaf/subleaf, or null.
const CpuidEntry* find_leaf(std::span<const CpuidEntry> table, uint32_t leaf, uint32_t subleaf);

// What a backend can run: the bits of each feature word it supports, and the widest physical
// address it maps.
struct CpuidSupport {
  std::function<uint32_t(const CpuidWord&)> feature_bits;
  uint8_t physical_address_bits = 52;
};

struct ReducedFeatures {
  CpuFeatures features;
  // What was dropped, one line each ("sse4_2", "avx (AVX requires XSAVE)", "physical address
  // bits 40 -> 39"); empty when the backend runs the whole model.
  std::vector<std::string> dropped;
};
// `features` without each flag that turns on a bit `support` lacks, and without what depended
// on a dropped flag; the address width capped at the backend's. kInvalidArgument for a model
// CpuidModel::create refuses.
Result<ReducedFeatures> reduce_to_support(const CpuFeatures& features, const CpuidSupport& support);

}  // namespace lamina::cpu::x86
