// Local APIC, IOAPIC and the APIC bus between them, wired as on a two-CPU machine.
#include <gtest/gtest.h>

#include "fakes.h"
#include "hw/apic_bus.h"
#include "hw/ioapic.h"
#include "hw/local_apic.h"
#include "hw/pic8259.h"

namespace lamina::hw {
namespace {

using testing::read32;
using testing::write32;

constexpr uint64_t kTscHz = 2'000'000'000;
constexpr uint64_t kSvr = 0xf0, kTpr = 0x80, kEoi = 0xb0, kLdr = 0xd0, kDfr = 0xe0, kIsr = 0x100,
                   kTmr = 0x180, kIrr = 0x200, kEsr = 0x280, kIcrLow = 0x300, kIcrHigh = 0x310,
                   kLvtTimer = 0x320, kLvtLint0 = 0x350, kInitialCount = 0x380,
                   kCurrentCount = 0x390, kDivide = 0x3e0;

class ApicTest : public ::testing::Test {
 protected:
  void SetUp() override {
    bus.attach(cpu0);
    bus.attach(cpu1);
    bus.add_eoi_listener(ioapic);
    cpu0.set_kick([this] { ++kicks0; });
    cpu1.set_kick([this] { ++kicks1; });
    write32(cpu0, kSvr, 0x1ff);
    write32(cpu1, kSvr, 0x1ff);
    kicks0 = kicks1 = 0;
  }
  void program_pin(unsigned pin, uint64_t entry) {
    write32(ioapic, 0x00, 0x10 + 2 * pin);
    write32(ioapic, 0x10, static_cast<uint32_t>(entry));
    write32(ioapic, 0x00, 0x11 + 2 * pin);
    write32(ioapic, 0x10, static_cast<uint32_t>(entry >> 32));
  }
  bool irr_has(LocalApic& apic, unsigned vector) {
    return (read32(apic, kIrr + (vector / 32) * 0x10) >> (vector % 32)) & 1;
  }

  ManualClock clock{1000};
  TimerQueue queue{clock};
  ApicBus bus;
  LocalApic cpu0{0, true, bus, queue, kTscHz};
  LocalApic cpu1{1, false, bus, queue, kTscHz};
  IoApic ioapic{0, bus};
  int kicks0 = 0, kicks1 = 0;
};

TEST_F(ApicTest, PowerUpRegisters) {
  LocalApic fresh(3, false, bus, queue, kTscHz);
  EXPECT_EQ(read32(fresh, 0x20), 3u << 24);
  EXPECT_EQ(read32(fresh, 0x30), 0x00050014u);
  EXPECT_EQ(read32(fresh, kSvr), 0xffu);
  EXPECT_EQ(read32(fresh, kLvtTimer), 0x10000u);
  EXPECT_EQ(read32(fresh, kDfr), 0xffffffffu);
  EXPECT_EQ(fresh.apic_base(), 0xfee00800u);
  EXPECT_EQ(cpu0.apic_base(), 0xfee00900u) << "BSP flag";
  EXPECT_EQ(fresh.mmio_page(), 0xfee00000u);
}

TEST_F(ApicTest, FixedInterruptIsAcknowledgedAndEnded) {
  InterruptMessage message;
  message.vector = 0x41;
  cpu0.accept(message);
  EXPECT_EQ(kicks0, 1);
  EXPECT_TRUE(cpu0.has_pending_interrupt());
  EXPECT_TRUE(irr_has(cpu0, 0x41));
  EXPECT_EQ(cpu0.acknowledge(), 0x41);
  EXPECT_FALSE(cpu0.has_pending_interrupt());
  EXPECT_EQ(read32(cpu0, kIsr + 0x20), 1u << 1);
  EXPECT_EQ(read32(cpu0, 0xa0), 0x40u) << "PPR is the in-service class";
  write32(cpu0, kEoi, 0);
  EXPECT_EQ(read32(cpu0, kIsr + 0x20), 0u);
}

TEST_F(ApicTest, SoftwareDisabledApicDeliversNothing) {
  write32(cpu0, kSvr, 0xff);
  InterruptMessage message;
  message.vector = 0x41;
  cpu0.accept(message);
  EXPECT_FALSE(cpu0.has_pending_interrupt());
  EXPECT_EQ(cpu0.acknowledge(), 0xff) << "spurious vector";
  write32(cpu0, kLvtTimer, 0x30);
  EXPECT_EQ(read32(cpu0, kLvtTimer), 0x10030u) << "LVT mask stays set while disabled";
}

TEST_F(ApicTest, PriorityClassesTprAndNesting) {
  InterruptMessage message;
  message.vector = 0x51;
  cpu0.accept(message);
  message.vector = 0x52;
  cpu0.accept(message);
  write32(cpu0, kTpr, 0x50);
  EXPECT_FALSE(cpu0.has_pending_interrupt()) << "TPR class 5 blocks class 5";
  write32(cpu0, kTpr, 0x40);
  EXPECT_EQ(cpu0.acknowledge(), 0x52);
  EXPECT_FALSE(cpu0.has_pending_interrupt()) << "0x51 is the same class as 0x52 in service";
  message.vector = 0x90;
  cpu0.accept(message);
  EXPECT_EQ(cpu0.acknowledge(), 0x90);
  write32(cpu0, kEoi, 0);
  write32(cpu0, kEoi, 0);
  EXPECT_EQ(cpu0.acknowledge(), 0x51);
}

TEST_F(ApicTest, IllegalVectorsSetEsr) {
  InterruptMessage message;
  message.vector = 5;
  cpu0.accept(message);
  EXPECT_FALSE(cpu0.has_pending_interrupt());
  write32(cpu0, kEsr, 0);
  EXPECT_EQ(read32(cpu0, kEsr), 0x40u);
  write32(cpu0, kIcrLow, 0x00004003);  // fixed IPI with vector 3
  write32(cpu0, kEsr, 0);
  EXPECT_EQ(read32(cpu0, kEsr), 0x20u);
}

TEST_F(ApicTest, IpiThroughIcrReachesTheOtherCpu) {
  write32(cpu0, kIcrHigh, 1u << 24);
  write32(cpu0, kIcrLow, 0x00004061);
  EXPECT_EQ(kicks1, 1);
  EXPECT_EQ(cpu1.acknowledge(), 0x61);
  EXPECT_FALSE(cpu0.has_pending_interrupt());
  EXPECT_EQ(read32(cpu0, kIcrLow) & 0x1000, 0u) << "delivery status idle";
}

TEST_F(ApicTest, InitAndStartupIpisBootTheApplicationProcessor) {
  write32(cpu1, kTpr, 0x30);
  write32(cpu0, kIcrHigh, 1u << 24);
  write32(cpu0, kIcrLow, 0x0000c500);  // INIT assert, level
  write32(cpu0, kIcrLow, 0x00008500);  // INIT de-assert: ignored
  EXPECT_TRUE(cpu1.take_init());
  EXPECT_FALSE(cpu1.take_init());
  EXPECT_EQ(read32(cpu1, kTpr), 0u) << "INIT reset the APIC";
  EXPECT_EQ(read32(cpu1, 0x20), 1u << 24) << "but kept its ID";
  write32(cpu0, kIcrLow, 0x0000469a);  // SIPI, vector 0x9a
  EXPECT_EQ(cpu1.take_startup(), 0x9a);
  EXPECT_FALSE(cpu1.take_startup().has_value());
}

TEST_F(ApicTest, ShorthandsAndNmi) {
  write32(cpu0, kIcrLow, 0x000c4400);  // NMI to all excluding self
  EXPECT_TRUE(cpu1.take_nmi());
  EXPECT_FALSE(cpu0.take_nmi());
  write32(cpu0, kIcrLow, 0x00044077);  // fixed to self
  EXPECT_EQ(cpu0.acknowledge(), 0x77);
  write32(cpu0, kEoi, 0);
  EXPECT_FALSE(cpu1.has_pending_interrupt());
  write32(cpu0, kIcrLow, 0x00084078);  // all including self
  EXPECT_TRUE(cpu0.has_pending_interrupt());
  EXPECT_TRUE(cpu1.has_pending_interrupt());
}

TEST_F(ApicTest, LogicalFlatAndClusterDestinations) {
  write32(cpu0, kLdr, 0x01000000);
  write32(cpu1, kLdr, 0x02000000);
  EXPECT_TRUE(cpu1.matches_destination(0x02, true));
  EXPECT_FALSE(cpu0.matches_destination(0x02, true));
  EXPECT_TRUE(cpu0.matches_destination(0x03, true));
  write32(cpu1, kDfr, 0x0fffffff);  // cluster model
  write32(cpu1, kLdr, 0x21000000);  // cluster 2, member 1
  EXPECT_TRUE(cpu1.matches_destination(0x21, true));
  EXPECT_FALSE(cpu1.matches_destination(0x11, true));
}

TEST_F(ApicTest, LowestPriorityPicksTheLeastBusyCpu) {
  write32(cpu0, kTpr, 0x80);
  InterruptMessage message;
  message.vector = 0x99;
  message.mode = DeliveryMode::kLowestPriority;
  message.destination = 0xff;
  bus.deliver(message);
  EXPECT_TRUE(cpu1.has_pending_interrupt());
  EXPECT_FALSE(irr_has(cpu0, 0x99));
}

TEST_F(ApicTest, OneShotAndPeriodicTimer) {
  write32(cpu0, kDivide, 0x0);  // divide by 2
  write32(cpu0, kLvtTimer, 0x30);
  write32(cpu0, kInitialCount, 1000);  // 2000 ns
  clock.advance(1000);
  EXPECT_EQ(read32(cpu0, kCurrentCount), 500u);
  queue.run_expired();
  EXPECT_FALSE(cpu0.has_pending_interrupt());
  clock.advance(1000);
  queue.run_expired();
  EXPECT_EQ(cpu0.acknowledge(), 0x30);
  write32(cpu0, kEoi, 0);
  EXPECT_EQ(read32(cpu0, kCurrentCount), 0u);
  clock.advance(10'000);
  queue.run_expired();
  EXPECT_FALSE(cpu0.has_pending_interrupt()) << "one-shot fires once";

  write32(cpu0, kDivide, 0xb);           // divide by 1
  write32(cpu0, kLvtTimer, 0x20031);     // periodic
  write32(cpu0, kInitialCount, 50'000);  // 50 us
  for (int period = 0; period < 3; ++period) {
    clock.advance(50'000);
    queue.run_expired();
    EXPECT_EQ(cpu0.acknowledge(), 0x31);
    write32(cpu0, kEoi, 0);
  }
  write32(cpu0, kLvtTimer, 0x30031);  // masked
  EXPECT_EQ(read32(cpu0, kInitialCount), 50'000u) << "masking keeps the mode";
  clock.advance(50'000);
  queue.run_expired();
  EXPECT_FALSE(cpu0.has_pending_interrupt());
}

TEST_F(ApicTest, X2apicMsrsTscDeadlineAndSelfIpi) {
  EXPECT_FALSE(cpu1.read_msr(0x802).has_value()) << "x2APIC MSRs #GP in xAPIC mode";
  EXPECT_TRUE(cpu1.write_msr(0x1b, 0xfee00000 | (1u << 11) | (1u << 10)));
  EXPECT_EQ(cpu1.read_msr(0x802), 1u);
  EXPECT_EQ(cpu1.read_msr(0x80d), (0u << 16) | (1u << 1)) << "LDR derived from the ID";
  EXPECT_FALSE(cpu1.mmio_page().has_value());
  EXPECT_EQ(read32(cpu1, 0x20), 0xffffffffu) << "MMIO is gone in x2APIC mode";
  EXPECT_FALSE(cpu1.write_msr(0x1b, 0xfee00000 | (1u << 11))) << "x2APIC -> xAPIC is invalid";
  EXPECT_FALSE(cpu1.write_msr(0x80b, 1)) << "EOI takes only 0";
  EXPECT_FALSE(cpu1.write_msr(0x803, 0)) << "version is read-only";

  ASSERT_TRUE(cpu1.write_msr(0x83f, 0x66));
  EXPECT_EQ(cpu1.acknowledge(), 0x66);
  ASSERT_TRUE(cpu1.write_msr(0x80b, 0));

  ASSERT_TRUE(cpu1.write_msr(0x832, 0x40040));  // TSC-deadline mode, vector 0x40
  const uint64_t deadline = cpu1.tsc_at(clock.now_ns() + 5000);
  ASSERT_TRUE(cpu1.write_msr(LocalApic::kMsrTscDeadline, deadline));
  EXPECT_EQ(cpu1.read_msr(LocalApic::kMsrTscDeadline), deadline);
  clock.advance(4000);
  queue.run_expired();
  EXPECT_FALSE(cpu1.has_pending_interrupt());
  clock.advance(1000);
  queue.run_expired();
  EXPECT_EQ(cpu1.acknowledge(), 0x40);
  EXPECT_EQ(cpu1.read_msr(LocalApic::kMsrTscDeadline), 0u) << "cleared when it fired";

  ASSERT_TRUE(cpu1.write_msr(0x830, (0ull << 32) | 0x4055));  // x2APIC ICR to APIC 0
  EXPECT_EQ(cpu0.acknowledge(), 0x55);
}

TEST_F(ApicTest, Lint0ExtIntAsksThePic) {
  Pic8259Pair pic(cpu0.lint0());
  cpu0.set_ext_int_acknowledge([&] { return pic.acknowledge(); });
  for (auto [port, value] : {std::pair{0, 0x11}, {1, 0x20}, {1, 0x04}, {1, 0x01}, {1, 0x00}}) {
    testing::out8(pic.master_ports(), port, static_cast<uint8_t>(value));
  }
  pic.input(4).pulse();
  EXPECT_FALSE(cpu0.has_pending_interrupt()) << "LINT0 is masked at reset";
  write32(cpu0, kLvtLint0, 0x700);  // ExtINT
  EXPECT_TRUE(cpu0.has_pending_interrupt());
  EXPECT_EQ(cpu0.acknowledge(), 0x24);
  EXPECT_FALSE(cpu0.has_pending_interrupt());
}

TEST_F(ApicTest, GloballyDisabledApicPassesIntrThrough) {
  ASSERT_TRUE(cpu0.write_msr(0x1b, 0xfee00000));
  EXPECT_FALSE(cpu0.mmio_page().has_value());
  cpu0.lint0().set_level(true);
  EXPECT_TRUE(cpu0.has_pending_interrupt());
  cpu0.lint1().set_level(true);
  EXPECT_TRUE(cpu0.take_nmi());
}

TEST_F(ApicTest, IoapicEdgePinDeliversToTheDestination) {
  EXPECT_EQ((write32(ioapic, 0, 1), read32(ioapic, 0x10)), 0x00170020u);
  ioapic.set_irq(4, true);
  EXPECT_FALSE(cpu1.has_pending_interrupt()) << "pins are masked at reset";
  ioapic.set_irq(4, false);
  program_pin(4, (1ull << 56) | 0x34);
  ioapic.input(4).pulse();
  EXPECT_EQ(cpu1.acknowledge(), 0x34);
  EXPECT_FALSE(cpu0.has_pending_interrupt());
}

TEST_F(ApicTest, IoapicLevelPinWaitsForEoiAndRedeliversWhileAsserted) {
  program_pin(10, (0ull << 56) | (1 << 15) | 0x3a);
  ioapic.set_irq(10, true);
  EXPECT_TRUE(ioapic.redirection(10) & (1 << 14)) << "Remote IRR";
  EXPECT_EQ(cpu0.acknowledge(), 0x3a);
  EXPECT_TRUE((read32(cpu0, kTmr + 0x10) >> (0x3a - 32)) & 1) << "TMR marks level";
  ioapic.set_irq(10, true);  // still asserted: no second message before EOI
  EXPECT_FALSE(cpu0.has_pending_interrupt());
  write32(cpu0, kEoi, 0);  // broadcast: Remote IRR clears and the pin redelivers
  EXPECT_EQ(cpu0.acknowledge(), 0x3a);
  ioapic.set_irq(10, false);
  write32(cpu0, kEoi, 0);
  EXPECT_FALSE(ioapic.redirection(10) & (1 << 14));
  EXPECT_FALSE(cpu0.has_pending_interrupt());
}

TEST_F(ApicTest, IoapicUnmaskingAnAssertedLevelPinDelivers) {
  ioapic.set_irq(11, true);
  program_pin(11, (1 << 15) | 0x3b);
  EXPECT_EQ(cpu0.acknowledge(), 0x3b);
}

TEST_F(ApicTest, IoapicKeepsReadOnlyBitsAndTheDestination) {
  program_pin(3, 0xffffffffffffffffull);
  EXPECT_EQ(ioapic.redirection(3), 0xff0000000001afffull)
      << "delivery status and Remote IRR are read-only, reserved bits stay 0";
  write32(ioapic, 0, 0x01);
  write32(ioapic, 0x10, 0x12345678);  // version is read-only
  EXPECT_EQ(read32(ioapic, 0x10), 0x00170020u);
}

TEST_F(ApicTest, MsiIsDecodedAndDelivered) {
  bus.deliver_msi(0xfee01000, 0x4045);
  EXPECT_EQ(cpu1.acknowledge(), 0x45);
  bus.deliver_msi(0x12345678, 0x40);
  EXPECT_EQ(bus.undeliverable(), 1u);
}

TEST_F(ApicTest, SaveAndLoadLapicAndIoapic) {
  write32(cpu0, kTpr, 0x20);
  write32(cpu0, kDivide, 0xb);
  write32(cpu0, kLvtTimer, 0x20035);
  write32(cpu0, kInitialCount, 100'000);
  InterruptMessage message;
  message.vector = 0x61;
  cpu0.accept(message);
  program_pin(10, (1 << 15) | 0x3a);
  ioapic.set_irq(10, true);
  clock.advance(30'000);
  StateWriter writer;
  cpu0.save(writer);
  ioapic.save(writer);

  ManualClock other_clock(5);
  TimerQueue other_queue(other_clock);
  ApicBus other_bus;
  LocalApic copy(0, true, other_bus, other_queue, kTscHz);
  IoApic io_copy(0, other_bus);
  other_bus.attach(copy);
  StateReader reader(writer.data());
  ASSERT_TRUE(copy.load(reader).has_value());
  ASSERT_TRUE(io_copy.load(reader).has_value());
  EXPECT_EQ(read32(copy, kTpr), 0x20u);
  EXPECT_EQ(read32(copy, kCurrentCount), 70'000u);
  EXPECT_TRUE(io_copy.redirection(10) & (1 << 14));
  EXPECT_EQ(copy.acknowledge(), 0x61);
  write32(copy, kEoi, 0);
  EXPECT_EQ(copy.acknowledge(), 0x3a);
  write32(copy, kEoi, 0);
  other_clock.advance(69'000);
  other_queue.run_expired();
  EXPECT_FALSE(copy.has_pending_interrupt());
  other_clock.advance(1'000);
  other_queue.run_expired();
  EXPECT_EQ(copy.acknowledge(), 0x35) << "the periodic timer kept its phase";

  LocalApic wrong_id(7, false, other_bus, other_queue, kTscHz);
  StateReader again(writer.data());
  EXPECT_FALSE(wrong_id.load(again).has_value());
}

}  // namespace
}  // namespace lamina::hw
