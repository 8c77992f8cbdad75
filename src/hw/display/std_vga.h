#pragma once
// StdVga: the Bochs-compatible standard VGA adapter QEMU calls "std" (PCI 1234:1111), as SeaBIOS's
// vgabios-stdvga.bin, GRUB and Linux (vgacon, bochs-drm) drive it: the legacy VGA registers at
// ports 0x3B0-0x3DF (sequencer, graphics controller, attribute controller, CRTC, DAC), video
// memory as four 64 KiB planes behind the 0xA0000-0xBFFFF window (chain-4, odd/even and planar
// access with the write modes, read modes and latches of the IBM VGA technical reference), and
// the Bochs VBE "DISPI" extension (index/data ports 0x1CE/0x1CF; linear modes of 8, 15, 16, 24
// and 32 bpp in a linear framebuffer, banked through the window). The PCI function (stdvga_pci)
// maps the framebuffer at BAR0 and an MMIO BAR2 with the VGA ports at 0x400 and the DISPI
// registers at 0x500, as QEMU's stdvga does.
//
// Everything the guest writes is bounded: resolutions, depths, offsets and banks are checked when
// used, never trusted, so no access reads or writes outside video memory.
//
// render() draws what the guest sees into a Frame: text modes with the font the guest loaded
// into plane 2, linear DISPI modes, and VGA's 256-colour (mode 13h) and 16-colour planar modes.
//
// Ownership: owns video memory and its windows. Thread-safety: one mutex; vCPUs access the
// registers and memory, a display thread calls render() and generation().

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "base/log.h"
#include "hw/device_window.h"
#include "hw/display/frame.h"
#include "hw/stateful.h"

namespace lamina::hw {

// Bochs VBE DISPI registers (Bochs's vbe.h, QEMU's include/hw/display/bochs-vbe.h).
namespace dispi {
inline constexpr uint16_t kIndexId = 0x0;
inline constexpr uint16_t kIndexXres = 0x1;
inline constexpr uint16_t kIndexYres = 0x2;
inline constexpr uint16_t kIndexBpp = 0x3;
inline constexpr uint16_t kIndexEnable = 0x4;
inline constexpr uint16_t kIndexBank = 0x5;
inline constexpr uint16_t kIndexVirtWidth = 0x6;
inline constexpr uint16_t kIndexVirtHeight = 0x7;
inline constexpr uint16_t kIndexXOffset = 0x8;
inline constexpr uint16_t kIndexYOffset = 0x9;
inline constexpr uint16_t kIndexVideoMemory64k = 0xa;
inline constexpr uint16_t kRegisters = 0xb;

inline constexpr uint16_t kId0 = 0xb0c0;
inline constexpr uint16_t kId5 = 0xb0c5;
inline constexpr uint16_t kEnabled = 0x01;
inline constexpr uint16_t kGetCaps = 0x02;
inline constexpr uint16_t kEightBitDac = 0x20;
inline constexpr uint16_t kLfbEnabled = 0x40;
inline constexpr uint16_t kNoClearMemory = 0x80;

inline constexpr uint16_t kMaxXres = 2560;
inline constexpr uint16_t kMaxYres = 1600;
inline constexpr uint16_t kMaxBpp = 32;
}  // namespace dispi

// VGA register indices (IBM VGA technical reference): sequencer (Sr), graphics controller (Gr),
// attribute controller (Ar).
namespace vga {
inline constexpr unsigned kSrMapMask = 2;
inline constexpr unsigned kSrMemoryMode = 4;
inline constexpr unsigned kGrSetReset = 0;
inline constexpr unsigned kGrEnableSetReset = 1;
inline constexpr unsigned kGrColorCompare = 2;
inline constexpr unsigned kGrDataRotate = 3;
inline constexpr unsigned kGrReadMapSelect = 4;
inline constexpr unsigned kGrMode = 5;
inline constexpr unsigned kGrMisc = 6;
inline constexpr unsigned kGrColorDontCare = 7;
inline constexpr unsigned kGrBitMask = 8;
inline constexpr unsigned kArModeControl = 0x10;
inline constexpr unsigned kArColorPlaneEnable = 0x12;
inline constexpr unsigned kArColorSelect = 0x14;
}  // namespace vga

class StdVga final : public WindowedDevice, public Stateful {
 public:
  static constexpr uint64_t kDefaultVideoMemory = uint64_t{16} << 20;
  static constexpr uint64_t kLegacyPortBase = 0x3b0;
  static constexpr uint64_t kLegacyPortSize = 0x30;
  static constexpr uint64_t kDispiPortBase = 0x1ce;
  // 0x1CE index, 0x1CF data: a 16-bit access at 0x1CF reaches 0x1D0.
  static constexpr uint64_t kDispiPortSize = 3;
  static constexpr uint64_t kLegacyMemoryBase = 0xa0000;
  static constexpr uint64_t kLegacyMemorySize = 0x20000;
  static constexpr uint64_t kMmioSize = 0x1000;
  // Frames larger than this are not rendered (the DISPI maximum, 2560x1600).
  static constexpr uint64_t kMaxFramePixels = uint64_t{dispi::kMaxXres} * dispi::kMaxYres;

  // video_memory: a power of two from 1 MiB to 256 MiB (the PCI BAR0 size).
  explicit StdVga(uint64_t video_memory = kDefaultVideoMemory);

  Device& legacy_ports() { return legacy_ports_; }    // io 0x3b0, size 0x30
  Device& dispi_ports() { return dispi_ports_; }      // io 0x1ce, size 3
  Device& legacy_memory() { return legacy_memory_; }  // mmio 0xa0000, size 0x20000
  Device& framebuffer() { return framebuffer_; }      // BAR0, video_memory() bytes
  Device& mmio() { return mmio_; }                    // BAR2, kMmioSize bytes
  uint64_t video_memory() const { return vram_.size(); }

  // Draws the current screen; returns false (frame emptied) when the display shows nothing
  // renderable (disabled, or a mode this model does not draw).
  bool render(Frame& frame) const;
  // Changes whenever video memory or a register changes: a display that saw the same value
  // before need not render again.
  uint64_t generation() const { return generation_.load(std::memory_order_relaxed); }

  void window_read(unsigned window, uint64_t offset, std::span<std::byte> data) override;
  void window_write(unsigned window, uint64_t offset, std::span<const std::byte> data) override;

  // Registers and video memory up to its last non-zero 64 KiB (the rest loads as zeros).
  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  enum Window : unsigned { kLegacyPorts, kDispiPorts, kLegacyMemory, kFramebuffer, kMmio };

  uint8_t port_read(uint16_t port);  // port: 0x3b0-0x3df
  void port_write(uint16_t port, uint8_t value);
  uint16_t dispi_read(uint16_t index) const;
  void dispi_write(uint16_t index, uint16_t value);
  uint8_t memory_read(uint32_t address);  // address: offset in the 128 KiB window
  void memory_write(uint32_t address, uint8_t value);
  bool dispi_enabled() const { return (dispi_[dispi::kIndexEnable] & dispi::kEnabled) != 0; }
  // The palette entry `index` as 0x00RRGGBB (6- or 8-bit DAC).
  uint32_t palette_color(uint8_t index) const;
  // Attribute controller: a 4-bit colour to its DAC index.
  uint8_t attribute_color(uint8_t color) const;
  void mark_changed() { generation_.fetch_add(1, std::memory_order_relaxed); }

  bool render_text(Frame& frame) const;
  bool render_dispi(Frame& frame) const;
  bool render_planar(Frame& frame) const;
  bool render_chain4(Frame& frame) const;
  uint32_t vertical_display_lines() const;

  DeviceWindow legacy_ports_;
  DeviceWindow dispi_ports_;
  DeviceWindow legacy_memory_;
  DeviceWindow framebuffer_;
  DeviceWindow mmio_;
  RateLimiter log_limiter_;
  std::atomic<uint64_t> generation_{0};

  mutable std::mutex mutex_;
  // Plane p's byte at offset o is vram_[o * 4 + p] (QEMU's layout too), so chain-4 modes and the
  // DISPI modes read video memory linearly.
  std::vector<uint8_t> vram_;
  std::array<uint8_t, 8> sequencer_{};
  std::array<uint8_t, 16> graphics_{};
  std::array<uint8_t, 0x15> attribute_{};
  std::array<uint8_t, 0x19> crtc_{};
  std::array<uint8_t, 256 * 3> dac_{};
  uint8_t sequencer_index_ = 0;
  uint8_t graphics_index_ = 0;
  uint8_t attribute_index_ = 0;
  bool attribute_expects_data_ = false;  // the 0x3c0 index/data flip-flop
  uint8_t crtc_index_ = 0;
  uint8_t misc_output_ = 0;
  uint8_t feature_control_ = 0;
  uint8_t dac_write_index_ = 0;
  uint8_t dac_read_index_ = 0;
  uint8_t dac_component_ = 0;  // 0-2: red, green, blue of the current entry
  bool dac_reading_ = false;
  uint8_t dac_mask_ = 0xff;
  uint8_t status_toggle_ = 0;
  std::array<uint8_t, 4> latch_{};
  uint16_t dispi_index_ = 0;
  std::array<uint16_t, dispi::kRegisters> dispi_{};
};

}  // namespace lamina::hw
