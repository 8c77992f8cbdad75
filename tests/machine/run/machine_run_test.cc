// The run side of src/machine with real components: a Cpu executing guest code through a
// VcpuEnvironment against real LocalApics, and a whole Machine built by MachineBuilder.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "base/guest_memory.h"
#include "cpu/x86/cpu.h"
#include "hw/apic_bus.h"
#include "hw/bus.h"
#include "hw/clock.h"
#include "hw/local_apic.h"
#include "hw/timer_queue.h"
#include "machine/machine_builder.h"
#include "machine/machine_exit.h"
#include "machine/vcpu_environment.h"

namespace lamina::machine {
namespace {

constexpr uint64_t kTscHz = 2'000'000'000;
constexpr uint64_t kCodeAddress = 0x1000;

class VcpuEnvironmentTest : public testing::Test {
 protected:
  VcpuEnvironmentTest() {
    apic_bus.attach(apic0);
    apic_bus.attach(apic1);
  }

  // Runs real-mode code at kCodeAddress on a CPU whose environment is vCPU 0's until HLT.
  cpu::x86::CpuState run_real_mode(const std::vector<uint8_t>& code) {
    EXPECT_TRUE(memory.write(kCodeAddress, std::as_bytes(std::span(code))).has_value());
    cpu::x86::Cpu cpu(memory, environment0);
    cpu.state().segment[cpu::x86::kCs] = cpu::x86::SegmentCache{0, 0, 0xffff, 0x9b};
    cpu.state().rip = kCodeAddress;
    cpu.state_changed();
    const cpu::x86::CpuExit exit = cpu.run(1000);
    EXPECT_EQ(exit.kind, cpu::x86::CpuExit::Kind::kHalted) << exit.reason;
    return cpu.state();
  }

  GuestMemory memory = GuestMemory::create({{0, 0x100000}}).value();
  hw::ManualClock clock{1'000'000};
  hw::TimerQueue timers{clock};
  hw::ApicBus apic_bus;
  hw::LocalApic apic0{0, true, apic_bus, timers, kTscHz};
  hw::LocalApic apic1{1, false, apic_bus, timers, kTscHz};
  hw::Bus io{"io", 0xffff};
  hw::Bus mmio{"mmio"};
  VcpuEnvironment environment0{io, mmio, apic0, clock};
  VcpuEnvironment environment1{io, mmio, apic1, clock};
};

TEST_F(VcpuEnvironmentTest, EachVcpuSeesItsOwnApicPage) {
  // xAPIC ID register at offset 0x20 holds the ID in bits 24-31 (SDM vol. 3A, 11.4.6).
  EXPECT_EQ(environment0.mmio_read(0xfee00020, 4), 0u);
  EXPECT_EQ(environment1.mmio_read(0xfee00020, 4), 1u << 24);
  // Outside the APIC page the shared bus answers: nothing mapped reads all ones.
  EXPECT_EQ(environment0.mmio_read(0xfee01000, 4), 0xffffffffu);
}

TEST_F(VcpuEnvironmentTest, TscFollowsTheApicDefinition) {
  EXPECT_EQ(environment0.read_tsc(), apic0.tsc_at(clock.now_ns()));
  clock.advance(1000);
  EXPECT_EQ(environment0.read_tsc(), 2'000'000u + 2000u);
}

TEST_F(VcpuEnvironmentTest, RdmsrOfApicBaseReachesTheLocalApic) {
  // mov ecx, 0x1b; rdmsr; hlt
  const auto state = run_real_mode({0x66, 0xb9, 0x1b, 0x00, 0x00, 0x00, 0x0f, 0x32, 0xf4});
  // Base 0xfee00000, enabled (bit 11), bootstrap processor (bit 8).
  EXPECT_EQ(state.gpr[cpu::x86::kRax] & 0xffffffff, 0xfee00900u);
}

TEST_F(VcpuEnvironmentTest, WrmsrOfApicBaseDisablesTheApicPage) {
  ASSERT_TRUE(apic0.mmio_page().has_value());
  // mov ecx, 0x1b; mov eax, 0xfee00000; xor edx, edx; wrmsr; hlt
  run_real_mode({0x66, 0xb9, 0x1b, 0x00, 0x00, 0x00, 0x66, 0xb8, 0x00, 0x00, 0xe0, 0xfe, 0x66, 0x31,
                 0xd2, 0x0f, 0x30, 0xf4});
  EXPECT_FALSE(apic0.mmio_page().has_value()) << "the global enable bit was cleared";
  EXPECT_EQ(environment0.mmio_read(0xfee00020, 4), 0xffffffffu) << "the page is gone";
}

TEST(StopQueueTest, TheFirstStopWins) {
  StopQueue stops;
  EXPECT_FALSE(stops.wait_for(std::chrono::milliseconds(1)).has_value());
  stops.post({MachineExit::kDebugExit, "first", 7});
  stops.post({MachineExit::kPowerOff, "second", 0});
  const auto stop = stops.wait_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->exit, MachineExit::kDebugExit);
  EXPECT_EQ(stop->status, 7u);
}

TEST(ApplyBootStateTest, LoadsRegistersAndHiddenSegmentState) {
  BootState boot;
  boot.rip = 0x1000000;
  boot.rsi = 0x8000;
  boot.rsp = 0x80000;
  boot.cr0 = 0x80000011;
  boot.cr3 = 0x2000;
  boot.cr4 = 0x20;
  boot.efer = 0x500;
  boot.cs = {0x10, 0, 0xffffffff, 0xa09b};
  boot.ds = {0x18, 0, 0xffffffff, 0xc093};
  boot.gdt = {0x1000, 0x27};
  cpu::x86::CpuState state;
  apply_boot_state(boot, state);
  EXPECT_EQ(state.rip, 0x1000000u);
  EXPECT_EQ(state.gpr[cpu::x86::kRsi], 0x8000u);
  EXPECT_EQ(state.gpr[cpu::x86::kRsp], 0x80000u);
  EXPECT_EQ(state.segment[cpu::x86::kCs].attributes, 0xa09b);
  EXPECT_TRUE(state.segment[cpu::x86::kCs].long_mode());
  EXPECT_EQ(state.segment[cpu::x86::kDs].selector, 0x18);
  EXPECT_EQ(state.gdtr.base, 0x1000u);
  EXPECT_EQ(state.msr.efer, 0x500u);
  EXPECT_EQ(state.cpl, 0);
}

// A Multiboot v1 kernel (a.out kludge, so no ELF is needed) loaded at 1 MiB: it writes "ok" to
// COM1 and 0x2a to the debug-exit port.
std::vector<uint8_t> debug_exit_kernel() {
  constexpr uint32_t kMagic = 0x1BADB002, kFlags = 1u << 16, kLoad = 0x100000;
  const std::vector<uint8_t> code = {
      0xba, 0xf8, 0x03, 0x00, 0x00,  // mov edx, 0x3f8
      0xb0, 'o',  0xee,              // mov al, 'o'; out dx, al
      0xb0, 'k',  0xee,              // mov al, 'k'; out dx, al
      0xb0, 0x2a, 0xe6, 0xf4,        // mov al, 42; out 0xf4, al
      0xf4, 0xeb, 0xfd,              // hlt; jmp hlt
  };
  constexpr uint32_t kHeaderSize = 32;
  const uint32_t end = kLoad + kHeaderSize + static_cast<uint32_t>(code.size());
  const uint32_t words[] = {kMagic,
                            kFlags,
                            static_cast<uint32_t>(-(kMagic + kFlags)),
                            kLoad,
                            kLoad,
                            end,
                            end,
                            kLoad + kHeaderSize};
  std::vector<uint8_t> image(reinterpret_cast<const uint8_t*>(words),
                             reinterpret_cast<const uint8_t*>(words) + sizeof(words));
  image.insert(image.end(), code.begin(), code.end());
  return image;
}

class CapturingBackend final : public hw::SerialBackend {
 public:
  void transmit(std::byte value) override {
    std::lock_guard lock(mutex_);
    text_.push_back(static_cast<char>(value));
  }
  std::string text() {
    std::lock_guard lock(mutex_);
    return text_;
  }

 private:
  std::mutex mutex_;
  std::string text_;
};

TEST(MachineTest, BootsAMultibootKernelOnTwoVcpusAndStopsOnDebugExit) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("lamina-machine-test-" + std::to_string(::getpid()) + ".bin");
  {
    const auto image = debug_exit_kernel();
    std::ofstream file(path, std::ios::binary);
    file.write(reinterpret_cast<const char*>(image.data()),
               static_cast<std::streamsize>(image.size()));
  }
  CapturingBackend console;
  MachineOptions options;
  options.kernel = path;
  options.cpus = 2;
  options.memory_bytes = 64 << 20;
  options.com1_backend = &console;
  options.debug_exit = true;
  auto machine = MachineBuilder::build(options);
  std::filesystem::remove(path);
  ASSERT_TRUE(machine.has_value()) << machine.error().message();
  EXPECT_EQ((*machine)->vcpu_count(), 2u);
  const MachineStop stop = (*machine)->run();
  EXPECT_EQ(stop.exit, MachineExit::kDebugExit) << stop.reason;
  EXPECT_EQ(stop.status, (42u << 1) | 1);
  EXPECT_EQ(console.text(), "ok");
}

TEST(MachineTest, RefusesAFileThatIsNoKernel) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("lamina-machine-test-junk-" + std::to_string(::getpid()));
  { std::ofstream(path) << "not a kernel"; }
  MachineOptions options;
  options.kernel = path;
  options.memory_bytes = 64 << 20;
  auto machine = MachineBuilder::build(options);
  std::filesystem::remove(path);
  ASSERT_FALSE(machine.has_value());
  EXPECT_NE(machine.error().message().find(path.string()), std::string::npos);
}

}  // namespace
}  // namespace lamina::machine
