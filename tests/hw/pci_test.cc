#include <gtest/gtest.h>

#include "fakes.h"
#include "hw/apic_bus.h"
#include "hw/local_apic.h"
#include "hw/msix.h"
#include "hw/pci_host.h"
#include "hw/reset_control.h"

namespace lamina::hw {
namespace {

using testing::read32;
using testing::RecordingIrqLine;
using testing::write32;

// A register file that answers with its offset, so tests see where the bus sent them.
class EchoRegion final : public Device {
 public:
  std::string_view name() const override { return "echo"; }
  void read(uint64_t offset, std::span<std::byte> data) override {
    store_le_sized(data, 0xab00 + offset);
  }
  void write(uint64_t offset, std::span<const std::byte> data) override {
    last_offset = offset;
    last_value = load_le_sized(data);
  }
  uint64_t last_offset = ~0ull;
  uint64_t last_value = 0;
};

class TestFunction final : public PciDevice {
 public:
  TestFunction(MsiSink& sink)
      : PciDevice("test", 0x1af4, 0x1041, 0x020000, 1), msix(*this, sink, 4, 3, 0x0, 0x800) {
    add_bar(0, PciBarKind::kIo, 32, io_region);
    add_bar(1, PciBarKind::kMemory32, 0x1000, mem_region);
    add_bar(3, PciBarKind::kMemory64, 0x4000, msix, true);
    set_subsystem(0x1af4, 0x1100);
    set_interrupt_pin(1);
    vendor_capability = add_capability(0x09, 8);
    set_config(vendor_capability + 2, 2, 0x1234);
  }
  EchoRegion io_region;
  EchoRegion mem_region;
  MsixCapability msix;
  uint8_t vendor_capability = 0;
};

class PciTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options.reset_control = &reset;
    host = std::make_unique<PciHost>(io, mmio, options);
    ASSERT_TRUE(io.map(0xcf8, 4, host->config_address_port()).has_value());
    ASSERT_TRUE(io.map(0xcfc, 4, host->config_data_port()).has_value());
    ASSERT_TRUE(mmio.map(0xb0000000, host->ecam_size(), host->ecam()).has_value());
    bus.attach(cpu);
    write32(cpu, 0xf0, 0x1ff);
  }
  uint32_t config_read(unsigned device, unsigned reg, unsigned size = 4) {
    std::byte bytes[4];
    store_le_sized(bytes, 0x80000000u | (device << 11) | (reg & 0xfc));
    io.write(0xcf8, bytes);
    std::byte out[4] = {};
    io.read(0xcfc + (reg & 3), std::span(out, size));
    return static_cast<uint32_t>(load_le_sized(std::span<const std::byte>(out, size)));
  }
  void config_write(unsigned device, unsigned reg, uint32_t value, unsigned size = 4) {
    std::byte bytes[4];
    store_le_sized(bytes, 0x80000000u | (device << 11) | (reg & 0xfc));
    io.write(0xcf8, bytes);
    store_le_sized(std::span(bytes, size), value);
    io.write(0xcfc + (reg & 3), std::span<const std::byte>(bytes, size));
  }
  uint32_t mmio_read32(uint64_t address) {
    std::byte out[4];
    mmio.read(address, out);
    return static_cast<uint32_t>(load_le_sized(out));
  }
  void mmio_write32(uint64_t address, uint32_t value) {
    std::byte bytes[4];
    store_le_sized(bytes, value);
    mmio.write(address, bytes);
  }

  Bus io{"io", 0xffff};
  Bus mmio{"mmio"};
  int resets = 0;
  ResetControl reset{[this] { ++resets; }};
  PciHost::Options options;
  std::unique_ptr<PciHost> host;
  ManualClock clock;
  TimerQueue queue{clock};
  ApicBus bus;
  LocalApic cpu{0, true, bus, queue, 1'000'000'000};
};

TEST_F(PciTest, HostBridgeThroughMechanismOne) {
  EXPECT_EQ(config_read(0, 0x00), 0x00081b36u);
  EXPECT_EQ(config_read(0, 0x08) >> 8, 0x060000u) << "class: host bridge";
  EXPECT_EQ(config_read(0, 0x0a, 2), 0x0600u);
  EXPECT_EQ(config_read(5, 0x00), 0xffffffffu) << "empty slot";
}

TEST_F(PciTest, ConfigAddressReadsBackAndNarrowAccessesGoElsewhere) {
  std::byte bytes[4];
  store_le_sized(bytes, 0x80000000);
  io.write(0xcf8, bytes);
  std::byte out[4];
  io.read(0xcf8, out);
  EXPECT_EQ(load_le_sized(out), 0x80000000u) << "Linux's pci_check_type1()";
  std::byte narrow[1];
  io.read(0xcf8, narrow);
  EXPECT_EQ(narrow[0], std::byte{0xff}) << "no type 2 mechanism";
  std::byte reset_value[1] = {std::byte{0x06}};
  io.write(0xcf9, reset_value);
  EXPECT_EQ(resets, 1);
  store_le_sized(bytes, 0x00000000);  // enable bit clear: data port reads ones
  io.write(0xcf8, bytes);
  io.read(0xcfc, out);
  EXPECT_EQ(load_le_sized(out), 0xffffffffu);
}

TEST_F(PciTest, BarSizingProgrammingAndDecode) {
  TestFunction function(bus);
  ASSERT_TRUE(host->attach(3, 0, function).has_value());
  EXPECT_FALSE(host->attach(3, 0, function).has_value()) << "slot taken";
  EXPECT_FALSE(host->attach(32, 0, function).has_value());

  config_write(3, 0x10, 0xffffffff);
  EXPECT_EQ(config_read(3, 0x10), 0xffffffe1u) << "32-byte I/O BAR";
  config_write(3, 0x14, 0xffffffff);
  EXPECT_EQ(config_read(3, 0x14), 0xfffff000u) << "4 KiB memory BAR";
  config_write(3, 0x1c, 0xffffffff);
  config_write(3, 0x20, 0xffffffff);
  EXPECT_EQ(config_read(3, 0x1c), 0xffffc00cu) << "16 KiB 64-bit prefetchable";
  EXPECT_EQ(config_read(3, 0x20), 0xffffffffu);
  EXPECT_EQ(config_read(3, 0x18), 0u) << "unimplemented BAR";

  config_write(3, 0x10, 0xc000);
  config_write(3, 0x14, 0xfe000000);
  config_write(3, 0x1c, 0x00000000);
  config_write(3, 0x20, 0x00000001);  // 0x1'0000'0000
  EXPECT_FALSE(function.bar_mapping(0).has_value()) << "decode is off";
  config_write(3, 0x04, 0x0003, 2);
  EXPECT_EQ(function.bar_mapping(0), 0xc000u);
  EXPECT_EQ(function.bar_mapping(1), 0xfe000000u);
  EXPECT_EQ(function.bar_mapping(3), 0x100000000u);
  std::byte out[2];
  io.read(0xc004, out);
  EXPECT_EQ(load_le_sized(out), 0xab04u);
  EXPECT_EQ(mmio_read32(0xfe000010), 0xab10u);

  config_write(3, 0x14, 0xfe100000);  // move while decoding
  EXPECT_EQ(mmio.find(0xfe000000), nullptr);
  EXPECT_EQ(mmio_read32(0xfe100020), 0xab20u);
  config_write(3, 0x04, 0x0001, 2);  // memory decode off
  EXPECT_EQ(mmio.find(0xfe100000), nullptr);
  EXPECT_TRUE(function.bar_mapping(0).has_value());
}

TEST_F(PciTest, EcamReachesTheSameConfigSpace) {
  TestFunction function(bus);
  ASSERT_TRUE(host->attach(3, 0, function).has_value());
  const uint64_t base = 0xb0000000 + (3u << 15);
  EXPECT_EQ(mmio_read32(base), 0x10411af4u);
  mmio_write32(base + 0x3c, 0x0b);
  EXPECT_EQ(config_read(3, 0x3c, 1), 0x0bu);
  EXPECT_EQ(config_read(3, 0x3d, 1), 0x01u) << "INTA";
  EXPECT_EQ(mmio_read32(base + 0x100), 0u) << "no extended capabilities";
  EXPECT_EQ(mmio_read32(0xb0000000 + (1u << 20)), 0xffffffffu) << "bus 1 is empty";
  EXPECT_EQ(mmio_read32(base + 0x2c), 0x11001af4u) << "subsystem";
}

TEST_F(PciTest, CapabilityListAndStatusBits) {
  TestFunction function(bus);
  ASSERT_TRUE(host->attach(3, 0, function).has_value());
  EXPECT_TRUE(config_read(3, 0x06, 2) & 0x10);
  uint8_t pointer = static_cast<uint8_t>(config_read(3, 0x34, 1));
  std::vector<uint8_t> ids;
  while (pointer != 0 && ids.size() < 8) {
    ids.push_back(static_cast<uint8_t>(config_read(3, pointer, 1)));
    pointer = static_cast<uint8_t>(config_read(3, pointer + 1, 1));
  }
  EXPECT_EQ(ids, (std::vector<uint8_t>{0x11, 0x09}));
  EXPECT_EQ(config_read(3, function.vendor_capability + 2, 2), 0x1234u);
  config_write(3, function.vendor_capability + 2, 0xffff, 2);
  EXPECT_EQ(config_read(3, function.vendor_capability + 2, 2), 0x1234u) << "read-only";
  config_write(3, 0x04, 0xffff, 2);
  EXPECT_EQ(config_read(3, 0x04, 2), 0x0547u) << "only the implemented command bits";
}

TEST_F(PciTest, IntxHonoursInterruptDisable) {
  TestFunction function(bus);
  RecordingIrqLine line;
  function.set_intx_line(&line);
  ASSERT_TRUE(host->attach(3, 0, function).has_value());
  function.set_intx(true);
  EXPECT_TRUE(line.level());
  EXPECT_TRUE(config_read(3, 0x06, 2) & 0x08);
  config_write(3, 0x04, 0x0400, 2);
  EXPECT_FALSE(line.level());
  EXPECT_TRUE(config_read(3, 0x06, 2) & 0x08) << "status still reports it";
  config_write(3, 0x04, 0x0000, 2);
  EXPECT_TRUE(line.level());
  function.set_intx(false);
  EXPECT_FALSE(line.level());
}

TEST_F(PciTest, MultifunctionBitAndOverlappingBars) {
  TestFunction first(bus), second(bus);
  ASSERT_TRUE(host->attach(4, 0, first).has_value());
  EXPECT_EQ(config_read(4, 0x0c) >> 16 & 0x80, 0u);
  ASSERT_TRUE(host->attach(4, 1, second).has_value());
  EXPECT_EQ(config_read(4, 0x0e, 1) & 0x80, 0x80u);
  // The second function's BAR lands on the first one's: refused, logged, not fatal.
  config_write(4, 0x14, 0xfe000000);
  config_write(4, 0x04, 0x0002, 2);
  std::byte address[4];
  store_le_sized(address, 0x80000000u | (4u << 11) | (1u << 8) | 0x14);
  io.write(0xcf8, address);
  std::byte value[4];
  store_le_sized(value, 0xfe000000);
  io.write(0xcfc, value);
  store_le_sized(address, 0x80000000u | (4u << 11) | (1u << 8) | 0x04);
  io.write(0xcf8, address);
  store_le_sized(value, 0x0002);
  io.write(0xcfc, value);
  EXPECT_TRUE(first.bar_mapping(1).has_value());
  EXPECT_FALSE(second.bar_mapping(1).has_value());
}

TEST_F(PciTest, MsixDeliversMasksAndReleasesPendingVectors) {
  TestFunction function(bus);
  ASSERT_TRUE(host->attach(3, 0, function).has_value());
  const uint8_t cap = function.msix.capability_offset();
  EXPECT_EQ(config_read(3, cap + 2, 2), 3u) << "table size 4, encoded N-1";
  EXPECT_EQ(config_read(3, cap + 4), 3u) << "table at offset 0 of BAR 3";
  EXPECT_EQ(config_read(3, cap + 8), 0x803u);
  EXPECT_FALSE(function.msix.notify(0)) << "disabled: use INTx";

  config_write(3, 0x1c, 0xfebf0000);
  config_write(3, 0x20, 0);
  config_write(3, 0x04, 0x0006, 2);
  config_write(3, cap + 2, 0x8000, 2);  // enable
  const uint64_t table = 0xfebf0000;
  mmio_write32(table + 16 + 0, 0xfee00000);  // vector 1 -> APIC 0
  mmio_write32(table + 16 + 8, 0x52);
  EXPECT_EQ(mmio_read32(table + 16 + 12), 1u) << "masked at reset";
  EXPECT_TRUE(function.msix.notify(1));
  EXPECT_FALSE(cpu.has_pending_interrupt());
  EXPECT_EQ(mmio_read32(table + 0x800), 0x2u) << "pending bit";
  mmio_write32(table + 16 + 12, 0);  // unmask: the pending message goes out
  EXPECT_EQ(mmio_read32(table + 0x800), 0u);
  EXPECT_EQ(cpu.acknowledge(), 0x52);
  write32(cpu, 0xb0, 0);

  config_write(3, cap + 2, 0xc000, 2);  // function mask
  EXPECT_TRUE(function.msix.notify(1));
  EXPECT_FALSE(cpu.has_pending_interrupt());
  config_write(3, cap + 2, 0x8000, 2);
  EXPECT_EQ(cpu.acknowledge(), 0x52);
}

TEST_F(PciTest, SaveAndLoadRestoresMappingsAndTable) {
  TestFunction function(bus);
  ASSERT_TRUE(host->attach(3, 0, function).has_value());
  config_write(3, 0x14, 0xfe000000);
  config_write(3, 0x04, 0x0002, 2);
  mmio_write32(0xb0000000 + (3u << 15) + 0x3c, 0x0a);
  StateWriter writer;
  host->save(writer);
  function.save(writer);

  Bus io2("io", 0xffff), mmio2("mmio");
  PciHost host2(io2, mmio2, {});
  TestFunction copy(bus);
  ASSERT_TRUE(host2.attach(3, 0, copy).has_value());
  StateReader reader(writer.data());
  ASSERT_TRUE(host2.load(reader).has_value());
  ASSERT_TRUE(copy.load(reader).has_value());
  EXPECT_EQ(copy.bar_mapping(1), 0xfe000000u) << "decode restored from Command and BAR1";
  EXPECT_EQ(copy.config_read(0x3c, 1), 0x0au);
  EXPECT_EQ(copy.config_read(0x00, 4), 0x10411af4u);
}

TEST_F(PciTest, MsixTableAndPendingBitsSurviveSaveAndLoad) {
  TestFunction function(bus);
  ASSERT_TRUE(host->attach(3, 0, function).has_value());
  const uint8_t cap = function.msix.capability_offset();
  config_write(3, cap + 2, 0x8000, 2);
  std::byte entry[4];
  store_le_sized(entry, 0xfee00000);
  function.msix.write(2 * 16, entry);
  store_le_sized(entry, 0x61);
  function.msix.write(2 * 16 + 8, entry);
  EXPECT_TRUE(function.msix.notify(2));  // masked: pending
  StateWriter writer;
  function.save(writer);
  function.msix.save(writer);

  TestFunction copy(bus);
  StateReader reader(writer.data());
  ASSERT_TRUE(copy.load(reader).has_value());
  ASSERT_TRUE(copy.msix.load(reader).has_value());
  EXPECT_TRUE(copy.msix.enabled());
  std::byte out[4];
  copy.msix.read(0x800, out);
  EXPECT_EQ(load_le_sized(out), 0x4u) << "vector 2 pending";
  copy.msix.read(2 * 16 + 8, out);
  EXPECT_EQ(load_le_sized(out), 0x61u);
  store_le_sized(entry, 0);
  copy.msix.write(2 * 16 + 12, entry);  // unmask: delivered from the restored state
  EXPECT_EQ(cpu.acknowledge(), 0x61);

  StateWriter wrong;
  wrong.begin_section("msix", 1);
  wrong.put(uint16_t{9});
  wrong.end_section();
  StateReader wrong_reader(wrong.data());
  EXPECT_FALSE(copy.msix.load(wrong_reader).has_value()) << "table size mismatch";
}

}  // namespace
}  // namespace lamina::hw
