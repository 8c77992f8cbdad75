#include "hw/pic8259.h"

namespace lamina::hw {

namespace {
enum Window : unsigned { kMaster = 0, kSlave = 1, kElcr = 2 };
constexpr unsigned kCascadeIrq = 2;
// ELCR bits that must stay edge-triggered: IRQ0-2 on the master, IRQ8 and IRQ13 on the slave
// (PIIX4 data sheet, ELCR1/ELCR2).
constexpr uint8_t kMasterElcrMask = 0xf8;
constexpr uint8_t kSlaveElcrMask = 0xde;
constexpr uint32_t kStateVersion = 1;

// Rank of irq in the chip's current priority order: 0 is the highest priority.
unsigned rank(uint8_t lowest_priority, unsigned irq) { return (irq - lowest_priority - 1) & 7; }

// The set bit of `bits` with the highest priority, or -1.
int highest(uint8_t bits, uint8_t lowest_priority) {
  for (unsigned step = 0; step < 8; ++step) {
    unsigned irq = (lowest_priority + 1 + step) & 7;
    if (bits & (1u << irq)) return static_cast<int>(irq);
  }
  return -1;
}
}  // namespace

Pic8259Pair::Pic8259Pair(IrqLine& output)
    : output_(output),
      master_window_(*this, kMaster, "pic8259-master"),
      slave_window_(*this, kSlave, "pic8259-slave"),
      elcr_window_(*this, kElcr, "pic-elcr") {
  for (unsigned irq = 0; irq < inputs_.size(); ++irq) {
    inputs_[irq].pic_ = this;
    inputs_[irq].irq_ = irq;
  }
}

void Pic8259Pair::set_chip_input(Chip& chip, unsigned pin, bool level) {
  const uint8_t bit = static_cast<uint8_t>(1u << pin);
  if (chip.elcr & bit) {
    // Level-triggered: the request follows the pin.
    chip.irr = level ? (chip.irr | bit) : (chip.irr & ~bit);
  } else if (level && !(chip.input_level & bit)) {
    // Edge-triggered: a rising edge latches a request that stays until acknowledged.
    chip.irr |= bit;
  }
  chip.input_level = level ? (chip.input_level | bit) : (chip.input_level & ~bit);
}

void Pic8259Pair::set_irq(unsigned irq, bool level) {
  if (irq >= 16 || irq == kCascadeIrq) return;
  std::lock_guard lock(mutex_);
  if (irq < 8) {
    set_chip_input(master_, irq, level);
  } else {
    set_chip_input(slave_, irq - 8, level);
  }
  update();
}

int Pic8259Pair::pending_irq(const Chip& chip, bool is_master) const {
  int request = highest(chip.irr & ~chip.imr, chip.lowest_priority);
  if (request < 0) return -1;
  uint8_t in_service = chip.isr;
  // Special mask mode: masked levels in service do not block lower priorities (data sheet OCW3).
  if (chip.special_mask) in_service &= ~chip.imr;
  // Special fully nested mode: the slave may interrupt again while IR2 is in service.
  if (is_master && chip.special_fully_nested) in_service &= ~(1u << kCascadeIrq);
  int current = highest(in_service, chip.lowest_priority);
  if (current >= 0 && rank(chip.lowest_priority, request) >= rank(chip.lowest_priority, current)) {
    return -1;
  }
  return request;
}

int Pic8259Pair::highest_in_service(const Chip& chip) {
  return highest(chip.isr, chip.lowest_priority);
}

void Pic8259Pair::end_of_interrupt(Chip& chip, int irq, bool rotate) {
  if (irq < 0) return;
  chip.isr &= ~(1u << irq);
  if (rotate) chip.lowest_priority = static_cast<uint8_t>(irq);
}

void Pic8259Pair::acknowledge_chip(Chip& chip, int irq) {
  const uint8_t bit = static_cast<uint8_t>(1u << irq);
  if (chip.auto_eoi) {
    if (chip.rotate_on_auto_eoi) chip.lowest_priority = static_cast<uint8_t>(irq);
  } else {
    chip.isr |= bit;
  }
  if (!(chip.elcr & bit)) chip.irr &= ~bit;
}

uint8_t Pic8259Pair::acknowledge() {
  std::lock_guard lock(mutex_);
  uint8_t vector = 0;
  int irq = pending_irq(master_, true);
  if (irq < 0) {
    // No request survived until the acknowledge: the 8259A answers IR7 without setting ISR.
    vector = static_cast<uint8_t>(master_.vector_base + 7);
  } else {
    acknowledge_chip(master_, irq);
    if (irq == static_cast<int>(kCascadeIrq) && !master_.single) {
      int slave_irq = pending_irq(slave_, false);
      if (slave_irq < 0) {
        vector = static_cast<uint8_t>(slave_.vector_base + 7);  // spurious IRQ15
      } else {
        acknowledge_chip(slave_, slave_irq);
        vector = static_cast<uint8_t>(slave_.vector_base + slave_irq);
      }
    } else {
      vector = static_cast<uint8_t>(master_.vector_base + irq);
    }
  }
  update();
  return vector;
}

bool Pic8259Pair::interrupt_pending() const {
  std::lock_guard lock(mutex_);
  return output_level_;
}

void Pic8259Pair::set_elcr(uint16_t mask) {
  std::lock_guard lock(mutex_);
  master_.elcr = static_cast<uint8_t>(mask) & kMasterElcrMask;
  slave_.elcr = static_cast<uint8_t>(mask >> 8) & kSlaveElcrMask;
  for (Chip* chip : {&master_, &slave_}) {
    chip->irr = (chip->irr & ~chip->elcr) | (chip->input_level & chip->elcr);
  }
  update();
}

void Pic8259Pair::write_command(Chip& chip, uint8_t value) {
  if (value & 0x10) {
    // ICW1 (data sheet, "Initialization command words"): resets mask, priority, modes; the edge
    // sense latches are cleared, so a pin already high must fall and rise again.
    chip.imr = 0;
    chip.isr = 0;
    chip.irr = chip.input_level & chip.elcr;
    chip.lowest_priority = 7;
    chip.special_mask = false;
    chip.read_isr = false;
    chip.poll = false;
    chip.auto_eoi = false;
    chip.rotate_on_auto_eoi = false;
    chip.special_fully_nested = false;
    chip.expect_icw4 = (value & 0x01) != 0;
    chip.single = (value & 0x02) != 0;
    chip.init_step = 1;
    return;
  }
  if (value & 0x08) {
    // OCW3: poll, read register select, special mask mode.
    if (value & 0x04) chip.poll = true;
    if (value & 0x02) chip.read_isr = (value & 0x01) != 0;
    if (value & 0x40) chip.special_mask = (value & 0x20) != 0;
    return;
  }
  // OCW2: R, SL, EOI bits select the command (data sheet, table "Operation command word 2").
  const int level = value & 7;
  switch (value >> 5) {
    case 0: chip.rotate_on_auto_eoi = false; break;
    case 1: end_of_interrupt(chip, highest_in_service(chip), false); break;
    case 2: break;  // no operation
    case 3: end_of_interrupt(chip, level, false); break;
    case 4: chip.rotate_on_auto_eoi = true; break;
    case 5: end_of_interrupt(chip, highest_in_service(chip), true); break;
    case 6: chip.lowest_priority = static_cast<uint8_t>(level); break;
    case 7: end_of_interrupt(chip, level, true); break;
  }
}

void Pic8259Pair::write_data(Chip& chip, uint8_t value) {
  switch (chip.init_step) {
    case 1:  // ICW2: vector base; the low three bits come from the IR number.
      chip.vector_base = value & 0xf8;
      chip.init_step = chip.single ? (chip.expect_icw4 ? 3 : 0) : 2;
      return;
    case 2:  // ICW3: the PC's cascade wiring (slave on IR2) is fixed, so the value is moot.
      chip.init_step = chip.expect_icw4 ? 3 : 0;
      return;
    case 3:  // ICW4
      if (!(value & 0x01) && log_limiter_.allow()) {
        log_warn("pic8259: guest selected 8080/85 mode in ICW4; x86 vectors are used anyway");
      }
      chip.auto_eoi = (value & 0x02) != 0;
      chip.special_fully_nested = (value & 0x10) != 0;
      chip.init_step = 0;
      return;
    default:  // OCW1
      chip.imr = value;
      return;
  }
}

uint8_t Pic8259Pair::poll(Chip& chip, bool is_master) {
  // A poll read acts as the interrupt acknowledge (data sheet, "The poll command").
  chip.poll = false;
  int irq = pending_irq(chip, is_master);
  if (irq < 0) return 0;
  acknowledge_chip(chip, irq);
  return static_cast<uint8_t>(0x80 | irq);
}

void Pic8259Pair::window_read(unsigned window, uint64_t offset, std::span<std::byte> data) {
  std::lock_guard lock(mutex_);
  // Byte registers: a wider access covers the following ports, as the ISA bus splits it.
  for (size_t i = 0; i < data.size(); ++i) {
    uint64_t port = offset + i;
    uint8_t value = 0xff;
    if (port < 2) {
      if (window == kElcr) {
        value = port == 0 ? master_.elcr : slave_.elcr;
      } else {
        Chip& chip = window == kMaster ? master_ : slave_;
        if (chip.poll) {
          value = poll(chip, window == kMaster);
        } else if (port == 0) {
          value = chip.read_isr ? chip.isr : chip.irr;
        } else {
          value = chip.imr;
        }
      }
    }
    data[i] = std::byte{value};
  }
  update();
}

void Pic8259Pair::window_write(unsigned window, uint64_t offset, std::span<const std::byte> data) {
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < data.size(); ++i) {
    uint64_t port = offset + i;
    auto value = static_cast<uint8_t>(data[i]);
    if (port >= 2) continue;
    if (window == kElcr) {
      Chip& chip = port == 0 ? master_ : slave_;
      chip.elcr = value & (port == 0 ? kMasterElcrMask : kSlaveElcrMask);
      chip.irr = (chip.irr & ~chip.elcr) | (chip.input_level & chip.elcr);
      continue;
    }
    Chip& chip = window == kMaster ? master_ : slave_;
    if (port == 0) {
      write_command(chip, value);
    } else {
      write_data(chip, value);
    }
  }
  update();
}

void Pic8259Pair::update() {
  // The slave's INT output is a level: IR2 follows it, so a slave request that is masked or
  // withdrawn before the acknowledge does not leave a stale cascade request behind.
  const uint8_t cascade = 1u << kCascadeIrq;
  if (pending_irq(slave_, false) >= 0) {
    master_.irr |= cascade;
    master_.input_level |= cascade;
  } else {
    master_.irr &= ~cascade;
    master_.input_level &= ~cascade;
  }
  bool level = pending_irq(master_, true) >= 0;
  if (level != output_level_) {
    output_level_ = level;
    output_.set_level(level);
  }
}

void Pic8259Pair::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section("pic8259-pair", kStateVersion);
  for (const Chip* chip : {&master_, &slave_}) {
    writer.put(chip->irr, chip->isr, chip->imr, chip->input_level, chip->elcr, chip->vector_base,
               chip->lowest_priority, chip->init_step, chip->expect_icw4, chip->single,
               chip->auto_eoi, chip->rotate_on_auto_eoi, chip->special_fully_nested,
               chip->special_mask, chip->read_isr, chip->poll);
  }
  writer.end_section();
}

Result<void> Pic8259Pair::load(StateReader& reader) {
  auto version = reader.begin_section("pic8259-pair");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("pic8259: saved state version {} is not supported", *version));
  }
  std::lock_guard lock(mutex_);
  for (Chip* chip : {&master_, &slave_}) {
    Chip loaded;
    if (auto result = reader.get(
            loaded.irr, loaded.isr, loaded.imr, loaded.input_level, loaded.elcr, loaded.vector_base,
            loaded.lowest_priority, loaded.init_step, loaded.expect_icw4, loaded.single,
            loaded.auto_eoi, loaded.rotate_on_auto_eoi, loaded.special_fully_nested,
            loaded.special_mask, loaded.read_isr, loaded.poll);
        !result) {
      return result;
    }
    if (loaded.init_step > 3 || loaded.lowest_priority > 7) {
      return fail(ErrorCode::kCorrupt, "pic8259: saved initialization step or priority is invalid");
    }
    loaded.vector_base &= 0xf8;
    loaded.elcr &= chip == &master_ ? kMasterElcrMask : kSlaveElcrMask;
    *chip = loaded;
  }
  // The output's receiver was reset with the machine: drive it from scratch.
  output_level_ = false;
  update();
  return reader.end_section();
}

}  // namespace lamina::hw
