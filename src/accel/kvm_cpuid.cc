#include "accel/kvm_cpuid.h"

#include <fmt/format.h>

#include <bit>
#include <string>

namespace lamina::accel::kvm {
namespace {

constexpr uint32_t bit(unsigned position) { return uint32_t{1} << position; }

// Four characters of a string as the little-endian register value CPUID returns.
uint32_t chars(const std::string& text, size_t offset) {
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) {
    const uint8_t c = offset + i < text.size() ? static_cast<uint8_t>(text[offset + i]) : 0;
    value |= uint32_t{c} << (8 * i);
  }
  return value;
}

kvm_cpuid_entry2 entry(uint32_t function, uint32_t index, uint32_t eax, uint32_t ebx, uint32_t ecx,
                       uint32_t edx, bool indexed) {
  kvm_cpuid_entry2 result{};
  result.function = function;
  result.index = index;
  result.flags = indexed ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
  result.eax = eax;
  result.ebx = ebx;
  result.ecx = ecx;
  result.edx = edx;
  return result;
}

// Leaves 0xB and 0x1F (extended topology, SDM Vol. 2A table 3-8): an SMT level of one thread,
// then a core level of `count` cores; EDX is the x2APIC ID at every subleaf.
void add_topology_leaf(std::vector<kvm_cpuid_entry2>& table, uint32_t function, uint32_t count,
                       uint32_t apic_id) {
  const uint32_t core_bits = count > 1 ? static_cast<uint32_t>(std::bit_width(count - 1)) : 0;
  table.push_back(entry(function, 0, 0, 1, (1u << 8) | 0, apic_id, true));
  table.push_back(entry(function, 1, core_bits, count, (2u << 8) | 1, apic_id, true));
  table.push_back(entry(function, 2, 0, 0, 2, apic_id, true));
}

}  // namespace

std::vector<kvm_cpuid_entry2> guest_cpuid_from_host(std::span<const kvm_cpuid_entry2> supported,
                                          const cpu::x86::CpuFeatures& features,
                                          uint32_t vcpu_index, uint32_t tsc_khz) {
  const uint32_t count = features.vcpu_count == 0 ? 1 : features.vcpu_count;
  const bool multi = count > 1;
  const uint32_t core_bits = multi ? static_cast<uint32_t>(std::bit_width(count - 1)) : 0;
  std::vector<kvm_cpuid_entry2> table;
  bool has_leaf_b = false, has_leaf_1f = false;
  for (kvm_cpuid_entry2 leaf : supported) {
    switch (leaf.function) {
      case 0x1:
        // ECX: 3 MONITOR, 5 VMX, 21 x2APIC, 24 TSC-deadline; 31 "running under a hypervisor".
        leaf.ecx &= ~(bit(3) | bit(5));
        if (!features.x2apic) leaf.ecx &= ~bit(21);
        if (!features.tsc_deadline) leaf.ecx &= ~bit(24);
        leaf.ecx |= bit(31);
        // EBX: initial APIC ID in 31:24, logical processors per package in 23:16 (with HTT).
        leaf.ebx =
            (leaf.ebx & 0xffffu) | ((multi ? count : 1u) << 16) | ((vcpu_index & 0xffu) << 24);
        leaf.edx = multi ? (leaf.edx | bit(28)) : (leaf.edx & ~bit(28));
        break;
      case 0x4:
        // Deterministic cache parameters: cores per package - 1 in 31:26; L1/L2 private to a
        // core, the last level shared by all (threads sharing - 1 in 25:14).
        leaf.eax &= 0x3fffu;
        leaf.eax |= (count - 1) << 26;
        if (((leaf.eax >> 5) & 7) >= 3) leaf.eax |= (count - 1) << 14;
        break;
      case 0x5: continue;  // MONITOR/MWAIT is withdrawn
      case 0xd:
        // XSAVE components: x87, SSE and AVX only, the state CpuState carries (a guest could
        // otherwise enable AVX-512, PKRU or AMX in XCR0, which no state could move). Subleaf
        // 0: XCR0's supported bits in EDX:EAX, the largest area in ECX; subleaf 1: IA32_XSS's
        // supervisor components in EDX:ECX (SDM Vol. 2A CPUID leaf 0DH).
        if (leaf.index == 0) {
          leaf.eax &= 7;
          leaf.edx = 0;
          leaf.ecx = (leaf.eax & 4) != 0 ? 832 : 576;
        } else if (leaf.index == 1) {
          leaf.ecx = 0;
          leaf.edx = 0;
        } else if (leaf.index > 2) {
          continue;
        }
        break;
      case 0xa: continue;  // architectural PMU
      case 0xb: has_leaf_b = true; continue;
      case 0x1f: has_leaf_1f = true; continue;
      case 0x80000001:
        // ECX: 1 CmpLegacy, 2 SVM, 22 TopologyExtensions, 23 PerfCtrExtCore.
        leaf.ecx &= ~(bit(1) | bit(2) | bit(22) | bit(23));
        if (multi) leaf.ecx |= bit(1);
        break;
      case 0x80000008:
        // ECX: NC (cores - 1) in 7:0, ApicIdCoreIdSize in 15:12 (AMD #25481).
        leaf.ecx = (leaf.ecx & ~0xf0ffu) | (count - 1) | (core_bits << 12);
        break;
      case 0x8000000a:  // SVM features
      case 0x8000001d:  // cache topology (TOPOEXT)
      case 0x8000001e:  // core/node IDs (TOPOEXT)
      case 0x80000022:  // PerfMonV2
      case 0x80000026:  // AMD extended CPU topology (the host's)
        continue;
      default:
        // Every hypervisor leaf is replaced by Lamina's below.
        if (leaf.function >= 0x40000000 && leaf.function < 0x50000000) continue;
        break;
    }
    table.push_back(leaf);
  }
  if (has_leaf_b) add_topology_leaf(table, 0xb, count, vcpu_index);
  if (has_leaf_1f) add_topology_leaf(table, 0x1f, count, vcpu_index);
  const std::string& name = features.hypervisor_vendor;
  // Signature in EBX, ECX, EDX; EAX is the highest hypervisor leaf.
  table.push_back(
      entry(0x40000000, 0, 0x40000010, chars(name, 0), chars(name, 4), chars(name, 8), false));
  table.push_back(entry(0x40000010, 0, tsc_khz, features.bus_khz, 0, 0, false));
  return table;
}

cpu::x86::CpuidSupport kvm_support(std::span<const kvm_cpuid_entry2> supported) {
  using cpu::x86::CpuidRegister;
  using cpu::x86::CpuidWord;
  std::vector<kvm_cpuid_entry2> table(supported.begin(), supported.end());
  auto platform_bits = [](const CpuidWord& word) -> uint32_t {
    // Leaf 1 ECX: 21 x2APIC, 31 hypervisor; EDX: 9 APIC, 28 HTT. 0x80000001 ECX: 1 CmpLegacy;
    // EDX: 9 APIC.
    if (word.leaf == 1 && word.name == CpuidRegister::kEcx) return bit(21) | bit(31);
    if (word.leaf == 1 && word.name == CpuidRegister::kEdx) return bit(9) | bit(28);
    if (word.leaf == 0x80000001 && word.name == CpuidRegister::kEcx) return bit(1);
    if (word.leaf == 0x80000001 && word.name == CpuidRegister::kEdx) return bit(9);
    return 0;
  };
  auto withheld_bits = [](const CpuidWord& word) -> uint32_t {
    return word.leaf == 1 && word.name == CpuidRegister::kEcx ? bit(24) : 0;  // TSC-deadline
  };
  cpu::x86::CpuidSupport support;
  support.feature_bits = [table = std::move(table), platform_bits,
                          withheld_bits](const CpuidWord& word) -> uint32_t {
    uint32_t host = 0;
    for (const kvm_cpuid_entry2& leaf : table) {
      if (leaf.function != word.leaf || leaf.index != word.subleaf) continue;
      cpu::x86::CpuidResult value{leaf.eax, leaf.ebx, leaf.ecx, leaf.edx};
      host = cpu::x86::register_value(value, word.name);
      break;
    }
    return (host | platform_bits(word)) & ~withheld_bits(word);
  };
  for (const kvm_cpuid_entry2& leaf : supported) {
    if (leaf.function == 0x80000008 && (leaf.eax & 0xff) != 0) {
      support.physical_address_bits = static_cast<uint8_t>(leaf.eax & 0xff);
    }
  }
  return support;
}

std::vector<kvm_cpuid_entry2> guest_cpuid_from_model(const cpu::x86::CpuidModel& model,
                                                     uint32_t vcpu_index, uint32_t tsc_khz) {
  std::vector<kvm_cpuid_entry2> table;
  for (const cpu::x86::CpuidEntry& leaf : cpu::x86::cpuid_table(model, vcpu_index)) {
    const uint32_t eax =
        leaf.leaf == cpu::x86::cpuid_leaf::kHypervisorTiming ? tsc_khz : leaf.value.eax;
    table.push_back(entry(leaf.leaf, leaf.subleaf, eax, leaf.value.ebx, leaf.value.ecx,
                          leaf.value.edx, leaf.indexed));
  }
  return table;
}

std::vector<std::string> feature_overrides(std::span<const kvm_cpuid_entry2> given,
                                           std::span<const kvm_cpuid_entry2> applied) {
  const std::vector<cpu::x86::CpuidEntry> asked = to_cpuid_table(given);
  const std::vector<cpu::x86::CpuidEntry> got = to_cpuid_table(applied);
  std::vector<std::string> lines;
  for (const cpu::x86::CpuidWord& word : cpu::x86::kFeatureWords) {
    const cpu::x86::CpuidEntry* a = cpu::x86::find_leaf(asked, word.leaf, word.subleaf);
    const cpu::x86::CpuidEntry* b = cpu::x86::find_leaf(got, word.leaf, word.subleaf);
    const uint32_t want = a ? cpu::x86::register_value(a->value, word.name) : 0;
    const uint32_t have = b ? cpu::x86::register_value(b->value, word.name) : 0;
    if (want != have) {
      lines.push_back(fmt::format("CPUID {:#x}.{} {} {:#010x} -> {:#010x}", word.leaf,
                                  word.subleaf, cpu::x86::register_name(word.name), want, have));
    }
  }
  return lines;
}

std::vector<cpu::x86::CpuidEntry> to_cpuid_table(std::span<const kvm_cpuid_entry2> table) {
  std::vector<cpu::x86::CpuidEntry> result;
  for (const kvm_cpuid_entry2& leaf : table) {
    result.push_back(cpu::x86::CpuidEntry{leaf.function, leaf.index,
                                          (leaf.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) != 0,
                                          {leaf.eax, leaf.ebx, leaf.ecx, leaf.edx}});
  }
  return result;
}

}  // namespace lamina::accel::kvm
