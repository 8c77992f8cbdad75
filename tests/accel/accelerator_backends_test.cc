// Tiny hand-assembled guests run through the Accelerator/Vcpu interface on both backends: the
// built-in CPU (emu) and KVM. Each test states what the architecture says must happen, so the two
// backends are held to the same behaviour. KVM cases skip when /dev/kvm is unusable here.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "accel/accelerator.h"
#include "accel/kvm_system.h"
#include "test_environment.h"
#include "../lib/flat_long_mode.h"

namespace lamina::accel {
namespace {

using cpu::x86::CpuState;
using cpu::x86::SegmentCache;
using testing::TestEnvironment;
namespace x86 = cpu::x86;

constexpr uint64_t kRamSize = 2 << 20;

class Backends : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "kvm") {
      if (auto usable = probe_kvm(); !usable) GTEST_SKIP() << usable.error().message();
    }
    memory_.emplace(std::move(*GuestMemory::create({RamRegion{0, kRamSize}})));
  }

  std::unique_ptr<Accelerator> make_accelerator(uint32_t vcpus) {
    x86::CpuFeatures features;
    features.vcpu_count = vcpus;
    auto accelerator = GetParam() == "kvm" ? create_kvm_accelerator(*memory_, features)
                                           : create_emu_accelerator(*memory_, features);
    EXPECT_TRUE(accelerator.has_value()) << accelerator.error().message();
    return accelerator ? std::move(*accelerator) : nullptr;
  }

  std::unique_ptr<Vcpu> make_vcpu(Accelerator& accelerator, uint32_t index) {
    auto vcpu = accelerator.create_vcpu(index, environment_);
    EXPECT_TRUE(vcpu.has_value()) << vcpu.error().message();
    return vcpu ? std::move(*vcpu) : nullptr;
  }

  void write(uint64_t address, std::initializer_list<uint8_t> bytes) {
    const std::vector<uint8_t> data(bytes);
    ASSERT_TRUE(memory_->write(address, std::as_bytes(std::span(data))).has_value());
  }
  void write64(uint64_t address, uint64_t value) {
    ASSERT_TRUE(memory_->write(address, std::as_bytes(std::span(&value, 1))).has_value());
  }

  // Real mode, CS = 0, IP = `ip`, stack below 0x7000.
  static void enter_real_mode(Vcpu& vcpu, uint64_t ip) {
    CpuState state = vcpu.state();
    state.segment[x86::kCs] = SegmentCache{0, 0, 0xffff, 0x9b};
    for (auto segment : {x86::kDs, x86::kEs, x86::kSs})
      state.segment[segment] = SegmentCache{0, 0, 0xffff, 0x93};
    state.gpr[x86::kRsp] = 0x7000;
    state.rip = ip;
    vcpu.set_state(state);
  }

  // 64-bit mode: the first GiB identity-mapped with 2 MiB pages, a flat GDT, RIP = `rip`.
  void enter_long_mode(Vcpu& vcpu, uint64_t rip) {
    ASSERT_TRUE(lamina::test_support::write_flat_long_mode_tables(*memory_, 0x10000, 512));
    CpuState state = vcpu.state();
    lamina::test_support::enter_flat_long_mode(state, 0x10000, rip);
    state.idtr = {0, 0xfff};
    state.gpr[x86::kRsp] = 0x70000;
    vcpu.set_state(state);
  }

  // Runs until something other than a time-slice end.
  static VcpuExit run(Vcpu& vcpu) {
    VcpuExit exit;
    for (int slice = 0; slice < 1000; ++slice) {
      exit = vcpu.run(100'000);
      if (exit.kind != VcpuExit::Kind::kYield) return exit;
    }
    return exit;
  }

  std::optional<GuestMemory> memory_;
  TestEnvironment environment_;
};

TEST_P(Backends, RealModePortIoAndHalt) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  // mov al, 0x42; out 0xe9, al; in al, 0x71; out 0xea, al; hlt
  write(0x7c00, {0xb0, 0x42, 0xe6, 0xe9, 0xe4, 0x71, 0xe6, 0xea, 0xf4});
  environment_.port_value = 0x5a;
  enter_real_mode(*vcpu, 0x7c00);
  EXPECT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  EXPECT_EQ(environment_.io_writes,
            (std::vector<TestEnvironment::Access>{{0xe9, 1, 0x42}, {0xea, 1, 0x5a}}));
  EXPECT_EQ(environment_.io_reads, (std::vector<TestEnvironment::Access>{{0x71, 1, 0}}));
  EXPECT_EQ(vcpu->state().rip, 0x7c09u);  // HLT completes: RIP is past it (SDM Vol. 2A HLT)
}

TEST_P(Backends, LongModeMmioAndCpuid) {
  auto accelerator = make_accelerator(2);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  // mov rax, 0x1122334455667788; mov ebx, 0x300000 (not RAM); mov [rbx], rax;
  // mov r11, [rbx+8]; out 0xe9, al; mov eax, 0x40000000; cpuid; mov r8d, ebx; mov r9d, ecx;
  // mov r10d, edx; mov eax, 1; cpuid; hlt
  write(0x20000, {0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xbb, 0x00,
                  0x00, 0x30, 0x00, 0x48, 0x89, 0x03, 0x4c, 0x8b, 0x5b, 0x08, 0xe6, 0xe9,
                  0xb8, 0x00, 0x00, 0x00, 0x40, 0x0f, 0xa2, 0x41, 0x89, 0xd8, 0x41, 0x89,
                  0xc9, 0x41, 0x89, 0xd2, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0xa2, 0xf4});
  environment_.mmio_value = 0xdeadbeefcafef00d;
  enter_long_mode(*vcpu, 0x20000);
  ASSERT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  EXPECT_EQ(environment_.mmio_writes,
            (std::vector<TestEnvironment::Access>{{0x300000, 8, 0x1122334455667788}}));
  EXPECT_EQ(environment_.mmio_reads, (std::vector<TestEnvironment::Access>{{0x300008, 8, 0}}));
  const CpuState state = vcpu->state();
  EXPECT_EQ(state.gpr[x86::kR11], 0xdeadbeefcafef00du);
  EXPECT_EQ(environment_.written_values(0xe9), (std::vector<uint64_t>{0x88}));
  char signature[13] = {};
  const uint32_t words[] = {static_cast<uint32_t>(state.gpr[x86::kR8]),
                            static_cast<uint32_t>(state.gpr[x86::kR9]),
                            static_cast<uint32_t>(state.gpr[x86::kR10])};
  std::memcpy(signature, words, 12);
  EXPECT_STREQ(signature, "LaminaLamina");
  EXPECT_EQ((state.gpr[x86::kRbx] >> 24) & 0xff, 0u);  // initial APIC ID
  EXPECT_EQ((state.gpr[x86::kRbx] >> 16) & 0xff, 2u);  // logical processors per package
  EXPECT_NE(state.gpr[x86::kRcx] & (1u << 31), 0u);    // running under a hypervisor
  EXPECT_EQ(state.gpr[x86::kRcx] & (1u << 21), 0u);    // no x2APIC
  EXPECT_TRUE(state.long_mode_active());
}

// Machine-check architecture as the model has it on both backends: MCG_CAP names the banks
// (KVM's as far as it emulates them) with MCG_CTL_P, and MC0_CTL reports everything after
// reset, so a guest's MCE setup finds banks (KVM's MCG_CAP is 0 without KVM_X86_SETUP_MCE).
TEST_P(Backends, MachineCheckBanksAsTheModelHasThem) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  // mov ecx, 0x179; rdmsr; mov r8d, eax; mov ecx, 0x400; rdmsr; mov r9d, eax; mov r10d, edx;
  // hlt
  write(0x20000, {0xb9, 0x79, 0x01, 0x00, 0x00, 0x0f, 0x32, 0x41, 0x89, 0xc0, 0xb9, 0x00,
                  0x04, 0x00, 0x00, 0x0f, 0x32, 0x41, 0x89, 0xc1, 0x41, 0x89, 0xd2, 0xf4});
  enter_long_mode(*vcpu, 0x20000);
  ASSERT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  const CpuState state = vcpu->state();
  const uint64_t capabilities = state.gpr[x86::kR8];
  if (GetParam() == "kvm" && kvm::host_kvm_is_software_pvm() && (capabilities & 0x100) == 0 &&
      state.gpr[x86::kR9] == 0) {
    // Seen on a PVM build (kernel 6.18 "fc"): KVM_X86_SETUP_MCE succeeds, but the guest's
    // RDMSR reads KVM's default (32 banks, no MCG_CTL_P, MC0_CTL 0), not the vCPU's MCE state.
    GTEST_SKIP() << "this host's PVM KVM does not show the guest the machine-check state set by "
                    "KVM_X86_SETUP_MCE (MCG_CAP 0x"
                 << std::hex << capabilities << ")";
  }
  EXPECT_EQ(capabilities & 0x100, 0x100u) << "MCG_CTL_P";
  EXPECT_GE(capabilities & 0xff, 1u);
  EXPECT_LE(capabilities & 0xff, x86::CpuFeatures{}.machine_check_banks);
  EXPECT_EQ(state.gpr[x86::kR9], 0xffffffffu);
  EXPECT_EQ(state.gpr[x86::kR10], 0xffffffffu);
}

TEST_P(Backends, InjectedInterruptWakesTheHaltedVcpu) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  write(0x20 * 4, {0x00, 0x7e, 0x00, 0x00});      // IVT[0x20] = 0000:7e00
  write(0x7e00, {0xb0, 0x99, 0xe6, 0xe9, 0xcf});  // mov al, 0x99; out 0xe9, al; iret
  // sti; hlt; mov al, 1; out 0xe9, al; hlt; mov al, 2; out 0xe9, al; hlt
  write(0x7c00, {0xfb, 0xf4, 0xb0, 0x01, 0xe6, 0xe9, 0xf4, 0xb0, 0x02, 0xe6, 0xe9, 0xf4});
  environment_.push_interrupt(0x20);
  vcpu->request_interrupt();
  enter_real_mode(*vcpu, 0x7c00);
  EXPECT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  EXPECT_EQ(environment_.written_values(0xe9), (std::vector<uint64_t>{0x99, 0x01}));
  // Halted with nothing pending: it stays halted.
  EXPECT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  EXPECT_EQ(environment_.written_values(0xe9).size(), 2u);
  environment_.push_interrupt(0x20);
  vcpu->request_interrupt();
  EXPECT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  EXPECT_EQ(environment_.written_values(0xe9), (std::vector<uint64_t>{0x99, 0x01, 0x99, 0x02}));
}

TEST_P(Backends, NmiIsDeliveredWithInterruptsDisabled) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  write(2 * 4, {0x10, 0x7e, 0x00, 0x00});                     // IVT[2] = 0000:7e10
  write(0x7e10, {0xb0, 0x77, 0xe6, 0xe9, 0xcf});              // mov al, 0x77; out 0xe9, al; iret
  write(0x7c00, {0xfa, 0xf4, 0xb0, 0x03, 0xe6, 0xe9, 0xf4});  // cli; hlt; mov al, 3; out; hlt
  enter_real_mode(*vcpu, 0x7c00);
  EXPECT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  EXPECT_TRUE(environment_.written_values(0xe9).empty());
  environment_.nmis = 1;
  vcpu->request_nmi();
  EXPECT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  EXPECT_EQ(environment_.written_values(0xe9), (std::vector<uint64_t>{0x77, 0x03}));
}

TEST_P(Backends, InterruptFromAnotherThreadReachesARunningGuest) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  write(0x20 * 4, {0x00, 0x7e, 0x00, 0x00});
  write(0x7e00, {0xb0, 0x55, 0xe6, 0xe9, 0xfa, 0xf4});  // mov al, 0x55; out 0xe9, al; cli; hlt
  write(0x7c00, {0xfb, 0xeb, 0xfe});                    // sti; jmp $
  enter_real_mode(*vcpu, 0x7c00);
  std::thread device([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    environment_.push_interrupt(0x20);
    vcpu->request_interrupt();
  });
  VcpuExit exit;
  for (int slice = 0; slice < 100'000; ++slice) {
    exit = vcpu->run(100'000);
    if (exit.kind == VcpuExit::Kind::kHalted || exit.kind == VcpuExit::Kind::kShutdown) break;
  }
  device.join();
  EXPECT_EQ(exit.kind, VcpuExit::Kind::kHalted);
  EXPECT_EQ(environment_.written_values(0xe9), (std::vector<uint64_t>{0x55}));
}

TEST_P(Backends, KickFromAnotherThreadStopsAnEndlessLoop) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  write(0x7c00, {0xfa, 0xeb, 0xfe});  // cli; jmp $
  enter_real_mode(*vcpu, 0x7c00);
  std::thread kicker([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    vcpu->kick();
  });
  const auto start = std::chrono::steady_clock::now();
  VcpuExit exit;
  do {
    exit = vcpu->run(1'000'000);
  } while (exit.kind == VcpuExit::Kind::kYield);
  kicker.join();
  EXPECT_EQ(exit.kind, VcpuExit::Kind::kKicked);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

// Kicks at random moments (inside the guest, between runs, while entering) are never lost: the
// kick made after `finished` is set must still end a run() call.
TEST_P(Backends, NoKickIsLost) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  write(0x7c00, {0xfa, 0xeb, 0xfe});  // cli; jmp $
  enter_real_mode(*vcpu, 0x7c00);
  std::atomic<bool> finished{false};
  std::thread kicker([&] {
    unsigned seed = 12345;
    for (int i = 0; i < 300; ++i) {
      vcpu->kick();
      seed = seed * 1103515245 + 12345;
      std::this_thread::sleep_for(std::chrono::microseconds((seed >> 16) % 300));
    }
    finished.store(true);
    vcpu->kick();
  });
  // If a kick were lost, run() would never return: a watchdog rescues the test and says so.
  std::atomic<bool> done{false}, rescued{false};
  std::thread watchdog([&] {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!done.load() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    while (!done.load()) {
      rescued.store(true);
      vcpu->kick();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  int kicked = 0;
  for (;;) {
    const VcpuExit exit = vcpu->run(1'000'000);
    EXPECT_TRUE(exit.kind == VcpuExit::Kind::kKicked || exit.kind == VcpuExit::Kind::kYield);
    if (exit.kind != VcpuExit::Kind::kKicked) continue;
    ++kicked;
    // The last kick is made after `finished` is set: a kicked return seen with `finished`
    // clear leaves that kick still to come.
    if (finished.load()) break;
  }
  done.store(true);
  kicker.join();
  watchdog.join();
  EXPECT_FALSE(rescued.load()) << "a kick was lost";
  EXPECT_GE(kicked, 2);
}

TEST_P(Backends, ApplicationProcessorWaitsForStartupIpi) {
  auto accelerator = make_accelerator(2);
  auto vcpu = make_vcpu(*accelerator, 1);
  ASSERT_TRUE(vcpu);
  EXPECT_EQ(vcpu->run(1000).kind, VcpuExit::Kind::kWaitForStartup);
  // mov eax, 1; cpuid; hlt at 0x9000 (SIPI vector 9): EBX[31:24] is the initial APIC ID.
  write(0x9000, {0x66, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0xa2, 0xf4});
  vcpu->startup(0x09);
  EXPECT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  const CpuState state = vcpu->state();
  EXPECT_EQ(state.segment[x86::kCs].selector, 0x0900);
  EXPECT_EQ(state.segment[x86::kCs].base, 0x9000u);
  EXPECT_EQ(state.rip, 9u);
  EXPECT_EQ(state.gpr[x86::kRbx] >> 24, 1u);
  // INIT puts it back into the wait.
  vcpu->request_init();
  EXPECT_EQ(vcpu->run(1000).kind, VcpuExit::Kind::kWaitForStartup);
}

TEST_P(Backends, TripleFaultStopsTheVcpu) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  write(0x20000, {0xcc});  // int3 with an empty IDT: #GP, then #DF, then shutdown (SDM 6.15)
  enter_long_mode(*vcpu, 0x20000);
  CpuState state = vcpu->state();
  state.idtr = {0, 0};
  vcpu->set_state(state);
  const VcpuExit exit = run(*vcpu);
  EXPECT_EQ(exit.kind, VcpuExit::Kind::kShutdown);
  EXPECT_FALSE(exit.reason.empty());
}

TEST_P(Backends, ApicBaseMsrIsThePlatforms) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  // mov ecx, 0x1b; rdmsr; mov esi, eax; mov eax, 0xfee00800; xor edx, edx; wrmsr; hlt
  write(0x7c00, {0x66, 0xb9, 0x1b, 0x00, 0x00, 0x00, 0x0f, 0x32, 0x66, 0x89, 0xc6, 0x66,
                 0xb8, 0x00, 0x08, 0xe0, 0xfe, 0x66, 0x31, 0xd2, 0x0f, 0x30, 0xf4});
  environment_.apic_base = 0xfee00900;
  enter_real_mode(*vcpu, 0x7c00);
  ASSERT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  EXPECT_EQ(vcpu->state().gpr[x86::kRsi], 0xfee00900u);
  EXPECT_EQ(environment_.msr_writes, (std::vector<TestEnvironment::Access>{{0x1b, 8, 0xfee00800}}));
}

// CPUID.1:EDX.APIC follows the global enable bit the guest writes to IA32_APIC_BASE (SDM Vol. 3A
// 10.4.3), although the MSR itself belongs to the platform.
TEST_P(Backends, CpuidApicBitFollowsTheApicBaseMsr) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  // mov eax, 1; cpuid; mov esi, edx; mov ecx, 0x1b; mov eax, 0xfee00100 (BSP, disabled);
  // xor edx, edx; wrmsr; mov eax, 1; cpuid; hlt
  write(0x7c00, {0x66, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0xa2, 0x66, 0x89, 0xd6,
                 0x66, 0xb9, 0x1b, 0x00, 0x00, 0x00, 0x66, 0xb8, 0x00, 0x01, 0xe0, 0xfe,
                 0x66, 0x31, 0xd2, 0x0f, 0x30, 0x66, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0xa2, 0xf4});
  enter_real_mode(*vcpu, 0x7c00);
  ASSERT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  const CpuState state = vcpu->state();
  EXPECT_NE(state.gpr[x86::kRsi] & (1u << 9), 0u);  // enabled at reset
  EXPECT_EQ(state.gpr[x86::kRdx] & (1u << 9), 0u);  // disabled by the guest
  EXPECT_EQ(environment_.apic_base, 0xfee00100u);
}

// RDMSR/WRMSR of the x2APIC range reach the platform; a refused write and an MSR nobody
// implements raise #GP (IVT vector 13 counts them in BP and skips the 2-byte instruction).
TEST_P(Backends, PlatformMsrsAndGeneralProtection) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  write(13 * 4, {0x00, 0x7e, 0x00, 0x00});  // IVT[13] = 0000:7e00
  // #GP handler: inc bp; mov si, sp; add word [ss:si], 2 (past the faulting RDMSR/WRMSR); iret
  write(0x7e00, {0x45, 0x89, 0xe6, 0x36, 0x83, 0x04, 0x02, 0xcf});
  // mov ecx, 0x808; rdmsr; mov edi, eax; mov eax, 2; xor edx, edx; wrmsr (accepted);
  // mov eax, 3; wrmsr (refused: #GP); mov ecx, 0x4b564dff; rdmsr (unknown: #GP); hlt
  write(0x7c00, {0x66, 0xb9, 0x08, 0x08, 0x00, 0x00, 0x0f, 0x32, 0x66, 0x89, 0xc7, 0x66, 0xb8,
                 0x02, 0x00, 0x00, 0x00, 0x66, 0x31, 0xd2, 0x0f, 0x30, 0x66, 0xb8, 0x03, 0x00,
                 0x00, 0x00, 0x0f, 0x30, 0x66, 0xb9, 0xff, 0x4d, 0x56, 0x4b, 0x0f, 0x32, 0xf4});
  enter_real_mode(*vcpu, 0x7c00);
  CpuState state = vcpu->state();
  state.gpr[x86::kRbp] = 0;
  vcpu->set_state(state);
  ASSERT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  state = vcpu->state();
  EXPECT_EQ(state.gpr[x86::kRdi], 0x1008u);
  EXPECT_EQ(state.gpr[x86::kRbp] & 0xffff, 2u);  // two #GPs
  EXPECT_EQ(environment_.msr_writes, (std::vector<TestEnvironment::Access>{{0x808, 8, 2}}));
}

TEST_P(Backends, StateRoundTrips) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  enter_long_mode(*vcpu, 0x20000);
  CpuState state = vcpu->state();
  for (size_t i = 0; i < 16; ++i) state.gpr[i] = 0x0101010101010101 * (i + 1);
  state.write_rflags(x86::rflags::kFixed1 | x86::rflags::kCf | x86::rflags::kZf | x86::rflags::kIf);
  state.msr.lstar = 0xffffffff81000000;
  state.msr.star = 0x0023001000000000;
  state.msr.sfmask = 0x47700;
  state.msr.kernel_gs_base = 0xffff888000001000;
  state.msr.sysenter_eip = 0x1234;
  state.msr.tsc_aux = 7;
  state.cr2 = 0xdead000;
  state.simd.xmm[3].set_lane<uint64_t>(1, 0x0123456789abcdef);
  state.simd.mxcsr = 0x1f80 | 0x8000;
  state.simd.control = 0x027f;
  state.dr[0] = 0x4000;
  vcpu->set_state(state);
  const CpuState back = vcpu->state();
  EXPECT_EQ(back.gpr, state.gpr);
  EXPECT_EQ(back.rip, state.rip);
  EXPECT_EQ(back.read_rflags(), state.read_rflags());
  EXPECT_EQ(back.msr.lstar, state.msr.lstar);
  EXPECT_EQ(back.msr.star, state.msr.star);
  EXPECT_EQ(back.msr.sfmask, state.msr.sfmask);
  EXPECT_EQ(back.msr.kernel_gs_base, state.msr.kernel_gs_base);
  EXPECT_EQ(back.msr.sysenter_eip, state.msr.sysenter_eip);
  EXPECT_EQ(back.msr.tsc_aux, state.msr.tsc_aux);
  EXPECT_EQ(back.cr2, state.cr2);
  EXPECT_EQ(back.cr3, state.cr3);
  EXPECT_EQ(back.msr.efer & 0xd01, state.msr.efer & 0xd01);
  EXPECT_EQ(back.segment[x86::kCs].attributes, state.segment[x86::kCs].attributes);
  EXPECT_EQ(back.segment[x86::kCs].selector, 8);
  EXPECT_EQ(back.gdtr.base, 0x13000u);
  EXPECT_EQ(back.simd.xmm[3], state.simd.xmm[3]);
  EXPECT_EQ(back.simd.mxcsr, state.simd.mxcsr);
  EXPECT_EQ(back.simd.control, state.simd.control);
  EXPECT_EQ(back.dr[0], state.dr[0]);
}

// The state KVM adds to CpuState: PAT, MTRRs, MISC_ENABLE, the TSC offset, XCR0 and AVX's upper
// halves, and the pending events come back as they were set (the TSC, which runs on KVM,
// never below its setting and less than a minute past it).
TEST_P(Backends, CompleteStateRoundTrips) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  enter_long_mode(*vcpu, 0x20000);
  CpuState state = vcpu->state();
  state.msr.pat = 0x0007010600070106;
  state.msr.mtrr_default_type = 0xc06;
  state.msr.mtrr_fixed[0] = 0x0606060606060606;
  state.msr.mtrr_fixed[10] = 0x0505050505050505;
  state.msr.mtrr_variable[0] = 0x80000006;
  state.msr.mtrr_variable[1] = 0xff80000800;
  state.msr.tsc_offset = uint64_t{1} << 40;
  state.cr4 |= x86::cr4::kOsxsave;
  state.extended_simd.xcr0 = 7;
  for (size_t i = 0; i < 16; ++i) state.extended_simd.ymm_high[i].fill(static_cast<uint8_t>(i + 1));
  state.pending_events.interrupt = true;
  state.pending_events.interrupt_vector = 0x41;
  state.pending_events.nmi = true;
  state.nmi_blocked = true;
  vcpu->set_state(state);
  const CpuState back = vcpu->state();
  EXPECT_EQ(back.msr.pat, state.msr.pat);
  EXPECT_EQ(back.msr.mtrr_default_type, state.msr.mtrr_default_type);
  EXPECT_EQ(back.msr.mtrr_fixed, state.msr.mtrr_fixed);
  EXPECT_EQ(back.msr.mtrr_variable, state.msr.mtrr_variable);
  EXPECT_EQ(back.msr.misc_enable, state.msr.misc_enable);
  EXPECT_GE(back.msr.tsc_offset, state.msr.tsc_offset);
  // PVM runs guests on the host's TSC and ignores IA32_TSC writes (ARCHITECTURE.md, KVM).
  if (GetParam() == "emu" || !probe_kvm()->software_pvm) {
    EXPECT_LT(back.msr.tsc_offset - state.msr.tsc_offset, uint64_t{60} * 10'000'000'000);
  }
  EXPECT_EQ(back.extended_simd, state.extended_simd);
  EXPECT_EQ(back.pending_events, state.pending_events);
  EXPECT_TRUE(back.nmi_blocked);
}

// Events a stopped KVM vCPU held (an interrupt whose delivery had begun, an NMI) are delivered
// before the next instruction on either backend: the handlers report, then the main code.
TEST_P(Backends, PendingEventsAreDeliveredFirst) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  // IVT: vector 2 (NMI) -> 0:0x8100, vector 0x31 -> 0:0x8000.
  write(2 * 4, {0x00, 0x81, 0x00, 0x00});
  write(0x31 * 4, {0x00, 0x80, 0x00, 0x00});
  write(0x8000, {0xb0, 0x31, 0xe6, 0xe9, 0xcf});  // mov al, 0x31; out 0xe9, al; iret
  write(0x8100, {0xb0, 0x02, 0xe6, 0xe9, 0xcf});  // mov al, 2; out 0xe9, al; iret
  write(0x7c00, {0xb0, 0x55, 0xe6, 0xe9, 0xf4});  // mov al, 0x55; out 0xe9, al; hlt
  enter_real_mode(*vcpu, 0x7c00);
  CpuState state = vcpu->state();
  state.idtr = {0, 0x3ff};
  state.pending_events.interrupt = true;  // with IF clear: its delivery had begun
  state.pending_events.interrupt_vector = 0x31;
  state.pending_events.nmi = true;
  vcpu->set_state(state);
  ASSERT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  std::vector<uint32_t> values;
  for (const auto& access : environment_.io_writes) values.push_back(access.value);
  ASSERT_EQ(values.size(), 3u);
  EXPECT_EQ(values.back(), 0x55u);
  EXPECT_TRUE(std::ranges::count(values, 0x31u) == 1 && std::ranges::count(values, 2u) == 1);
  EXPECT_FALSE(vcpu->state().pending_events.any());
}

// Live migration's dirty log: after the accelerator and the vCPU restart logging, exactly the
// pages the guest stored to are marked, round after round (KVM through its slots' dirty
// bitmaps, the built-in CPU through its write translations).
TEST_P(Backends, GuestStoresReachTheDirtyLog) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  // Round 1 at 0x7c00: mov [0x3000], al; mov [0x9ffe], ax; hlt
  write(0x7c00, {0xa2, 0x00, 0x30, 0x89, 0x06, 0xfe, 0x9f, 0xf4});
  // Round 2 at 0x7d00: mov [0x3004], al; mov [0x11000 - 0x10000] with DS = 0x1000; hlt
  write(0x7d00, {0xa2, 0x04, 0x30, 0xba, 0x00, 0x10, 0x8e, 0xda, 0xa2, 0x00, 0x10, 0xf4});
  enter_real_mode(*vcpu, 0x7c00);
  auto pages = [](const std::vector<uint64_t>& bitmap) {
    std::vector<uint64_t> result;
    for (size_t word = 0; word < bitmap.size(); ++word) {
      for (unsigned bit = 0; bit < 64; ++bit) {
        if ((bitmap[word] >> bit) & 1) result.push_back(word * 64 + bit);
      }
    }
    return result;
  };
  ASSERT_TRUE(accelerator->start_dirty_logging().has_value());
  ASSERT_TRUE(vcpu->restart_write_logging());
  memory_->dirty_log().start();
  ASSERT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  ASSERT_TRUE(accelerator->collect_dirty_pages().has_value());
  EXPECT_EQ(pages(memory_->dirty_log().take()), (std::vector<uint64_t>{3, 9}));

  ASSERT_TRUE(vcpu->restart_write_logging());
  CpuState state = vcpu->state();
  state.rip = 0x7d00;
  state.halted = false;
  vcpu->set_state(state);
  ASSERT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  ASSERT_TRUE(accelerator->collect_dirty_pages().has_value());
  EXPECT_EQ(pages(memory_->dirty_log().take()), (std::vector<uint64_t>{3, 0x11}));
  // Nothing stored since: nothing marked.
  ASSERT_TRUE(accelerator->collect_dirty_pages().has_value());
  EXPECT_EQ(pages(memory_->dirty_log().take()), std::vector<uint64_t>{});
  accelerator->stop_dirty_logging();
  memory_->dirty_log().stop();
}

// An exception KVM held (one its emulator raised, or one cut short in delivery) is delivered
// before the next instruction on either backend, through its IVT entry.
TEST_P(Backends, PendingExceptionIsDeliveredFirst) {
  auto accelerator = make_accelerator(1);
  auto vcpu = make_vcpu(*accelerator, 0);
  ASSERT_TRUE(vcpu);
  write(6 * 4, {0x00, 0x82, 0x00, 0x00});          // #UD -> 0:0x8200
  write(0x8200, {0xb0, 0x06, 0xe6, 0xe9, 0xcf});  // mov al, 6; out 0xe9, al; iret
  write(0x7c00, {0xb0, 0x55, 0xe6, 0xe9, 0xf4});  // mov al, 0x55; out 0xe9, al; hlt
  enter_real_mode(*vcpu, 0x7c00);
  CpuState state = vcpu->state();
  state.idtr = {0, 0x3ff};
  state.pending_events.exception = true;
  state.pending_events.exception_vector = 6;
  vcpu->set_state(state);
  ASSERT_EQ(run(*vcpu).kind, VcpuExit::Kind::kHalted);
  EXPECT_EQ(environment_.io_writes,
            (std::vector<TestEnvironment::Access>{{0xe9, 1, 6}, {0xe9, 1, 0x55}}));
}

// One guest moved between the backends at HLTs: emu -> kvm -> emu -> kvm. Each pass adds to a
// counter register and a RAM total, which must come out as if it had stayed; the SSE, PAT and
// TSC state set at the start must survive the moves. (No SSE instruction in the loop: PVM's
// instruction emulator has none of the arithmetic ones.)
TEST(CrossAccelerator, GuestMovesEmuKvmEmu) {
  if (auto usable = probe_kvm(); !usable) GTEST_SKIP() << usable.error().message();
  auto memory = GuestMemory::create({RamRegion{0, kRamSize}});
  ASSERT_TRUE(memory);
  auto write_bytes = [&](uint64_t address, std::vector<uint8_t> bytes) {
    ASSERT_TRUE(memory->write(address, std::as_bytes(std::span(bytes))).has_value());
  };
  auto write64 = [&](uint64_t address, uint64_t value) {
    ASSERT_TRUE(memory->write(address, std::as_bytes(std::span(&value, 1))).has_value());
  };
  write64(0x10000, 0x11000 | 3);
  write64(0x11000, 0x12000 | 3);
  for (uint64_t i = 0; i < 512; ++i) write64(0x12000 + 8 * i, (i << 21) | 0x83);
  write64(0x13008, 0x00af9b000000ffff);
  write64(0x13010, 0x00cf93000000ffff);
  // loop: inc r12; add [0x30000], r12; hlt; jmp loop
  write_bytes(0x20000, {0x49, 0xff, 0xc4, 0x4c, 0x01, 0x24, 0x25, 0x00, 0x00, 0x03, 0x00,
                        0xf4, 0xeb, 0xf2});
  TestEnvironment environment;
  x86::CpuFeatures features;
  auto emu = create_emu_accelerator(*memory, features);
  auto kvm = create_kvm_accelerator(*memory, features);
  ASSERT_TRUE(emu && kvm) << (kvm ? "" : kvm.error().message());
  auto emu_vcpu = (*emu)->create_vcpu(0, environment);
  auto kvm_vcpu = (*kvm)->create_vcpu(0, environment);
  ASSERT_TRUE(emu_vcpu && kvm_vcpu);

  CpuState state = (*emu_vcpu)->state();
  state.cr0 = x86::cr0::kPe | x86::cr0::kEt | x86::cr0::kPg | x86::cr0::kMp;
  state.cr3 = 0x10000;
  state.cr4 = x86::cr4::kPae | x86::cr4::kOsfxsr;
  state.msr.efer = 0x500;
  state.segment[x86::kCs] = SegmentCache{0x08, 0, 0xffffffff, 0xa09b};
  for (auto segment : {x86::kDs, x86::kEs, x86::kSs, x86::kFs, x86::kGs}) {
    state.segment[segment] = SegmentCache{0x10, 0, 0xffffffff, 0xc093};
  }
  state.gdtr = {0x13000, 23};
  state.gpr[x86::kRsp] = 0x70000;
  state.rip = 0x20000;
  state.cpl = 0;
  state.simd.xmm[1].set_lane<uint64_t>(1, 0x0123456789abcdef);
  state.simd.xmm[15].set_lane<uint32_t>(0, 0xfeedf00d);
  state.simd.mxcsr = 0x1f80 | 0x2000;
  state.msr.pat = 0x0007010600070106;
  state.msr.tsc_offset = 1'000'000;
  (*emu_vcpu)->set_state(state);
  // Three passes on `from`, then its state goes to `to`.
  auto passes = [&](Vcpu& from, Vcpu& to) {
    for (int pass = 0; pass < 3; ++pass) {
      const VcpuExit exit = from.run(1'000'000);
      ASSERT_EQ(exit.kind, VcpuExit::Kind::kHalted) << exit.reason;
      CpuState running = from.state();
      running.halted = false;
      from.set_state(running);
    }
    to.restore_state(from.state());
  };
  passes(**emu_vcpu, **kvm_vcpu);
  passes(**kvm_vcpu, **emu_vcpu);
  passes(**emu_vcpu, **kvm_vcpu);
  const CpuState end = (*kvm_vcpu)->state();
  EXPECT_EQ(end.gpr[x86::kR12], 9u);
  uint64_t total = 0;
  ASSERT_TRUE(memory->read(0x30000, std::as_writable_bytes(std::span(&total, 1))).has_value());
  EXPECT_EQ(total, 45u);  // 1 + 2 + ... + 9
  EXPECT_EQ(end.simd.xmm[1], state.simd.xmm[1]);
  EXPECT_EQ(end.simd.xmm[15], state.simd.xmm[15]);
  EXPECT_EQ(end.simd.mxcsr, state.simd.mxcsr);
  EXPECT_EQ(end.msr.pat, state.msr.pat);
  EXPECT_GE(end.msr.tsc_offset, state.msr.tsc_offset);
  EXPECT_EQ(end.rip, 0x2000cu);  // at the JMP after the ninth HLT
}

INSTANTIATE_TEST_SUITE_P(Accelerators, Backends, ::testing::Values("emu", "kvm"),
                         [](const ::testing::TestParamInfo<std::string>& backend) {
                           return backend.param;
                         });

}  // namespace
}  // namespace lamina::accel
