#include "hw/display/std_vga.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include <fmt/format.h>

namespace lamina::hw {
namespace {

// Legacy port numbers (IBM VGA technical reference, "Register summary"), as absolute ports.
constexpr uint16_t kCrtcIndexMono = 0x3b4;
constexpr uint16_t kCrtcDataMono = 0x3b5;
constexpr uint16_t kInputStatus1Mono = 0x3ba;
constexpr uint16_t kAttributeIndex = 0x3c0;
constexpr uint16_t kAttributeDataRead = 0x3c1;
constexpr uint16_t kMiscOutputWrite = 0x3c2;
constexpr uint16_t kSequencerIndex = 0x3c4;
constexpr uint16_t kSequencerData = 0x3c5;
constexpr uint16_t kDacMask = 0x3c6;
constexpr uint16_t kDacReadIndex = 0x3c7;
constexpr uint16_t kDacWriteIndex = 0x3c8;
constexpr uint16_t kDacData = 0x3c9;
constexpr uint16_t kFeatureControlRead = 0x3ca;
constexpr uint16_t kMiscOutputRead = 0x3cc;
constexpr uint16_t kGraphicsIndex = 0x3ce;
constexpr uint16_t kGraphicsData = 0x3cf;
constexpr uint16_t kCrtcIndexColor = 0x3d4;
constexpr uint16_t kCrtcDataColor = 0x3d5;
constexpr uint16_t kInputStatus1Color = 0x3da;

// The BAR2 MMIO layout of QEMU's stdvga: EDID at 0, VGA ports 0x3c0-0x3df at 0x400, DISPI
// registers (16 bits each) at 0x500, QEMU's extended registers at 0x600.
constexpr uint64_t kMmioVgaPorts = 0x400;
constexpr uint64_t kMmioDispi = 0x500;

constexpr uint32_t kStateVersion = 1;

std::span<const std::byte> as_bytes_of(std::span<const uint8_t> bytes) {
  return std::as_bytes(bytes);
}

uint8_t expand_bits(uint8_t plane_bits, unsigned plane) {
  return (plane_bits >> plane) & 1 ? 0xff : 0x00;
}

}  // namespace

StdVga::StdVga(uint64_t video_memory)
    : legacy_ports_(*this, kLegacyPorts, "vga-ports"),
      dispi_ports_(*this, kDispiPorts, "vga-dispi"),
      legacy_memory_(*this, kLegacyMemory, "vga-memory"),
      framebuffer_(*this, kFramebuffer, "vga-framebuffer"),
      mmio_(*this, kMmio, "vga-mmio"),
      vram_(std::clamp<uint64_t>(std::bit_ceil(video_memory), uint64_t{1} << 20,
                                 uint64_t{256} << 20)) {
  dispi_[dispi::kIndexId] = dispi::kId5;
  dispi_[dispi::kIndexXres] = 640;
  dispi_[dispi::kIndexYres] = 480;
  dispi_[dispi::kIndexBpp] = 32;
  // Colour emulation (CRTC at 0x3d4) and RAM enabled, as firmware expects after reset.
  misc_output_ = 0x03;
}

void StdVga::window_read(unsigned window, uint64_t offset, std::span<std::byte> data) {
  std::lock_guard lock(mutex_);
  switch (window) {
    case kLegacyPorts:
      for (size_t index = 0; index < data.size(); ++index) {
        data[index] = std::byte{port_read(static_cast<uint16_t>(kLegacyPortBase + offset + index))};
      }
      return;
    case kDispiPorts: {
      const uint16_t value = offset == 0 ? dispi_index_ : dispi_read(dispi_index_);
      for (size_t index = 0; index < data.size(); ++index) {
        data[index] = std::byte{static_cast<uint8_t>(value >> (8 * (index % 2)))};
      }
      return;
    }
    case kLegacyMemory:
      for (size_t index = 0; index < data.size(); ++index) {
        data[index] = std::byte{memory_read(static_cast<uint32_t>(offset + index))};
      }
      return;
    case kFramebuffer:
      if (offset < vram_.size() && data.size() <= vram_.size() - offset) {
        std::memcpy(data.data(), vram_.data() + offset, data.size());
      } else {
        std::ranges::fill(data, std::byte{0xff});
      }
      return;
    case kMmio:
      std::ranges::fill(data, std::byte{0});
      if (offset >= kMmioVgaPorts && offset + data.size() <= kMmioVgaPorts + 0x20) {
        for (size_t index = 0; index < data.size(); ++index) {
          data[index] =
              std::byte{port_read(static_cast<uint16_t>(0x3c0 + offset - kMmioVgaPorts + index))};
        }
      } else if (offset >= kMmioDispi && offset < kMmioDispi + 2 * dispi::kRegisters &&
                 data.size() <= 2) {
        const uint16_t value = dispi_read(static_cast<uint16_t>((offset - kMmioDispi) / 2));
        for (size_t index = 0; index < data.size(); ++index) {
          data[index] = std::byte{static_cast<uint8_t>(value >> (8 * ((offset + index) % 2)))};
        }
      }
      // Everything else (EDID, QEMU's extended registers) reads zero: no EDID, no extensions.
      return;
    default: std::ranges::fill(data, std::byte{0xff});
  }
}

void StdVga::window_write(unsigned window, uint64_t offset, std::span<const std::byte> data) {
  std::lock_guard lock(mutex_);
  mark_changed();
  switch (window) {
    case kLegacyPorts:
      for (size_t index = 0; index < data.size(); ++index) {
        port_write(static_cast<uint16_t>(kLegacyPortBase + offset + index),
                   std::to_integer<uint8_t>(data[index]));
      }
      return;
    case kDispiPorts: {
      uint16_t value = std::to_integer<uint8_t>(data[0]);
      if (data.size() >= 2) value |= static_cast<uint16_t>(std::to_integer<uint8_t>(data[1]) << 8);
      if (offset == 0) {
        dispi_index_ = value;
      } else {
        dispi_write(dispi_index_, value);
      }
      return;
    }
    case kLegacyMemory:
      for (size_t index = 0; index < data.size(); ++index) {
        memory_write(static_cast<uint32_t>(offset + index), std::to_integer<uint8_t>(data[index]));
      }
      return;
    case kFramebuffer:
      if (offset < vram_.size() && data.size() <= vram_.size() - offset) {
        std::memcpy(vram_.data() + offset, data.data(), data.size());
      }
      return;
    case kMmio:
      if (offset >= kMmioVgaPorts && offset + data.size() <= kMmioVgaPorts + 0x20) {
        for (size_t index = 0; index < data.size(); ++index) {
          port_write(static_cast<uint16_t>(0x3c0 + offset - kMmioVgaPorts + index),
                     std::to_integer<uint8_t>(data[index]));
        }
      } else if (offset >= kMmioDispi && offset < kMmioDispi + 2 * dispi::kRegisters &&
                 data.size() == 2 && offset % 2 == 0) {
        dispi_write(static_cast<uint16_t>((offset - kMmioDispi) / 2),
                    static_cast<uint16_t>(std::to_integer<uint8_t>(data[0]) |
                                          std::to_integer<uint8_t>(data[1]) << 8));
      }
      return;
    default: return;
  }
}

uint8_t StdVga::port_read(uint16_t port) {
  switch (port) {
    case kAttributeIndex: return attribute_index_;
    case kAttributeDataRead: {
      const unsigned index = attribute_index_ & 0x1f;
      return index < attribute_.size() ? attribute_[index] : 0;
    }
    case kMiscOutputWrite:  // input status 0: no switch sense, no CRT interrupt
      return 0;
    case kSequencerIndex: return sequencer_index_;
    case kSequencerData: return sequencer_[sequencer_index_ & 7];
    case kDacMask: return dac_mask_;
    case kDacReadIndex: return dac_reading_ ? 0x03 : 0x00;
    case kDacWriteIndex: return dac_write_index_;
    case kDacData: {
      const uint8_t value = dac_[dac_read_index_ * 3u + dac_component_];
      if (++dac_component_ == 3) {
        dac_component_ = 0;
        ++dac_read_index_;
      }
      return value;
    }
    case kFeatureControlRead: return feature_control_;
    case kMiscOutputRead: return misc_output_;
    case kGraphicsIndex: return graphics_index_;
    case kGraphicsData: return graphics_[graphics_index_ & 0x0f];
    case kCrtcIndexMono:
    case kCrtcIndexColor: return crtc_index_;
    case kCrtcDataMono:
    case kCrtcDataColor: return crtc_index_ < crtc_.size() ? crtc_[crtc_index_] : 0;
    case kInputStatus1Mono:
    case kInputStatus1Color:
      // Reading it resets the attribute flip-flop. Display-enable and vertical retrace toggle
      // on every read, so guests polling for either (vgabios, GRUB) always see both edges.
      attribute_expects_data_ = false;
      status_toggle_ ^= 0x09;
      return status_toggle_;
    default: return 0xff;
  }
}

void StdVga::port_write(uint16_t port, uint8_t value) {
  switch (port) {
    case kAttributeIndex:
      if (!attribute_expects_data_) {
        attribute_index_ = value & 0x3f;
      } else {
        const unsigned index = attribute_index_ & 0x1f;
        if (index < attribute_.size()) attribute_[index] = value;
      }
      attribute_expects_data_ = !attribute_expects_data_;
      return;
    case kMiscOutputWrite: misc_output_ = value; return;
    case kSequencerIndex: sequencer_index_ = value; return;
    case kSequencerData: sequencer_[sequencer_index_ & 7] = value; return;
    case kDacMask: dac_mask_ = value; return;
    case kDacReadIndex:
      dac_read_index_ = value;
      dac_component_ = 0;
      dac_reading_ = true;
      return;
    case kDacWriteIndex:
      dac_write_index_ = value;
      dac_component_ = 0;
      dac_reading_ = false;
      return;
    case kDacData:
      dac_[dac_write_index_ * 3u + dac_component_] = value;
      if (++dac_component_ == 3) {
        dac_component_ = 0;
        ++dac_write_index_;
      }
      return;
    case kGraphicsIndex: graphics_index_ = value; return;
    case kGraphicsData: graphics_[graphics_index_ & 0x0f] = value; return;
    case kCrtcIndexMono:
    case kCrtcIndexColor: crtc_index_ = value; return;
    case kCrtcDataMono:
    case kCrtcDataColor:
      if (crtc_index_ < crtc_.size()) crtc_[crtc_index_] = value;
      return;
    case kInputStatus1Mono:
    case kInputStatus1Color: feature_control_ = value; return;
    default:
      if (log_limiter_.allow()) log_warn("vga: write {:#04x} to unknown port {:#x}", value, port);
  }
}

uint16_t StdVga::dispi_read(uint16_t index) const {
  const bool caps = (dispi_[dispi::kIndexEnable] & dispi::kGetCaps) != 0;
  switch (index) {
    case dispi::kIndexXres: return caps ? dispi::kMaxXres : dispi_[index];
    case dispi::kIndexYres: return caps ? dispi::kMaxYres : dispi_[index];
    case dispi::kIndexBpp: return caps ? dispi::kMaxBpp : dispi_[index];
    case dispi::kIndexVideoMemory64k:
      return static_cast<uint16_t>(std::min<uint64_t>(vram_.size() >> 16, 0xffff));
    default: return index < dispi::kRegisters ? dispi_[index] : 0;
  }
}

void StdVga::dispi_write(uint16_t index, uint16_t value) {
  switch (index) {
    case dispi::kIndexId:
      if (value >= dispi::kId0 && value <= dispi::kId5) dispi_[index] = value;
      return;
    case dispi::kIndexXres:
    case dispi::kIndexYres:
    case dispi::kIndexBpp:
    case dispi::kIndexBank:
    case dispi::kIndexXOffset:
    case dispi::kIndexYOffset:
    case dispi::kIndexVirtWidth:
      // Stored as written; every use checks them against video memory.
      dispi_[index] = value;
      return;
    case dispi::kIndexVirtHeight:
      // Follows from the virtual width and video memory; Linux's bochs-drm writes it anyway at
      // each mode set, and the adapter ignores it, as QEMU's does.
      return;
    case dispi::kIndexEnable: {
      const bool was_enabled = dispi_enabled();
      dispi_[index] = value & (dispi::kEnabled | dispi::kGetCaps | dispi::kEightBitDac |
                               dispi::kLfbEnabled | dispi::kNoClearMemory);
      if (!dispi_enabled() || was_enabled) return;
      // A mode set: the virtual screen starts as the visible one, at offset 0.
      const uint64_t bytes_per_pixel = (dispi_[dispi::kIndexBpp] + 7u) / 8u;
      const uint64_t line =
          uint64_t{dispi_[dispi::kIndexXres]} * std::max<uint64_t>(bytes_per_pixel, 1);
      dispi_[dispi::kIndexVirtWidth] = dispi_[dispi::kIndexXres];
      dispi_[dispi::kIndexVirtHeight] =
          static_cast<uint16_t>(line == 0 ? 0 : std::min<uint64_t>(vram_.size() / line, 0xffff));
      dispi_[dispi::kIndexXOffset] = 0;
      dispi_[dispi::kIndexYOffset] = 0;
      if ((value & dispi::kNoClearMemory) == 0) {
        const uint64_t used = std::min<uint64_t>(line * dispi_[dispi::kIndexYres], vram_.size());
        std::fill_n(vram_.begin(), used, uint8_t{0});
      }
      // Graphics mode with the window at 0xA0000 (64 KiB), for banked access.
      graphics_[vga::kGrMisc] = static_cast<uint8_t>((graphics_[vga::kGrMisc] & ~0x0c) | 0x05);
      return;
    }
    default:
      if (log_limiter_.allow()) log_warn("vga: write to unknown DISPI register {:#x}", index);
  }
}

uint8_t StdVga::memory_read(uint32_t address) {
  if (dispi_enabled()) {
    // Banked access to the linear framebuffer through the first 64 KiB of the window.
    if (address >= 0x10000) return 0xff;
    const uint64_t linear = uint64_t{dispi_[dispi::kIndexBank]} * 0x10000 + address;
    return linear < vram_.size() ? vram_[linear] : 0xff;
  }
  // Graphics controller Miscellaneous register bits 3-2: which part of 0xA0000-0xBFFFF decodes.
  static constexpr uint32_t kMapBase[4] = {0, 0, 0x10000, 0x18000};
  static constexpr uint32_t kMapSize[4] = {0x20000, 0x10000, 0x8000, 0x8000};
  const unsigned map = (graphics_[vga::kGrMisc] >> 2) & 3;
  if (address < kMapBase[map] || address >= kMapBase[map] + kMapSize[map]) return 0xff;
  address -= kMapBase[map];
  if (sequencer_[vga::kSrMemoryMode] & 0x08) return vram_[address];  // chain-4: planes interleaved
  if (graphics_[vga::kGrMode] & 0x10) {
    // Odd/even: address bit 0 picks plane 0/1 (or 2/3 with Read Map Select bit 1).
    const unsigned plane = (graphics_[vga::kGrReadMapSelect] & 2) | (address & 1);
    return vram_[((address & ~1u) << 1) | plane];
  }
  const size_t base = size_t{address} * 4;
  std::memcpy(latch_.data(), vram_.data() + base, 4);
  if ((graphics_[vga::kGrMode] & 0x08) == 0) return latch_[graphics_[vga::kGrReadMapSelect] & 3];
  // Read mode 1: bits whose colour matches Color Compare in the planes Color Don't Care keeps.
  uint8_t result = 0xff;
  for (unsigned plane = 0; plane < 4; ++plane) {
    if ((graphics_[vga::kGrColorDontCare] >> plane) & 1) {
      result &= (graphics_[vga::kGrColorCompare] >> plane) & 1
                    ? latch_[plane]
                    : static_cast<uint8_t>(~latch_[plane]);
    }
  }
  return result;
}

void StdVga::memory_write(uint32_t address, uint8_t value) {
  if (dispi_enabled()) {
    if (address >= 0x10000) return;
    const uint64_t linear = uint64_t{dispi_[dispi::kIndexBank]} * 0x10000 + address;
    if (linear < vram_.size()) vram_[linear] = value;
    return;
  }
  static constexpr uint32_t kMapBase[4] = {0, 0, 0x10000, 0x18000};
  static constexpr uint32_t kMapSize[4] = {0x20000, 0x10000, 0x8000, 0x8000};
  const unsigned map = (graphics_[vga::kGrMisc] >> 2) & 3;
  if (address < kMapBase[map] || address >= kMapBase[map] + kMapSize[map]) return;
  address -= kMapBase[map];
  const uint8_t map_mask = sequencer_[vga::kSrMapMask] & 0x0f;
  if (sequencer_[vga::kSrMemoryMode] & 0x08) {
    if ((map_mask >> (address & 3)) & 1) vram_[address] = value;
    return;
  }
  if ((sequencer_[vga::kSrMemoryMode] & 0x04) == 0) {
    const unsigned plane = (graphics_[vga::kGrReadMapSelect] & 2) | (address & 1);
    if ((map_mask >> plane) & 1) vram_[((address & ~1u) << 1) | plane] = value;
    return;
  }
  // Planar write (IBM VGA reference, "Graphics Controller", write modes 0-3).
  const unsigned write_mode = graphics_[vga::kGrMode] & 3;
  const unsigned rotate = graphics_[vga::kGrDataRotate] & 7;
  const unsigned function = (graphics_[vga::kGrDataRotate] >> 3) & 3;
  const uint8_t rotated = std::rotr(value, static_cast<int>(rotate));
  uint8_t bit_mask = graphics_[vga::kGrBitMask];
  std::array<uint8_t, 4> planes{};
  for (unsigned plane = 0; plane < 4; ++plane) {
    switch (write_mode) {
      case 0:
        planes[plane] = (graphics_[vga::kGrEnableSetReset] >> plane) & 1
                            ? expand_bits(graphics_[vga::kGrSetReset], plane)
                            : rotated;
        break;
      case 1: planes[plane] = latch_[plane]; break;
      case 2: planes[plane] = expand_bits(value, plane); break;
      default: planes[plane] = expand_bits(graphics_[vga::kGrSetReset], plane); break;
    }
  }
  if (write_mode == 3) bit_mask &= rotated;
  if (write_mode != 1) {
    for (unsigned plane = 0; plane < 4; ++plane) {
      uint8_t result = planes[plane];
      switch (function) {
        case 1: result &= latch_[plane]; break;
        case 2: result |= latch_[plane]; break;
        case 3: result ^= latch_[plane]; break;
        default: break;
      }
      planes[plane] = static_cast<uint8_t>((result & bit_mask) | (latch_[plane] & ~bit_mask));
    }
  }
  const size_t base = size_t{address} * 4;
  for (unsigned plane = 0; plane < 4; ++plane) {
    if ((map_mask >> plane) & 1) vram_[base + plane] = planes[plane];
  }
}

void StdVga::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section("std-vga", kStateVersion);
  writer.put_bytes(as_bytes_of(sequencer_));
  writer.put_bytes(as_bytes_of(graphics_));
  writer.put_bytes(as_bytes_of(attribute_));
  writer.put_bytes(as_bytes_of(crtc_));
  writer.put_bytes(as_bytes_of(dac_));
  writer.put_bytes(as_bytes_of(latch_));
  writer.put(sequencer_index_, graphics_index_, attribute_index_, attribute_expects_data_,
             crtc_index_, misc_output_, feature_control_, dac_write_index_, dac_read_index_,
             dac_component_, dac_reading_, dac_mask_, dispi_index_);
  for (uint16_t value : dispi_) writer.put(value);
  constexpr size_t kBlock = 0x10000;
  size_t used = vram_.size();
  while (used > 0 && std::all_of(vram_.begin() + static_cast<ptrdiff_t>(used - kBlock),
                                 vram_.begin() + static_cast<ptrdiff_t>(used),
                                 [](uint8_t byte) { return byte == 0; })) {
    used -= kBlock;
  }
  writer.put_bytes(as_bytes_of(std::span(vram_.data(), used)));
  writer.end_section();
}

Result<void> StdVga::load(StateReader& reader) {
  auto version = reader.begin_section("std-vga");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("std-vga: saved state version {} is not supported", *version));
  }
  std::lock_guard lock(mutex_);
  for (std::span<uint8_t> registers :
       {std::span<uint8_t>(sequencer_), std::span<uint8_t>(graphics_),
        std::span<uint8_t>(attribute_), std::span<uint8_t>(crtc_), std::span<uint8_t>(dac_),
        std::span<uint8_t>(latch_)}) {
    if (auto read = reader.get_bytes(std::as_writable_bytes(registers)); !read) return read;
  }
  if (auto read = reader.get(sequencer_index_, graphics_index_, attribute_index_,
                             attribute_expects_data_, crtc_index_, misc_output_, feature_control_,
                             dac_write_index_, dac_read_index_, dac_component_, dac_reading_,
                             dac_mask_, dispi_index_);
      !read) {
    return read;
  }
  if (dac_component_ > 2) return fail(ErrorCode::kCorrupt, "std-vga: DAC component out of range");
  for (uint16_t& value : dispi_) {
    if (auto read = reader.get(value); !read) return read;
  }
  auto memory = reader.get_blob(vram_.size());
  if (!memory) return fail(memory.error());
  std::fill(vram_.begin(), vram_.end(), uint8_t{0});
  std::memcpy(vram_.data(), memory->data(), memory->size());
  mark_changed();
  return reader.end_section();
}

}  // namespace lamina::hw
