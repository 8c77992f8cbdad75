#pragma once
// AhciController: an AHCI 1.3 SATA host bus adapter as a PCI function with the identity of
// Intel's ICH9 AHCI controller (8086:2922, class 01/06/01), so SeaBIOS and Linux's ahci driver
// bind to it. Its registers (HBA and six ports) are the memory BAR 5 (ABAR); each port may
// hold a SataDrive (ata_disk.h, atapi_cdrom.h). Interrupts are INTx (level, INTA).
//
// With interrupts on (GHC.IE, as Linux runs it) commands run on the controller's own I/O thread,
// as virtio-blk's do: a write of PxCI only records the slots and wakes the thread. In polled
// mode (GHC.IE clear: SeaBIOS, bootloaders) the vCPU that wrote PxCI runs them before its write
// returns, so a firmware poll loop never waits for another thread to be scheduled. Either way
// the runner reads the command header, FIS and PRDT from
// guest RAM (every address and count checked: prdt_cursor.h), has the drive execute it with
// no lock held, then posts the result (PxTFD, the PIO Setup and D2H Register FISes in the
// received-FIS area, PxIS) and clears the slot in PxCI. Commands run one at a time, in slot
// order per port. Stopping a port (PxCMD.ST 1 -> 0), COMRESET or an HBA reset drop the
// outcome of a command still running. No NCQ, port multipliers or staggered spin-up. Its state
// (registers and drives) is part of a machine state: checkpoints and live migration.
//
// Errors a guest causes (a bad FIS type, a short or out-of-RAM PRDT, an unknown command) end
// that command with ERR in PxTFD and PxIS.TFES; they never stop the controller or the host.
//
// Ownership: owns its drives and I/O thread; borrows the DmaMemory, which outlives it.
// Thread-safety: register accesses from any vCPU thread and the I/O thread meet under one
// mutex; PCI config space is PciDevice's.

#include <array>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "ahci/ahci_registers.h"
#include "ahci/sata_drive.h"
#include "base/dma_memory.h"
#include "base/log.h"
#include "hw/device_window.h"
#include "hw/pci_device.h"

namespace lamina::ahci {

class AhciController final : public hw::PciDevice, private hw::WindowedDevice {
 public:
  static constexpr unsigned kPorts = 6;
  static constexpr unsigned kCommandSlots = 32;
  static constexpr uint64_t kAbarSize = 4096;
  static constexpr unsigned kAbarIndex = 5;

  // drives[i] sits on port i (at most kPorts; a null entry is an empty port).
  AhciController(const DmaMemory& memory, std::vector<std::unique_ptr<SataDrive>> drives);
  ~AhciController() override;

  // The register window the PCI host maps at BAR 5 (exposed for tests).
  hw::Device& abar() { return abar_; }

  // Returns once no command is issued or running (or the I/O thread is stopped). With the
  // vCPUs stopped (a machine's quiesce) nothing is issued after that.
  void wait_idle();

  // Config space, the HBA and port registers, and each drive's own state; saved while idle
  // (wait_idle with the vCPUs stopped). load() checks that each port holds the same kind of
  // drive as when saved; a command the guest had issued then runs once the machine resumes.
  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  struct Port {
    std::unique_ptr<SataDrive> drive;
    uint64_t command_list = 0;
    uint64_t fis_base = 0;
    uint32_t interrupt_status = 0;
    uint32_t interrupt_enable = 0;
    uint32_t command = 0;
    uint32_t task_file = 0;
    uint32_t signature = 0;
    uint32_t sata_control = 0;
    uint32_t sata_error = 0;
    uint32_t sata_active = 0;
    uint32_t command_issue = 0;
    uint32_t running_slot = kCommandSlots;  // kCommandSlots: none
    // Bumped by whatever abandons a running command, so its late outcome is dropped.
    uint64_t generation = 0;
    // The drive is executing a command (perhaps an abandoned one): nothing else may start on
    // it until that returns, as drives and their images serve one thread at a time.
    bool drive_busy = false;
    bool drive_reset_pending = false;
  };
  // A command as the I/O thread found it, with what it needs outside the lock.
  struct Job {
    unsigned port;
    unsigned slot;
    uint64_t command_list;
    uint64_t generation;
  };
  struct Outcome {
    CommandResult result;
    bool control = false;  // a Device Control update (C = 0), not a command
    bool soft_reset = false;  // ... that ended a software reset
  };

  void window_read(unsigned window, uint64_t offset, std::span<std::byte> data) override;
  void window_write(unsigned window, uint64_t offset, std::span<const std::byte> data) override;
  uint32_t read_register(uint64_t offset);
  void write_register(uint64_t offset, uint32_t value);
  uint32_t read_port(Port& port, uint64_t offset) const;
  void write_port(unsigned index, uint64_t offset, uint32_t value);

  void reset_hba();
  // The state a port's device is in after a reset, its signature in PxSIG and PxTFD and a D2H
  // Register FIS in the received-FIS area (when FIS receive is on).
  void reset_device(Port& port);
  void post_d2h(Port& port, uint8_t status, uint8_t error, uint8_t count, uint32_t signature);
  void post_pio_setup(Port& port, uint8_t status);
  void update_interrupt();
  // A port with an issued slot nobody is running yet.
  static bool ready(const Port& port);
  bool has_work() const;

  void run(std::stop_token stop);
  // Runs the lowest issued slot of port `index` (ready() holds) to completion, releasing the
  // lock while the drive works.
  void serve(std::unique_lock<std::mutex>& lock, unsigned index);
  Outcome execute(const Job& job, SataDrive& drive);
  void complete(const Job& job, const Outcome& outcome);

  const DmaMemory& memory_;
  hw::DeviceWindow abar_;
  RateLimiter log_limiter_;

  mutable std::mutex mutex_;
  std::condition_variable work_;  // a slot was issued, or the thread is to stop
  std::condition_variable idle_;  // a command completed
  uint32_t host_control_ = kGhcAhciEnable;
  uint32_t host_interrupt_status_ = 0;
  std::array<Port, kPorts> ports_{};
  bool stopping_ = false;
  std::jthread worker_;
};

}  // namespace lamina::ahci
