#include "hw/apic_bus.h"

#include "hw/local_apic.h"

namespace lamina::hw {

void ApicBus::deliver(const InterruptMessage& message) {
  // INIT level de-assert only resynchronised arbitration IDs on old parts (SDM 11.6.1).
  if (message.mode == DeliveryMode::kInit && message.level_triggered && !message.assert_level) {
    return;
  }
  std::vector<LocalApic*> targets;
  for (LocalApic* apic : apics_) {
    bool match = false;
    switch (message.shorthand) {
      case DestinationShorthand::kNone:
        match = apic->matches_destination(message.destination, message.logical);
        break;
      case DestinationShorthand::kSelf: match = apic->id() == message.source_id; break;
      case DestinationShorthand::kAllIncludingSelf: match = true; break;
      case DestinationShorthand::kAllExcludingSelf: match = apic->id() != message.source_id; break;
    }
    if (match) targets.push_back(apic);
  }
  if (targets.empty()) {
    ++undeliverable_;
    return;
  }
  if (message.mode == DeliveryMode::kLowestPriority && targets.size() > 1) {
    // Lowest-priority arbitration: the target with the lowest processor priority wins; ties go
    // to the first (SDM 11.6.2.4 leaves the choice to the chipset).
    LocalApic* best = targets.front();
    uint8_t best_priority = best->processor_priority();
    for (LocalApic* apic : targets) {
      uint8_t priority = apic->processor_priority();
      if (priority < best_priority) {
        best = apic;
        best_priority = priority;
      }
    }
    best->accept(message);
    return;
  }
  for (LocalApic* apic : targets) apic->accept(message);
}

bool ApicBus::decode_msi(uint64_t address, uint32_t data, InterruptMessage& message) {
  if ((address >> 20) != 0xfee) return false;
  message = InterruptMessage{};
  message.destination = (address >> 12) & 0xff;
  message.logical = (address & 0x4) != 0;
  message.vector = data & 0xff;
  message.mode = static_cast<DeliveryMode>((data >> 8) & 7);
  message.level_triggered = (data & 0x8000) != 0;
  message.assert_level = (data & 0x4000) != 0 || !message.level_triggered;
  return true;
}

void ApicBus::deliver_msi(uint64_t address, uint32_t data) {
  InterruptMessage message;
  if (!decode_msi(address, data, message)) {
    ++undeliverable_;
    return;
  }
  deliver(message);
}

void ApicBus::broadcast_eoi(uint8_t vector) {
  for (EoiListener* listener : eoi_listeners_) listener->end_of_interrupt(vector);
}

}  // namespace lamina::hw
