#include "ahci/ahci_controller.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>

#include "ahci/ahci_registers.h"
#include "base/byte_order.h"

namespace lamina::ahci {
namespace {

constexpr uint32_t kNoSlot = AhciController::kCommandSlots;
constexpr uint32_t kStateVersion = 1;
// Interface speed, command slots and port count as CAP reports them (section 3.1.1).
constexpr uint32_t kCapabilities = kCapS64a | kCapSclo | kCapIssGen1 | kCapSam |
                                   (AhciController::kCommandSlots - 1) << kCapNcsShift |
                                   (AhciController::kPorts - 1);
// PxTFD of a port without a device: every status bit but BSY (what QEMU and real HBAs show).
constexpr uint32_t kTaskFileNoDevice = 0x7f;

}  // namespace

AhciController::AhciController(const DmaMemory& memory,
                               std::vector<std::unique_ptr<SataDrive>> drives)
    : hw::PciDevice("ahci", 0x8086, 0x2922, 0x010601, 0x02),
      memory_(memory),
      abar_(*this, 0, "ahci-abar") {
  set_subsystem(0x1af4, 0x1100);
  set_interrupt_pin(1);
  add_bar(kAbarIndex, hw::PciBarKind::kMemory32, kAbarSize, abar_);
  for (size_t index = 0; index < drives.size() && index < kPorts; ++index) {
    ports_[index].drive = std::move(drives[index]);
  }
  std::lock_guard lock(mutex_);
  reset_hba();
}

AhciController::~AhciController() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void AhciController::wait_idle() {
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [this] { return stopping_ || !worker_.joinable() || !has_work(); });
}

void AhciController::window_read(unsigned /*window*/, uint64_t offset, std::span<std::byte> data) {
  // Registers are 32 bits wide; narrower reads take their bytes of the dword, 8-byte reads
  // two dwords.
  for (size_t done = 0; done < data.size();) {
    const uint64_t at = offset + done;
    const uint32_t value = read_register(at & ~uint64_t{3});
    const size_t shift = at & 3;
    const size_t length = std::min<size_t>(4 - shift, data.size() - done);
    for (size_t i = 0; i < length; ++i) {
      data[done + i] = static_cast<std::byte>(value >> (8 * (shift + i)));
    }
    done += length;
  }
}

void AhciController::window_write(unsigned /*window*/, uint64_t offset,
                                  std::span<const std::byte> data) {
  if ((data.size() != 4 && data.size() != 8) || (offset & 3) != 0) {
    // Write-1-to-clear and command registers have no meaning for part of a dword.
    if (log_limiter_.allow()) {
      log_warn("ahci: dropped a {}-byte register write at {:#x}", data.size(), offset);
    }
    return;
  }
  for (size_t done = 0; done < data.size(); done += 4) {
    write_register(offset + done, load_le<uint32_t>(data.data() + done));
  }
}

uint32_t AhciController::read_register(uint64_t offset) {
  std::lock_guard lock(mutex_);
  if (offset >= kPortBase && offset < kPortBase + kPorts * kPortStride) {
    const auto index = static_cast<unsigned>((offset - kPortBase) / kPortStride);
    return read_port(ports_[index], (offset - kPortBase) % kPortStride);
  }
  switch (offset) {
    case kHostCapabilities: return kCapabilities;
    case kHostControl: return host_control_;
    case kHostInterruptStatus: return host_interrupt_status_;
    case kHostPortsImplemented: return (1u << kPorts) - 1;
    case kHostVersion: return kAhciVersion13;
    default: return 0;  // CCC, enclosure management, CAP2, BOHC: not implemented
  }
}

void AhciController::write_register(uint64_t offset, uint32_t value) {
  std::unique_lock lock(mutex_);
  if (offset >= kPortBase && offset < kPortBase + kPorts * kPortStride) {
    const auto index = static_cast<unsigned>((offset - kPortBase) / kPortStride);
    const uint64_t port_offset = (offset - kPortBase) % kPortStride;
    write_port(index, port_offset, value);
    if (port_offset == kPortCommandIssue && !(host_control_ & kGhcInterruptEnable)) {
      // Polled mode (GHC.IE clear: firmware and bootloaders spin on PxIS/PxCI): the issuing
      // vCPU runs the port's commands itself, so its poll loop never waits for the I/O thread
      // to get a CPU (virtio-blk under SeaBIOS does; see "Firmware boot" in ARCHITECTURE.md).
      while (!stopping_ && ready(ports_[index])) serve(lock, index);
    }
    return;
  }
  switch (offset) {
    case kHostControl:
      if (value & kGhcReset) {
        // Section 10.4.3: HBA reset; GHC.HR reads 0 again once done, which is at once here.
        reset_hba();
      } else {
        host_control_ = kGhcAhciEnable | (value & kGhcInterruptEnable);
        update_interrupt();
      }
      break;
    case kHostInterruptStatus:
      host_interrupt_status_ &= ~value;
      update_interrupt();
      break;
    default: break;  // read-only or not implemented
  }
}

uint32_t AhciController::read_port(Port& port, uint64_t offset) const {
  switch (offset) {
    case kPortCommandListBase: return static_cast<uint32_t>(port.command_list);
    case kPortCommandListBaseHigh: return static_cast<uint32_t>(port.command_list >> 32);
    case kPortFisBase: return static_cast<uint32_t>(port.fis_base);
    case kPortFisBaseHigh: return static_cast<uint32_t>(port.fis_base >> 32);
    case kPortInterruptStatus: return port.interrupt_status;
    case kPortInterruptEnable: return port.interrupt_enable;
    case kPortCommand: {
      // CCS (bits 12:8): the slot being executed.
      const uint32_t current = port.running_slot == kNoSlot ? 0 : port.running_slot;
      return port.command | current << 8;
    }
    case kPortTaskFile: return port.task_file;
    case kPortSignature: return port.signature;
    case kPortSataStatus:
      // A device answers unless COMRESET is being asserted (SCTL.DET = 1).
      return port.drive && (port.sata_control & 0xf) != 1 ? kSataStatusActive : 0;
    case kPortSataControl: return port.sata_control;
    case kPortSataError: return port.sata_error;
    case kPortSataActive: return port.sata_active;
    case kPortCommandIssue: return port.command_issue;
    default: return 0;
  }
}

void AhciController::write_port(unsigned index, uint64_t offset, uint32_t value) {
  Port& port = ports_[index];
  switch (offset) {
    // The list is 1 KiB aligned, the received-FIS area 256 bytes (sections 3.3.1 and 3.3.3).
    case kPortCommandListBase:
      port.command_list = (port.command_list & ~uint64_t{0xffffffff}) | (value & ~0x3ffu);
      break;
    case kPortCommandListBaseHigh:
      port.command_list = (port.command_list & 0xffffffff) | uint64_t{value} << 32;
      break;
    case kPortFisBase:
      port.fis_base = (port.fis_base & ~uint64_t{0xffffffff}) | (value & ~0xffu);
      break;
    case kPortFisBaseHigh:
      port.fis_base = (port.fis_base & 0xffffffff) | uint64_t{value} << 32;
      break;
    case kPortInterruptStatus:
      port.interrupt_status &= ~value;
      update_interrupt();
      break;
    case kPortInterruptEnable:
      port.interrupt_enable = value & kPortIrqValid;
      update_interrupt();
      break;
    case kPortCommand: {
      const uint32_t old = port.command;
      uint32_t command = (old & ~kCmdWritable) | (value & kCmdWritable);
      if (value & kCmdCommandListOverride) {
        // CLO: BSY and DRQ clear so a reset FIS can be issued (section 3.3.7); self-clearing.
        port.task_file &= ~uint32_t{kStatusBusy | kStatusDataRequest};
      }
      if ((old & kCmdStart) && !(command & kCmdStart)) {
        // Section 3.3.14: clearing ST clears PxCI and PxSACT; a running command is abandoned.
        port.command_issue = 0;
        port.sata_active = 0;
        port.running_slot = kNoSlot;
        ++port.generation;
        idle_.notify_all();
      }
      command &= ~(kCmdListRunning | kCmdFisReceiveRunning);
      if (command & kCmdStart) command |= kCmdListRunning;
      if (command & kCmdFisReceiveEnable) command |= kCmdFisReceiveRunning;
      port.command = command;
      break;
    }
    case kPortSataControl: {
      const uint32_t old_detect = port.sata_control & 0xf;
      port.sata_control = value & 0xfff;
      const uint32_t detect = value & 0xf;
      if (detect == 1) {
        // COMRESET asserted: the device is gone from the link until it is released.
        port.task_file = kStatusBusy;
      } else if (old_detect == 1) {
        // COMRESET released: the device resets and sends its signature (section 10.4.2).
        port.command_issue = 0;
        port.running_slot = kNoSlot;
        ++port.generation;
        port.drive_reset_pending = true;
        reset_device(port);
        idle_.notify_all();
      }
      break;
    }
    case kPortSataError: port.sata_error &= ~value; break;
    case kPortSataActive:
      if (port.command & kCmdStart) port.sata_active |= value;
      break;
    case kPortCommandIssue:
      // Section 3.3.14: software sets bits only while ST is set; the HBA clears them.
      if (!(port.command & kCmdStart) || value == 0) break;
      port.command_issue |= value;
      // In polled mode write_register serves the slots on this thread.
      if (!(host_control_ & kGhcInterruptEnable)) break;
      if (!worker_.joinable() && !stopping_) {
        // Started by the first command, from a vCPU thread, so it inherits that thread's
        // setup (a sandboxed worker's seccomp filter), as virtio-blk's I/O thread does.
        worker_ = std::jthread([this](std::stop_token stop) { run(std::move(stop)); });
      }
      work_.notify_one();
      break;
    default: break;
  }
}

void AhciController::reset_hba() {
  host_control_ = kGhcAhciEnable;
  host_interrupt_status_ = 0;
  for (Port& port : ports_) {
    port.command_list = 0;
    port.fis_base = 0;
    port.interrupt_status = 0;
    port.interrupt_enable = 0;
    // No staggered spin-up or cold presence detection: SUD and POD read as set.
    port.command = kCmdSpinUp | kCmdPowerOn;
    port.sata_control = 0;
    port.sata_error = 0;
    port.sata_active = 0;
    port.command_issue = 0;
    port.running_slot = kNoSlot;
    ++port.generation;
    port.drive_reset_pending = true;
    reset_device(port);
  }
  update_interrupt();
  idle_.notify_all();
}

void AhciController::reset_device(Port& port) {
  port.signature = port.drive ? port.drive->signature() : 0xffffffff;
  if (!port.drive) {
    port.task_file = kTaskFileNoDevice;
    return;
  }
  // Diagnostic code 01h, "no error", in the Error register after a reset (ACS-3 9.13).
  port.task_file = uint32_t{0x01} << 8 | kStatusGood;
  post_d2h(port, kStatusGood, 0x01, static_cast<uint8_t>(port.signature), port.signature);
}

void AhciController::post_d2h(Port& port, uint8_t status, uint8_t error, uint8_t count,
                              uint32_t signature) {
  if (!(port.command & kCmdFisReceiveEnable)) return;
  // Register Device-to-Host FIS (SATA 3.x section 10.5.6), with the Interrupt bit.
  std::array<std::byte, 20> fis{};
  fis[0] = std::byte{kFisRegisterD2h};
  fis[1] = std::byte{0x40};
  fis[2] = std::byte{status};
  fis[3] = std::byte{error};
  fis[4] = static_cast<std::byte>(signature >> 8);
  fis[5] = static_cast<std::byte>(signature >> 16);
  fis[6] = static_cast<std::byte>(signature >> 24);
  fis[12] = std::byte{count};
  if (auto written = memory_.write(port.fis_base + kReceivedD2hRegister, fis); !written) {
    if (log_limiter_.allow()) log_warn("ahci: received-FIS area: {}", written.error().message());
  }
}

void AhciController::post_pio_setup(Port& port, uint8_t status) {
  if (!(port.command & kCmdFisReceiveEnable)) return;
  // PIO Setup FIS (SATA 3.x section 10.5.11): device to host, Interrupt; E_Status at byte 15
  // is the status the command ends with.
  std::array<std::byte, 20> fis{};
  fis[0] = std::byte{kFisPioSetup};
  fis[1] = std::byte{0x60};
  fis[2] = std::byte{status};
  fis[15] = std::byte{status};
  if (auto written = memory_.write(port.fis_base + kReceivedPioSetup, fis); !written) {
    if (log_limiter_.allow()) log_warn("ahci: received-FIS area: {}", written.error().message());
  }
}

void AhciController::update_interrupt() {
  // IS.IPS[n] is set while port n has an enabled interrupt pending (section 3.1.3); software
  // clears it, and it comes back if the port still asks.
  for (unsigned index = 0; index < kPorts; ++index) {
    if (ports_[index].interrupt_status & ports_[index].interrupt_enable) {
      host_interrupt_status_ |= 1u << index;
    }
  }
  set_intx((host_control_ & kGhcInterruptEnable) != 0 && host_interrupt_status_ != 0);
}

bool AhciController::ready(const Port& port) {
  return (port.command & kCmdStart) && port.command_issue != 0 && port.running_slot == kNoSlot &&
         !port.drive_busy;
}

bool AhciController::has_work() const {
  return std::any_of(ports_.begin(), ports_.end(), [](const Port& port) {
    return (port.command & kCmdStart) && port.command_issue != 0;
  });
}

void AhciController::run(std::stop_token stop) {
  std::unique_lock lock(mutex_);
  unsigned next_port = 0;
  for (;;) {
    work_.wait(lock, [&] {
      return stopping_ || stop.stop_requested() ||
             std::any_of(ports_.begin(), ports_.end(),
                         [](const Port& port) { return ready(port); });
    });
    if (stopping_ || stop.stop_requested()) return;
    // Ports take turns; within a port, the lowest issued slot goes first.
    for (unsigned turn = 0; turn < kPorts; ++turn) {
      const unsigned index = (next_port + turn) % kPorts;
      if (!ready(ports_[index])) continue;
      next_port = index + 1;
      serve(lock, index);
      break;
    }
  }
}

void AhciController::serve(std::unique_lock<std::mutex>& lock, unsigned index) {
  Port& port = ports_[index];
  const auto slot = static_cast<unsigned>(std::countr_zero(port.command_issue));
  const Job job{index, slot, port.command_list, port.generation};
  port.running_slot = slot;
  SataDrive* drive = port.drive.get();
  const bool reset_drive = std::exchange(port.drive_reset_pending, false);
  Outcome outcome;
  if (drive == nullptr) {
    outcome.result = CommandResult::aborted();
  } else {
    // Whoever marked the slot running owns the drive until it completes; the lock is only for
    // the registers.
    port.drive_busy = true;
    lock.unlock();
    if (reset_drive) drive->reset();
    outcome = execute(job, *drive);
    lock.lock();
    port.drive_busy = false;
  }
  complete(job, outcome);
  // Slots issued while the drive was busy with an abandoned command wait for the I/O thread.
  if (ready(port) && (host_control_ & kGhcInterruptEnable) && worker_.joinable()) {
    work_.notify_one();
  }
}

AhciController::Outcome AhciController::execute(const Job& job, SataDrive& drive) {
  Outcome outcome;
  outcome.result = CommandResult::aborted();
  // Command header (section 4.2.2): DW0 flags and PRDTL, DW1 PRDBC, DW2-3 the table's base.
  const uint64_t header_address = job.command_list + uint64_t{job.slot} * kCommandHeaderSize;
  std::array<std::byte, kCommandHeaderSize> header{};
  if (auto read = memory_.read(header_address, header); !read) {
    if (log_limiter_.allow()) log_warn("ahci: command header: {}", read.error().message());
    return outcome;
  }
  const uint32_t flags = load_le<uint32_t>(header.data());
  const uint64_t table = load_le<uint64_t>(header.data() + 8) & ~uint64_t{0x7f};
  std::array<std::byte, 20> fis_bytes{};
  if (auto read = memory_.read(table, fis_bytes); !read) {
    if (log_limiter_.allow()) log_warn("ahci: command table: {}", read.error().message());
    return outcome;
  }
  std::array<uint8_t, 20> fis{};
  std::memcpy(fis.data(), fis_bytes.data(), fis.size());
  if (fis[0] != kFisRegisterH2d) return outcome;
  if (!(fis[1] & 0x80)) {
    // C = 0: a Device Control register update; SRST going 1 -> 0 ends a software reset.
    outcome.control = true;
    outcome.soft_reset = (fis[15] & kDeviceControlSoftReset) == 0;
    outcome.result = {};
    return outcome;
  }
  TaskFile task;
  task.command = fis[2];
  task.features = static_cast<uint16_t>(fis[3] | fis[11] << 8);
  task.lba = uint64_t{fis[4]} | uint64_t{fis[5]} << 8 | uint64_t{fis[6]} << 16 |
             uint64_t{fis[8]} << 24 | uint64_t{fis[9]} << 32 | uint64_t{fis[10]} << 40;
  task.device = fis[7];
  task.count = static_cast<uint16_t>(fis[12] | fis[13] << 8);
  if (flags & kHeaderAtapi) {
    std::array<std::byte, 16> packet{};
    if (auto read = memory_.read(table + kCommandTableAtapi, packet); !read) return outcome;
    std::memcpy(task.packet.data(), packet.data(), packet.size());
  }
  PrdtCursor data(memory_, table + kCommandTablePrdt, flags >> 16);
  outcome.result = drive.execute(task, data);
  // PRDBC: the bytes moved (section 4.2.2, DW1).
  std::array<std::byte, 4> count{};
  store_le<uint32_t>(count.data(), static_cast<uint32_t>(data.transferred()));
  (void)memory_.write(header_address + 4, count);
  return outcome;
}

void AhciController::complete(const Job& job, const Outcome& outcome) {
  Port& port = ports_[job.port];
  if (port.generation != job.generation) return;  // stopped or reset meanwhile
  port.running_slot = kNoSlot;
  port.command_issue &= ~(1u << job.slot);
  if (outcome.control) {
    if (outcome.soft_reset) {
      port.drive_reset_pending = true;
      reset_device(port);
    } else {
      port.task_file = kStatusBusy;
    }
  } else {
    const CommandResult& result = outcome.result;
    port.task_file = uint32_t{result.error} << 8 | result.status;
    if (result.pio_in) {
      post_pio_setup(port, result.status);
      port.interrupt_status |= kPortIrqPioSetup;
    }
    post_d2h(port, result.status, result.error, result.count, 0);
    port.interrupt_status |= kPortIrqD2hRegister;
    // Section 6.2.2.1: an error status is a task file error; unlike a real HBA the port goes
    // on (as QEMU's does), since the slot is already complete.
    if (result.failed()) port.interrupt_status |= kPortIrqTaskFileError;
  }
  update_interrupt();
  idle_.notify_all();
}

void AhciController::save(StateWriter& writer) const {
  PciDevice::save(writer);
  std::lock_guard lock(mutex_);
  writer.begin_section("ahci", kStateVersion);
  writer.put(host_control_, host_interrupt_status_);
  for (const Port& port : ports_) {
    writer.put(port.command_list, port.fis_base, port.interrupt_status, port.interrupt_enable,
               port.command, port.task_file, port.signature, port.sata_control, port.sata_error,
               port.sata_active, port.command_issue, port.drive_reset_pending);
    const std::string kind = port.drive ? port.drive->kind() : "";
    writer.put_bytes(std::as_bytes(std::span(kind.data(), kind.size())));
    if (port.drive) port.drive->save(writer);
  }
  writer.end_section();
}

Result<void> AhciController::load(StateReader& reader) {
  if (auto loaded = PciDevice::load(reader); !loaded) return loaded;
  auto version = reader.begin_section("ahci");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported, fmt::format("ahci: saved state version {} is not supported", *version));
  }
  std::lock_guard lock(mutex_);
  if (auto got = reader.get(host_control_, host_interrupt_status_); !got) return got;
  host_control_ = kGhcAhciEnable | (host_control_ & kGhcInterruptEnable);
  host_interrupt_status_ &= (1u << kPorts) - 1;
  for (unsigned index = 0; index < kPorts; ++index) {
    Port& port = ports_[index];
    if (auto got = reader.get(port.command_list, port.fis_base, port.interrupt_status,
                              port.interrupt_enable, port.command, port.task_file, port.signature,
                              port.sata_control, port.sata_error, port.sata_active,
                              port.command_issue, port.drive_reset_pending);
        !got) {
      return got;
    }
    auto kind = reader.get_blob(16);
    if (!kind) return fail(kind.error());
    const std::string saved(reinterpret_cast<const char*>(kind->data()), kind->size());
    const std::string here = port.drive ? port.drive->kind() : "";
    if (saved != here) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("ahci: port {} held {} when saved and holds {} now", index,
                              saved.empty() ? "nothing" : saved, here.empty() ? "nothing" : here));
    }
    if (port.drive) {
      if (auto loaded = port.drive->load(reader); !loaded) return loaded;
    }
    port.running_slot = kNoSlot;
    port.drive_busy = false;
    ++port.generation;
    // Only slots below the controller's count exist; a hostile state cannot add others.
    port.command_issue &= port.command & kCmdStart ? ~0u : 0u;
  }
  if (auto ended = reader.end_section(); !ended) return ended;
  update_interrupt();
  // Slots issued before the save run once the I/O thread sees them (started by the next
  // command in interrupt mode; a polled guest issues again).
  if (has_work() && (host_control_ & kGhcInterruptEnable) && !worker_.joinable()) {
    worker_ = std::jthread([this](std::stop_token stop) { run(std::move(stop)); });
  }
  work_.notify_one();
  return {};
}

}  // namespace lamina::ahci
