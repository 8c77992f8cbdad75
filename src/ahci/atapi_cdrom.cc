#include "ahci/atapi_cdrom.h"

#include <algorithm>
#include <cstring>

#include "ahci/ata_identify.h"
#include "base/byte_order.h"

namespace lamina::ahci {
namespace {

// ATA commands a PACKET device answers (ACS-3 Annex B).
constexpr uint8_t kCommandDeviceReset = 0x08;
constexpr uint8_t kCommandPacket = 0xa0;
constexpr uint8_t kCommandIdentifyPacket = 0xa1;
constexpr uint8_t kCommandCheckPowerMode = 0xe5;
constexpr uint8_t kCommandSetFeatures = 0xef;

// SCSI operation codes (SPC-3 and MMC-6).
constexpr uint8_t kTestUnitReady = 0x00;
constexpr uint8_t kRequestSense = 0x03;
constexpr uint8_t kInquiry = 0x12;
constexpr uint8_t kStartStopUnit = 0x1b;
constexpr uint8_t kPreventAllowRemoval = 0x1e;
constexpr uint8_t kReadCapacity = 0x25;
constexpr uint8_t kRead10 = 0x28;
constexpr uint8_t kSeek10 = 0x2b;
constexpr uint8_t kReadToc = 0x43;
constexpr uint8_t kGetConfiguration = 0x46;
constexpr uint8_t kGetEventStatus = 0x4a;
constexpr uint8_t kModeSense10 = 0x5a;
constexpr uint8_t kRead12 = 0xa8;
constexpr uint8_t kSetCdSpeed = 0xbb;

// Sense keys and additional sense codes (SPC-3 tables 27 and 28).
constexpr uint8_t kSenseIllegalRequest = 0x05;
constexpr uint8_t kAscInvalidOpcode = 0x20;
constexpr uint8_t kAscLbaOutOfRange = 0x21;
constexpr uint8_t kAscInvalidField = 0x24;
constexpr uint8_t kAscSavingNotSupported = 0x39;
constexpr uint8_t kSenseMediumError = 0x03;
constexpr uint8_t kAscUnrecoveredRead = 0x11;

// ATAPI interrupt reason in the Count field at the end of a command: I/O and C/D set
// (ACS-3 section 7.18.6, "command completed").
constexpr uint8_t kReasonCompleted = 0x03;

// MMC-6 profiles (section 5.3.1).
constexpr uint16_t kProfileCdRom = 0x0008;
constexpr uint16_t kProfileDvdRom = 0x0010;
// The most a CD holds (80 minutes of 2048-byte blocks); a larger disc is a DVD.
constexpr uint64_t kCdMaxBlocks = 80 * 60 * 75;

constexpr uint64_t kBounceBytes = 256 * 1024;

uint16_t be16(const uint8_t* bytes) { return static_cast<uint16_t>(bytes[0] << 8 | bytes[1]); }
uint32_t be32(const uint8_t* bytes) {
  return uint32_t{bytes[0]} << 24 | uint32_t{bytes[1]} << 16 | uint32_t{bytes[2]} << 8 | bytes[3];
}
void put16(std::vector<std::byte>& out, size_t at, uint16_t value) {
  store_be<uint16_t>(out.data() + at, value);
}
void put32(std::vector<std::byte>& out, size_t at, uint32_t value) {
  store_be<uint32_t>(out.data() + at, value);
}
void put_text(std::vector<std::byte>& out, size_t at, size_t length, std::string_view text) {
  for (size_t i = 0; i < length; ++i) {
    out[at + i] = static_cast<std::byte>(i < text.size() ? text[i] : ' ');
  }
}

// A TOC address: a block number, or minutes/seconds/frames counted from the 2-second pregap
// (MMC-6 section 6.26.3.2, table 460).
uint32_t toc_address(uint64_t lba, bool msf) {
  if (!msf) return static_cast<uint32_t>(lba);
  const uint64_t frames = lba + 150;
  const auto minutes = static_cast<uint32_t>(std::min<uint64_t>(frames / (60 * 75), 0xff));
  return minutes << 16 | static_cast<uint32_t>(frames / 75 % 60) << 8 |
         static_cast<uint32_t>(frames % 75);
}

}  // namespace

AtapiCdrom::AtapiCdrom(std::shared_ptr<storage::BlockDevice> disc, std::string serial)
    : disc_(std::move(disc)),
      serial_(std::move(serial)),
      blocks_(std::min<uint64_t>(disc_->size() / kBlockSize, 0xffffffff)),
      bounce_(kBounceBytes) {}

CommandResult AtapiCdrom::execute(const TaskFile& task, PrdtCursor& data) {
  switch (task.command) {
    case kCommandIdentifyPacket: return identify_packet(data);
    case kCommandPacket: return packet(task, data);
    case kCommandDeviceReset:
      reset();
      return {};
    case kCommandCheckPowerMode: return {kStatusGood, 0, 0xff, false};
    case kCommandSetFeatures: return {};
    default: return CommandResult::aborted();
  }
}

CommandResult AtapiCdrom::identify_packet(PrdtCursor& data) const {
  IdentifyData id;
  // ATAPI, CD-ROM device type, removable, DRQ within 50 us, 12-byte packets (ACS-3 table 57).
  id.set(0, 0x85c0);
  id.set_string(10, 10, serial_);
  id.set_string(23, 4, "1.0");
  id.set_string(27, 20, "Lamina DVD-ROM");
  id.set(49, 0x0300);  // LBA and DMA supported
  id.set(53, 0x0006);
  id.set(63, 0x0007);
  id.set(64, 0x0003);
  for (size_t word = 65; word <= 68; ++word) id.set(word, 120);
  id.set(76, 0x0002);
  id.set(80, 0x01f0);
  id.set(82, 0x4010);  // NOP and the PACKET feature set
  id.set(83, 0x4000);
  id.set(84, 0x4000);
  id.set(85, 0x4010);
  id.set(87, 0x4000);
  id.set(88, 0x203f);
  const auto bytes = id.bytes();
  if (auto moved = data.to_guest(bytes); !moved) return CommandResult::aborted();
  return {kStatusGood, 0, 0, true};
}

CommandResult AtapiCdrom::check_condition(uint8_t key, uint8_t asc, uint8_t ascq) {
  sense_ = {key, asc, ascq};
  // The sense key goes to the Error register's high nibble (ACS-3 section 7.18.5).
  return {kStatusGood | kStatusError, static_cast<uint8_t>(key << 4), kReasonCompleted, false};
}

CommandResult AtapiCdrom::reply(std::vector<std::byte> response, uint32_t allocation,
                                PrdtCursor& data) {
  response.resize(std::min<size_t>(response.size(), allocation));
  if (auto moved = data.to_guest(response); !moved) return CommandResult::aborted();
  return {kStatusGood, 0, kReasonCompleted, false};
}

CommandResult AtapiCdrom::packet(const TaskFile& task, PrdtCursor& data) {
  const uint8_t* cdb = task.packet.data();
  const uint8_t opcode = cdb[0];
  if (opcode != kRequestSense) sense_ = {};
  switch (opcode) {
    case kTestUnitReady:
    case kStartStopUnit:
    case kPreventAllowRemoval:
    case kSeek10:
    case kSetCdSpeed: return {kStatusGood, 0, kReasonCompleted, false};
    case kRequestSense: {
      std::vector<std::byte> sense(18);
      sense[0] = std::byte{0x70};  // current error, fixed format
      sense[2] = std::byte{sense_.key};
      sense[7] = std::byte{10};  // additional sense length
      sense[12] = std::byte{sense_.asc};
      sense[13] = std::byte{sense_.ascq};
      sense_ = {};
      return reply(std::move(sense), cdb[4], data);
    }
    case kInquiry: {
      if (cdb[1] & 0x01) return check_condition(kSenseIllegalRequest, kAscInvalidField);
      std::vector<std::byte> inquiry(36);
      inquiry[0] = std::byte{0x05};  // CD/DVD device
      inquiry[1] = std::byte{0x80};  // removable medium
      inquiry[2] = std::byte{0x05};  // SPC-3
      inquiry[3] = std::byte{0x32};  // response data format 2
      inquiry[4] = std::byte{31};    // additional length
      put_text(inquiry, 8, 8, "LAMINA");
      put_text(inquiry, 16, 16, "DVD-ROM");
      put_text(inquiry, 32, 4, "1.0");
      return reply(std::move(inquiry), be16(cdb + 3), data);
    }
    case kReadCapacity: {
      std::vector<std::byte> capacity(8);
      put32(capacity, 0, static_cast<uint32_t>(blocks_ == 0 ? 0 : blocks_ - 1));
      put32(capacity, 4, static_cast<uint32_t>(kBlockSize));
      return reply(std::move(capacity), 8, data);
    }
    case kRead10: return read_blocks(be32(cdb + 2), be16(cdb + 7), data);
    case kRead12: return read_blocks(be32(cdb + 2), be32(cdb + 6), data);
    case kModeSense10: {
      // PC 3 asks for saved values, which a drive without saved pages cannot give.
      if ((cdb[2] >> 6) == 3) return check_condition(kSenseIllegalRequest, kAscSavingNotSupported);
      std::vector<std::byte> pages = mode_pages(cdb[2] & 0x3f);
      if (pages.empty()) return check_condition(kSenseIllegalRequest, kAscInvalidField);
      return reply(std::move(pages), be16(cdb + 7), data);
    }
    case kReadToc: {
      std::vector<std::byte> toc = table_of_contents((cdb[1] & 0x02) != 0, cdb[2] & 0x0f, cdb[6]);
      if (toc.empty()) return check_condition(kSenseIllegalRequest, kAscInvalidField);
      return reply(std::move(toc), be16(cdb + 7), data);
    }
    case kGetConfiguration:
      return reply(configuration(cdb[1] & 0x03, be16(cdb + 2)), be16(cdb + 7), data);
    case kGetEventStatus:
      // Only the polled form exists here (MMC-6 section 6.6: Polled = 0 is asynchronous).
      if ((cdb[1] & 0x01) == 0) return check_condition(kSenseIllegalRequest, kAscInvalidField);
      return reply(event_status(cdb[4]), be16(cdb + 7), data);
    default:
      return check_condition(kSenseIllegalRequest, kAscInvalidOpcode);
  }
}

CommandResult AtapiCdrom::read_blocks(uint64_t lba, uint64_t count, PrdtCursor& data) {
  if (lba > blocks_ || count > blocks_ - lba) {
    return check_condition(kSenseIllegalRequest, kAscLbaOutOfRange);
  }
  uint64_t offset = lba * kBlockSize;
  uint64_t left = count * kBlockSize;
  while (left > 0) {
    const uint64_t length = std::min<uint64_t>(left, bounce_.size());
    std::span<std::byte> chunk(bounce_.data(), length);
    if (auto read = disc_->read(offset, chunk); !read) {
      if (log_limiter_.allow()) log_warn("ahci: CD-ROM read failed: {}", read.error().message());
      return check_condition(kSenseMediumError, kAscUnrecoveredRead);
    }
    if (auto moved = data.to_guest(chunk); !moved) return CommandResult::aborted();
    offset += length;
    left -= length;
  }
  return {kStatusGood, 0, kReasonCompleted, false};
}

std::vector<std::byte> AtapiCdrom::mode_pages(uint8_t page) const {
  // Mode parameter header(10), then the pages (SPC-3 section 7.4.3).
  std::vector<std::byte> out(8);
  if (page == 0x01 || page == 0x3f) {
    // Read-write error recovery page (MMC-6 section 7.3): 5 read retries.
    const std::byte recovery[12] = {std::byte{0x01}, std::byte{0x0a}, std::byte{0x00},
                                    std::byte{0x05}};
    out.insert(out.end(), std::begin(recovery), std::end(recovery));
  }
  if (page == 0x2a || page == 0x3f) {
    // CD/DVD capabilities and mechanical status page (MMC-3 section 6.3.11): reads CD-R/RW
    // and DVD-ROM, reads mode 2 form 1/2 and multisession, lock and eject, tray loading.
    std::vector<std::byte> capabilities(22);
    capabilities[0] = std::byte{0x2a};
    capabilities[1] = std::byte{20};
    capabilities[2] = std::byte{0x3b};
    capabilities[4] = std::byte{0x71};
    capabilities[6] = std::byte{0x29};
    store_be<uint16_t>(capabilities.data() + 8, 2816);  // maximum read speed, kB/s (16x)
    store_be<uint16_t>(capabilities.data() + 10, 2);    // volume levels
    store_be<uint16_t>(capabilities.data() + 12, 512);  // buffer size, KiB
    store_be<uint16_t>(capabilities.data() + 14, 2816);
    out.insert(out.end(), capabilities.begin(), capabilities.end());
  }
  if (out.size() == 8) return {};
  put16(out, 0, static_cast<uint16_t>(out.size() - 2));
  return out;
}

std::vector<std::byte> AtapiCdrom::table_of_contents(bool msf, uint8_t format,
                                                     uint8_t track) const {
  std::vector<std::byte> out(4);
  if (format == 0) {
    // One data track from block 0, then the lead-out (MMC-6 section 6.26.3.2).
    if (track > 1 && track != 0xaa) return {};
    out[2] = std::byte{1};
    out[3] = std::byte{1};
    auto descriptor = [&](uint8_t number, uint64_t lba) {
      const size_t at = out.size();
      out.resize(at + 8);
      out[at + 1] = std::byte{0x14};  // ADR 1 (position), control 4 (data track)
      out[at + 2] = std::byte{number};
      put32(out, at + 4, toc_address(lba, msf));
    };
    if (track <= 1) descriptor(1, 0);
    descriptor(0xaa, blocks_);
  } else if (format == 1) {
    // Session information: one session, its first track at block 0.
    out[2] = std::byte{1};
    out[3] = std::byte{1};
    out.resize(12);
    out[5] = std::byte{0x14};
    out[6] = std::byte{1};
    put32(out, 8, toc_address(0, msf));
  } else {
    return {};
  }
  put16(out, 0, static_cast<uint16_t>(out.size() - 2));
  return out;
}

std::vector<std::byte> AtapiCdrom::configuration(uint8_t request_type, uint16_t start) const {
  const uint16_t current = blocks_ > kCdMaxBlocks ? kProfileDvdRom : kProfileCdRom;
  // Feature header (MMC-6 section 6.6.2.1): data length, current profile.
  std::vector<std::byte> out(8);
  put16(out, 6, current);
  auto wanted = [&](uint16_t feature) {
    // RT 0: every feature from `start`; 1: the current ones from `start` (all are current
    // here); 2: `start` alone.
    return request_type == 2 ? feature == start : feature >= start;
  };
  if (wanted(0x0000)) {
    // Profile list: DVD-ROM and CD-ROM, the disc's one current.
    const size_t at = out.size();
    out.resize(at + 12);
    out[at + 2] = std::byte{0x03};  // persistent, current
    out[at + 3] = std::byte{8};
    put16(out, at + 4, kProfileDvdRom);
    out[at + 6] = std::byte{current == kProfileDvdRom ? uint8_t{1} : uint8_t{0}};
    put16(out, at + 8, kProfileCdRom);
    out[at + 10] = std::byte{current == kProfileCdRom ? uint8_t{1} : uint8_t{0}};
  }
  if (wanted(0x0001)) {
    // Core feature: ATAPI physical interface (MMC-6 section 5.3.2).
    const size_t at = out.size();
    out.resize(at + 12);
    put16(out, at, 0x0001);
    out[at + 2] = std::byte{0x07};  // version 1, persistent, current
    out[at + 3] = std::byte{8};
    put32(out, at + 4, 2);
  }
  put32(out, 0, static_cast<uint32_t>(out.size() - 4));
  return out;
}

std::vector<std::byte> AtapiCdrom::event_status(uint8_t classes) const {
  // Event status header (MMC-6 section 6.7.2.1); only the media class is supported.
  constexpr uint8_t kMediaClass = 0x10;
  std::vector<std::byte> out(4);
  out[3] = std::byte{kMediaClass};
  if ((classes & kMediaClass) == 0) {
    out[2] = std::byte{0x80};  // no event available
    put16(out, 0, 2);
    return out;
  }
  out[2] = std::byte{0x04};  // media class
  out.resize(8);
  out[5] = std::byte{0x02};  // no change; medium present, tray closed
  put16(out, 0, 6);
  return out;
}

void AtapiCdrom::save(StateWriter& writer) const {
  writer.put(sense_.key, sense_.asc, sense_.ascq);
}

Result<void> AtapiCdrom::load(StateReader& reader) { return reader.get(sense_.key, sense_.asc, sense_.ascq); }

}  // namespace lamina::ahci
