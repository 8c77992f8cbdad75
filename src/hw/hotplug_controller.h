#pragma once
// HotplugController: the register block behind ACPI hotplug of PCI slots (as QEMU's PIIX4
// "acpi-pcihp" does it) and of processors (as QEMU's CPU hotplug does it), our own layout. The
// host announces an inserted unit (a PCI slot's function, a vCPU) or asks for a removal; the
// guest learns of it through a general-purpose event whose AML method (machine/acpi/
// pci_hotplug.h, cpu_hotplug.h) reads the bitmaps below and Notify()s the units' objects (ACPI
// 6.5 section 5.6.6: 1 = Device Check, 3 = Eject Request); the guest's _EJ0 writes the unit's
// bit to EJECT once it has let it go. Unit n is bit n of a 64-bit bitmap; each register is two
// dwords, low then high, and AML reads them as 32-bit fields.
//
//   0x00 UP       (read)  units inserted since the last read; reading a dword clears it
//   0x08 DOWN     (read)  units whose removal was asked since the last read; cleared the same
//   0x10 EJECT    (write) units the guest has released; only units with a removal pending
//                         count, anything else is dropped and counted (a hostile or confused
//                         guest cannot eject what it was not asked to)
//   0x18 UNITS    (read)  the units that take hotplug
//   0x20 PRESENT  (read)  the units present now (an ACPI processor's _STA and _MAT read it)
// Writes elsewhere and reads of anything but whole aligned dwords are dropped / answer zero.
//
// Ownership: owns nothing but the notify callback (which raises the GPE). Thread-safety: one
// mutex; the guest side runs on vCPU threads, the host side (announce, request, wait) on a
// host thread; the callback runs with the mutex released.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "base/log.h"
#include "hw/device.h"
#include "hw/stateful.h"

namespace lamina::hw {

class HotplugController final : public Device, public Stateful {
 public:
  static constexpr uint64_t kSize = 0x28;
  static constexpr uint64_t kUp = 0x00;
  static constexpr uint64_t kDown = 0x08;
  static constexpr uint64_t kEject = 0x10;
  static constexpr uint64_t kUnits = 0x18;
  static constexpr uint64_t kPresent = 0x20;

  // `name` is its state section ("pci-hotplug", "cpu-hotplug"); `units` the bitmap of units
  // that take hotplug, `present` those present from the start; `notify_guest` raises the
  // event.
  HotplugController(std::string name, uint64_t units, uint64_t present,
                    std::function<void()> notify_guest);

  std::string_view name() const override { return name_; }
  void read(uint64_t offset, std::span<std::byte> data) override;
  void write(uint64_t offset, std::span<const std::byte> data) override;

  uint64_t hotplug_units() const { return units_; }
  uint64_t present() const;
  // Host side. announce_insert: `unit` is present now; the guest is told to look.
  void announce_insert(unsigned unit);
  // request_removal: the guest is asked to release `unit`; wait_for_eject() then waits up to
  // `timeout` for its EJECT and returns whether it came (the unit is then not present).
  // cancel_removal() withdraws a request that timed out: true when it was still pending (a
  // later EJECT for it is then dropped), false when the guest ejected in the meantime.
  void request_removal(unsigned unit);
  [[nodiscard]] bool wait_for_eject(unsigned unit, std::chrono::milliseconds timeout);
  [[nodiscard]] bool cancel_removal(unsigned unit);
  // Ends every wait at once and for good (the machine stopped; nobody will eject).
  void abort_waits();

  // Guest-dropped EJECT bits (units with no removal pending), for tests and logs.
  uint64_t ignored_ejects() const;

  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  const std::string name_;
  const uint64_t units_;
  std::function<void()> notify_guest_;
  RateLimiter log_limiter_;

  mutable std::mutex mutex_;
  std::condition_variable ejected_changed_;
  uint64_t up_ = 0;
  uint64_t down_ = 0;
  uint64_t present_ = 0;
  uint64_t removal_pending_ = 0;  // asked and not yet ejected or cancelled
  uint64_t ejected_ = 0;          // ejected and not yet collected by wait_for_eject
  uint64_t ignored_ejects_ = 0;
  bool aborted_ = false;
};

}  // namespace lamina::hw
