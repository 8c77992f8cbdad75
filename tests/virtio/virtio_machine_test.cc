// The machine wiring of virtio devices: MachineBuilder plugs one virtio-pci function per
// factory into bus 0 from slot 1 with BARs assigned inside the PCI window and decoding on; a
// factory's error or too many devices stop the build; SharedIrqLine is a wired OR; and
// add_virtio_devices turns a VmConfig into the right factories; SATA drives bring the AHCI
// controller into its slot.

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/byte_order.h"
#include "machine/machine_builder.h"
#include "machine/pci_resources.h"
#include "machine/shared_irq_line.h"
#include "machine/virtio_devices.h"
#include "virtio/virtio_pci_layout.h"
#include "virtio/virtio_rng.h"

namespace lamina::machine {
namespace {

// A Multiboot v1 kernel (a.out kludge) that only halts: enough for MachineBuilder to build.
class HaltKernel {
 public:
  HaltKernel()
      : path_(std::filesystem::temp_directory_path() /
              ("lamina-virtio-machine-" + std::to_string(::getpid()) + ".bin")) {
    constexpr uint32_t kMagic = 0x1BADB002, kFlags = 1u << 16, kLoad = 0x100000, kHeader = 32;
    const uint8_t code[] = {0xf4, 0xeb, 0xfd};  // hlt; jmp hlt
    const uint32_t end = kLoad + kHeader + sizeof(code);
    const uint32_t words[] = {kMagic, kFlags,         static_cast<uint32_t>(-(kMagic + kFlags)),
                              kLoad,  kLoad,          end,
                              end,    kLoad + kHeader};
    std::ofstream file(path_, std::ios::binary);
    file.write(reinterpret_cast<const char*>(words), sizeof(words));
    file.write(reinterpret_cast<const char*>(code), sizeof(code));
  }
  ~HaltKernel() { std::filesystem::remove(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

MachineOptions small_machine(const HaltKernel& kernel) {
  MachineOptions options;
  options.kernel = kernel.path();
  options.memory_bytes = 64 << 20;
  return options;
}

uint32_t ecam_read(Machine& machine, unsigned slot, uint16_t offset) {
  std::byte bytes[4];
  machine.pci_host().ecam().read((uint64_t{slot} << 15) | offset, bytes);
  return load_le<uint32_t>(bytes);
}

VirtioDeviceFactory rng_factory() {
  return [] {
    return Result<std::unique_ptr<virtio::VirtioDevice>>(std::make_unique<virtio::VirtioRng>());
  };
}

// A 1 MiB disk in memory for the AHCI wiring test.
class TinyDisk final : public storage::BlockDevice {
 public:
  uint64_t size() const override { return 1 << 20; }
  bool read_only() const override { return true; }
  Result<void> read(uint64_t, std::span<std::byte> data) override {
    std::fill(data.begin(), data.end(), std::byte{0});
    return {};
  }
  Result<void> write(uint64_t, std::span<const std::byte>) override {
    return fail(ErrorCode::kInvalidArgument, "read-only");
  }
  Result<void> flush() override { return {}; }
  Result<void> discard(uint64_t, uint64_t) override { return {}; }
};

TEST(VirtioMachineTest, SataDrivesBringTheAhciControllerInItsSlot) {
  HaltKernel kernel;
  MachineOptions options = small_machine(kernel);
  options.virtio_devices = {rng_factory()};
  options.sata_drives = {{std::make_shared<TinyDisk>(), "disk", false},
                         {std::make_shared<TinyDisk>(), "cd", true}};
  auto machine = MachineBuilder::build(options);
  ASSERT_TRUE(machine) << machine.error().message();
  EXPECT_EQ(ecam_read(**machine, kAhciSlot, 0x00), 0x29228086u);
  EXPECT_EQ(ecam_read(**machine, kAhciSlot, 0x08) >> 8, 0x010601u);
  EXPECT_EQ(ecam_read(**machine, kAhciSlot, 0x04) & 0x2, 0x2u) << "memory decoding on";
  EXPECT_NE(ecam_read(**machine, kAhciSlot, 0x24), 0u) << "ABAR assigned without firmware";
  EXPECT_EQ(ecam_read(**machine, kAhciSlot, 0x3c) & 0xff, 16u + kAhciSlot % 4) << "GSI per _PRT";
  EXPECT_EQ((*machine)->pci_hotplug().hotplug_units() & (uint64_t{1} << kAhciSlot), 0u)
      << "the controller's slot takes no hotplug";
  EXPECT_EQ(sata_boot_path(1), "/pci@i0cf8/sata@1e/drive@1/disk@0");
  // Its slot is not free for virtio devices.
  options.virtio_devices.assign(30, rng_factory());
  EXPECT_FALSE(MachineBuilder::build(options));
}

TEST(VirtioMachineTest, FunctionsGetSlotsBarsAndDecoding) {
  HaltKernel kernel;
  MachineOptions options = small_machine(kernel);
  options.virtio_devices = {rng_factory(), rng_factory(), rng_factory()};
  auto machine = MachineBuilder::build(options);
  ASSERT_TRUE(machine) << machine.error().message();
  ASSERT_EQ((*machine)->virtio_functions().size(), 3u);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (unsigned slot = 1; slot <= 3; ++slot) {
    SCOPED_TRACE(slot);
    EXPECT_EQ(ecam_read(**machine, slot, 0x00), 0x10441af4u);
    EXPECT_EQ(ecam_read(**machine, slot, 0x04) & 0x7, 0x6u) << "memory and bus master; no I/O BARs";
    EXPECT_EQ(ecam_read(**machine, slot, 0x3c) & 0xff, 16 + slot % 4) << "GSI per _PRT";
    auto& function = *(*machine)->virtio_functions()[slot - 1];
    for (unsigned bar : {virtio::pci::kRegisterBar, virtio::pci::kMsixBar}) {
      const auto mapped = function.bar_mapping(bar);
      ASSERT_TRUE(mapped) << "BAR" << bar;
      const uint64_t size = bar == virtio::pci::kRegisterBar ? function.register_bar_size()
                                                             : function.msix_bar_size();
      EXPECT_EQ(*mapped % size, 0u) << "naturally aligned";
      EXPECT_GE(*mapped, kPciMmio32Start);
      EXPECT_LE(*mapped + size, kPciMmio32End);
      ranges.push_back({*mapped, *mapped + size});
    }
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) EXPECT_LE(ranges[i - 1].second, ranges[i].first);
  EXPECT_EQ(ecam_read(**machine, 4, 0x00), 0xffffffffu) << "nothing in slot 4";
}

TEST(VirtioMachineTest, FactoryErrorsAndTooManyDevicesStopTheBuild) {
  HaltKernel kernel;
  MachineOptions options = small_machine(kernel);
  options.virtio_devices.push_back([]() -> Result<std::unique_ptr<virtio::VirtioDevice>> {
    return fail(ErrorCode::kNotFound, "--disk: 'missing.vhd' does not exist");
  });
  auto failed = MachineBuilder::build(options);
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().message().find("missing.vhd"), std::string::npos);

  options.virtio_devices.assign(32, rng_factory());
  auto crowded = MachineBuilder::build(options);
  ASSERT_FALSE(crowded);
  EXPECT_EQ(crowded.error().code(), ErrorCode::kInvalidArgument);
  options.virtio_devices.assign(31, rng_factory());
  EXPECT_TRUE(MachineBuilder::build(options)) << "slots 1-31 hold 31 functions";
}

TEST(VirtioMachineTest, VmConfigBecomesFactories) {
  VmConfig config;
  config.serial.kind = SerialKind::kNone;
  auto ends = open_virtio_host_ends(config);
  ASSERT_TRUE(ends);
  MachineOptions options;
  add_virtio_devices(config, *ends, options);
  ASSERT_EQ(options.virtio_devices.size(), 1u) << "rng by default, no console port";
  auto device = options.virtio_devices[0]();
  ASSERT_TRUE(device);
  EXPECT_EQ((*device)->type(), virtio::DeviceType::kEntropy);

  config.rng = false;
  config.console_port = {ConsolePortKind::kFile,
                         std::filesystem::temp_directory_path() /
                             ("lamina-virtio-port-" + std::to_string(::getpid()))};
  ASSERT_TRUE(validate(config));
  ends = open_virtio_host_ends(config);
  ASSERT_TRUE(ends) << ends.error().message();
  options.virtio_devices.clear();
  add_virtio_devices(config, *ends, options);
  ASSERT_EQ(options.virtio_devices.size(), 1u);
  EXPECT_EQ((*options.virtio_devices[0]())->type(), virtio::DeviceType::kConsole);
  std::filesystem::remove(config.console_port.path);

  EXPECT_FALSE(parse_console_port("socket:"));
  EXPECT_FALSE(parse_console_port("tcp:1234"));
  EXPECT_EQ(parse_console_port("socket:/tmp/x")->kind, ConsolePortKind::kSocket);
  EXPECT_FALSE(parse_rng("on"));
  config.console_port = {ConsolePortKind::kStdio, {}};
  config.serial.kind = SerialKind::kStdio;
  EXPECT_FALSE(validate(config)) << "stdin cannot serve two consoles";
}

class Level final : public hw::IrqLine {
 public:
  void set_level(bool asserted) override { changes.push_back(asserted); }
  std::vector<bool> changes;
};

TEST(VirtioMachineTest, SharedIrqLineIsAWiredOr) {
  Level target;
  SharedIrqLine shared(target);
  hw::IrqLine& a = shared.add_source();
  hw::IrqLine& b = shared.add_source();
  a.set_level(true);
  b.set_level(true);
  a.set_level(false);
  a.set_level(false);  // no change
  EXPECT_EQ(target.changes, std::vector<bool>{true}) << "still asserted by b";
  b.set_level(false);
  EXPECT_EQ(target.changes, (std::vector<bool>{true, false}));
}

}  // namespace
}  // namespace lamina::machine

namespace lamina::machine {
namespace {

using namespace std::chrono_literals;

uint32_t read_port32(hw::Device& device, uint64_t offset) {
  std::byte bytes[4];
  device.read(offset, bytes);
  return load_le<uint32_t>(bytes);
}

// Hotplug on a built machine (no vCPU runs, so the "guest" is this test): a function plugged
// into a free slot and announced; a removal the guest never ejects times out and leaves it;
// one it ejects takes the function off the bus.
TEST(MachineHotplug, VirtioFunctionsComeAndGoThroughTheEject) {
  HaltKernel kernel;
  MachineOptions options = small_machine(kernel);
  options.virtio_devices = {rng_factory()};
  auto built = MachineBuilder::build(options);
  ASSERT_TRUE(built) << built.error().message();
  Machine& machine = **built;
  EXPECT_FALSE(machine.hot_add_virtio(1, std::make_unique<virtio::VirtioRng>()))
      << "slot 1 is taken";
  EXPECT_FALSE(machine.hot_add_virtio(0, std::make_unique<virtio::VirtioRng>()));
  ASSERT_TRUE(machine.hot_add_virtio(5, std::make_unique<virtio::VirtioRng>()));
  ASSERT_NE(machine.virtio_function_at(5), nullptr);
  EXPECT_EQ(read_port32(machine.pci_hotplug(), hw::HotplugController::kUp), 1u << 5);

  auto kept = machine.hot_remove_virtio(5, 20ms);
  ASSERT_FALSE(kept);
  EXPECT_NE(kept.error().message().find("did not release PCI slot 05"), std::string::npos);
  EXPECT_NE(machine.virtio_function_at(5), nullptr) << "a guest that keeps it keeps it";

  std::jthread guest([&] {
    std::this_thread::sleep_for(20ms);
    std::byte eject[4];
    store_le<uint32_t>(eject, 1u << 5);
    machine.pci_hotplug().write(hw::HotplugController::kEject, eject);
  });
  ASSERT_TRUE(machine.hot_remove_virtio(5, 5s));
  EXPECT_EQ(machine.virtio_function_at(5), nullptr);
  EXPECT_EQ(machine.virtio_functions().size(), 1u);
  EXPECT_FALSE(machine.hot_remove_virtio(5, 1ms)) << "nothing left there";
}

// vCPUs and memory need headroom; within it the rules hold.
TEST(MachineHotplug, VcpusAndMemoryStayWithinTheirHeadroom) {
  HaltKernel kernel;
  MachineOptions options = small_machine(kernel);
  auto plain = MachineBuilder::build(options);
  ASSERT_TRUE(plain);
  EXPECT_FALSE((*plain)->hot_add_vcpu(1));
  EXPECT_FALSE((*plain)->set_memory_size(options.memory_bytes + (128 << 20)));

  options.max_cpus = 3;
  options.max_memory_bytes = options.memory_bytes + (128 << 20);
  auto built = MachineBuilder::build(options);
  ASSERT_TRUE(built) << built.error().message();
  Machine& machine = **built;
  EXPECT_EQ(machine.vcpu_count(), 3u);
  EXPECT_EQ(machine.present_vcpus(), 1u);
  ASSERT_TRUE(machine.hot_add_vcpu(1));
  EXPECT_FALSE(machine.hot_add_vcpu(1)) << "present already";
  EXPECT_FALSE(machine.hot_add_vcpu(3)) << "past the maximum";
  EXPECT_FALSE(machine.hot_remove_vcpu(0, 1ms)) << "vCPU 0 stays";
  EXPECT_EQ(machine.present_vcpus(), 2u);
  auto* memory = machine.virtio_function_at(31);
  ASSERT_NE(memory, nullptr) << "virtio-mem sits in slot 31";
  EXPECT_EQ(memory->device().name(), "virtio-mem");
  EXPECT_TRUE(machine.set_memory_size(options.max_memory_bytes));
  EXPECT_FALSE(machine.set_memory_size(options.max_memory_bytes + (2 << 20)));
  EXPECT_FALSE(machine.set_memory_size(options.memory_bytes - (2 << 20)));
  EXPECT_EQ(machine.memory_size(), options.memory_bytes) << "nothing plugged by a guest yet";
}

}  // namespace
}  // namespace lamina::machine
