#include "cpu/x86/system/cpuid_model.h"

#include <fmt/format.h>

#include <bit>
#include <cstring>

namespace lamina::cpu::x86 {

namespace {

constexpr uint32_t bit(unsigned position, bool on) { return on ? (uint32_t{1} << position) : 0; }

// Four characters of a string as the little-endian register value CPUID returns.
uint32_t chars(const std::string& text, size_t offset) {
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) {
    uint8_t c = offset + i < text.size() ? static_cast<uint8_t>(text[offset + i]) : 0;
    value |= uint32_t{c} << (8 * i);
  }
  return value;
}

// XSAVE area sizes (SDM 13.4): legacy region 512 + header 64; AVX state is 256 bytes at 576.
constexpr uint32_t kXsaveBaseSize = 576;
constexpr uint32_t kAvxStateSize = 256;

}  // namespace

Result<CpuidModel> CpuidModel::create(const CpuFeatures& features) {
  auto invalid = [](std::string message) {
    return fail(ErrorCode::kInvalidArgument, "CPU model: " + std::move(message));
  };
  if (features.vendor.size() != 12) {
    return invalid(fmt::format("vendor \"{}\" must be 12 characters", features.vendor));
  }
  if (features.hypervisor_vendor.size() != 12) {
    return invalid(
        fmt::format("hypervisor vendor \"{}\" must be 12 characters", features.hypervisor_vendor));
  }
  if (features.brand.size() > 47) {
    return invalid(fmt::format("brand \"{}\" is longer than 47 characters", features.brand));
  }
  if (features.vcpu_count < 1 || features.vcpu_count > 255) {
    return invalid(fmt::format("{} vCPUs; xAPIC IDs allow 1 to 255", features.vcpu_count));
  }
  if (features.family > 0xf + 0xff) {
    return invalid(fmt::format("family {:#x} does not fit CPUID", features.family));
  }
  if (features.physical_address_bits < 32 || features.physical_address_bits > 52 ||
      features.linear_address_bits != 48) {
    return invalid(fmt::format("address sizes {}/{} bits; supported: 32-52 physical, 48 linear",
                               features.physical_address_bits, features.linear_address_bits));
  }
  if (features.mca && (features.machine_check_banks == 0 || features.machine_check_banks > 32)) {
    return invalid(
        fmt::format("{} machine-check banks; 1 to 32 are allowed", features.machine_check_banks));
  }
  if (features.pcid || features.la57) {
    return fail(ErrorCode::kUnsupported, "CPU model: PCID and LA57 are not implemented");
  }
  for (const FeatureDependency& dependency : kFeatureDependencies) {
    if (features.*dependency.feature && !(features.*dependency.prerequisite)) {
      return invalid(dependency.text);
    }
  }
  return CpuidModel(features);
}

uint32_t CpuidModel::max_basic_leaf() const {
  return features_.xsave ? cpuid_leaf::kXsave : cpuid_leaf::kStructuredFeatures;
}

CpuidResult CpuidModel::query(uint32_t leaf, uint32_t subleaf, const CpuidState& state) const {
  const std::string& vendor = features_.vendor;
  if (leaf >= cpuid_leaf::kExtendedMax) {
    if (leaf > max_extended_leaf()) return {};
  } else if (leaf >= cpuid_leaf::kHypervisor) {
    if (leaf > cpuid_leaf::kHypervisorTiming) return {};
  } else if (leaf > max_basic_leaf()) {
    return {};
  }
  switch (leaf) {
    case cpuid_leaf::kVendor:
      // The vendor string is EBX, EDX, ECX.
      return {max_basic_leaf(), chars(vendor, 0), chars(vendor, 8), chars(vendor, 4)};
    case cpuid_leaf::kFeatures: return leaf1(state);
    case cpuid_leaf::kStructuredFeatures: return leaf7(subleaf);
    case cpuid_leaf::kXsave: return leaf_xsave(subleaf, state);
    case cpuid_leaf::kHypervisor: {
      const std::string& name = features_.hypervisor_vendor;
      // Signature in EBX, ECX, EDX (the hypervisor CPUID convention).
      return {cpuid_leaf::kHypervisorTiming, chars(name, 0), chars(name, 4), chars(name, 8)};
    }
    case cpuid_leaf::kHypervisorTiming: return {features_.tsc_khz, features_.bus_khz, 0, 0};
    case cpuid_leaf::kExtendedMax:
      return {max_extended_leaf(), chars(vendor, 0), chars(vendor, 8), chars(vendor, 4)};
    case cpuid_leaf::kExtendedFeatures: return extended_features();
    case cpuid_leaf::kBrandFirst:
    case cpuid_leaf::kBrandFirst + 1:
    case cpuid_leaf::kBrandFirst + 2: return brand(leaf - cpuid_leaf::kBrandFirst);
    case cpuid_leaf::kL1Cache:
      // AMD Fn8000_0005: 64 KiB, 2-way, 64-byte lines for L1D (ECX) and L1I (EDX); the L1 TLBs
      // (EAX: 2M/4M pages, EBX: 4K pages) fully associative with 64 entries each.
      return {0xff40ff40, 0xff40ff40, 0x40020140, 0x40020140};
    case cpuid_leaf::kL2Cache:
      // Fn8000_0006: L2 TLBs 4-way with 512 entries (EBX); ECX: 512 KiB L2, 16-way (encoding
      // 8), 1 line per tag, 64-byte lines; EDX: no L3.
      return {0, 0x42004200, (512u << 16) | (0x8u << 12) | (0x1u << 8) | 64u, 0};
    case cpuid_leaf::kPowerManagement: return {0, 0, 0, bit(8, features_.invariant_tsc)};
    case cpuid_leaf::kAddressSizes: return address_sizes();
    default: return {};
  }
}

uint32_t CpuidModel::signature() const {
  // SDM CPUID leaf 1 EAX: the family field saturates at 0xf and the rest goes to the extended
  // family; the extended model holds model bits 7:4 (used with families 6 and 0xf).
  uint32_t family = features_.family;
  uint32_t base_family = family < 0xf ? family : 0xf;
  uint32_t extended_family = family < 0xf ? 0 : family - 0xf;
  uint32_t model = features_.model;
  return (features_.stepping & 0xfu) | ((model & 0xfu) << 4) | (base_family << 8) |
         ((model >> 4) << 16) | (extended_family << 20);
}

CpuidResult CpuidModel::leaf1(const CpuidState& state) const {
  const CpuFeatures& f = features_;
  bool multi = f.vcpu_count > 1;
  CpuidResult result;
  result.eax = signature();
  // EBX: CLFLUSH line size in 8-byte units, logical processors per package (valid with HTT),
  // initial APIC ID.
  result.ebx = (f.clflush ? 8u << 8 : 0u) | ((multi ? f.vcpu_count : 1u) << 16) |
               ((state.vcpu_index & 0xffu) << 24);
  result.ecx = bit(0, f.sse3) | bit(1, f.pclmulqdq) | bit(9, f.ssse3) | bit(13, f.cx16) |
               bit(17, f.pcid) | bit(19, f.sse4_1) | bit(20, f.sse4_2) | bit(21, f.x2apic) |
               bit(22, f.movbe) | bit(23, f.popcnt) | bit(24, f.tsc_deadline) | bit(25, f.aes) |
               bit(26, f.xsave) | bit(27, f.xsave && state.osxsave) | bit(28, f.avx) |
               bit(30, f.rdrand) | bit(31, true);  // 31: running under a hypervisor
  result.edx = bit(0, f.fpu) | bit(1, f.vme) | bit(2, f.de) | bit(3, f.pse) | bit(4, f.tsc) |
               bit(5, f.msr) | bit(6, f.pae) | bit(7, f.mce) | bit(8, f.cx8) |
               bit(9, f.apic && state.apic_enabled) | bit(11, f.sep) | bit(12, f.mtrr) |
               bit(13, f.pge) | bit(14, f.mca) | bit(15, f.cmov) | bit(16, f.pat) |
               bit(17, f.pse36) | bit(19, f.clflush) | bit(23, f.mmx) | bit(24, f.fxsr) |
               bit(25, f.sse) | bit(26, f.sse2) | bit(28, multi);
  return result;
}

CpuidResult CpuidModel::leaf7(uint32_t subleaf) const {
  if (subleaf != 0) return {};
  const CpuFeatures& f = features_;
  CpuidResult result;
  result.eax = 0;  // highest subleaf
  result.ebx = bit(0, f.fsgsbase) | bit(3, f.bmi1) | bit(7, f.smep) | bit(8, f.bmi2) |
               bit(9, f.erms) | bit(20, f.smap);
  result.ecx = bit(16, f.la57);
  return result;
}

CpuidResult CpuidModel::leaf_xsave(uint32_t subleaf, const CpuidState& state) const {
  if (!features_.xsave) return {};
  uint32_t supported = 0x3u | (features_.avx ? 0x4u : 0u);  // x87, SSE, AVX
  switch (subleaf) {
    case 0: {
      uint32_t enabled_size = kXsaveBaseSize + ((state.xcr0 & 0x4) != 0 ? kAvxStateSize : 0);
      uint32_t maximum_size = kXsaveBaseSize + (features_.avx ? kAvxStateSize : 0);
      return {supported, enabled_size, maximum_size, 0};
    }
    case 1: return {};  // no XSAVEOPT, XSAVEC, XGETBV with ECX = 1, XSAVES
    case 2:
      if (features_.avx) return {kAvxStateSize, kXsaveBaseSize, 0, 0};
      return {};
    default: return {};
  }
}

CpuidResult CpuidModel::extended_features() const {
  const CpuFeatures& f = features_;
  bool multi = f.vcpu_count > 1;
  CpuidResult result;
  result.eax = signature();
  result.ecx = bit(0, f.lahf_lm) | bit(1, multi) | bit(5, f.abm) | bit(6, f.sse4a) |
               bit(8, f.prefetchw) | bit(23, f.perfctr_core);
  // AMD mirrors leaf 1's EDX bits 0-17, 23 and 24 here (APM Vol. 3 E.4.2).
  result.edx = bit(0, f.fpu) | bit(1, f.vme) | bit(2, f.de) | bit(3, f.pse) | bit(4, f.tsc) |
               bit(5, f.msr) | bit(6, f.pae) | bit(7, f.mce) | bit(8, f.cx8) | bit(9, f.apic) |
               bit(11, f.syscall) | bit(12, f.mtrr) | bit(13, f.pge) | bit(14, f.mca) |
               bit(15, f.cmov) | bit(16, f.pat) | bit(17, f.pse36) | bit(20, f.nx) |
               bit(22, f.mmxext) | bit(23, f.mmx) | bit(24, f.fxsr) | bit(25, f.ffxsr) |
               bit(26, f.gigabyte_pages) | bit(27, f.rdtscp) | bit(29, f.long_mode);
  return result;
}

CpuidResult CpuidModel::brand(uint32_t part) const {
  // 48 bytes over three leaves, NUL-padded (the brand is at most 47 characters).
  size_t offset = part * 16;
  const std::string& text = features_.brand;
  return {chars(text, offset), chars(text, offset + 4), chars(text, offset + 8),
          chars(text, offset + 12)};
}

CpuidResult CpuidModel::address_sizes() const {
  CpuidResult result;
  result.eax = features_.physical_address_bits | (uint32_t{features_.linear_address_bits} << 8);
  // ECX: NC = cores - 1 in 7:0, ApicIdCoreIdSize (bits of the APIC ID that number the core)
  // in 15:12.
  uint32_t cores = features_.vcpu_count;
  uint32_t core_bits = cores > 1 ? std::bit_width(cores - 1) : 0;
  result.ecx = (cores - 1) | (core_bits << 12);
  return result;
}

}  // namespace lamina::cpu::x86
