#pragma once
// The register layout Lamina's virtio-pci modern transport presents (virtio 1.2 section 4.1):
// the spec's field offsets and bit values, and where this implementation puts each structure in
// its BARs. Shared by the transport and its tests, which drive the registers as a driver would.

#include <cstdint>

namespace lamina::virtio::pci {

// PCI identity (4.1.2): vendor 0x1AF4, device 0x1040 + virtio device type, revision 1 (a
// non-transitional device), subsystem device >= 0x40 (we use the same 0x1040 + type).
inline constexpr uint16_t kVendorId = 0x1af4;
inline constexpr uint16_t kDeviceIdBase = 0x1040;
inline constexpr uint8_t kRevision = 1;

// Vendor-specific capability (4.1.4): struct virtio_pci_cap.
inline constexpr uint8_t kCapabilityVendor = 0x09;
inline constexpr uint8_t kCapCfgType = 3;  // u8 cfg_type
inline constexpr uint8_t kCapBar = 4;      // u8 bar
inline constexpr uint8_t kCapId = 5;       // u8 id
inline constexpr uint8_t kCapOffset = 8;   // le32 offset within the BAR
inline constexpr uint8_t kCapLength = 12;  // le32 length
inline constexpr uint8_t kCapSize = 16;
// struct virtio_pci_notify_cap: + le32 notify_off_multiplier.
inline constexpr uint8_t kNotifyCapMultiplier = 16;
inline constexpr uint8_t kNotifyCapSize = 20;
// struct virtio_pci_cfg_cap: + u8 pci_cfg_data[4] (4.1.4.8).
inline constexpr uint8_t kPciCfgCapData = 16;
inline constexpr uint8_t kPciCfgCapSize = 20;

enum class CapabilityType : uint8_t {
  kCommon = 1,
  kNotify = 2,
  kIsr = 3,
  kDevice = 4,
  kPciConfig = 5,
};

// struct virtio_pci_common_cfg (4.1.4.3), including the 1.2 queue_notif_config_data and
// queue_reset fields (read as 0: NOTIF_CONFIG_DATA and RING_RESET are not offered).
namespace common {
inline constexpr uint16_t kDeviceFeatureSelect = 0x00;  // le32 rw
inline constexpr uint16_t kDeviceFeature = 0x04;        // le32 ro
inline constexpr uint16_t kDriverFeatureSelect = 0x08;  // le32 rw
inline constexpr uint16_t kDriverFeature = 0x0c;        // le32 rw
inline constexpr uint16_t kConfigMsixVector = 0x10;     // le16 rw
inline constexpr uint16_t kNumQueues = 0x12;            // le16 ro
inline constexpr uint16_t kDeviceStatus = 0x14;         // u8 rw
inline constexpr uint16_t kConfigGeneration = 0x15;     // u8 ro
inline constexpr uint16_t kQueueSelect = 0x16;          // le16 rw
inline constexpr uint16_t kQueueSize = 0x18;            // le16 rw
inline constexpr uint16_t kQueueMsixVector = 0x1a;      // le16 rw
inline constexpr uint16_t kQueueEnable = 0x1c;          // le16 rw
inline constexpr uint16_t kQueueNotifyOff = 0x1e;       // le16 ro
inline constexpr uint16_t kQueueDescriptor = 0x20;      // le64 rw
inline constexpr uint16_t kQueueDriver = 0x28;          // le64 rw
inline constexpr uint16_t kQueueDevice = 0x30;          // le64 rw
inline constexpr uint16_t kQueueNotifyData = 0x38;      // le16 ro
inline constexpr uint16_t kQueueReset = 0x3a;           // le16 rw
inline constexpr uint16_t kSize = 0x3c;
}  // namespace common

// MSI-X "no vector" (4.1.4.3).
inline constexpr uint16_t kNoVector = 0xffff;

// Device status bits (2.1).
namespace status {
inline constexpr uint8_t kAcknowledge = 1;
inline constexpr uint8_t kDriver = 2;
inline constexpr uint8_t kDriverOk = 4;
inline constexpr uint8_t kFeaturesOk = 8;
inline constexpr uint8_t kDeviceNeedsReset = 64;
inline constexpr uint8_t kFailed = 128;
}  // namespace status

// ISR status bits (4.1.4.5).
inline constexpr uint8_t kIsrQueue = 1;
inline constexpr uint8_t kIsrConfig = 2;

// Where this transport puts things. Registers: one 64-bit memory BAR holding every structure
// at page-aligned offsets (so a driver may map each one separately); MSI-X: a 32-bit memory
// BAR of its own with the table at 0 and the PBA after it.
inline constexpr unsigned kRegisterBar = 4;
inline constexpr unsigned kMsixBar = 1;
inline constexpr uint64_t kCommonOffset = 0x0000;
inline constexpr uint64_t kIsrOffset = 0x1000;
inline constexpr uint64_t kDeviceConfigOffset = 0x2000;
inline constexpr uint64_t kDeviceConfigMax = 0x1000;
inline constexpr uint64_t kNotifyOffset = 0x3000;
// queue_notify_off is the queue index, so queue q's doorbell is at kNotifyOffset + 4 * q.
inline constexpr uint32_t kNotifyOffMultiplier = 4;

}  // namespace lamina::virtio::pci
