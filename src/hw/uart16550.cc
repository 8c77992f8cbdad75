#include "hw/uart16550.h"

#include "base/byte_order.h"

namespace lamina::hw {

namespace {
// Register offsets (PC16550D data sheet, table II).
constexpr uint64_t kData = 0;             // RBR/THR, or DLL with DLAB
constexpr uint64_t kInterruptEnable = 1;  // IER, or DLM with DLAB
constexpr uint64_t kInterruptId = 2;      // IIR on read, FCR on write
constexpr uint64_t kLineControl = 3;
constexpr uint64_t kModemControl = 4;
constexpr uint64_t kLineStatus = 5;
constexpr uint64_t kModemStatus = 6;
constexpr uint64_t kScratch = 7;

constexpr uint8_t kIerReceivedData = 0x01;
constexpr uint8_t kIerTransmitEmpty = 0x02;
constexpr uint8_t kIerLineStatus = 0x04;
constexpr uint8_t kIerModemStatus = 0x08;

constexpr uint8_t kIirNoInterrupt = 0x01;
constexpr uint8_t kIirModemStatus = 0x00;
constexpr uint8_t kIirTransmitEmpty = 0x02;
constexpr uint8_t kIirReceivedData = 0x04;
constexpr uint8_t kIirLineStatus = 0x06;
constexpr uint8_t kIirCharacterTimeout = 0x0c;
constexpr uint8_t kIirFifosEnabled = 0xc0;

constexpr uint8_t kFcrEnable = 0x01;
constexpr uint8_t kFcrClearReceive = 0x02;

constexpr uint8_t kLcrDivisorLatch = 0x80;

constexpr uint8_t kMcrDtr = 0x01;
constexpr uint8_t kMcrRts = 0x02;
constexpr uint8_t kMcrOut1 = 0x04;
constexpr uint8_t kMcrOut2 = 0x08;
constexpr uint8_t kMcrLoopback = 0x10;

constexpr uint8_t kLsrDataReady = 0x01;
constexpr uint8_t kLsrOverrun = 0x02;
constexpr uint8_t kLsrErrors = 0x1e;         // overrun, parity, framing, break
constexpr uint8_t kLsrTransmitEmpty = 0x60;  // THRE and TEMT
constexpr uint8_t kLsrFifoError = 0x80;

constexpr uint8_t kMsrCts = 0x10;
constexpr uint8_t kMsrDsr = 0x20;
constexpr uint8_t kMsrRi = 0x40;
constexpr uint8_t kMsrDcd = 0x80;

constexpr uint8_t kTriggerLevels[4] = {1, 4, 8, 14};
constexpr uint32_t kStateVersion = 1;
}  // namespace

Uart16550::Uart16550(std::string name, IrqLine& irq, SerialBackend* backend)
    : name_(std::move(name)), irq_(irq), backend_(backend) {
  previous_lines_ = modem_status_lines();
}

void Uart16550::read(uint64_t offset, std::span<std::byte> data) {
  bool space_freed = false;
  uint8_t value = 0xff;
  {
    std::lock_guard lock(mutex_);
    // Registers are bytes; a wider access reads the first one and all ones above it.
    if (offset < 8) {
      uint8_t before = receive_count_;
      value = read_register(offset);
      space_freed = backend_refused_ && receive_count_ < before;
      if (space_freed) backend_refused_ = false;
    }
    update_irq();
  }
  store_le_sized(data, 0xffffffffffffff00ull | value);
  if (space_freed && backend_ != nullptr) backend_->receive_space_available();
}

void Uart16550::write(uint64_t offset, std::span<const std::byte> data) {
  if (data.empty() || offset >= 8) return;
  auto value = static_cast<uint8_t>(data[0]);
  bool transmit = false;
  {
    std::lock_guard lock(mutex_);
    transmit = write_register(offset, value);
    update_irq();
  }
  if (transmit && backend_ != nullptr) backend_->transmit(std::byte{value});
}

uint8_t Uart16550::read_register(uint64_t offset) {
  const bool dlab = (line_control_ & kLcrDivisorLatch) != 0;
  switch (offset) {
    case kData: {
      if (dlab) return divisor_low_;
      if (receive_count_ == 0) return 0;
      uint8_t value = receive_fifo_[receive_head_];
      receive_head_ = static_cast<uint8_t>((receive_head_ + 1) % kFifoSize);
      --receive_count_;
      return value;
    }
    case kInterruptEnable: return dlab ? divisor_high_ : interrupt_enable_;
    case kInterruptId: {
      uint8_t id = interrupt_identification();
      // Reading IIR while it reports THR empty acknowledges that interrupt (data sheet, table IV).
      if ((id & 0x0f) == kIirTransmitEmpty) transmit_empty_pending_ = false;
      return id;
    }
    case kLineControl: return line_control_;
    case kModemControl: return modem_control_;
    case kLineStatus: {
      uint8_t status = kLsrTransmitEmpty | line_status_errors_;
      if (receive_count_ > 0) status |= kLsrDataReady;
      if (fifo_enabled_ && (line_status_errors_ & 0x1c) != 0) status |= kLsrFifoError;
      line_status_errors_ = 0;
      return status;
    }
    case kModemStatus: {
      update_modem_status();
      uint8_t status = static_cast<uint8_t>(modem_status_lines() | modem_status_deltas_);
      modem_status_deltas_ = 0;
      return status;
    }
    case kScratch: return scratch_;
  }
  return 0xff;
}

bool Uart16550::write_register(uint64_t offset, uint8_t value) {
  const bool dlab = (line_control_ & kLcrDivisorLatch) != 0;
  switch (offset) {
    case kData:
      if (dlab) {
        divisor_low_ = value;
        return false;
      }
      // THR is empty again at once; the THRE interrupt re-arms.
      transmit_empty_pending_ = true;
      if (modem_control_ & kMcrLoopback) {
        push_received(value);
        return false;
      }
      return true;
    case kInterruptEnable:
      if (dlab) {
        divisor_high_ = value;
        return false;
      }
      // Enabling the THRE interrupt while THR is empty raises it (16550 behaviour drivers test).
      if ((value & kIerTransmitEmpty) && !(interrupt_enable_ & kIerTransmitEmpty)) {
        transmit_empty_pending_ = true;
      }
      interrupt_enable_ = value & 0x0f;
      return false;
    case kInterruptId: {  // FCR
      bool enable = (value & kFcrEnable) != 0;
      // Changing the FIFO enable bit clears both FIFOs (data sheet, FCR bit 0).
      if (enable != fifo_enabled_ || (value & kFcrClearReceive)) {
        receive_count_ = 0;
        receive_head_ = 0;
      }
      fifo_enabled_ = enable;
      trigger_level_ = kTriggerLevels[value >> 6];
      return false;
    }
    case kLineControl: line_control_ = value; return false;
    case kModemControl:
      modem_control_ = value & 0x1f;
      update_modem_status();
      return false;
    case kLineStatus:
    case kModemStatus:
      if (log_limiter_.allow()) {
        log_warn("{}: guest wrote {:#04x} to read-only register {}; ignored", name_, value, offset);
      }
      return false;
    case kScratch: scratch_ = value; return false;
  }
  return false;
}

void Uart16550::push_received(uint8_t value) {
  if (receive_count_ >= receive_capacity()) {
    // Overrun: the new character is lost and LSR.OE reports it (data sheet, LSR bit 1).
    line_status_errors_ |= kLsrOverrun;
    return;
  }
  receive_fifo_[(receive_head_ + receive_count_) % kFifoSize] = value;
  ++receive_count_;
}

size_t Uart16550::receive(std::span<const std::byte> bytes) {
  std::lock_guard lock(mutex_);
  size_t taken = 0;
  if (!(modem_control_ & kMcrLoopback)) {
    while (taken < bytes.size() && receive_count_ < receive_capacity()) {
      push_received(static_cast<uint8_t>(bytes[taken]));
      ++taken;
    }
  }
  if (taken < bytes.size()) backend_refused_ = true;
  update_irq();
  return taken;
}

uint8_t Uart16550::interrupt_identification() const {
  uint8_t id = kIirNoInterrupt;
  if ((interrupt_enable_ & kIerLineStatus) && (line_status_errors_ & kLsrErrors)) {
    id = kIirLineStatus;
  } else if ((interrupt_enable_ & kIerReceivedData) && receive_count_ > 0) {
    id = (fifo_enabled_ && receive_count_ < trigger_level_) ? kIirCharacterTimeout
                                                            : kIirReceivedData;
  } else if ((interrupt_enable_ & kIerTransmitEmpty) && transmit_empty_pending_) {
    id = kIirTransmitEmpty;
  } else if ((interrupt_enable_ & kIerModemStatus) && modem_status_deltas_ != 0) {
    id = kIirModemStatus;
  }
  return static_cast<uint8_t>(id | (fifo_enabled_ ? kIirFifosEnabled : 0));
}

uint8_t Uart16550::modem_status_lines() const {
  if (modem_control_ & kMcrLoopback) {
    // Loopback wires RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD (data sheet, MCR bit 4).
    uint8_t lines = 0;
    if (modem_control_ & kMcrRts) lines |= kMsrCts;
    if (modem_control_ & kMcrDtr) lines |= kMsrDsr;
    if (modem_control_ & kMcrOut1) lines |= kMsrRi;
    if (modem_control_ & kMcrOut2) lines |= kMsrDcd;
    return lines;
  }
  // The host side is always connected and ready.
  return kMsrCts | kMsrDsr | kMsrDcd;
}

void Uart16550::update_modem_status() {
  uint8_t lines = modem_status_lines();
  uint8_t changed = lines ^ previous_lines_;
  if (changed & kMsrCts) modem_status_deltas_ |= 0x01;
  if (changed & kMsrDsr) modem_status_deltas_ |= 0x02;
  // TERI reports only the trailing edge of RI.
  if ((changed & kMsrRi) && !(lines & kMsrRi)) modem_status_deltas_ |= 0x04;
  if (changed & kMsrDcd) modem_status_deltas_ |= 0x08;
  previous_lines_ = lines;
}

void Uart16550::update_irq() {
  bool level =
      (interrupt_identification() & kIirNoInterrupt) == 0 && (modem_control_ & kMcrOut2) != 0;
  if (level != irq_level_) {
    irq_level_ = level;
    irq_.set_level(level);
  }
}

uint32_t Uart16550::baud_rate() const {
  std::lock_guard lock(mutex_);
  uint32_t divisor = divisor_low_ | (divisor_high_ << 8);
  return divisor == 0 ? 0 : 115200 / divisor;
}

void Uart16550::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section("uart16550", kStateVersion);
  writer.put(interrupt_enable_, line_control_, modem_control_, line_status_errors_,
             modem_status_deltas_, previous_lines_, scratch_, divisor_low_, divisor_high_,
             fifo_enabled_, trigger_level_, transmit_empty_pending_, receive_count_);
  for (uint8_t i = 0; i < receive_count_; ++i) {
    writer.put_u8(receive_fifo_[(receive_head_ + i) % kFifoSize]);
  }
  writer.end_section();
}

Result<void> Uart16550::load(StateReader& reader) {
  auto version = reader.begin_section("uart16550");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: saved state version {} is not supported", name_, *version));
  }
  std::lock_guard lock(mutex_);
  uint8_t count = 0;
  if (auto result =
          reader.get(interrupt_enable_, line_control_, modem_control_, line_status_errors_,
                     modem_status_deltas_, previous_lines_, scratch_, divisor_low_, divisor_high_,
                     fifo_enabled_, trigger_level_, transmit_empty_pending_, count);
      !result) {
    return result;
  }
  if (count > kFifoSize) {
    return fail(ErrorCode::kCorrupt, fmt::format("{}: saved FIFO holds {} bytes", name_, count));
  }
  receive_head_ = 0;
  receive_count_ = count;
  for (uint8_t i = 0; i < count; ++i) {
    if (auto result = reader.get(receive_fifo_[i]); !result) return result;
  }
  // Clamp values no real register could hold.
  interrupt_enable_ &= 0x0f;
  modem_control_ &= 0x1f;
  line_status_errors_ &= kLsrErrors;
  modem_status_deltas_ &= 0x0f;
  previous_lines_ &= 0xf0;
  bool known_level = false;
  for (uint8_t level : kTriggerLevels) known_level |= level == trigger_level_;
  if (!known_level) trigger_level_ = 1;
  update_irq();
  return reader.end_section();
}

}  // namespace lamina::hw
