#include "ahci/ata_disk.h"

#include <algorithm>

#include "ahci/ata_identify.h"

namespace lamina::ahci {
namespace {

// ATA command codes (ACS-3 Annex B, table B.2).
constexpr uint8_t kCommandRecalibrate = 0x10;
constexpr uint8_t kCommandReadSectors = 0x20;
constexpr uint8_t kCommandReadSectorsExt = 0x24;
constexpr uint8_t kCommandReadDmaExt = 0x25;
constexpr uint8_t kCommandWriteSectors = 0x30;
constexpr uint8_t kCommandWriteSectorsExt = 0x34;
constexpr uint8_t kCommandWriteDmaExt = 0x35;
constexpr uint8_t kCommandReadVerify = 0x40;
constexpr uint8_t kCommandReadVerifyExt = 0x42;
constexpr uint8_t kCommandSeek = 0x70;
constexpr uint8_t kCommandInitializeParameters = 0x91;
constexpr uint8_t kCommandReadDma = 0xc8;
constexpr uint8_t kCommandWriteDma = 0xca;
constexpr uint8_t kCommandStandbyImmediate = 0xe0;
constexpr uint8_t kCommandIdleImmediate = 0xe1;
constexpr uint8_t kCommandStandby = 0xe2;
constexpr uint8_t kCommandIdle = 0xe3;
constexpr uint8_t kCommandCheckPowerMode = 0xe5;
constexpr uint8_t kCommandSleep = 0xe6;
constexpr uint8_t kCommandFlushCache = 0xe7;
constexpr uint8_t kCommandFlushCacheExt = 0xea;
constexpr uint8_t kCommandIdentify = 0xec;
constexpr uint8_t kCommandSetFeatures = 0xef;

// SET FEATURES subcommands accepted (ACS-3 section 7.45.1, table 140).
constexpr uint8_t kFeatureEnableWriteCache = 0x02;
constexpr uint8_t kFeatureTransferMode = 0x03;
constexpr uint8_t kFeatureDisableLookAhead = 0x55;
constexpr uint8_t kFeatureDisableWriteCache = 0x82;
constexpr uint8_t kFeatureEnableLookAhead = 0xaa;

// Data moves through a bounce buffer of this size, so a command's host memory is bounded.
constexpr uint64_t kBounceBytes = 256 * 1024;

uint64_t lba28(const TaskFile& task) {
  return (task.lba & 0x00ffffff) | uint64_t{task.device & 0x0fu} << 24;
}
// A count of 0 means 256 sectors (28-bit commands) or 65536 (48-bit ones).
uint64_t count28(const TaskFile& task) { return (task.count & 0xff) == 0 ? 256 : task.count & 0xff; }
uint64_t count48(const TaskFile& task) { return task.count == 0 ? 65536 : task.count; }

}  // namespace

AtaDisk::AtaDisk(std::shared_ptr<storage::BlockDevice> disk, std::string serial)
    : disk_(std::move(disk)),
      serial_(std::move(serial)),
      capacity_sectors_(disk_->size() / storage::kSectorSize),
      bounce_(kBounceBytes) {}

CommandResult AtaDisk::execute(const TaskFile& task, PrdtCursor& data) {
  switch (task.command) {
    case kCommandIdentify: return identify(data);
    case kCommandReadDma: return transfer(lba28(task), count28(task), false, false, data);
    case kCommandReadSectors: return transfer(lba28(task), count28(task), false, true, data);
    case kCommandReadDmaExt: return transfer(task.lba, count48(task), false, false, data);
    case kCommandReadSectorsExt: return transfer(task.lba, count48(task), false, true, data);
    case kCommandWriteDma: return transfer(lba28(task), count28(task), true, false, data);
    case kCommandWriteSectors: return transfer(lba28(task), count28(task), true, false, data);
    case kCommandWriteDmaExt: return transfer(task.lba, count48(task), true, false, data);
    case kCommandWriteSectorsExt: return transfer(task.lba, count48(task), true, false, data);
    case kCommandReadVerify:
    case kCommandReadVerifyExt: {
      const bool ext = task.command == kCommandReadVerifyExt;
      const uint64_t lba = ext ? task.lba : lba28(task);
      const uint64_t count = ext ? count48(task) : count28(task);
      if (lba > capacity_sectors_ || count > capacity_sectors_ - lba) {
        return {kStatusGood | kStatusError, kErrorIdNotFound, 0, false};
      }
      return {};
    }
    case kCommandFlushCache:
    case kCommandFlushCacheExt: return flush();
    case kCommandSetFeatures: return set_features(task);
    // Always active (ACS-3 section 7.8: count 0xFF is "active or idle").
    case kCommandCheckPowerMode: return {kStatusGood, 0, 0xff, false};
    case kCommandRecalibrate:
    case kCommandSeek:
    case kCommandInitializeParameters:
    case kCommandStandbyImmediate:
    case kCommandIdleImmediate:
    case kCommandStandby:
    case kCommandIdle:
    case kCommandSleep: return {};
    default:
      return CommandResult::aborted();
  }
}

CommandResult AtaDisk::identify(PrdtCursor& data) const {
  IdentifyData id;
  // Fixed, non-removable ATA device (ACS-3 table 45, word 0).
  id.set(0, 0x0040);
  // A CHS geometry of 16 heads and 63 sectors for firmware that still asks (words 1, 3, 6).
  const uint64_t cylinders = std::clamp<uint64_t>(capacity_sectors_ / (16 * 63), 1, 16383);
  id.set(1, static_cast<uint16_t>(cylinders));
  id.set(3, 16);
  id.set(6, 63);
  id.set_string(10, 10, serial_);
  id.set_string(23, 4, "1.0");
  id.set_string(27, 20, "Lamina SATA disk");
  id.set(47, 0x8000);  // READ/WRITE MULTIPLE: not supported
  id.set(49, 0x0300);  // LBA and DMA supported
  id.set(50, 0x4000);
  id.set(53, 0x0006);  // words 64-70 and 88 are valid
  id.set(54, static_cast<uint16_t>(cylinders));
  id.set(55, 16);
  id.set(56, 63);
  const uint64_t chs_sectors = cylinders * 16 * 63;
  id.set(57, static_cast<uint16_t>(chs_sectors));
  id.set(58, static_cast<uint16_t>(chs_sectors >> 16));
  id.set(63, 0x0007);  // multiword DMA 0-2
  id.set(64, 0x0003);  // PIO 3 and 4
  for (size_t word = 65; word <= 68; ++word) id.set(word, 120);
  id.set(76, 0x0002);  // SATA Gen1 (1.5 Gb/s): a non-zero word 76 says the device is SATA
  id.set(80, 0x01f0);  // ATA/ATAPI-4 to ACS (major versions 4-8)
  // Supported and enabled: NOP, write cache, look-ahead (82/85); 48-bit LBA, FLUSH CACHE
  // (EXT) (83/86); words 84/87 carry their validity bits only.
  id.set(82, 0x4060);
  id.set(83, 0x7400);
  id.set(84, 0x4000);
  id.set(85, 0x4060);
  id.set(86, 0x3400);
  id.set(87, 0x4000);
  id.set(88, 0x203f);  // UDMA 0-5 supported, mode 5 selected
  id.set(93, 0);       // no PATA cable report on SATA
  id.set_capacity(capacity_sectors_);
  const auto bytes = id.bytes();
  if (auto moved = data.to_guest(bytes); !moved) return CommandResult::aborted();
  return {kStatusGood, 0, 0, true};
}

CommandResult AtaDisk::transfer(uint64_t lba, uint64_t sectors, bool write, bool pio,
                                PrdtCursor& data) {
  if (lba > capacity_sectors_ || sectors > capacity_sectors_ - lba) {
    return {kStatusGood | kStatusError, kErrorIdNotFound, 0, false};
  }
  if (write && disk_->read_only()) return CommandResult::aborted();
  uint64_t offset = lba * storage::kSectorSize;
  uint64_t left = sectors * storage::kSectorSize;
  while (left > 0) {
    const uint64_t length = std::min<uint64_t>(left, bounce_.size());
    std::span<std::byte> chunk(bounce_.data(), length);
    if (write) {
      if (auto moved = data.from_guest(chunk); !moved) return CommandResult::aborted();
      if (auto written = disk_->write(offset, chunk); !written) {
        if (log_limiter_.allow()) log_warn("ahci: disk write failed: {}", written.error().message());
        return {kStatusGood | kStatusError, kErrorAbort, 0, false};
      }
    } else {
      if (auto read = disk_->read(offset, chunk); !read) {
        if (log_limiter_.allow()) log_warn("ahci: disk read failed: {}", read.error().message());
        return {kStatusGood | kStatusError, kErrorUncorrectable, 0, false};
      }
      if (auto moved = data.to_guest(chunk); !moved) return CommandResult::aborted();
    }
    offset += length;
    left -= length;
  }
  return {kStatusGood, 0, 0, pio && !write};
}

CommandResult AtaDisk::flush() {
  if (disk_->read_only()) return {};
  if (auto flushed = disk_->flush(); !flushed) {
    if (log_limiter_.allow()) log_warn("ahci: disk flush failed: {}", flushed.error().message());
    return CommandResult::aborted();
  }
  return {};
}

CommandResult AtaDisk::set_features(const TaskFile& task) {
  switch (task.features & 0xff) {
    case kFeatureEnableWriteCache:
    case kFeatureDisableWriteCache:
    case kFeatureTransferMode:
    case kFeatureDisableLookAhead:
    case kFeatureEnableLookAhead: return {};
    default: return CommandResult::aborted();
  }
}

}  // namespace lamina::ahci
