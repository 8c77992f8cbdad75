// The "cpu_model" section: a round trip, bounds on a hostile one, and the check a restoring
// machine makes (same kind, every feature bit the guest saw, the same identity; more features
// and another TSC rate pass).
#include "migration/cpu_model_stream.h"

#include <gtest/gtest.h>

namespace lamina::migration {
namespace {

using accel::CpuModelKind;
using accel::PresentedCpu;

PresentedCpu lamina_model(const cpu::x86::CpuFeatures& features = {}) {
  auto model = cpu::x86::CpuidModel::create(features);
  EXPECT_TRUE(model);
  return PresentedCpu{CpuModelKind::kLamina, cpu::x86::cpuid_table(*model, 0)};
}

cpu::x86::CpuidResult& leaf(PresentedCpu& cpu, uint32_t number) {
  for (auto& entry : cpu.leaves) {
    if (entry.leaf == number) return entry.value;
  }
  ADD_FAILURE() << "no leaf " << number;
  return cpu.leaves.front().value;
}

std::string check(const PresentedCpu& saved, const PresentedCpu& here) {
  auto done = check_cpu_model(saved, here);
  return done ? std::string() : done.error().message();
}

TEST(CpuModelStream, RoundTrips) {
  PresentedCpu cpu = lamina_model();
  cpu.kind = CpuModelKind::kHost;
  StateWriter writer;
  save_cpu_model(writer, cpu);
  StateReader reader(writer.data());
  auto loaded = load_cpu_model(reader);
  ASSERT_TRUE(loaded) << loaded.error().message();
  EXPECT_EQ(loaded->kind, CpuModelKind::kHost);
  EXPECT_EQ(loaded->leaves, cpu.leaves);
  EXPECT_TRUE(reader.at_end());
}

TEST(CpuModelStream, RefusesAHostileSection) {
  StateWriter writer;
  writer.begin_section("cpu_model", 1);
  writer.put(uint8_t{0}, uint32_t{1'000'000});
  writer.end_section();
  StateReader reader(writer.data());
  auto loaded = load_cpu_model(reader);
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().message().find("1000000 leaves"), std::string::npos);
  StateWriter kind;
  kind.begin_section("cpu_model", 1);
  kind.put(uint8_t{9}, uint32_t{0});
  kind.end_section();
  StateReader kind_reader(kind.data());
  EXPECT_FALSE(load_cpu_model(kind_reader));
  StateWriter version;
  version.begin_section("cpu_model", 2);
  version.end_section();
  StateReader version_reader(version.data());
  EXPECT_FALSE(load_cpu_model(version_reader));
}

TEST(CpuModelStream, TheSameModelPasses) { EXPECT_EQ(check(lamina_model(), lamina_model()), ""); }

TEST(CpuModelStream, AHostModelGuestNeedsTheHostModel) {
  PresentedCpu host = lamina_model();
  host.kind = CpuModelKind::kHost;
  const std::string why = check(host, lamina_model());
  EXPECT_NE(why.find("started with the host's CPU model (--cpu-model host)"), std::string::npos)
      << why;
  EXPECT_NE(why.find("only run on KVM"), std::string::npos) << why;
  EXPECT_NE(check(lamina_model(), host).find("run it with --cpu-model lamina"), std::string::npos);
}

TEST(CpuModelStream, AFeatureTheGuestSawMustBeThere) {
  cpu::x86::CpuFeatures lesser;
  lesser.sse4_2 = false;
  const std::string why = check(lamina_model(), lamina_model(lesser));
  EXPECT_NE(why.find("CPUID 0x1.0 ECX bits 20 are missing here"), std::string::npos) << why;
  // More than the guest saw passes: it does not look again.
  EXPECT_EQ(check(lamina_model(lesser), lamina_model()), "");
}

TEST(CpuModelStream, TheIdentityMustBeEqual) {
  cpu::x86::CpuFeatures other;
  other.model = 0x6c;
  std::string why = check(lamina_model(), lamina_model(other));
  EXPECT_NE(why.find("CPUID 0x1.0 EAX is 0x00060fc1 here, the guest saw 0x00060fb1"),
            std::string::npos)
      << why;
  cpu::x86::CpuFeatures two;
  two.vcpu_count = 2;
  EXPECT_FALSE(check(lamina_model(), lamina_model(two)).empty());  // topology
  // A leaf only one side has reads as zeros on the other.
  PresentedCpu fewer = lamina_model();
  fewer.leaves.pop_back();  // 0x80000008
  EXPECT_NE(check(lamina_model(), fewer).find("CPUID 0x80000008.0 EAX"), std::string::npos);
  EXPECT_NE(check(fewer, lamina_model()).find("CPUID 0x80000008.0 EAX"), std::string::npos);
}

TEST(CpuModelStream, TheTscRateMayDiffer) {
  PresentedCpu kvm = lamina_model();
  leaf(kvm, 0x40000010).eax = 2'345'678;  // KVM: the host's TSC rate
  EXPECT_EQ(check(lamina_model(), kvm), "");
  leaf(kvm, 0x40000010).ebx += 1;  // the bus rate is the model's
  EXPECT_FALSE(check(lamina_model(), kvm).empty());
}

}  // namespace
}  // namespace lamina::migration
