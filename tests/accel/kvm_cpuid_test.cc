// The KVM CPUID tables on a made-up "supported" table. Lamina's model: CpuidModel's leaves, less
// what KVM lacks, with the host's TSC rate; the host's model: what Lamina's platform lacks is
// withdrawn, the hypervisor leaves are Lamina's, and the topology is the VM's.
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

// A host that runs the default model's feature bits except SSE4.2 (leaf 1 ECX bit 20) and
// RDTSCP (0x80000001 EDX bit 27), offers TSC-deadline and AVX, has 39 address bits and lacks the
// platform bits (APIC, x2APIC, hypervisor).
std::vector<kvm_cpuid_entry2> lesser_host() {
  cpu::x86::CpuFeatures all;
  auto model = cpu::x86::CpuidModel::create(all);
  const cpu::x86::CpuidResult one = model->query(1, 0, {});
  const cpu::x86::CpuidResult extended = model->query(0x80000001, 0, {});
  return {
      leaf(1, 0, 0, 0,
           (one.ecx & ~((1u << 20) | (1u << 21) | (1u << 31))) | (1u << 24) | (1u << 28),
           one.edx & ~(1u << 9)),
      leaf(0x80000001, 0, 0, 0, extended.ecx, extended.edx & ~(1u << 27)),
      leaf(0x80000007, 0, 0, 0, 0, 1u << 8),
      leaf(0x80000008, 0, 0x3027, 0, 0, 0),
  };
}

TEST(KvmCpuid, LaminasModelIsTheModelLessWhatKvmLacks) {
  cpu::x86::CpuFeatures features;
  features.vcpu_count = 2;
  features.x2apic = true;
  auto reduced = cpu::x86::reduce_to_support(features, kvm_support(lesser_host()));
  ASSERT_TRUE(reduced) << reduced.error().message();
  EXPECT_EQ(reduced->dropped, (std::vector<std::string>{"sse4_2", "rdtscp",
                                                        "physical address bits 40 -> 39"}));
  // Platform bits stay although the host table lacks them.
  EXPECT_TRUE(reduced->features.apic);
  EXPECT_TRUE(reduced->features.x2apic);
  auto model = cpu::x86::CpuidModel::create(reduced->features);
  ASSERT_TRUE(model);
  const auto table = guest_cpuid_from_model(*model, 1, 2'345'678);
  // Every leaf is the model's (the one CpuidModel), except the timing leaf's TSC rate.
  const auto expected = cpu::x86::cpuid_table(*model, 1);
  ASSERT_EQ(table.size(), expected.size());
  for (size_t index = 0; index < table.size(); ++index) {
    const kvm_cpuid_entry2& got = table[index];
    const cpu::x86::CpuidEntry& want = expected[index];
    EXPECT_EQ(got.function, want.leaf);
    EXPECT_EQ(got.index, want.subleaf);
    EXPECT_EQ((got.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) != 0, want.indexed);
    EXPECT_EQ(got.eax, want.leaf == 0x40000010 ? 2'345'678u : want.value.eax);
    EXPECT_EQ(got.ebx, want.value.ebx);
    EXPECT_EQ(got.ecx, want.value.ecx);
    EXPECT_EQ(got.edx, want.value.edx);
  }
  const kvm_cpuid_entry2* one = find(table, 1);
  ASSERT_NE(one, nullptr);
  EXPECT_EQ(one->ecx & (1u << 20), 0u);    // SSE4.2 dropped
  EXPECT_NE(one->ecx & (1u << 19), 0u);    // SSE4.1 kept
  EXPECT_EQ(one->ecx & (1u << 24), 0u);    // TSC-deadline withheld although KVM offers it
  EXPECT_EQ(one->ecx & (1u << 28), 0u);    // AVX: the host has it, the model does not
  EXPECT_EQ(one->ebx >> 24, 1u);           // the vCPU's APIC ID
  EXPECT_EQ(find(table, 0x80000001)->edx & (1u << 27), 0u);
  EXPECT_EQ(find(table, 0x80000008)->eax & 0xff, 39u);
  const kvm_cpuid_entry2* vendor = find(table, 0);
  ASSERT_NE(vendor, nullptr);
  EXPECT_EQ(vendor->ebx, 0x68747541u);  // "Auth": Lamina's vendor, not the host table's
}

TEST(KvmCpuid, TscDeadlineIsWithheldFromTheModel) {
  cpu::x86::CpuFeatures features;
  features.tsc_deadline = true;
  auto reduced = cpu::x86::reduce_to_support(features, kvm_support(lesser_host()));
  ASSERT_TRUE(reduced);
  EXPECT_FALSE(reduced->features.tsc_deadline);
}

TEST(KvmCpuid, FeatureOverridesNameTheChangedWords) {
  std::vector<kvm_cpuid_entry2> given = {leaf(1, 0, 0x60fb1, 0, 0x80202000, 0x078bf3fd)};
  EXPECT_TRUE(feature_overrides(given, given).empty());
  std::vector<kvm_cpuid_entry2> applied = {leaf(1, 0, 0x60fb1, 0, 0xf6f83203, 0x078bf3fd),
                                           leaf(7, 0, 0, 0x219c01ab, 0, 0)};
  applied[1].flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
  EXPECT_EQ(feature_overrides(given, applied),
            (std::vector<std::string>{"CPUID 0x1.0 ECX 0x80202000 -> 0xf6f83203",
                                      "CPUID 0x7.0 EBX 0x00000000 -> 0x219c01ab"}));
}

}  // namespace
}  // namespace lamina::accel::kvm
