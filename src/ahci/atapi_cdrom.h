#pragma once
// AtapiCdrom: a read-only CD/DVD-ROM drive on an AHCI port, its disc an image of 2048-byte
// blocks (an ISO 9660 file). ATA side: IDENTIFY PACKET DEVICE, PACKET, DEVICE RESET, and
// IDENTIFY DEVICE aborted with the PACKET signature (ACS-3 section 7.12: that is how a host
// tells the two kinds apart). PACKET side, the SCSI/MMC commands SeaBIOS's El Torito boot and
// Linux's sr and cdrom drivers send (SPC-3, MMC-6): TEST UNIT READY, REQUEST SENSE, INQUIRY,
// READ CAPACITY, READ(10)/(12), MODE SENSE(10) (error recovery and capabilities pages), GET
// CONFIGURATION, READ TOC (formats 0 and 1), GET EVENT STATUS NOTIFICATION (polled), START
// STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL, SEEK, SET CD SPEED. Any other command ends in CHECK
// CONDITION with ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE sense, which REQUEST SENSE
// then reports (fixed format, SPC-3 section 4.5.3). The medium is always present and never
// changes.
//
// Ownership: shares the BlockDevice. Thread-safety: as SataDrive: one command at a time.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ahci/sata_drive.h"
#include "base/log.h"
#include "storage/block_device.h"

namespace lamina::ahci {

class AtapiCdrom final : public SataDrive {
 public:
  static constexpr uint64_t kBlockSize = 2048;

  AtapiCdrom(std::shared_ptr<storage::BlockDevice> disc, std::string serial);

  // ATA/ATAPI-8 section 9.12: count 01h, LBA 01h, cylinder 0xEB14 for PACKET devices.
  uint32_t signature() const override { return 0xeb140101; }
  CommandResult execute(const TaskFile& task, PrdtCursor& data) override;
  void reset() override { sense_ = {}; }
  const char* kind() const override { return "cdrom"; }
  // The sense data a REQUEST SENSE would report next.
  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

  uint64_t blocks() const { return blocks_; }

 private:
  struct Sense {
    uint8_t key = 0;
    uint8_t asc = 0;
    uint8_t ascq = 0;
  };
  CommandResult identify_packet(PrdtCursor& data) const;
  CommandResult packet(const TaskFile& task, PrdtCursor& data);
  // Ends a command with CHECK CONDITION and remembers why for REQUEST SENSE.
  CommandResult check_condition(uint8_t key, uint8_t asc, uint8_t ascq = 0);
  // Sends `response` cut to `allocation` bytes.
  CommandResult reply(std::vector<std::byte> response, uint32_t allocation, PrdtCursor& data);
  CommandResult read_blocks(uint64_t lba, uint64_t count, PrdtCursor& data);
  std::vector<std::byte> mode_pages(uint8_t page) const;
  std::vector<std::byte> table_of_contents(bool msf, uint8_t format, uint8_t track) const;
  std::vector<std::byte> configuration(uint8_t request_type, uint16_t start) const;
  std::vector<std::byte> event_status(uint8_t classes) const;

  std::shared_ptr<storage::BlockDevice> disc_;
  std::string serial_;
  uint64_t blocks_;
  Sense sense_;
  std::vector<std::byte> bounce_;
  RateLimiter log_limiter_;
};

}  // namespace lamina::ahci
