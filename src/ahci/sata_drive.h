#pragma once
// SataDrive: what sits on one AHCI port, as the controller sees it: a device that executes the
// ATA command in a Register Host-to-Device FIS (Serial ATA 3.x section 10.5.5) and moves the
// command's data through the command's PRDT (prdt_cursor.h). AtaDisk (a hard disk on a
// storage::BlockDevice) and AtapiCdrom (a read-only CD-ROM speaking SCSI/MMC through PACKET)
// implement it.
//
// Thread-safety: the controller calls execute() and reset() for one command at a time per
// drive, from whichever thread runs the port's slot (its I/O thread, or in polled mode the
// vCPU that issued it); signature() from any thread (it is constant).

#include <array>
#include <cstdint>

#include "ahci/prdt_cursor.h"
#include "base/error.h"
#include "base/state_stream.h"

namespace lamina::ahci {

// ATA status register bits (ACS-3 section 6.2, the Status field).
inline constexpr uint8_t kStatusError = 0x01;
inline constexpr uint8_t kStatusDataRequest = 0x08;
inline constexpr uint8_t kStatusSeekComplete = 0x10;  // "DSC", obsolete but expected set
inline constexpr uint8_t kStatusReady = 0x40;
inline constexpr uint8_t kStatusBusy = 0x80;
inline constexpr uint8_t kStatusGood = kStatusReady | kStatusSeekComplete;
// ATA error register bits (ACS-3 section 6.3).
inline constexpr uint8_t kErrorAbort = 0x04;
inline constexpr uint8_t kErrorIdNotFound = 0x10;
inline constexpr uint8_t kErrorUncorrectable = 0x40;

// The fields of a Register H2D FIS that commands use, the 48-bit ones assembled.
struct TaskFile {
  uint8_t command = 0;
  uint16_t features = 0;  // feature (7:0) | feature_exp (15:8)
  uint64_t lba = 0;       // lba_low .. lba_high_exp, 48 bits
  uint16_t count = 0;     // count (7:0) | count_exp (15:8)
  uint8_t device = 0;
  // The ACMD field of the command table: the SCSI command of a PACKET command (12 or 16 bytes).
  std::array<uint8_t, 16> packet{};
};

// What a command leaves in the task file registers, for the D2H (and PIO Setup) FIS.
struct CommandResult {
  uint8_t status = kStatusGood;
  uint8_t error = 0;
  uint8_t count = 0;  // the Count field (CHECK POWER MODE's answer, ATAPI's interrupt reason)
  // A PIO data-in command: the HBA posts a PIO Setup FIS, whose ending status software reads
  // (AHCI 1.3 section 5.3.7.1).
  bool pio_in = false;

  static CommandResult aborted() { return {kStatusGood | kStatusError, kErrorAbort, 0, false}; }
  bool failed() const { return (status & kStatusError) != 0; }
};

class SataDrive {
 public:
  virtual ~SataDrive() = default;
  // The signature of the D2H FIS after a reset (PxSIG): count | lba_low << 8 | lba_mid << 16 |
  // lba_high << 24 (AHCI 1.3 section 3.3.9).
  virtual uint32_t signature() const = 0;
  // Executes one command; guest mistakes (bad LBA, short PRDT, unknown command) come back as an
  // error in the result, never as a failure of the host.
  virtual CommandResult execute(const TaskFile& task, PrdtCursor& data) = 0;
  // A device reset (COMRESET, HBA reset): pending sense data and feature settings are dropped.
  virtual void reset() {}
  // "disk" or "cdrom", for logs and saved states.
  virtual const char* kind() const = 0;
  // What the drive keeps between commands, for a machine state (saved between commands).
  virtual void save(StateWriter& writer) const { (void)writer; }
  [[nodiscard]] virtual Result<void> load(StateReader& reader) {
    (void)reader;
    return {};
  }
};

}  // namespace lamina::ahci
