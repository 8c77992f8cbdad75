// The KVM CPUID filter on a made-up "supported" table: what Lamina's platform lacks is withdrawn,
// the hypervisor leaves are Lamina's, and the topology is the VM's.
#include <gtest/gtest.h>

#include <cstring>

#include "accel/kvm_cpuid.h"

namespace lamina::accel::kvm {
namespace {

kvm_cpuid_entry2 leaf(uint32_t function, uint32_t index, uint32_t eax, uint32_t ebx, uint32_t ecx,
                      uint32_t edx) {
  kvm_cpuid_entry2 entry{};
  entry.function = function;
  entry.index = index;
  entry.eax = eax;
  entry.ebx = ebx;
  entry.ecx = ecx;
  entry.edx = edx;
  return entry;
}

const kvm_cpuid_entry2* find(const std::vector<kvm_cpuid_entry2>& table, uint32_t function,
                             uint32_t index = 0) {
  for (const kvm_cpuid_entry2& entry : table) {
    if (entry.function == function && entry.index == index) return &entry;
  }
  return nullptr;
}

std::vector<kvm_cpuid_entry2> host_table() {
  return {
      leaf(0, 0, 0x1f, 0x68747541, 0x444d4163, 0x69746e65),
      // x2APIC (21), TSC-deadline (24), VMX (5), MONITOR (3) and HTT set; host APIC ID 0x17.
      leaf(1, 0, 0x00a00f11, 0x17400800, (1u << 21) | (1u << 24) | (1u << 5) | (1u << 3) | 1u,
           (1u << 28) | (1u << 9) | 1u),
      leaf(0xa, 0, 0x07300403, 0, 0, 0),
      leaf(0xb, 0, 1, 2, 0x100, 0x17),
      leaf(0xb, 1, 7, 64, 0x201, 0x17),
      leaf(0x40000000, 0, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d),  // "KVMKVMKVM"
      leaf(0x40000001, 0, 0xffffff, 0, 0, 0),
      leaf(0x80000001, 0, 0, 0, (1u << 2) | (1u << 22) | (1u << 23) | 1u, 1u << 29),
      leaf(0x80000008, 0, 0x3030, 0, 0x703f, 0),
      leaf(0x8000001e, 0, 0x17, 0x100, 0, 0),
  };
}

TEST(KvmCpuid, WithdrawsWhatThePlatformLacks) {
  cpu::x86::CpuFeatures features;
  features.vcpu_count = 3;
  const auto table = guest_cpuid_from_host(host_table(), features, 2, 2'500'000);
  const kvm_cpuid_entry2* one = find(table, 1);
  ASSERT_NE(one, nullptr);
  EXPECT_EQ(one->ecx & ((1u << 21) | (1u << 24) | (1u << 5) | (1u << 3)), 0u);
  EXPECT_EQ(one->ecx & 1u, 1u);            // SSE3 stays: the ISA is the host's
  EXPECT_NE(one->ecx & (1u << 31), 0u);    // hypervisor present
  EXPECT_EQ(one->ebx >> 24, 2u);           // APIC ID = vCPU index
  EXPECT_EQ((one->ebx >> 16) & 0xff, 3u);  // three logical processors
  EXPECT_EQ(one->ebx & 0xffff, 0x0800u);   // CLFLUSH size kept
  EXPECT_NE(one->edx & (1u << 28), 0u);    // HTT with more than one
  EXPECT_EQ(find(table, 0xa), nullptr);
  EXPECT_EQ(find(table, 0x40000001), nullptr);
  EXPECT_EQ(find(table, 0x8000001e), nullptr);
  const kvm_cpuid_entry2* extended = find(table, 0x80000001);
  ASSERT_NE(extended, nullptr);
  EXPECT_EQ(extended->ecx, (1u << 1) | 1u);  // CmpLegacy on; SVM, TOPOEXT, PerfCtrExtCore off
  const kvm_cpuid_entry2* sizes = find(table, 0x80000008);
  ASSERT_NE(sizes, nullptr);
  EXPECT_EQ(sizes->ecx & 0xff, 2u);         // NC = cores - 1
  EXPECT_EQ((sizes->ecx >> 12) & 0xf, 2u);  // two APIC ID bits number the core
  EXPECT_EQ(sizes->eax, 0x3030u);
}

TEST(KvmCpuid, HypervisorLeavesAreLaminas) {
  cpu::x86::CpuFeatures features;
  const auto table = guest_cpuid_from_host(host_table(), features, 0, 2'500'000);
  const kvm_cpuid_entry2* signature = find(table, 0x40000000);
  ASSERT_NE(signature, nullptr);
  char text[13] = {};
  std::memcpy(text, &signature->ebx, 4);
  std::memcpy(text + 4, &signature->ecx, 4);
  std::memcpy(text + 8, &signature->edx, 4);
  EXPECT_STREQ(text, "LaminaLamina");
  EXPECT_EQ(signature->eax, 0x40000010u);
  const kvm_cpuid_entry2* timing = find(table, 0x40000010);
  ASSERT_NE(timing, nullptr);
  EXPECT_EQ(timing->eax, 2'500'000u);
  EXPECT_EQ(timing->ebx, features.bus_khz);
}

TEST(KvmCpuid, TopologyLeavesDescribeTheVm) {
  cpu::x86::CpuFeatures features;
  features.vcpu_count = 5;
  const auto table = guest_cpuid_from_host(host_table(), features, 4, 1);
  const kvm_cpuid_entry2* smt = find(table, 0xb, 0);
  const kvm_cpuid_entry2* core = find(table, 0xb, 1);
  const kvm_cpuid_entry2* end = find(table, 0xb, 2);
  ASSERT_TRUE(smt && core && end);
  EXPECT_EQ(smt->ebx, 1u);
  EXPECT_EQ(core->eax, 3u);  // five cores need three ID bits
  EXPECT_EQ(core->ebx, 5u);
  EXPECT_EQ((core->ecx >> 8) & 0xff, 2u);  // level type: core
  EXPECT_EQ(end->ebx, 0u);
  EXPECT_EQ(smt->edx, 4u);
  EXPECT_NE(smt->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0u);
  EXPECT_EQ(find(table, 0x1f), nullptr);  // the host table had none
}

TEST(KvmCpuid, OneVcpuHasNoHyperThreadingFlags) {
  cpu::x86::CpuFeatures features;
  features.x2apic = true;
  const auto table = guest_cpuid_from_host(host_table(), features, 0, 1);
  const kvm_cpuid_entry2* one = find(table, 1);
  ASSERT_NE(one, nullptr);
  EXPECT_EQ(one->edx & (1u << 28), 0u);
  EXPECT_EQ((one->ebx >> 16) & 0xff, 1u);
  EXPECT_NE(one->ecx & (1u << 21), 0u);  // x2APIC when the model asks for it
  EXPECT_EQ(find(table, 0x80000001)->ecx & (1u << 1), 0u);
}

}  // namespace
}  // namespace lamina::accel::kvm
