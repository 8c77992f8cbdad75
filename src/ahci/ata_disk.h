#pragma once
// AtaDisk: a SATA hard disk on a storage::BlockDevice, answering the ATA commands SeaBIOS and
// Linux's libata send (ACS-3 chapter 7): IDENTIFY DEVICE, READ/WRITE DMA (EXT), READ/WRITE
// SECTOR(S) (EXT) (PIO; AHCI moves their data through the PRDT all the same), READ VERIFY,
// FLUSH CACHE (EXT), SET FEATURES, CHECK POWER MODE and the power commands, which do nothing
// here. 48-bit LBA, 512-byte sectors; no NCQ (the controller does not offer it). Anything else
// is aborted (ABRT), as a drive does with a command it does not implement.
//
// Ownership: shares the BlockDevice (a --on-reboot restart keeps the image open). Thread-safety:
// as SataDrive: one command at a time.

#include <memory>
#include <string>
#include <vector>

#include "ahci/sata_drive.h"
#include "base/log.h"
#include "storage/block_device.h"

namespace lamina::ahci {

class AtaDisk final : public SataDrive {
 public:
  // serial: at most 20 printable characters (IDENTIFY words 10-19).
  AtaDisk(std::shared_ptr<storage::BlockDevice> disk, std::string serial);

  uint32_t signature() const override { return 0x00000101; }
  CommandResult execute(const TaskFile& task, PrdtCursor& data) override;
  const char* kind() const override { return "disk"; }

  uint64_t capacity_sectors() const { return capacity_sectors_; }

 private:
  CommandResult identify(PrdtCursor& data) const;
  CommandResult transfer(uint64_t lba, uint64_t sectors, bool write, bool pio, PrdtCursor& data);
  CommandResult flush();
  CommandResult set_features(const TaskFile& task);

  std::shared_ptr<storage::BlockDevice> disk_;
  std::string serial_;
  uint64_t capacity_sectors_;
  std::vector<std::byte> bounce_;
  RateLimiter log_limiter_;
};

}  // namespace lamina::ahci
