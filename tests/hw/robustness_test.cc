// Hostile guest: random accesses of every size at every offset of every device, with time
// passing, must neither crash (run under -DLAMINA_SANITIZE=ON) nor hang, and the devices must
// still work afterwards.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <random>

#include "fakes.h"
#include "hw/acpi_pm.h"
#include "hw/apic_bus.h"
#include "hw/hpet.h"
#include "hw/i8042.h"
#include "hw/ioapic.h"
#include "hw/local_apic.h"
#include "hw/msix.h"
#include "hw/pci_host.h"
#include "hw/pic8259.h"
#include "hw/pit8254.h"
#include "hw/reset_control.h"
#include "hw/rtc.h"
#include "hw/system_control_port.h"
#include "hw/uart16550.h"

namespace lamina::hw {
namespace {

using testing::in8;
using testing::out8;
using testing::RecordingIrqLine;

class NullBackend final : public SerialBackend {
 public:
  void transmit(std::byte value) override { last = value; }
  std::byte last{};
};

class Region final : public Device {
 public:
  std::string_view name() const override { return "region"; }
  void read(uint64_t, std::span<std::byte> data) override { store_le_sized(data, 0); }
  void write(uint64_t, std::span<const std::byte>) override {}
};

class Function final : public PciDevice {
 public:
  explicit Function(MsiSink& sink)
      : PciDevice("fuzz", 0x1af4, 0x1000, 0x010000), msix(*this, sink, 8, 2, 0, 0x100) {
    add_bar(0, PciBarKind::kIo, 64, io_region);
    add_bar(2, PciBarKind::kMemory64, 0x1000, msix);
    set_interrupt_pin(1);
  }
  Region io_region;
  MsixCapability msix;
};

TEST(Robustness, RandomAccessesToEveryDeviceAreSurvived) {
  ManualClock clock(1);
  TimerQueue queue(clock);
  RecordingIrqLine intr, lines[24], sci;
  NullBackend backend;
  ApicBus apic_bus;
  LocalApic lapic(0, true, apic_bus, queue, 1'000'000'000);
  apic_bus.attach(lapic);
  IoApic ioapic(0, apic_bus);
  apic_bus.add_eoi_listener(ioapic);
  Pic8259Pair pic(intr);
  lapic.set_ext_int_acknowledge([&] { return pic.acknowledge(); });
  Uart16550 uart("com1", pic.input(4), &backend);
  Pit8254 pit(queue, pic.input(0));
  SystemControlPort port61(pit, clock);
  Rtc rtc(queue, pic.input(8), 1'700'000'000);
  int events = 0;
  I8042 i8042(
      pic.input(1), pic.input(12), [&] { ++events; }, [&](bool) { ++events; });
  Hpet::Routing routing;
  for (unsigned pin = 20; pin < 24; ++pin) routing.ioapic[pin] = &ioapic.input(pin);
  routing.legacy_timer0 = &pic.input(0);
  routing.legacy_timer1 = &pic.input(8);
  Hpet hpet(queue, routing);
  AcpiPm pm(
      clock, sci, [&] { ++events; }, true, 5);
  ResetControl reset([&] { ++events; });
  Bus io("io", 0xffff), mmio("mmio");
  PciHost::Options options;
  options.reset_control = &reset;
  options.ecam_buses = 2;
  PciHost pci(io, mmio, options);
  Function function(apic_bus);
  ASSERT_TRUE(pci.attach(2, 0, function).has_value());

  struct Target {
    Device* device;
    uint64_t span;
  };
  std::vector<Target> targets = {{&uart, 8},
                                 {&pic.master_ports(), 2},
                                 {&pic.slave_ports(), 2},
                                 {&pic.elcr_ports(), 2},
                                 {&pit, 4},
                                 {&port61, 1},
                                 {&rtc, 2},
                                 {&i8042.data_port(), 1},
                                 {&i8042.command_port(), 1},
                                 {&hpet, Hpet::kSize},
                                 {&ioapic, 0x100},
                                 {&lapic, 0x1000},
                                 {&pm.event_block(), 4},
                                 {&pm.control_block(), 2},
                                 {&pm.timer_block(), 4},
                                 {&pci.config_address_port(), 4},
                                 {&pci.config_data_port(), 4},
                                 {&pci.ecam(), 2u << 20},
                                 {&function.msix, 0x1000}};

  std::mt19937_64 random(20261124);
  const size_t sizes[] = {1, 2, 4, 8};
  for (int step = 0; step < 200'000; ++step) {
    Target& target = targets[random() % targets.size()];
    const size_t size = sizes[random() % 4];
    // Mostly in range, sometimes past the end.
    const uint64_t offset = random() % (target.span + 8);
    std::byte data[8];
    store_le_sized(data, random());
    if (random() % 2) {
      target.device->read(offset, std::span(data, size));
    } else {
      target.device->write(offset, std::span<const std::byte>(data, size));
    }
    if (step % 64 == 0) {
      clock.advance(random() % 2'000'000);
      queue.run_expired();
      while (lapic.has_pending_interrupt()) lapic.acknowledge();
      (void)lapic.take_nmi();
      (void)lapic.take_init();
      (void)lapic.take_startup();
      uart.receive(std::as_bytes(std::span("x", 1)));
      (void)lapic.write_msr(0x800 + random() % 0x100, random());
    }
  }

  // Everything still works: reprogram the PIC and take an interrupt through it.
  out8(pic.master_ports(), 0, 0x11);
  out8(pic.master_ports(), 1, 0x30);
  out8(pic.master_ports(), 1, 0x04);
  out8(pic.master_ports(), 1, 0x01);
  out8(pic.master_ports(), 1, 0xff);
  out8(pic.master_ports(), 1, 0xfd);  // only IRQ1
  out8(pic.master_ports(), 0, 0x0a);
  pic.set_elcr(0);
  pic.input(1).set_level(false);
  pic.input(1).set_level(true);
  EXPECT_EQ(pic.acknowledge(), 0x31);
  out8(uart, 3, 0x03);
  out8(uart, 4, 0x00);
  out8(uart, 0, 'k');
  EXPECT_EQ(backend.last, std::byte{'k'});
}

}  // namespace
}  // namespace lamina::hw

namespace lamina::hw {
namespace {

// A checkpoint file is untrusted input too: corrupted saved state must be refused or clamped,
// never crash a device or leave it unusable.
TEST(Robustness, CorruptSavedStateIsRefusedOrClamped) {
  ManualClock clock(1);
  TimerQueue queue(clock);
  testing::RecordingIrqLine line, sci;
  NullBackend backend;
  ApicBus apic_bus;
  Bus io("io", 0xffff), mmio("mmio");

  std::vector<std::function<std::unique_ptr<Stateful>()>> factories = {
      [&] { return std::make_unique<Uart16550>("com1", line, &backend); },
      [&] { return std::make_unique<Pic8259Pair>(line); },
      [&] { return std::make_unique<Pit8254>(queue, line); },
      [&] { return std::make_unique<Rtc>(queue, line, 1'700'000'000); },
      [&] { return std::make_unique<I8042>(line, line, nullptr, nullptr); },
      [&] { return std::make_unique<LocalApic>(0, true, apic_bus, queue, 1'000'000'000); },
      [&] { return std::make_unique<IoApic>(0, apic_bus); },
      [&] { return std::make_unique<Hpet>(queue, Hpet::Routing{}); },
      [&] { return std::make_unique<AcpiPm>(clock, sci, nullptr, false, 5); },
      [&] { return std::make_unique<PciHost>(io, mmio, PciHost::Options{}); },
  };
  std::mt19937_64 random(7);
  int refused = 0, accepted = 0;
  for (auto& factory : factories) {
    auto original = factory();
    StateWriter writer;
    original->save(writer);
    const std::vector<std::byte> good = writer.data();
    for (int trial = 0; trial < 300; ++trial) {
      std::vector<std::byte> bad = good;
      const int flips = 1 + static_cast<int>(random() % 8);
      for (int flip = 0; flip < flips; ++flip) {
        bad[random() % bad.size()] = static_cast<std::byte>(random());
      }
      if (random() % 4 == 0) bad.resize(random() % bad.size());
      auto target = factory();
      StateReader reader(bad);
      if (target->load(reader)) {
        ++accepted;
      } else {
        ++refused;
      }
      clock.advance(random() % 10'000'000);
      queue.run_expired();
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(accepted, 0) << "flips inside plain data are loaded (and clamped)";
}

}  // namespace
}  // namespace lamina::hw
