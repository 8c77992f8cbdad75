// One CPU model on both backends: a guest executes CPUID for the main leaves on the built-in CPU
// and on KVM and must read the same values (Lamina's model, on KVM without what the host cannot
// run: the emu side presents that reduced model, as `--cpu-model lamina-kvm` does), and each
// backend must read what it says it presents (Accelerator::presented_cpu, which a migration
// compares). The features this host's KVM lacks are printed. PVM (this project's build host)
// puts the hardware's feature bits into leaves 1 and 7 whatever the table says (its guests run
// their instructions natively; KvmAccelerator warns of it): there those words are printed, not
// compared. Skips without a usable /dev/kvm.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <vector>

#include "accel/accelerator.h"
#include "test_environment.h"

namespace lamina::accel {
namespace {

using cpu::x86::CpuidResult;
using cpu::x86::CpuState;
using cpu::x86::SegmentCache;
using testing::TestEnvironment;
namespace x86 = cpu::x86;

struct Leaf {
  uint32_t leaf;
  uint32_t subleaf;
};
constexpr Leaf kLeaves[] = {{0, 0},          {1, 0},          {7, 0},          {0x40000000, 0},
                            {0x80000000, 0}, {0x80000001, 0}, {0x80000002, 0}, {0x80000003, 0},
                            {0x80000004, 0}, {0x80000005, 0}, {0x80000006, 0}, {0x80000007, 0},
                            {0x80000008, 0}};

class CpuModelOnBothBackends : public ::testing::Test {
 protected:
  void SetUp() override {
    auto usable = probe_kvm();
    if (!usable) GTEST_SKIP() << usable.error().message();
    pvm_ = usable->software_pvm;
    auto memory = GuestMemory::create({RamRegion{0, 1 << 20}});
    ASSERT_TRUE(memory);
    memory_.emplace(std::move(*memory));
    // xor ecx, ecx; cpuid; hlt (real mode)
    const uint8_t code[] = {0x66, 0x31, 0xc9, 0x0f, 0xa2, 0xf4};
    ASSERT_TRUE(memory_->write(0x7c00, std::as_bytes(std::span(code))).has_value());
    features_.x2apic = true;  // as the machine builds its model
  }

  std::unique_ptr<Vcpu> make_vcpu(Accelerator& accelerator) {
    auto vcpu = accelerator.create_vcpu(0, environment_);
    EXPECT_TRUE(vcpu.has_value()) << vcpu.error().message();
    return vcpu ? std::move(*vcpu) : nullptr;
  }

  // CPUID `leaf` as a guest in real mode on `vcpu` reads it.
  CpuidResult guest_cpuid(Vcpu* vcpu, uint32_t leaf) {
    if (vcpu == nullptr) return {};
    CpuState state = vcpu->state();
    state.segment[x86::kCs] = SegmentCache{0, 0, 0xffff, 0x9b};
    for (auto segment : {x86::kDs, x86::kEs, x86::kSs})
      state.segment[segment] = SegmentCache{0, 0, 0xffff, 0x93};
    state.gpr[x86::kRsp] = 0x7000;
    state.gpr[x86::kRax] = leaf;
    state.rip = 0x7c00;
    state.halted = false;
    vcpu->set_state(state);
    VcpuExit exit;
    for (int slice = 0; slice < 100 && exit.kind != VcpuExit::Kind::kHalted; ++slice) {
      exit = vcpu->run(100'000);
    }
    EXPECT_EQ(exit.kind, VcpuExit::Kind::kHalted) << exit.reason;
    state = vcpu->state();
    return {static_cast<uint32_t>(state.gpr[x86::kRax]), static_cast<uint32_t>(state.gpr[x86::kRbx]),
            static_cast<uint32_t>(state.gpr[x86::kRcx]), static_cast<uint32_t>(state.gpr[x86::kRdx])};
  }

  std::optional<GuestMemory> memory_;
  TestEnvironment environment_;
  x86::CpuFeatures features_;
  bool pvm_ = false;
};

// The registers of `leaf` a KVM may override with the hardware's (PVM: the feature words of
// leaves 1 and 7, and on some builds leaf 7's subleaf count in EAX).
bool overridden_by_pvm(uint32_t leaf, x86::CpuidRegister name) {
  if (leaf == 7 && name == x86::CpuidRegister::kEax) return true;
  return (leaf == 1 || leaf == 7) && x86::is_feature_word(leaf, 0, name);
}

std::string text(const CpuidResult& value) {
  return fmt::format("{:08x} {:08x} {:08x} {:08x}", value.eax, value.ebx, value.ecx, value.edx);
}

TEST_F(CpuModelOnBothBackends, GuestReadsTheSameCpuid) {
  auto support = kvm_cpuid_support();
  ASSERT_TRUE(support) << support.error().message();
  auto reduced = x86::reduce_to_support(features_, *support);
  ASSERT_TRUE(reduced) << reduced.error().message();
  std::string dropped;
  for (const std::string& name : reduced->dropped) dropped += " " + name;
  std::printf("Lamina's model on this host's KVM lacks:%s\n",
              dropped.empty() ? " nothing" : dropped.c_str());

  auto full = create_emu_accelerator(*memory_, features_);
  auto emu = create_emu_accelerator(*memory_, reduced->features);
  auto kvm = create_kvm_accelerator(*memory_, features_);
  ASSERT_TRUE(full && emu && kvm) << (kvm ? "" : kvm.error().message());
  auto full_vcpu = make_vcpu(**full);
  auto emu_vcpu = make_vcpu(**emu);
  auto kvm_vcpu = make_vcpu(**kvm);
  for (const Leaf& leaf : kLeaves) {
    SCOPED_TRACE(fmt::format("CPUID {:#x}", leaf.leaf));
    const CpuidResult on_full = guest_cpuid(full_vcpu.get(), leaf.leaf);
    const CpuidResult on_emu = guest_cpuid(emu_vcpu.get(), leaf.leaf);
    const CpuidResult on_kvm = guest_cpuid(kvm_vcpu.get(), leaf.leaf);
    std::printf("%#010x emu %s  kvm %s\n", leaf.leaf, text(on_emu).c_str(), text(on_kvm).c_str());
    const x86::CpuidEntry* emu_presented =
        x86::find_leaf((*emu)->presented_cpu().leaves, leaf.leaf, leaf.subleaf);
    const x86::CpuidEntry* kvm_presented =
        x86::find_leaf((*kvm)->presented_cpu().leaves, leaf.leaf, leaf.subleaf);
    ASSERT_TRUE(emu_presented && kvm_presented);
    EXPECT_EQ(text(emu_presented->value), text(on_emu)) << "emu reads other than it presents";
    for (auto name : {x86::CpuidRegister::kEax, x86::CpuidRegister::kEbx, x86::CpuidRegister::kEcx,
                      x86::CpuidRegister::kEdx}) {
      const uint32_t on_kvm_value = x86::register_value(on_kvm, name);
      if (pvm_ && overridden_by_pvm(leaf.leaf, name)) {
        if (on_kvm_value != x86::register_value(on_emu, name)) {
          std::printf("  %s: PVM shows the hardware's %#010x\n", x86::register_name(name).data(),
                      on_kvm_value);
        }
        continue;
      }
      EXPECT_EQ(on_kvm_value, x86::register_value(on_emu, name)) << x86::register_name(name);
      EXPECT_EQ(on_kvm_value, x86::register_value(kvm_presented->value, name))
          << "kvm reads other than it presents: " << x86::register_name(name);
    }
    // The full model (emu's default) differs only by the features the host lacks.
    for (auto name : {x86::CpuidRegister::kEax, x86::CpuidRegister::kEbx, x86::CpuidRegister::kEcx,
                      x86::CpuidRegister::kEdx}) {
      const uint32_t want = x86::register_value(on_full, name);
      const uint32_t got = x86::register_value(on_emu, name);
      if (want == got) continue;
      if (x86::is_feature_word(leaf.leaf, leaf.subleaf, name)) {
        EXPECT_EQ(got & ~want, 0u) << "the reduced model has a feature the full one lacks";
        std::printf("  %s bits the host lacks: %#010x\n", x86::register_name(name).data(),
                    want & ~got);
      } else if (!(leaf.leaf == 0x80000008 && name == x86::CpuidRegister::kEax)) {
        ADD_FAILURE() << x86::register_name(name) << " differs from the full model: "
                      << text(on_full) << " vs " << text(on_kvm);
      }
    }
  }
}

}  // namespace
}  // namespace lamina::accel
