#include "hw/fw_cfg.h"

#include <algorithm>
#include <array>
#include <cstring>

#include <fmt/format.h>

#include "base/byte_order.h"

namespace lamina::hw {

namespace {
constexpr uint32_t kStateVersion = 1;
// Register offsets within the port range.
constexpr uint64_t kSelectorOffset = 0;
constexpr uint64_t kDataOffset = 1;
constexpr uint64_t kDmaHighOffset = 4;
constexpr uint64_t kDmaLowOffset = 8;

std::vector<std::byte> bytes_of(std::string_view text) {
  std::vector<std::byte> bytes(text.size());
  std::memcpy(bytes.data(), text.data(), text.size());
  return bytes;
}

bool device_owned(uint16_t key) {
  return key == fw_cfg::kSignature || key == fw_cfg::kId || key == fw_cfg::kFileDirectory ||
         (key >= fw_cfg::kFirstFileKey && key < fw_cfg::kFirstFileKey + FwCfg::kMaxFiles);
}
}  // namespace

FwCfg::FwCfg(DmaMemory& memory) : memory_(memory) {
  items_[fw_cfg::kSignature] = bytes_of("QEMU");
  std::vector<std::byte> id(4);
  store_le<uint32_t>(id.data(), fw_cfg::kFeatureTraditional | fw_cfg::kFeatureDma);
  items_[fw_cfg::kId] = std::move(id);
  rebuild_directory();
}

Result<void> FwCfg::add_item(uint16_t key, std::vector<std::byte> data) {
  if (device_owned(key)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("fw_cfg: key {:#x} belongs to the device or its files", key));
  }
  std::lock_guard lock(mutex_);
  items_[key & ~fw_cfg::kWriteChannel] = std::move(data);
  return {};
}

Result<uint16_t> FwCfg::add_file(std::string_view name, std::vector<std::byte> data) {
  // The name and its terminating NUL fit the directory's 56 bytes.
  if (name.empty() || name.size() >= fw_cfg::kFileNameSize) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("fw_cfg: file name '{}' is empty or longer than {} bytes", name,
                            fw_cfg::kFileNameSize - 1));
  }
  if (std::find(file_names_.begin(), file_names_.end(), name) != file_names_.end()) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("fw_cfg: file '{}' added twice", name));
  }
  if (file_names_.size() >= kMaxFiles) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("fw_cfg: more than {} files", kMaxFiles));
  }
  const auto key = static_cast<uint16_t>(fw_cfg::kFirstFileKey + file_names_.size());
  std::lock_guard lock(mutex_);
  file_names_.emplace_back(name);
  items_[key] = std::move(data);
  rebuild_directory();
  return key;
}

void FwCfg::rebuild_directory() {
  // fw_cfg.rst: be32 count, then { be32 size; be16 select; be16 reserved; char name[56]; }.
  std::vector<std::byte> directory(4 + file_names_.size() * fw_cfg::kDirectoryEntrySize);
  store_be<uint32_t>(directory.data(), static_cast<uint32_t>(file_names_.size()));
  for (size_t index = 0; index < file_names_.size(); ++index) {
    std::byte* entry = directory.data() + 4 + index * fw_cfg::kDirectoryEntrySize;
    const auto key = static_cast<uint16_t>(fw_cfg::kFirstFileKey + index);
    store_be<uint32_t>(entry, static_cast<uint32_t>(items_[key].size()));
    store_be<uint16_t>(entry + 4, key);
    std::memcpy(entry + 8, file_names_[index].data(), file_names_[index].size());
  }
  items_[fw_cfg::kFileDirectory] = std::move(directory);
}

std::vector<std::byte> FwCfg::item(uint16_t key) const {
  std::lock_guard lock(mutex_);
  auto found = items_.find(key);
  return found == items_.end() ? std::vector<std::byte>{} : found->second;
}

const std::vector<std::byte>* FwCfg::selected_locked() const {
  auto found = items_.find(selector_);
  return found == items_.end() ? nullptr : &found->second;
}

void FwCfg::select_locked(uint16_t key) {
  // fw_cfg.rst: selecting an item resets the data offset; the write channel bit selects nothing.
  selector_ = key & ~fw_cfg::kWriteChannel;
  offset_ = 0;
}

void FwCfg::read(uint64_t offset, std::span<std::byte> data) {
  std::lock_guard lock(mutex_);
  if (offset == kDataOffset) {
    // Reads past the item's end (or of an absent item) give zeros (fw_cfg.rst, "Data Register").
    const std::vector<std::byte>* item = selected_locked();
    for (std::byte& byte : data) {
      if (item != nullptr && offset_ < item->size()) {
        byte = (*item)[offset_++];
      } else {
        byte = std::byte{0};
      }
    }
    return;
  }
  if (offset >= kDmaHighOffset && offset + data.size() <= kPortSize) {
    std::array<std::byte, 8> signature{};
    store_be<uint64_t>(signature.data(), fw_cfg::kDmaSignature);
    std::memcpy(data.data(), signature.data() + (offset - kDmaHighOffset), data.size());
    return;
  }
  std::fill(data.begin(), data.end(), std::byte{0xff});
}

void FwCfg::write(uint64_t offset, std::span<const std::byte> data) {
  std::lock_guard lock(mutex_);
  if (offset == kSelectorOffset && data.size() >= 2) {
    select_locked(load_le<uint16_t>(data.data()));
    return;
  }
  // The DMA address is written big-endian (fw_cfg.rst, "DMA interface").
  if (offset == kDmaHighOffset && data.size() == 8) {
    dma_address_high_ = 0;
    start_dma_locked(load_be<uint64_t>(data.data()));
    return;
  }
  if (offset == kDmaHighOffset && data.size() == 4) {
    dma_address_high_ = load_be<uint32_t>(data.data());
    return;
  }
  if (offset == kDmaLowOffset && data.size() == 4) {
    const uint64_t address = (uint64_t{dma_address_high_} << 32) | load_be<uint32_t>(data.data());
    dma_address_high_ = 0;
    start_dma_locked(address);
    return;
  }
  if (log_limiter_.allow()) {
    log_warn("fw_cfg: dropped a {}-byte write at offset {}", data.size(), offset);
  }
}

void FwCfg::start_dma_locked(uint64_t descriptor_address) {
  std::array<std::byte, fw_cfg::kDmaDescriptorSize> descriptor{};
  if (!memory_.read(descriptor_address, descriptor)) {
    // Nowhere to report the error: the descriptor itself is not in RAM.
    if (log_limiter_.allow()) {
      log_warn("fw_cfg: DMA descriptor at {:#x} is outside RAM; ignored", descriptor_address);
    }
    return;
  }
  const uint32_t control = load_be<uint32_t>(descriptor.data());
  const uint32_t length = load_be<uint32_t>(descriptor.data() + 4);
  const uint64_t address = load_be<uint64_t>(descriptor.data() + 8);
  // The descriptor is read once, so a transfer that overwrites it changes nothing but the
  // bytes; the control word written last is the device's answer.
  const uint32_t result = transfer_locked(control, length, address);
  std::array<std::byte, 4> answer{};
  store_be<uint32_t>(answer.data(), result);
  (void)memory_.write(descriptor_address, answer);
}

uint32_t FwCfg::transfer_locked(uint32_t control, uint32_t length, uint64_t address) {
  if (control & fw_cfg::kDmaSelect) select_locked(static_cast<uint16_t>(control >> 16));
  // fw_cfg.rst: READ wins over WRITE, WRITE over SKIP; none of them is a no-op that succeeds.
  if (control & fw_cfg::kDmaRead) {
    if (length > kMaxDmaLength) {
      if (log_limiter_.allow()) log_warn("fw_cfg: DMA read of {} bytes refused", length);
      return fw_cfg::kDmaError;
    }
    // The whole destination must be RAM before any byte moves.
    std::span<std::byte> destination = memory_.map_for_write(address, length);
    if (length != 0 && destination.empty()) {
      if (log_limiter_.allow()) {
        log_warn("fw_cfg: DMA read into {:#x}+{:#x} is outside RAM", address, length);
      }
      return fw_cfg::kDmaError;
    }
    const std::vector<std::byte>* item = selected_locked();
    const size_t available =
        item != nullptr && offset_ < item->size() ? item->size() - offset_ : 0;
    const size_t copied = std::min<size_t>(available, length);
    if (copied != 0) std::memcpy(destination.data(), item->data() + offset_, copied);
    std::fill(destination.begin() + static_cast<ptrdiff_t>(copied), destination.end(),
              std::byte{0});
    offset_ += static_cast<uint32_t>(copied);
    memory_.written(address, length);
    return 0;
  }
  if (control & fw_cfg::kDmaWrite) {
    // Every item is read-only (the table loader's WRITE_POINTER is not offered).
    if (log_limiter_.allow()) log_warn("fw_cfg: DMA write to item {:#x} refused", selector_);
    return fw_cfg::kDmaError;
  }
  if (control & fw_cfg::kDmaSkip) {
    const std::vector<std::byte>* item = selected_locked();
    const uint64_t size = item != nullptr ? item->size() : 0;
    offset_ = static_cast<uint32_t>(std::min<uint64_t>(uint64_t{offset_} + length, size));
  }
  return 0;
}

void FwCfg::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section("fw_cfg", kStateVersion);
  writer.put(selector_, offset_, dma_address_high_);
  writer.end_section();
}

Result<void> FwCfg::load(StateReader& reader) {
  auto version = reader.begin_section("fw_cfg");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("fw_cfg: saved state version {} is not supported", *version));
  }
  std::lock_guard lock(mutex_);
  if (auto got = reader.get(selector_, offset_, dma_address_high_); !got) return got;
  return reader.end_section();
}

}  // namespace lamina::hw
