#include "cpu/x86/system/cpuid_model.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace lamina::cpu::x86 {
namespace {

constexpr uint32_t bits(std::initializer_list<unsigned> positions) {
  uint32_t value = 0;
  for (unsigned position : positions) value |= uint32_t{1} << position;
  return value;
}

std::string text(std::initializer_list<uint32_t> registers) {
  std::string out;
  for (uint32_t value : registers) {
    char part[4];
    std::memcpy(part, &value, 4);
    out.append(part, 4);
  }
  return out;
}

CpuidModel model(const CpuFeatures& features = {}) {
  auto created = CpuidModel::create(features);
  EXPECT_TRUE(created.has_value()) << created.error().message();
  return *created;
}

TEST(CpuidModel, VendorAndMaximumLeaves) {
  CpuidModel cpu = model();
  CpuidResult vendor = cpu.query(0, 0, {});
  EXPECT_EQ(vendor.eax, 7u);
  EXPECT_EQ(text({vendor.ebx, vendor.edx, vendor.ecx}), "AuthenticAMD");
  CpuidResult extended = cpu.query(0x80000000, 0, {});
  EXPECT_EQ(extended.eax, 0x80000008u);
  EXPECT_EQ(text({extended.ebx, extended.edx, extended.ecx}), "AuthenticAMD");
  // Beyond the maxima everything reads as zero.
  for (uint32_t leaf : {0x8u, 0xdu, 0x20u, 0x40000011u, 0x80000009u, 0x8000001eu}) {
    EXPECT_EQ(cpu.query(leaf, 0, {}), CpuidResult{}) << std::hex << leaf;
  }
}

TEST(CpuidModel, Leaf1ForTheDefaultModel) {
  CpuidModel cpu = model();
  CpuidResult leaf = cpu.query(1, 0, {.vcpu_index = 0});
  // Family 0xf, model 0x6b, stepping 1: base model 0xb, extended model 6.
  EXPECT_EQ(leaf.eax, 0x00060fb1u);
  EXPECT_EQ(leaf.ebx, 0x00010800u);  // CLFLUSH 64 bytes, APIC ID 0
  // SSE3, SSSE3, CX16, SSE4.1, SSE4.2, POPCNT, hypervisor.
  EXPECT_EQ(leaf.ecx, bits({0, 9, 13, 19, 20, 23, 31}));
  // FPU DE PSE TSC MSR PAE MCE CX8 APIC MTRR PGE MCA CMOV PAT PSE36 CLFSH MMX FXSR SSE SSE2.
  EXPECT_EQ(leaf.edx,
            bits({0, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 19, 23, 24, 25, 26}));
}

TEST(CpuidModel, DynamicBitsFollowVcpuState) {
  CpuidModel cpu = model();
  EXPECT_EQ(cpu.query(1, 0, {.vcpu_index = 0, .apic_enabled = false}).edx & bits({9}), 0u);
  EXPECT_EQ(cpu.query(1, 0, {.vcpu_index = 0}).ebx >> 24, 0u);
  CpuFeatures four;
  four.vcpu_count = 4;
  CpuidModel smp = model(four);
  CpuidResult leaf = smp.query(1, 0, {.vcpu_index = 3});
  EXPECT_EQ(leaf.ebx >> 24, 3u);
  EXPECT_EQ((leaf.ebx >> 16) & 0xff, 4u);
  EXPECT_NE(leaf.edx & bits({28}), 0u);                         // HTT
  EXPECT_NE(smp.query(0x80000001, 0, {}).ecx & bits({1}), 0u);  // CmpLegacy
  EXPECT_EQ(smp.query(0x80000008, 0, {}).ecx, 0x2003u);         // 4 cores, 2 APIC ID bits
  CpuFeatures three;
  three.vcpu_count = 3;
  EXPECT_EQ(model(three).query(0x80000008, 0, {}).ecx, 0x2002u);
  EXPECT_EQ(cpu.query(0x80000008, 0, {}).ecx, 0u);
  EXPECT_EQ(cpu.query(1, 0, {}).edx & bits({28}), 0u);
}

TEST(CpuidModel, EachFeatureFlipsItsOwnBit) {
  CpuidModel base = model();
  struct Case {
    bool CpuFeatures::*feature;
    uint32_t leaf;
    int reg;  // 0 eax, 1 ebx, 2 ecx, 3 edx
    unsigned bit;
  };
  auto reg = [](const CpuidResult& r, int index) {
    return index == 0 ? r.eax : index == 1 ? r.ebx : index == 2 ? r.ecx : r.edx;
  };
  for (const Case& c : {
           Case{&CpuFeatures::tsc_deadline, 1, 2, 24},
           Case{&CpuFeatures::sep, 1, 3, 11},
           Case{&CpuFeatures::perfctr_core, 0x80000001, 2, 23},
           Case{&CpuFeatures::x2apic, 1, 2, 21},
           Case{&CpuFeatures::rdrand, 1, 2, 30},
           Case{&CpuFeatures::smep, 7, 1, 7},
           Case{&CpuFeatures::smap, 7, 1, 20},
           Case{&CpuFeatures::fsgsbase, 7, 1, 0},
           Case{&CpuFeatures::erms, 7, 1, 9},
           Case{&CpuFeatures::abm, 0x80000001, 2, 5},
       }) {
    CpuFeatures features;
    features.*c.feature = true;
    CpuidResult on = model(features).query(c.leaf, 0, {});
    CpuidResult off = base.query(c.leaf, 0, {});
    EXPECT_EQ(reg(on, c.reg) ^ reg(off, c.reg), uint32_t{1} << c.bit)
        << std::hex << c.leaf << " bit " << std::dec << c.bit;
  }
  // Turning a default feature off clears its bit.
  CpuFeatures no_nx;
  no_nx.nx = false;
  EXPECT_EQ(model(no_nx).query(0x80000001, 0, {}).edx & bits({20}), 0u);
  CpuFeatures no_machine_checks;
  no_machine_checks.mce = no_machine_checks.mca = false;
  EXPECT_EQ(model(no_machine_checks).query(1, 0, {}).edx & bits({7, 14}), 0u);
  EXPECT_EQ(model(no_machine_checks).query(0x80000001, 0, {}).edx & bits({7, 14}), 0u);
}

TEST(CpuidModel, Leaf7AndXsave) {
  CpuidModel cpu = model();
  EXPECT_EQ(cpu.query(7, 0, {}), CpuidResult{});
  CpuFeatures avx;
  avx.xsave = true;
  avx.avx = true;
  CpuidModel with_avx = model(avx);
  EXPECT_EQ(with_avx.query(0, 0, {}).eax, 0xdu);
  EXPECT_EQ(with_avx.query(1, 0, {}).ecx & bits({26, 27, 28}), bits({26, 28}));
  EXPECT_EQ(with_avx.query(1, 0, {.osxsave = true}).ecx & bits({27}), bits({27}));
  CpuidResult xsave = with_avx.query(0xd, 0, {.xcr0 = 7});
  EXPECT_EQ(xsave.eax, 7u);
  EXPECT_EQ(xsave.ebx, 832u);  // 512 legacy + 64 header + 256 AVX
  EXPECT_EQ(xsave.ecx, 832u);
  EXPECT_EQ(with_avx.query(0xd, 0, {.xcr0 = 3}).ebx, 576u);
  EXPECT_EQ(with_avx.query(0xd, 2, {}), (CpuidResult{256, 576, 0, 0}));
  EXPECT_EQ(with_avx.query(0xd, 1, {}), CpuidResult{});
}

TEST(CpuidModel, HypervisorLeaves) {
  CpuFeatures features;
  features.tsc_khz = 2'500'000;
  CpuidModel cpu = model(features);
  CpuidResult signature = cpu.query(0x40000000, 0, {});
  EXPECT_EQ(signature.eax, 0x40000010u);
  EXPECT_EQ(text({signature.ebx, signature.ecx, signature.edx}), "LaminaLamina");
  EXPECT_EQ(cpu.query(0x40000010, 0, {}), (CpuidResult{2'500'000, 1'000'000, 0, 0}));
  EXPECT_EQ(cpu.query(0x40000001, 0, {}), CpuidResult{});
}

TEST(CpuidModel, ExtendedLeaves) {
  CpuidModel cpu = model();
  CpuidResult features = cpu.query(0x80000001, 0, {});
  EXPECT_EQ(features.eax, 0x00060fb1u);
  EXPECT_EQ(features.ecx, bits({0}));  // LAHF/SAHF in 64-bit mode
  // SYSCALL 11, NX 20, Page1GB 26, RDTSCP 27, LM 29, plus the mirrored leaf 1 bits.
  EXPECT_EQ(features.edx,
            bits({0, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 20, 23, 24, 26, 27, 29}));
  std::string brand;
  for (uint32_t leaf = 0x80000002; leaf <= 0x80000004; ++leaf) {
    CpuidResult part = cpu.query(leaf, 0, {});
    brand += text({part.eax, part.ebx, part.ecx, part.edx});
  }
  EXPECT_EQ(brand.size(), 48u);
  EXPECT_STREQ(brand.c_str(), "Lamina Virtual CPU");
  EXPECT_EQ(cpu.query(0x80000007, 0, {}).edx, bits({8}));   // invariant TSC
  EXPECT_EQ(cpu.query(0x80000008, 0, {}).eax, 0x3028u);     // 48 linear, 40 physical
  EXPECT_EQ(cpu.query(0x80000006, 0, {}).ecx >> 16, 512u);  // L2 in KiB
}

TEST(CpuidModel, PagingFeaturesMatchWhatIsAdvertised) {
  CpuFeatures features;
  features.physical_address_bits = 36;
  features.gigabyte_pages = false;
  CpuidModel cpu = model(features);
  PagingFeatures paging = features.paging();
  EXPECT_EQ(cpu.query(0x80000008, 0, {}).eax & 0xff, paging.physical_address_bits);
  EXPECT_EQ((cpu.query(0x80000001, 0, {}).edx >> 26) & 1, paging.gigabyte_pages ? 1u : 0u);
  EXPECT_EQ((cpu.query(1, 0, {}).edx >> 17) & 1, paging.pse36 ? 1u : 0u);
}

TEST(CpuidModel, RejectsInconsistentModels) {
  auto expect_rejected = [](CpuFeatures features, ErrorCode code) {
    auto created = CpuidModel::create(features);
    ASSERT_FALSE(created.has_value());
    EXPECT_EQ(created.error().code(), code);
    EXPECT_FALSE(created.error().message().empty());
  };
  CpuFeatures f;
  f.vendor = "AMD";
  expect_rejected(f, ErrorCode::kInvalidArgument);
  f = {};
  f.vcpu_count = 0;
  expect_rejected(f, ErrorCode::kInvalidArgument);
  f.vcpu_count = 256;
  expect_rejected(f, ErrorCode::kInvalidArgument);
  f = {};
  f.avx = true;
  expect_rejected(f, ErrorCode::kInvalidArgument);
  f = {};
  f.sse3 = false;  // SSSE3 and up still on
  expect_rejected(f, ErrorCode::kInvalidArgument);
  f = {};
  f.brand = std::string(48, 'x');
  expect_rejected(f, ErrorCode::kInvalidArgument);
  f = {};
  f.pcid = true;
  expect_rejected(f, ErrorCode::kUnsupported);
  f = {};
  f.family = 0x6;
  f.model = 0x3a;
  f.vendor = "GenuineIntel";
  EXPECT_EQ(model(f).query(1, 0, {}).eax, 0x000306a1u);  // base family 6 with extended model
}

}  // namespace
}  // namespace lamina::cpu::x86
