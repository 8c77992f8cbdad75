// The virtio-pci modern transport driven through its PCI config space and BARs, with real
// Virtqueues laid out in guest RAM by the test driver: identity and capabilities, feature
// negotiation, queue setup, notifications, MSI-X and INTx with the ISR, reset, hostile
// layouts, odd access widths and the PCI configuration access window.

#include "virtio/virtio_pci.h"

#include <gtest/gtest.h>

#include "pci_harness.h"
#include "probe_device.h"
#include "virtqueue_driver.h"

namespace lamina::virtio {
namespace {

using namespace pci;
using testing::PciHarness;
using testing::ProbeDevice;
using testing::ProbeLog;
using testing::TestDriver;

constexpr uint64_t kRamSize = 4 << 20;
constexpr uint64_t kVersion1 = uint64_t{1} << 32;

class VirtioPciTest : public ::testing::Test {
 protected:
  VirtioPciTest()
      : memory_(std::move(*GuestMemory::create({{0, kRamSize}}))),
        dma_(memory_),
        harness_(std::make_unique<ProbeDevice>(log_), dma_) {}

  // A ready device: VERSION_1 + device bit 0 negotiated, queues 0 and 1 enabled.
  void bring_up(uint16_t vector0 = kNoVector, uint16_t vector1 = kNoVector) {
    ASSERT_TRUE(harness_.negotiate(kVersion1 | 1));
    harness_.setup_queue(0, queue0_.layout(), vector0);
    harness_.setup_queue(1, queue1_.layout(), vector1);
    harness_.driver_ok();
    ASSERT_EQ(harness_.status() & status::kDeviceNeedsReset, 0);
  }

  GuestMemory memory_;
  DmaMemory dma_;
  ProbeLog log_;
  ProbeLog restored_log_;  // for a device that replaces the first one (outlives the harness)
  PciHarness harness_;
  TestDriver queue0_{memory_, 64, 0x10000, 0x100000};
  TestDriver queue1_{memory_, 32, 0x20000, 0x200000};
};

TEST_F(VirtioPciTest, IdentityCapabilitiesAndBars) {
  EXPECT_EQ(harness_.config(0x00), 0x10411af4u) << "1AF4:1040 + type 1";
  EXPECT_EQ(harness_.config(0x08) & 0xff, 1u) << "revision 1: non-transitional";
  EXPECT_EQ(harness_.config(0x08) >> 8, 0x020000u) << "class: Ethernet for a net device";
  EXPECT_EQ(harness_.config(0x2c), 0x10411af4u) << "subsystem";
  EXPECT_GE(harness_.config(0x2e, 2), 0x40u);
  EXPECT_EQ(harness_.config(0x3d, 1), 1u) << "INTA";
  for (auto type : {CapabilityType::kCommon, CapabilityType::kNotify, CapabilityType::kIsr,
                    CapabilityType::kDevice, CapabilityType::kPciConfig}) {
    ASSERT_TRUE(harness_.has_capability(type)) << static_cast<int>(type);
  }
  EXPECT_EQ(harness_.capability(CapabilityType::kCommon).bar, kRegisterBar);
  EXPECT_GE(harness_.capability(CapabilityType::kCommon).length, 0x38u);
  EXPECT_EQ(harness_.capability(CapabilityType::kIsr).length, 1u);
  EXPECT_EQ(harness_.capability(CapabilityType::kDevice).length, 8u);
  // 4.1.4.4: every queue's doorbell (notify_off * multiplier + 2) lies inside the structure.
  EXPECT_GE(harness_.capability(CapabilityType::kNotify).length,
            2 * harness_.notify_multiplier() + 2);
  EXPECT_NE(harness_.msix_capability(), 0);
  EXPECT_EQ(harness_.config(harness_.msix_capability() + 2, 2) & 0x7ff, 3u)
      << "4 vectors: configuration + 3 queues";
  // The register BAR is 64-bit memory; sizing reads back its size.
  harness_.set_config(0x04, 0, 2);
  harness_.set_config(0x10 + 4 * kRegisterBar, 0xffffffff);
  const uint32_t low = harness_.config(0x10 + 4 * kRegisterBar);
  EXPECT_EQ(low & 0x6, 0x4u) << "64-bit memory BAR";
  EXPECT_EQ(~(low & ~0xfu) + 1, harness_.function().register_bar_size());
}

TEST_F(VirtioPciTest, FeatureNegotiation) {
  const uint64_t offered = harness_.device_features();
  EXPECT_EQ(offered & ProbeDevice::kFeatures, ProbeDevice::kFeatures);
  EXPECT_TRUE(offered & kVersion1);
  EXPECT_TRUE(offered & kFeatureIndirectDescriptors);
  EXPECT_TRUE(offered & kFeatureRingEventIndex);
  EXPECT_FALSE(offered & (uint64_t{1} << 30)) << "transport bits are the transport's";
  harness_.set_common(common::kDeviceFeatureSelect, 4, 7);
  EXPECT_EQ(harness_.common(common::kDeviceFeature, 4), 0u) << "no feature word 7";

  const uint64_t wanted = kVersion1 | (uint64_t{1} << 51) | 1 | kFeatureRingEventIndex;
  ASSERT_TRUE(harness_.negotiate(wanted));
  harness_.set_common(common::kDriverFeatureSelect, 4, 1);
  EXPECT_EQ(harness_.common(common::kDriverFeature, 4), wanted >> 32);
  // Features are fixed once FEATURES_OK is set.
  harness_.set_driver_features(kVersion1);
  harness_.set_common(common::kDriverFeatureSelect, 4, 0);
  EXPECT_EQ(harness_.common(common::kDriverFeature, 4), wanted & 0xffffffff);
  harness_.driver_ok();
  std::lock_guard lock(log_.mutex);
  ASSERT_TRUE(log_.activated_features);
  EXPECT_EQ(*log_.activated_features, wanted);
  EXPECT_EQ(log_.activations, 1);
}

TEST_F(VirtioPciTest, FeaturesOkRefusedForUnofferedBitsOrWithoutVersion1) {
  EXPECT_FALSE(harness_.negotiate(kVersion1 | (uint64_t{1} << 7))) << "bit 7 was not offered";
  EXPECT_FALSE(harness_.negotiate(1)) << "a modern device needs VERSION_1";
  EXPECT_EQ(harness_.status(), status::kAcknowledge | status::kDriver);
  // DRIVER_OK without FEATURES_OK is a protocol violation: NEEDS_RESET, no activation.
  harness_.set_status(status::kAcknowledge | status::kDriver | status::kDriverOk);
  EXPECT_TRUE(harness_.status() & status::kDeviceNeedsReset);
  EXPECT_EQ(log_.activations, 0);
  // A reset recovers.
  EXPECT_TRUE(harness_.negotiate(kVersion1));
  EXPECT_EQ(harness_.status() & status::kDeviceNeedsReset, 0);
}

TEST_F(VirtioPciTest, QueueSetupAndNotifications) {
  EXPECT_EQ(harness_.common(common::kNumQueues, 2), 3u);
  harness_.set_common(common::kQueueSelect, 2, 1);
  EXPECT_EQ(harness_.common(common::kQueueSize, 2), 64u) << "100 rounded down to a power of 2";
  harness_.set_common(common::kQueueSelect, 2, 2);
  EXPECT_EQ(harness_.common(common::kQueueSize, 2), 256u);
  harness_.set_common(common::kQueueSelect, 2, 3);
  EXPECT_EQ(harness_.common(common::kQueueSize, 2), 0u) << "no queue 3";

  ASSERT_TRUE(harness_.negotiate(kVersion1));
  harness_.setup_queue(0, queue0_.layout());
  harness_.set_common(common::kQueueSelect, 2, 0);
  EXPECT_EQ(harness_.common(common::kQueueEnable, 2), 1u);
  EXPECT_EQ(harness_.common(common::kQueueDescriptor, 8), queue0_.layout().descriptor_table);
  EXPECT_EQ(harness_.common(common::kQueueDevice, 4), queue0_.layout().device_area);
  // A kick before DRIVER_OK is held and delivered once the device runs.
  harness_.kick(0);
  EXPECT_TRUE(log_.notified.empty());
  harness_.setup_queue(1, queue1_.layout());
  harness_.driver_ok();
  ASSERT_EQ(log_.notified, std::vector<uint16_t>{0});
  harness_.kick(1);
  harness_.kick(0);
  EXPECT_EQ(log_.notified, (std::vector<uint16_t>{0, 1, 0}));
  harness_.kick(2);  // never enabled
  EXPECT_EQ(log_.notified.size(), 3u);

  // The rings the device sees are the driver's.
  ASSERT_NE(log_.transport, nullptr);
  Virtqueue* ring = log_.transport->queue(0);
  ASSERT_NE(ring, nullptr);
  EXPECT_EQ(ring->layout().descriptor_table, queue0_.layout().descriptor_table);
  EXPECT_EQ(log_.transport->queue(2), nullptr);
  EXPECT_EQ(log_.transport->queue(9), nullptr);

  // Layout writes after DRIVER_OK are ignored.
  const uint64_t ignored = harness_.function().ignored_accesses();
  harness_.set_common(common::kQueueSelect, 2, 0);
  harness_.set_common(common::kQueueDescriptor, 4, 0x30000);
  EXPECT_EQ(harness_.common(common::kQueueDescriptor, 4), queue0_.layout().descriptor_table);
  EXPECT_GT(harness_.function().ignored_accesses(), ignored);
}

TEST_F(VirtioPciTest, IntxAndIsrWhenMsixIsOff) {
  bring_up();
  VirtioTransport& transport = *log_.transport;
  EXPECT_FALSE(harness_.intx().level());
  transport.signal_queue(0);
  EXPECT_TRUE(harness_.intx().level());
  EXPECT_TRUE(harness_.config(0x06, 2) & 0x08) << "Status.InterruptStatus";
  EXPECT_EQ(harness_.read_isr(), kIsrQueue);
  EXPECT_FALSE(harness_.intx().level()) << "reading the ISR de-asserts INTx";
  EXPECT_EQ(harness_.read_isr(), 0) << "read-to-clear";

  const uint64_t generation = harness_.common(common::kConfigGeneration, 1);
  transport.signal_config_change();
  EXPECT_TRUE(harness_.intx().level());
  EXPECT_EQ(harness_.common(common::kConfigGeneration, 1), (generation + 1) & 0xff);
  EXPECT_EQ(harness_.read_isr(), kIsrConfig);
  // Command.InterruptDisable masks the line but not the ISR.
  harness_.set_config(0x04, 0x0406, 2);
  transport.signal_queue(1);
  EXPECT_FALSE(harness_.intx().level());
  harness_.set_config(0x04, 0x0006, 2);
  EXPECT_TRUE(harness_.intx().level());
  EXPECT_EQ(harness_.read_isr(), kIsrQueue);
  EXPECT_TRUE(harness_.msi().messages().empty());
}

TEST_F(VirtioPciTest, MsixVectorsReplaceIntx) {
  bring_up(1, 2);
  harness_.set_common(common::kConfigMsixVector, 2, 0);
  harness_.enable_msix(4);
  VirtioTransport& transport = *log_.transport;
  transport.signal_queue(1);
  transport.signal_queue(0);
  transport.signal_config_change();
  using Message = std::pair<uint64_t, uint32_t>;
  EXPECT_EQ(harness_.msi().messages(),
            (std::vector<Message>{{0xfee02000, 0x42}, {0xfee01000, 0x41}, {0xfee00000, 0x40}}));
  EXPECT_FALSE(harness_.intx().level()) << "no INTx with MSI-X on";
  EXPECT_EQ(harness_.read_isr(), kIsrConfig) << "the configuration bit is still set (4.1.4.5)";

  // A vector the table does not have reads back as NO_VECTOR and signals nothing.
  harness_.set_common(common::kQueueSelect, 2, 0);
  harness_.set_common(common::kQueueMsixVector, 2, 9);
  EXPECT_EQ(harness_.common(common::kQueueMsixVector, 2), kNoVector);
  harness_.msi().clear();
  transport.signal_queue(0);
  EXPECT_TRUE(harness_.msi().messages().empty());
  EXPECT_FALSE(harness_.intx().level());
  EXPECT_EQ(harness_.read_isr(), 0);

  // A masked vector stays pending until unmasked.
  harness_.write_msix(2 * 16 + 12, 1);
  transport.signal_queue(1);
  EXPECT_TRUE(harness_.msi().messages().empty());
  harness_.write_msix(2 * 16 + 12, 0);
  EXPECT_EQ(harness_.msi().messages(), (std::vector<Message>{{0xfee02000, 0x42}}));
}

TEST_F(VirtioPciTest, ResetClearsEverythingAndWaitsForTheDevice) {
  bring_up(0, 1);
  harness_.function().device_error("test error");
  ASSERT_TRUE(harness_.status() & status::kDeviceNeedsReset);
  const int resets = log_.resets;
  harness_.set_status(0);
  EXPECT_EQ(harness_.status(), 0) << "reset is complete when 0 reads back";
  EXPECT_EQ(log_.resets, resets + 1);
  EXPECT_EQ(log_.transport, nullptr);
  EXPECT_EQ(harness_.function().queue(0), nullptr);
  harness_.set_common(common::kQueueSelect, 2, 0);
  EXPECT_EQ(harness_.common(common::kQueueEnable, 2), 0u);
  EXPECT_EQ(harness_.common(common::kQueueSize, 2), 64u);
  EXPECT_EQ(harness_.common(common::kQueueMsixVector, 2), kNoVector);
  EXPECT_EQ(harness_.common(common::kConfigMsixVector, 2), kNoVector);
  EXPECT_EQ(harness_.common(common::kQueueDescriptor, 8), 0u);
  EXPECT_EQ(harness_.read_isr(), 0);
  // And the device comes up again.
  bring_up();
  EXPECT_EQ(log_.activations, 2);
}

TEST_F(VirtioPciTest, HostileQueueLayoutsNeedReset) {
  const VirtqueueLayout good = queue0_.layout();
  struct Case {
    const char* what;
    VirtqueueLayout layout;
  };
  const Case cases[] = {
      {"descriptors outside RAM", {64, kRamSize - 0x100, good.driver_area, good.device_area}},
      {"misaligned descriptors",
       {64, good.descriptor_table + 8, good.driver_area, good.device_area}},
      {"used ring wraps", {64, good.descriptor_table, good.driver_area, ~uint64_t{3}}},
      {"size not a power of two", {48, good.descriptor_table, good.driver_area, good.device_area}},
      {"size above the maximum", {128, good.descriptor_table, good.driver_area, good.device_area}},
      {"size zero", {0, good.descriptor_table, good.driver_area, good.device_area}},
  };
  for (const Case& bad : cases) {
    SCOPED_TRACE(bad.what);
    ASSERT_TRUE(harness_.negotiate(kVersion1));
    const int rising = harness_.intx().rising();
    harness_.setup_queue(0, bad.layout);
    EXPECT_TRUE(harness_.status() & status::kDeviceNeedsReset);
    harness_.set_common(common::kQueueSelect, 2, 0);
    EXPECT_EQ(harness_.common(common::kQueueEnable, 2), 0u);
    EXPECT_GT(harness_.intx().rising(), rising) << "a configuration interrupt";
    EXPECT_EQ(harness_.read_isr(), kIsrConfig);
    // The driver cannot start a broken device.
    harness_.driver_ok();
    EXPECT_EQ(log_.activations, 0);
  }
  // Enabling a queue before FEATURES_OK is refused the same way.
  harness_.set_status(0);
  harness_.set_status(status::kAcknowledge | status::kDriver);
  harness_.setup_queue(0, good);
  EXPECT_TRUE(harness_.status() & status::kDeviceNeedsReset);
}

TEST_F(VirtioPciTest, FailedActivationAndDeviceErrorsNeedReset) {
  log_.fail_activation = true;
  ASSERT_TRUE(harness_.negotiate(kVersion1));
  harness_.setup_queue(0, queue0_.layout());
  harness_.driver_ok();
  EXPECT_TRUE(harness_.status() & status::kDeviceNeedsReset);
  harness_.kick(0);
  EXPECT_TRUE(log_.notified.empty()) << "a device that failed to start gets no kicks";
  log_.fail_activation = false;
  bring_up();
  log_.transport->device_error("the ring broke");
  EXPECT_TRUE(harness_.status() & status::kDeviceNeedsReset);
  harness_.kick(0);
  EXPECT_TRUE(log_.notified.empty());
  // The driver's status writes cannot clear the device's bit.
  harness_.driver_ok();
  EXPECT_TRUE(harness_.status() & status::kDeviceNeedsReset);
}

TEST_F(VirtioPciTest, AccessWidthsAndIgnoredAccesses) {
  harness_.set_common(common::kQueueSelect, 2, 2);
  // A 64-bit field read whole or in halves; a 32-bit read spanning two 16-bit fields.
  harness_.set_common(common::kQueueDescriptor, 8, 0x123456789abcdef0);
  EXPECT_EQ(harness_.common(common::kQueueDescriptor, 8), 0x123456789abcdef0u);
  EXPECT_EQ(harness_.common(common::kQueueDescriptor + 4, 4), 0x12345678u);
  EXPECT_EQ(harness_.common(common::kQueueSelect, 4), 2u | (256u << 16))
      << "queue_select and queue_size";
  EXPECT_EQ(harness_.common(common::kNumQueues, 1), 3u);

  const uint64_t before = harness_.function().ignored_accesses();
  harness_.set_common(common::kQueueSelect + 1, 1, 0);  // half a field
  harness_.set_common(common::kNumQueues, 2, 9);        // read-only
  harness_.set_common(0x100, 4, 1);                     // past the structure
  EXPECT_EQ(harness_.common(0x100, 4), 0xffffffffu);
  harness_.write(CapabilityType::kNotify, 1, 2, 0);  // misaligned doorbell
  harness_.write(CapabilityType::kIsr, 0, 1, 0xff);  // the ISR is read-only
  harness_.write(CapabilityType::kDevice, 6, 4, 0);  // past the 8 config bytes
  EXPECT_EQ(harness_.function().ignored_accesses(), before + 7);
  EXPECT_EQ(harness_.common(common::kQueueSelect, 2), 2u);
  EXPECT_EQ(harness_.common(common::kNumQueues, 2), 3u);

  // Device configuration reaches the device at its offsets.
  harness_.write(CapabilityType::kDevice, 4, 4, 0xa1b2c3d4);
  EXPECT_EQ(harness_.read(CapabilityType::kDevice, 4, 2), 0xc3d4u);
  EXPECT_EQ(harness_.read(CapabilityType::kDevice, 7, 1), 0xa1u);
}

TEST_F(VirtioPciTest, PciConfigurationAccessWindow) {
  const uint8_t cap = harness_.capability(CapabilityType::kPciConfig).at;
  auto point = [&](uint8_t bar, uint32_t offset, uint32_t length) {
    harness_.set_config(cap + kCapBar, bar, 1);
    harness_.set_config(cap + kCapOffset, offset);
    harness_.set_config(cap + kCapLength, length);
  };
  const uint32_t common_offset = harness_.capability(CapabilityType::kCommon).offset;
  point(kRegisterBar, common_offset + common::kNumQueues, 2);
  EXPECT_EQ(harness_.config(cap + kPciCfgCapData, 4) & 0xffff, 3u);
  // Writes go through too: the device status.
  point(kRegisterBar, common_offset + common::kDeviceStatus, 1);
  harness_.set_config(cap + kPciCfgCapData, status::kAcknowledge);
  EXPECT_EQ(harness_.status(), status::kAcknowledge);
  // ISR reads through the window clear it, like a BAR read.
  bring_up();
  log_.transport->signal_queue(0);
  point(kRegisterBar, harness_.capability(CapabilityType::kIsr).offset, 1);
  EXPECT_EQ(harness_.config(cap + kPciCfgCapData, 1), kIsrQueue);
  EXPECT_FALSE(harness_.intx().level());
  EXPECT_EQ(harness_.read_isr(), 0);
  // A bad window (length 3, misaligned, outside the BAR, another BAR) does nothing.
  const uint64_t before = harness_.function().ignored_accesses();
  point(kRegisterBar, 0, 3);
  (void)harness_.config(cap + kPciCfgCapData);
  point(kRegisterBar, 1, 2);
  (void)harness_.config(cap + kPciCfgCapData);
  point(kRegisterBar, 0xfffffffc, 4);
  harness_.set_config(cap + kPciCfgCapData, 0);
  point(0, 0, 4);
  (void)harness_.config(cap + kPciCfgCapData);
  EXPECT_EQ(harness_.function().ignored_accesses(), before + 4);
}

TEST_F(VirtioPciTest, SaveAndLoadRoundTrip) {
  bring_up(1, 2);
  harness_.set_common(common::kConfigMsixVector, 2, 0);
  harness_.enable_msix(4);
  log_.saved_marker = 0x5a5a;
  log_.transport->signal_config_change();
  StateWriter writer;
  harness_.function().save(writer);
  ASSERT_TRUE(writer.complete());

  ProbeLog& restored_log = restored_log_;
  harness_.replace(std::make_unique<ProbeDevice>(restored_log), dma_);
  StateReader reader(writer.data());
  ASSERT_TRUE(harness_.function().load(reader)) << "load";
  EXPECT_EQ(restored_log.saved_marker, 0x5a5au);
  EXPECT_EQ(restored_log.activations, 1) << "a running device is activated again";
  ASSERT_TRUE(restored_log.activated_features);
  EXPECT_EQ(*restored_log.activated_features, kVersion1 | 1);
  EXPECT_EQ(harness_.status(),
            status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk);
  harness_.set_common(common::kQueueSelect, 2, 1);
  EXPECT_EQ(harness_.common(common::kQueueEnable, 2), 1u);
  EXPECT_EQ(harness_.common(common::kQueueDriver, 8), queue1_.layout().driver_area);
  EXPECT_EQ(harness_.common(common::kQueueMsixVector, 2), 2u);
  EXPECT_EQ(harness_.common(common::kConfigGeneration, 1), 1u);
  harness_.msi().clear();
  restored_log.transport->signal_queue(1);
  EXPECT_EQ(harness_.msi().messages(),
            (std::vector<std::pair<uint64_t, uint32_t>>{{0xfee02000, 0x42}}))
      << "the MSI-X table came back";
  harness_.kick(1);
  EXPECT_EQ(restored_log.notified, std::vector<uint16_t>{1});

  // Truncated and corrupted streams fail cleanly and leave a reset function.
  for (size_t cut : {size_t{10}, writer.data().size() / 2, writer.data().size() - 3}) {
    StateReader truncated(std::span(writer.data()).first(cut));
    EXPECT_FALSE(harness_.function().load(truncated)) << cut;
    EXPECT_EQ(harness_.status(), 0);
  }
  std::vector<std::byte> bad = writer.data();
  size_t flipped = 0;
  for (size_t at = 0; at < bad.size(); at += 7) {
    std::vector<std::byte> mutated = bad;
    mutated[at] ^= std::byte{0x5a};
    StateReader reader2(mutated);
    if (!harness_.function().load(reader2)) ++flipped;
  }
  EXPECT_GT(flipped, 0u);
}

}  // namespace
}  // namespace lamina::virtio
