#include "hw/msix.h"

#include <algorithm>

#include "base/byte_order.h"

namespace lamina::hw {

namespace {
constexpr uint8_t kMsixCapabilityId = 0x11;
constexpr uint16_t kEnable = 1u << 15;
constexpr uint16_t kFunctionMask = 1u << 14;
constexpr uint32_t kStateVersion = 1;
}  // namespace

MsixCapability::MsixCapability(PciDevice& function, MsiSink& sink, uint16_t vectors, uint8_t bar,
                               uint32_t table_offset, uint32_t pba_offset)
    : function_(function),
      sink_(sink),
      vectors_(std::clamp<uint16_t>(vectors, 1, kMaxVectors)),
      table_offset_(table_offset & ~7u),
      pba_offset_(pba_offset & ~7u),
      table_(vectors_),
      pending_((vectors_ + 63u) / 64u) {
  capability_ = function_.add_capability(kMsixCapabilityId, 12);
  if (capability_ != 0) {
    function_.set_config(capability_ + 2, 2, vectors_ - 1u);  // table size, N-1 encoded
    function_.set_writable(capability_ + 2, 2, kEnable | kFunctionMask);
    function_.set_config(capability_ + 4, 4, table_offset_ | (bar & 7u));
    function_.set_config(capability_ + 8, 4, pba_offset_ | (bar & 7u));
  }
  function_.add_config_listener([this](uint16_t offset, unsigned size) {
    // Unmasking the function or enabling MSI-X releases pending messages.
    if (capability_ != 0 && offset <= capability_ + 3u && offset + size > capability_ + 2u) {
      flush_pending(message_control());
    }
  });
}

uint16_t MsixCapability::message_control() const {
  if (capability_ == 0) return 0;
  return static_cast<uint16_t>(function_.config_read(capability_ + 2, 2));
}

bool MsixCapability::enabled() const { return (message_control() & kEnable) != 0; }

void MsixCapability::send(const std::vector<Message>& messages) {
  for (const Message& message : messages) sink_.deliver_msi(message.address, message.data);
}

void MsixCapability::flush_pending(uint16_t control) {
  if (!(control & kEnable) || (control & kFunctionMask)) return;
  std::vector<Message> messages;
  {
    std::lock_guard lock(mutex_);
    for (uint16_t vector = 0; vector < vectors_; ++vector) {
      uint64_t& word = pending_[vector / 64];
      const uint64_t bit = 1ull << (vector % 64);
      const Entry& entry = table_[vector];
      if ((word & bit) && !(entry.control & 1)) {
        word &= ~bit;
        messages.push_back(
            {(static_cast<uint64_t>(entry.address_high) << 32) | entry.address_low, entry.data});
      }
    }
  }
  send(messages);
}

bool MsixCapability::notify(uint16_t vector) {
  const uint16_t control = message_control();
  if (!(control & kEnable)) return false;
  if (vector >= vectors_) return true;  // a device bug, not the guest's: nothing to signal
  std::vector<Message> messages;
  {
    std::lock_guard lock(mutex_);
    const Entry& entry = table_[vector];
    if ((control & kFunctionMask) || (entry.control & 1)) {
      pending_[vector / 64] |= 1ull << (vector % 64);
    } else {
      messages.push_back(
          {(static_cast<uint64_t>(entry.address_high) << 32) | entry.address_low, entry.data});
    }
  }
  send(messages);
  return true;
}

void MsixCapability::read(uint64_t offset, std::span<std::byte> data) {
  uint64_t value = ~0ull;
  {
    std::lock_guard lock(mutex_);
    if (offset >= table_offset_ && offset - table_offset_ + data.size() <= table_size()) {
      const uint64_t relative = offset - table_offset_;
      value = 0;
      // Table entries are dwords; a qword read spans two of them.
      for (size_t i = 0; i < data.size(); i += 4) {
        const uint64_t at = relative + i;
        const Entry& entry = table_[at / 16];
        const uint32_t words[4] = {entry.address_low, entry.address_high, entry.data,
                                   entry.control};
        value |= static_cast<uint64_t>(words[(at % 16) / 4] >> (8 * (at % 4))) << (8 * i);
      }
    } else if (offset >= pba_offset_ && offset - pba_offset_ + data.size() <= pba_size()) {
      const uint64_t relative = offset - pba_offset_;
      value = pending_[relative / 8] >> (8 * (relative % 8));
    }
  }
  store_le_sized(data, value);
}

void MsixCapability::write(uint64_t offset, std::span<const std::byte> data) {
  if (data.size() != 4 && data.size() != 8) return;  // PCI 6.8.2: dword or qword accesses
  if (offset < table_offset_ || offset - table_offset_ + data.size() > table_size() ||
      (offset & 3)) {
    return;  // the PBA is read-only
  }
  const uint64_t value = load_le_sized(data);
  {
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < data.size(); i += 4) {
      const uint64_t at = offset - table_offset_ + i;
      Entry& entry = table_[at / 16];
      const auto word = static_cast<uint32_t>(value >> (8 * i));
      switch ((at % 16) / 4) {
        case 0: entry.address_low = word & ~3u; break;
        case 1: entry.address_high = word; break;
        case 2: entry.data = word; break;
        case 3: entry.control = word & 1; break;
      }
    }
  }
  flush_pending(message_control());
}

void MsixCapability::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section("msix", kStateVersion);
  writer.put(vectors_);
  for (const Entry& entry : table_) {
    writer.put(entry.address_low, entry.address_high, entry.data, entry.control);
  }
  for (uint64_t word : pending_) writer.put(word);
  writer.end_section();
}

Result<void> MsixCapability::load(StateReader& reader) {
  auto version = reader.begin_section("msix");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported, "msix: saved state version is not supported");
  }
  std::lock_guard lock(mutex_);
  uint16_t vectors = 0;
  if (auto result = reader.get(vectors); !result) return result;
  if (vectors != vectors_) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("msix: saved table has {} vectors, this device {}", vectors, vectors_));
  }
  for (Entry& entry : table_) {
    if (auto result = reader.get(entry.address_low, entry.address_high, entry.data, entry.control);
        !result) {
      return result;
    }
    entry.address_low &= ~3u;
    entry.control &= 1;
  }
  for (uint64_t& word : pending_) {
    if (auto result = reader.get(word); !result) return result;
  }
  if (vectors_ % 64 != 0) pending_.back() &= (1ull << (vectors_ % 64)) - 1;
  return reader.end_section();
}

}  // namespace lamina::hw
