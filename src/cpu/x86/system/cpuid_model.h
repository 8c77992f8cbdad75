#pragma once
// CPUID for one VM's CPU model: the leaves a guest reads, computed from CpuFeatures so the guest
// sees exactly what is implemented. Leaves: 0, 1, 7, 0xD (only with XSAVE), 0x40000000 (the
// hypervisor signature) and 0x40000010 (TSC and bus frequency in kHz), 0x80000000-0x80000008.
// Every other leaf, and every leaf above the advertised maxima, reads as zeros (AMD behaviour).
// Intel SDM Vol. 2A CPUID; AMD CPUID Specification #25481 and APM Vol. 3 appendix E.
//
// Topology: one package of `vcpu_count` cores, one thread each; the initial APIC ID is the vCPU
// index. AMD's legacy method describes it: CPUID 1 EBX[23:16] with HTT, 0x80000001 ECX
// CmpLegacy, 0x80000008 ECX NC and ApicIdCoreIdSize.
//
// Linux note: Debian 12's kernel reads leaf 0x40000010 only for hypervisors it recognizes by
// signature (VMware, ACRN), so with "LaminaLamina" it calibrates the TSC itself; FreeBSD and
// illumos read the leaf generically.
//
// Thread-safety: immutable after creation; query() may be called from any vCPU thread.

#include <cstdint>

#include "base/error.h"
#include "cpu/x86/system/cpu_features.h"

namespace lamina::cpu::x86 {

struct CpuidResult {
  uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
  friend bool operator==(const CpuidResult&, const CpuidResult&) = default;
};

// The per-vCPU state some bits reflect (SDM: CPUID.1:EDX.APIC follows IA32_APIC_BASE's global
// enable; CPUID.1:ECX.OSXSAVE follows CR4.OSXSAVE; leaf 0xD EBX follows XCR0).
struct CpuidState {
  uint32_t vcpu_index = 0;
  bool apic_enabled = true;
  bool osxsave = false;
  uint64_t xcr0 = 1;
};

namespace cpuid_leaf {
inline constexpr uint32_t kVendor = 0;
inline constexpr uint32_t kFeatures = 1;
inline constexpr uint32_t kStructuredFeatures = 7;
inline constexpr uint32_t kXsave = 0xd;
inline constexpr uint32_t kHypervisor = 0x40000000;
inline constexpr uint32_t kHypervisorTiming = 0x40000010;
inline constexpr uint32_t kExtendedMax = 0x80000000;
inline constexpr uint32_t kExtendedFeatures = 0x80000001;
inline constexpr uint32_t kBrandFirst = 0x80000002;
inline constexpr uint32_t kL1Cache = 0x80000005;
inline constexpr uint32_t kL2Cache = 0x80000006;
inline constexpr uint32_t kPowerManagement = 0x80000007;
inline constexpr uint32_t kAddressSizes = 0x80000008;
}  // namespace cpuid_leaf

// A feature that needs another (CpuidModel::create refuses the model without it; a model reduced
// to what a backend runs drops it with its prerequisite).
struct FeatureDependency {
  bool CpuFeatures::*feature;
  bool CpuFeatures::*prerequisite;
  const char* text;
};
inline constexpr FeatureDependency kFeatureDependencies[] = {
    {&CpuFeatures::avx, &CpuFeatures::xsave, "AVX requires XSAVE"},
    {&CpuFeatures::xsave, &CpuFeatures::fxsr, "XSAVE requires FXSR"},
    {&CpuFeatures::sse, &CpuFeatures::fxsr, "SSE requires FXSR"},
    {&CpuFeatures::sse2, &CpuFeatures::sse, "SSE2 requires SSE"},
    {&CpuFeatures::sse3, &CpuFeatures::sse2, "SSE3 requires SSE2"},
    {&CpuFeatures::ssse3, &CpuFeatures::sse3, "SSSE3 requires SSE3"},
    {&CpuFeatures::sse4_1, &CpuFeatures::ssse3, "SSE4.1 requires SSSE3"},
    {&CpuFeatures::sse4_2, &CpuFeatures::sse4_1, "SSE4.2 requires SSE4.1"},
    {&CpuFeatures::long_mode, &CpuFeatures::pae, "long mode requires PAE"},
    {&CpuFeatures::tsc_deadline, &CpuFeatures::apic, "TSC-deadline requires the APIC"},
    {&CpuFeatures::x2apic, &CpuFeatures::apic, "x2APIC requires the APIC"},
    {&CpuFeatures::mca, &CpuFeatures::mce, "MCA requires MCE"},
};

class CpuidModel {
 public:
  // Checks the model: vendor strings of 12 characters, brand of at most 47, 1-255 vCPUs, address
  // sizes in range, feature dependencies (AVX needs XSAVE, XSAVE needs FXSR, SSE levels build on
  // each other), and nothing the rest of Lamina cannot do (PCID, LA57).
  static Result<CpuidModel> create(const CpuFeatures& features);
  // Without create()'s checks: only for comparing the leaves of two feature sets (which bits a
  // flag turns on, cpuid_table.h), never for a vCPU.
  static CpuidModel unchecked(const CpuFeatures& features) { return CpuidModel(features); }

  CpuidResult query(uint32_t leaf, uint32_t subleaf, const CpuidState& state) const;

  const CpuFeatures& features() const { return features_; }
  uint32_t max_basic_leaf() const;
  uint32_t max_extended_leaf() const { return cpuid_leaf::kAddressSizes; }

 private:
  explicit CpuidModel(const CpuFeatures& features) : features_(features) {}

  uint32_t signature() const;  // leaf 1 EAX: stepping, model, family
  CpuidResult leaf1(const CpuidState& state) const;
  CpuidResult leaf7(uint32_t subleaf) const;
  CpuidResult leaf_xsave(uint32_t subleaf, const CpuidState& state) const;
  CpuidResult extended_features() const;
  CpuidResult brand(uint32_t part) const;
  CpuidResult address_sizes() const;

  CpuFeatures features_;
};

}  // namespace lamina::cpu::x86
