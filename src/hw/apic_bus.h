#pragma once
// ApicBus: the system bus between interrupt sources and the local APICs. It delivers interrupt
// messages from the IOAPIC (InterruptRouter), from MSI-capable devices (MsiSink: address/data
// writes to 0xfeexxxxx) and IPIs from the local APICs' ICR, resolving physical, logical (flat and
// cluster; x2APIC cluster) and broadcast destinations, shorthands and lowest-priority arbitration
// (Intel SDM vol. 3A, 11.6 "Issuing interprocessor interrupts" and 11.11 "Message signalled
// interrupts"). It also carries EOI broadcasts from the local APICs back to the IOAPICs for
// level-triggered vectors.
//
// Ownership: borrows the local APICs and EOI listeners, attached while the machine is built and
// fixed afterwards. Thread-safety: deliver() and broadcast_eoi() are called from any thread
// without locks of their own; they lock each target LocalApic while handing it a message.

#include <cstdint>
#include <vector>

namespace lamina::hw {

class LocalApic;

enum class DeliveryMode : uint8_t {
  kFixed = 0,
  kLowestPriority = 1,
  kSmi = 2,
  kNmi = 4,
  kInit = 5,
  kStartup = 6,
  kExtInt = 7,
};

enum class DestinationShorthand : uint8_t {
  kNone = 0,
  kSelf = 1,
  kAllIncludingSelf = 2,
  kAllExcludingSelf = 3
};

// One interrupt message as it travels on the APIC bus.
struct InterruptMessage {
  uint8_t vector = 0;
  DeliveryMode mode = DeliveryMode::kFixed;
  bool logical = false;      // destination mode
  uint32_t destination = 0;  // APIC ID, or logical mask; 0xff (xAPIC) or ~0 (x2APIC) broadcasts
  bool level_triggered = false;
  bool assert_level = true;  // false only for the INIT level de-assert IPI, which is ignored
  DestinationShorthand shorthand = DestinationShorthand::kNone;
  uint32_t source_id = 0;  // sender's APIC ID, for the self shorthands
};

// Where the IOAPIC sends its messages.
class InterruptRouter {
 public:
  virtual ~InterruptRouter() = default;
  virtual void deliver(const InterruptMessage& message) = 0;
};

// Where PCI devices send MSI/MSI-X writes (address 0xfeexxxxx, 32-bit data).
class MsiSink {
 public:
  virtual ~MsiSink() = default;
  virtual void deliver_msi(uint64_t address, uint32_t data) = 0;
};

// Told about every EOI of a level-triggered vector (the IOAPIC clears Remote IRR).
class EoiListener {
 public:
  virtual ~EoiListener() = default;
  virtual void end_of_interrupt(uint8_t vector) = 0;
};

class ApicBus final : public InterruptRouter, public MsiSink {
 public:
  // Machine build time only.
  void attach(LocalApic& apic) { apics_.push_back(&apic); }
  void add_eoi_listener(EoiListener& listener) { eoi_listeners_.push_back(&listener); }

  void deliver(const InterruptMessage& message) override;
  void deliver_msi(uint64_t address, uint32_t data) override;
  void broadcast_eoi(uint8_t vector);

  // Decodes an MSI address/data pair (SDM 11.11.1 and 11.11.2); false when the address is not
  // in the 0xfeexxxxx window.
  static bool decode_msi(uint64_t address, uint32_t data, InterruptMessage& message);

  uint64_t undeliverable() const { return undeliverable_; }

 private:
  std::vector<LocalApic*> apics_;
  std::vector<EoiListener*> eoi_listeners_;
  uint64_t undeliverable_ = 0;  // statistics only; racy increments are acceptable
};

}  // namespace lamina::hw
