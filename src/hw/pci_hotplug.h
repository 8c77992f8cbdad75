#pragma once
// PciHotplug: the register block of ACPI PCI hotplug on the root bus, in the manner of QEMU's
// PIIX4 "acpi-pcihp" (our own layout). The host announces an inserted function or asks for a
// removal; the guest learns of it through a general-purpose event whose AML method
// (machine/acpi/pci_hotplug.h) reads the bitmaps below and Notify()s the slot objects (ACPI
// 6.5 section 5.6.6: 1 = Device Check, 3 = Eject Request), and the guest's _EJ0 for a slot
// writes its bit to EJECT once it has let the function go.
//
//   0x00 UP     (read)  slots inserted since the last read; reading clears it
//   0x04 DOWN   (read)  slots whose removal was asked since the last read; reading clears it
//   0x08 EJECT  (write) slot bits the guest has released; only slots with a removal pending
//                       count, anything else is dropped and counted (a hostile or confused
//                       guest cannot eject what it was not asked to)
//   0x0c SLOTS  (read)  the slots that take hotplug, for the curious
// Slot n is bit n (slot 0 is the host bridge). Writes elsewhere are dropped; reads elsewhere
// and of write-only registers answer zero.
//
// Ownership: borrows nothing but the notify callback (which raises the GPE). Thread-safety:
// one mutex; the guest side runs on vCPU threads, the host side (announce, request, wait) on
// a host thread; the callback runs with the mutex released.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>

#include "base/log.h"
#include "hw/device.h"
#include "hw/stateful.h"

namespace lamina::hw {

class PciHotplug final : public Device, public Stateful {
 public:
  static constexpr uint64_t kSize = 16;
  static constexpr uint64_t kUp = 0x00;
  static constexpr uint64_t kDown = 0x04;
  static constexpr uint64_t kEject = 0x08;
  static constexpr uint64_t kSlots = 0x0c;

  // `slots`: the bitmap of slots that take hotplug; `notify_guest` raises the event.
  PciHotplug(uint32_t slots, std::function<void()> notify_guest);

  std::string_view name() const override { return "pci-hotplug"; }
  void read(uint64_t offset, std::span<std::byte> data) override;
  void write(uint64_t offset, std::span<const std::byte> data) override;

  uint32_t hotplug_slots() const { return slots_; }
  // Host side. announce_insert: a function now sits in `slot`; the guest is told to look.
  void announce_insert(unsigned slot);
  // request_removal: the guest is asked to release `slot`; wait_for_eject() then waits up to
  // `timeout` for its EJECT and returns whether it came. cancel_removal() withdraws a request
  // that timed out: true when it was still pending (a later EJECT for it is then dropped),
  // false when the guest ejected in the meantime.
  void request_removal(unsigned slot);
  [[nodiscard]] bool wait_for_eject(unsigned slot, std::chrono::milliseconds timeout);
  [[nodiscard]] bool cancel_removal(unsigned slot);
  // Ends every wait at once and for good (the machine stopped; nobody will eject).
  void abort_waits();

  // Guest-dropped EJECT bits (slots with no removal pending), for tests and logs.
  uint64_t ignored_ejects() const;

  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  const uint32_t slots_;
  std::function<void()> notify_guest_;
  RateLimiter log_limiter_;

  mutable std::mutex mutex_;
  std::condition_variable ejected_changed_;
  uint32_t up_ = 0;
  uint32_t down_ = 0;
  uint32_t removal_pending_ = 0;  // asked and not yet ejected or cancelled
  uint32_t ejected_ = 0;          // ejected and not yet collected by wait_for_eject
  uint64_t ignored_ejects_ = 0;
  bool aborted_ = false;
};

}  // namespace lamina::hw
