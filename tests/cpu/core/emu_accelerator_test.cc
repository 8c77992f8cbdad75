// The emu accelerator through the Accelerator/Vcpu interface the machine uses.
#include <gtest/gtest.h>

#include <thread>

#include "accel/accelerator.h"
#include "test_machine.h"

namespace lamina::accel {
namespace {

using cpu::x86::testing::RecordingEnvironment;

GuestMemory make_memory() { return std::move(*GuestMemory::create({RamRegion{0, 1 << 20}})); }
cpu::x86::CpuFeatures features(uint32_t vcpus) {
  cpu::x86::CpuFeatures model;
  model.vcpu_count = vcpus;
  return model;
}

TEST(EmuAccelerator, BootstrapVcpuRunsRealModeCodeAndHalts) {
  GuestMemory memory = make_memory();
  RecordingEnvironment environment;
  auto accelerator = std::move(*create_emu_accelerator(memory, features(2)));
  EXPECT_EQ(accelerator->name(), "emu");
  auto vcpu = accelerator->create_vcpu(0, environment);
  ASSERT_TRUE(vcpu.has_value());
  // mov al, 0x42; out 0xe9, al; hlt at 0000:7c00
  const uint8_t code[] = {0xb0, 0x42, 0xe6, 0xe9, 0xf4};
  ASSERT_TRUE(memory.write(0x7c00, std::as_bytes(std::span(code))).has_value());
  cpu::x86::CpuState state = (*vcpu)->state();
  state.segment[cpu::x86::kCs] = cpu::x86::SegmentCache{0, 0, 0xffff, 0x9b};
  state.rip = 0x7c00;
  (*vcpu)->set_state(state);
  const VcpuExit exit = (*vcpu)->run(1000);
  EXPECT_EQ(exit.kind, VcpuExit::Kind::kHalted);
  EXPECT_EQ(exit.instructions, 3u);
  ASSERT_EQ(environment.io_writes.size(), 1u);
  EXPECT_EQ(environment.io_writes[0].port, 0xe9);
  EXPECT_EQ(environment.io_writes[0].value, 0x42u);
}

TEST(EmuAccelerator, ApplicationProcessorWaitsForStartupIpi) {
  GuestMemory memory = make_memory();
  RecordingEnvironment environment;
  auto accelerator = std::move(*create_emu_accelerator(memory, features(2)));
  auto vcpu = std::move(*accelerator->create_vcpu(1, environment));
  EXPECT_EQ(vcpu->run(1000).kind, VcpuExit::Kind::kWaitForStartup);
  // mov eax, 1; cpuid; hlt at 0x9000 (SIPI vector 9): EBX[31:24] is the initial APIC ID.
  const uint8_t code[] = {0x66, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0xa2, 0xf4};
  ASSERT_TRUE(memory.write(0x9000, std::as_bytes(std::span(code))).has_value());
  vcpu->startup(0x09);
  EXPECT_EQ(vcpu->run(1000).kind, VcpuExit::Kind::kHalted);
  EXPECT_EQ(vcpu->state().segment[cpu::x86::kCs].selector, 0x0900);
  EXPECT_EQ(vcpu->state().rip, 9u);
  EXPECT_EQ(vcpu->state().gpr[cpu::x86::kRbx] >> 24, 1u);
  EXPECT_EQ(vcpu->state().gpr[cpu::x86::kRcx] & (1u << 23), 1u << 23);  // POPCNT advertised
}

TEST(EmuAccelerator, RejectsVcpusBeyondTheModel) {
  GuestMemory memory = make_memory();
  RecordingEnvironment environment;
  auto accelerator = std::move(*create_emu_accelerator(memory, features(1)));
  EXPECT_FALSE(accelerator->create_vcpu(1, environment).has_value());
  cpu::x86::CpuFeatures bad;
  bad.vendor = "short";
  EXPECT_FALSE(create_emu_accelerator(memory, bad).has_value());
}

TEST(EmuAccelerator, DmaWriteFromAnotherThreadReplacesCachedCode) {
  GuestMemory memory = make_memory();
  RecordingEnvironment environment;
  auto accelerator = std::move(*create_emu_accelerator(memory, features(1)));
  auto vcpu = std::move(*accelerator->create_vcpu(0, environment));
  const uint8_t first[] = {0xb0, 0x01, 0xf4};  // mov al, 1; hlt
  ASSERT_TRUE(memory.write(0x7c00, std::as_bytes(std::span(first))).has_value());
  cpu::x86::CpuState state = vcpu->state();
  state.segment[cpu::x86::kCs] = cpu::x86::SegmentCache{0, 0, 0xffff, 0x9b};
  state.rip = 0x7c00;
  vcpu->set_state(state);
  ASSERT_EQ(vcpu->run(100).kind, VcpuExit::Kind::kHalted);
  EXPECT_EQ(vcpu->state().gpr[cpu::x86::kRax] & 0xff, 1u);
  // A "device" thread rewrites the code and reports the write.
  std::thread device([&] {
    const uint8_t second[] = {0xb0, 0x02, 0xf4};  // mov al, 2; hlt
    ASSERT_TRUE(memory.write(0x7c00, std::as_bytes(std::span(second))).has_value());
    accelerator->guest_memory_written(0x7c00, sizeof(second));
  });
  device.join();
  state = vcpu->state();
  state.rip = 0x7c00;
  state.halted = false;
  vcpu->set_state(state);
  ASSERT_EQ(vcpu->run(100).kind, VcpuExit::Kind::kHalted);
  EXPECT_EQ(vcpu->state().gpr[cpu::x86::kRax] & 0xff, 2u);
}

TEST(EmuAccelerator, KickFromAnotherThreadStopsAnEndlessLoop) {
  GuestMemory memory = make_memory();
  RecordingEnvironment environment;
  auto accelerator = std::move(*create_emu_accelerator(memory, features(2)));
  auto vcpu = std::move(*accelerator->create_vcpu(0, environment));
  const uint8_t code[] = {0xeb, 0xfe};  // jmp $
  ASSERT_TRUE(memory.write(0x7c00, std::as_bytes(std::span(code))).has_value());
  cpu::x86::CpuState state = vcpu->state();
  state.segment[cpu::x86::kCs] = cpu::x86::SegmentCache{0, 0, 0xffff, 0x9b};
  state.rip = 0x7c00;
  vcpu->set_state(state);
  std::thread kicker([&] { vcpu->kick(); });
  VcpuExit exit;
  do {
    exit = vcpu->run(1'000'000);
  } while (exit.kind == VcpuExit::Kind::kYield);
  kicker.join();
  EXPECT_EQ(exit.kind, VcpuExit::Kind::kKicked);
}

}  // namespace
}  // namespace lamina::accel
