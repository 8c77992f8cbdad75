// The PC's interrupt wiring as the machine will build it: ISA IRQs fan out to the 8259 pair and
// the IOAPIC, the 8259's INTR reaches the BSP's LINT0, the HPET's legacy route gates the PIT.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "fakes.h"
#include "hw/apic_bus.h"
#include "hw/hpet.h"
#include "hw/ioapic.h"
#include "hw/irq_fanout.h"
#include "hw/local_apic.h"
#include "hw/pic8259.h"
#include "hw/pit8254.h"

namespace lamina::hw {
namespace {

using testing::out8;
using testing::write32;

class WiringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    apic_bus.attach(bsp);
    apic_bus.add_eoi_listener(ioapic);
    bsp.set_ext_int_acknowledge([this] { return pic.acknowledge(); });
    write32(bsp, 0xf0, 0x1ff);
    // Linux's PIC setup: vectors 0x30/0x38.
    for (auto [port, value] : {std::pair{0, 0x11}, {1, 0x30}, {1, 0x04}, {1, 0x01}, {1, 0x00}}) {
      out8(pic.master_ports(), port, static_cast<uint8_t>(value));
    }
  }
  void program_ioapic(unsigned pin, uint64_t entry) {
    write32(ioapic, 0x00, 0x10 + 2 * pin);
    write32(ioapic, 0x10, static_cast<uint32_t>(entry));
    write32(ioapic, 0x00, 0x11 + 2 * pin);
    write32(ioapic, 0x10, static_cast<uint32_t>(entry >> 32));
  }

  ManualClock clock{1};
  TimerQueue queue{clock};
  ApicBus apic_bus;
  LocalApic bsp{0, true, apic_bus, queue, 1'000'000'000};
  Pic8259Pair pic{bsp.lint0()};
  IoApic ioapic{0, apic_bus};
  // ISA IRQ0 goes to 8259 input 0 and IOAPIC pin 2 (the MADT's interrupt source override).
  IrqFanout isa_irq0{&pic.input(0), &ioapic.input(2)};
  GatedIrqLine pit_irq0{isa_irq0};
  Pit8254 pit{queue, pit_irq0};
};

TEST_F(WiringTest, PitTickThroughThe8259AndExtInt) {
  write32(bsp, 0x350, 0x700);  // LINT0: ExtINT, as firmware sets the virtual wire
  out8(pit, 3, 0x34);
  out8(pit, 0, 0xa9);
  out8(pit, 0, 0x04);  // 1193: 1 ms
  clock.advance(1'000'000);
  queue.run_expired();
  ASSERT_TRUE(bsp.has_pending_interrupt());
  EXPECT_EQ(bsp.acknowledge(), 0x30);
}

TEST_F(WiringTest, PitTickThroughTheIoapic) {
  out8(pic.master_ports(), 1, 0xff);  // Linux masks the 8259 once the IOAPIC is in use
  program_ioapic(2, 0x31);
  out8(pit, 3, 0x34);
  out8(pit, 0, 0xa9);
  out8(pit, 0, 0x04);
  clock.advance(1'000'000);
  queue.run_expired();
  EXPECT_EQ(bsp.acknowledge(), 0x31);
  write32(bsp, 0xb0, 0);
  clock.advance(1'000'000);
  queue.run_expired();
  EXPECT_EQ(bsp.acknowledge(), 0x31) << "and the next period";
}

TEST_F(WiringTest, HpetLegacyRouteReplacesThePit) {
  program_ioapic(2, 0x31);
  Hpet::Routing routing;
  routing.legacy_timer0 = &isa_irq0;
  routing.legacy_route_changed = [this](bool enabled) { pit_irq0.set_open(!enabled); };
  Hpet hpet(queue, routing);
  write32(hpet, 0x10, 0x3);  // enable, legacy replacement
  out8(pit, 3, 0x34);
  out8(pit, 0, 0xa9);
  out8(pit, 0, 0x04);
  clock.advance(5'000'000);
  queue.run_expired();
  EXPECT_FALSE(bsp.has_pending_interrupt()) << "the PIT is cut off";
  write32(hpet, 0x100, 0x4);
  testing::write_register(hpet, 0x108, 8, testing::read_register(hpet, 0xf0, 8) + 1000);
  clock.advance(10'000);
  queue.run_expired();
  EXPECT_EQ(bsp.acknowledge(), 0x31) << "the HPET drives IRQ0 instead";
}

TEST(IrqAdaptors, FanoutAndGate) {
  testing::RecordingIrqLine a, b;
  IrqFanout fanout{&a, &b};
  GatedIrqLine gate(fanout);
  gate.set_level(true);
  EXPECT_TRUE(a.level() && b.level());
  gate.set_open(false);
  EXPECT_FALSE(a.level());
  gate.set_level(false);
  gate.set_level(true);
  EXPECT_FALSE(b.level());
  gate.set_open(true);
  EXPECT_TRUE(b.level()) << "reopening forwards the current level";
}

TEST(TimerQueueThreads, ArmingFromAnotherThreadWhileServicing) {
  HostClock clock;
  TimerQueue queue(clock);
  std::atomic<int> fired{0};
  Timer timer(queue, [&](uint64_t) { fired.fetch_add(1); });
  std::atomic<bool> stop{false};
  std::thread armer([&] {
    while (!stop) {
      timer.arm_at(clock.now_ns());
      timer.cancel();
      timer.arm_at(clock.now_ns());
    }
  });
  const uint64_t end = clock.now_ns() + 50'000'000;
  while (clock.now_ns() < end) queue.run_expired();
  stop = true;
  armer.join();
  queue.run_expired();
  EXPECT_GT(fired.load(), 0);
}

}  // namespace
}  // namespace lamina::hw
