#include "machine/smbios.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "base/byte_order.h"

namespace lamina::machine {

namespace {

constexpr uint16_t kMemoryArrayHandle = 0x1000;

// One structure: the formatted area (type, length, handle, then fields) and its strings.
class Structure {
 public:
  Structure(uint8_t type, uint16_t handle) {
    u8(type);
    u8(0);  // length, set by finish()
    u16(handle);
  }
  void u8(uint8_t value) { bytes_.push_back(std::byte{value}); }
  void u16(uint16_t value) { append_le(value); }
  void u32(uint32_t value) { append_le(value); }
  void u64(uint64_t value) { append_le(value); }
  // A string field: its 1-based number in the string set (0 for none).
  void string(std::string_view text) {
    if (text.empty()) {
      u8(0);
      return;
    }
    strings_.emplace_back(text);
    u8(static_cast<uint8_t>(strings_.size()));
  }
  // DSP0134 6.1.3: strings follow the formatted area, each NUL-terminated, the set ending in
  // one more NUL (two NULs when there are none).
  void finish_into(std::vector<std::byte>& out, uint16_t& largest) {
    bytes_[1] = std::byte{static_cast<uint8_t>(bytes_.size())};
    for (const std::string& text : strings_) {
      for (char c : text) bytes_.push_back(static_cast<std::byte>(c));
      bytes_.push_back(std::byte{0});
    }
    if (strings_.empty()) bytes_.push_back(std::byte{0});
    bytes_.push_back(std::byte{0});
    largest = std::max<uint16_t>(largest, static_cast<uint16_t>(bytes_.size()));
    for (std::byte byte : bytes_) out.push_back(byte);
  }

 private:
  template <typename T>
  void append_le(T value) {
    for (size_t i = 0; i < sizeof(T); ++i) {
      bytes_.push_back(static_cast<std::byte>((static_cast<uint64_t>(value) >> (8 * i)) & 0xff));
    }
  }
  std::vector<std::byte> bytes_;
  std::vector<std::string> strings_;
};

}  // namespace

Result<SmbiosFiles> build_smbios_files(const SmbiosConfig& config, const MemoryLayout& layout) {
  if (config.cpus == 0 || config.cpus > 255) {
    return fail(ErrorCode::kInvalidArgument, "SMBIOS: the vCPU count must be 1 to 255");
  }
  SmbiosFiles files;
  uint16_t largest = 0;
  uint16_t count = 0;
  auto add = [&](Structure& structure) {
    structure.finish_into(files.tables, largest);
    ++count;
  };

  // Type 0, BIOS Information (DSP0134 7.1).
  Structure bios(0, 0x0000);
  bios.string("Lamina");
  bios.string(config.firmware_version);
  bios.u16(0xe800);  // starting segment of the runtime image
  bios.string("12/06/2026");
  bios.u8(0);  // ROM size: 64 KiB
  bios.u64(uint64_t{1} << 3);  // characteristics not supported
  bios.u8(0);
  bios.u8(1u << 4);  // extension byte 2: the machine is a virtual machine
  bios.u8(0);
  bios.u8(0);
  bios.u8(0xff);  // no embedded controller
  bios.u8(0xff);
  add(bios);

  // Type 1, System Information (7.2).
  Structure system(1, 0x0100);
  system.string("Lamina");
  system.string("Lamina PC (i440FX)");
  system.string("1");
  system.string("");
  for (int i = 0; i < 16; ++i) system.u8(0);  // UUID: none given
  system.u8(0x06);  // woken by the power switch
  system.string("");
  system.string("Virtual Machine");
  add(system);

  // Type 4, Processor Information (7.5), one per vCPU.
  for (uint32_t index = 0; index < config.cpus; ++index) {
    Structure cpu(4, static_cast<uint16_t>(0x0400 + index));
    cpu.string(fmt::format("CPU {}", index));
    cpu.u8(0x03);  // central processor
    cpu.u8(0xfe);  // family: see Processor Family 2
    cpu.string("Lamina");
    cpu.u64(0);  // processor ID
    cpu.string("");
    cpu.u8(0);
    cpu.u16(0);
    cpu.u16(2000);  // max speed, MHz
    cpu.u16(2000);  // current speed, MHz
    cpu.u8(0x41);  // socket populated, CPU enabled
    cpu.u8(0x01);  // upgrade: other
    cpu.u16(0xffff);
    cpu.u16(0xffff);
    cpu.u16(0xffff);
    cpu.string("");
    cpu.string("");
    cpu.string("");
    cpu.u8(1);  // cores
    cpu.u8(1);  // cores enabled
    cpu.u8(1);  // threads
    cpu.u16(0x0004);  // 64-bit capable
    cpu.u16(0x0001);  // Processor Family 2: other
    add(cpu);
  }

  // Type 16, Physical Memory Array (7.17).
  const uint64_t ram_kib = layout.ram_size() / kKiB;
  Structure array(16, kMemoryArrayHandle);
  array.u8(0x01);  // location: other
  array.u8(0x03);  // use: system memory
  array.u8(0x06);  // error correction: multi-bit ECC
  array.u32(ram_kib < 0x80000000 ? static_cast<uint32_t>(ram_kib) : 0x80000000);
  array.u16(0xfffe);  // no error information
  array.u16(1);  // memory devices
  array.u64(ram_kib < 0x80000000 ? 0 : layout.ram_size());
  add(array);

  // Type 17, Memory Device (7.18): all RAM as one device.
  const uint64_t ram_mib = layout.ram_size() / kMiB;
  Structure device(17, 0x1100);
  device.u16(kMemoryArrayHandle);
  device.u16(0xfffe);
  device.u16(0xffff);  // total width unknown
  device.u16(0xffff);  // data width unknown
  device.u16(ram_mib < 0x7fff ? static_cast<uint16_t>(ram_mib) : 0x7fff);
  device.u8(0x09);  // DIMM
  device.u8(0);
  device.string("DIMM 0");
  device.string("");
  device.u8(0x07);  // RAM
  device.u16(0x0002);  // type detail: other
  device.u16(0);
  device.string("Lamina");
  device.string("");
  device.string("");
  device.string("");
  device.u8(0);
  device.u32(ram_mib < 0x7fff ? 0 : static_cast<uint32_t>(ram_mib));
  device.u16(0);
  device.u16(0);
  device.u16(0);
  device.u16(0);
  add(device);

  // Type 19, Memory Array Mapped Address (7.20), one per RAM range.
  struct Range {
    uint64_t start;
    uint64_t size;
  };
  std::vector<Range> ranges = {{0, layout.below_4g_ram_end()}};
  if (layout.above_4g_ram_size() > 0) ranges.push_back({kAbove4GiBStart, layout.above_4g_ram_size()});
  uint16_t handle = 0x1300;
  for (const Range& range : ranges) {
    Structure mapped(19, handle++);
    const uint64_t last = range.start + range.size - 1;
    const bool extended = last / kKiB >= 0xffffffff;
    mapped.u32(extended ? 0xffffffff : static_cast<uint32_t>(range.start / kKiB));
    mapped.u32(extended ? 0xffffffff : static_cast<uint32_t>(last / kKiB));
    mapped.u16(kMemoryArrayHandle);
    mapped.u8(1);  // partition width
    mapped.u64(extended ? range.start : 0);
    mapped.u64(extended ? last : 0);
    add(mapped);
  }

  // Type 32, System Boot Information (7.33): no errors.
  Structure boot(32, 0x2000);
  for (int i = 0; i < 6; ++i) boot.u8(0);
  boot.u8(0);
  add(boot);

  Structure end(127, 0x7f00);
  add(end);

  // The 2.1 entry point (DSP0134 5.2.1); the firmware fills the table address and checksums.
  files.anchor.resize(0x1f);
  std::byte* anchor = files.anchor.data();
  std::memcpy(anchor, "_SM_", 4);
  anchor[5] = std::byte{0x1f};
  anchor[6] = std::byte{2};
  anchor[7] = std::byte{8};
  store_le<uint16_t>(anchor + 8, largest);
  std::memcpy(anchor + 0x10, "_DMI_", 5);
  store_le<uint16_t>(anchor + 0x16, static_cast<uint16_t>(files.tables.size()));
  store_le<uint16_t>(anchor + 0x1c, count);
  anchor[0x1e] = std::byte{0x28};
  return files;
}

}  // namespace lamina::machine
