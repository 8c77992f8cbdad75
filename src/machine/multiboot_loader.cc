#include "machine/multiboot_loader.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "base/byte_order.h"
#include "machine/boot_tables.h"
#include "machine/elf_image.h"

namespace lamina::machine {

namespace {

constexpr uint64_t kSearchLimit = 8192;
constexpr uint32_t kFlagPageAlignModules = 1 << 0;
constexpr uint32_t kFlagMemoryInfo = 1 << 1;
constexpr uint32_t kFlagVideoMode = 1 << 2;
constexpr uint32_t kFlagAoutKludge = 1 << 16;
// Bits 0-15 are requirements (spec section 3.1.2): a loader must refuse one it does not know.
// Like QEMU, we accept the video-mode request (bit 2) and simply provide no video information.
constexpr uint32_t kKnownRequiredFlags = kFlagPageAlignModules | kFlagMemoryInfo | kFlagVideoMode;
constexpr uint64_t kInfoStructureSize = 0x78;  // through the framebuffer fields
constexpr uint64_t kPage = 4096;

// Where the boot data goes: the boot GDT's page, the information area and the boot stack, in
// this order and this layout whether at the default place or moved.
struct BootData {
  uint64_t gdt;
  uint64_t info;
  uint64_t info_end;
  uint64_t stack_top;
};
constexpr BootData kDefaultBootData{kBootGdtAddress, kMultibootInfoAddress, kMultibootInfoEnd,
                                    kBootStackTop};
constexpr uint64_t kBootStackSize = 64 * kKiB;

BootData boot_data_at(uint64_t base) {
  const uint64_t info = base + kPage;
  const uint64_t info_end = info + (kMultibootInfoEnd - kMultibootInfoAddress);
  return {base, info, info_end, info_end + kBootStackSize};
}

// Bump allocator over the information area [start, end).
class InfoArea {
 public:
  InfoArea(GuestMemory& memory, uint64_t start, uint64_t end)
      : memory_(memory), next_(start + kInfoStructureSize), end_(end) {}

  Result<uint64_t> put(std::span<const std::byte> bytes, uint64_t alignment = 8) {
    next_ = (next_ + alignment - 1) & ~(alignment - 1);
    if (bytes.size() > end_ - next_) {
      return fail(ErrorCode::kInvalidArgument,
                  "Multiboot command lines and module strings are too long for the "
                  "information area (about 90 KiB)");
    }
    const uint64_t address = next_;
    if (bytes.empty()) return address;
    if (auto written = memory_.write(address, bytes); !written) return fail(written.error());
    next_ += bytes.size();
    return address;
  }
  Result<uint64_t> put_string(std::string_view text) {
    const auto* first = reinterpret_cast<const std::byte*>(text.data());
    std::vector<std::byte> bytes(first, first + text.size());
    bytes.push_back(std::byte{0});
    return put(bytes, 1);
  }

 private:
  GuestMemory& memory_;
  uint64_t next_;
  uint64_t end_;
};

Result<void> check_placement(const std::vector<E820Entry>& map, std::string_view what,
                             uint64_t start, uint64_t end) {
  if (end <= start || !in_usable_ram(map, start, end - start) || end > kFourGiB) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} at {:#x}-{:#x} does not fit in the guest's usable RAM below 4 GiB; "
                            "give the VM more memory",
                            what, start, end));
  }
  return {};
}

struct Loaded {
  uint64_t start;
  uint64_t end;
  uint64_t entry;
};

// a.out kludge (spec section 3.1.3): the header's own address tells where the file lies.
Result<Loaded> load_aout_kludge(GuestMemory& memory, const std::vector<E820Entry>& map,
                                std::span<const std::byte> file, const MultibootHeader& header) {
  if (header.load_addr > header.header_addr ||
      header.header_addr - header.load_addr > header.file_offset) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("Multiboot header_addr {:#x} and load_addr {:#x} disagree with the "
                            "header's file offset {:#x}",
                            header.header_addr, header.load_addr, header.file_offset));
  }
  const uint64_t file_start = header.file_offset - (header.header_addr - header.load_addr);
  uint64_t load_size = file.size() - file_start;
  if (header.load_end_addr != 0) {
    if (header.load_end_addr <= header.load_addr ||
        header.load_end_addr - header.load_addr > load_size) {
      return fail(ErrorCode::kCorrupt,
                  fmt::format("Multiboot load_end_addr {:#x} lies before load_addr or past the "
                              "end of the file",
                              header.load_end_addr));
    }
    load_size = header.load_end_addr - header.load_addr;
  }
  const uint64_t load_end = header.load_addr + load_size;
  uint64_t end = load_end;
  if (header.bss_end_addr != 0) {
    if (header.bss_end_addr < load_end) {
      return fail(ErrorCode::kCorrupt,
                  fmt::format("Multiboot bss_end_addr {:#x} lies before the end of the loaded "
                              "image {:#x}",
                              header.bss_end_addr, load_end));
    }
    end = header.bss_end_addr;
  }
  if (header.entry_addr < header.load_addr || header.entry_addr >= end) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("Multiboot entry_addr {:#x} is outside the image {:#x}-{:#x}",
                            header.entry_addr, header.load_addr, end));
  }
  if (auto placed = check_placement(map, "Multiboot kernel", header.load_addr, end); !placed) {
    return fail(placed.error());
  }
  if (auto written = memory.write(header.load_addr, file.subspan(file_start, load_size));
      !written) {
    return fail(written.error());
  }
  if (end > load_end) std::memset(memory.host_pointer(load_end, end - load_end), 0, end - load_end);
  return Loaded{header.load_addr, end, header.entry_addr};
}

Result<Loaded> load_elf32(GuestMemory& memory, const std::vector<E820Entry>& map,
                          std::span<const std::byte> file) {
  auto elf = parse_elf(file);
  if (!elf) return fail(elf.error().with_context("Multiboot ELF kernel"));
  if (elf->is_64_bit || elf->machine != kElfMachineI386) {
    return fail(ErrorCode::kUnsupported,
                "Multiboot ELF kernels must be 32-bit x86 (ELF64 needs the a.out kludge, flag "
                "bit 16)");
  }
  for (const ElfSegment& segment : elf->load_segments) {
    if (auto placed = check_placement(map, "Multiboot ELF segment", segment.physical_address,
                                      segment.physical_address + segment.memory_size);
        !placed) {
      return fail(placed.error());
    }
  }
  auto entry = elf->physical_entry();
  if (!entry) return fail(entry.error());
  if (auto loaded = load_elf_segments(memory, file, *elf); !loaded) return fail(loaded.error());
  return Loaded{elf->physical_start(), elf->physical_end(), *entry};
}

}  // namespace

Result<MultibootHeader> find_multiboot_header(std::span<const std::byte> file) {
  const uint64_t limit = std::min<uint64_t>(file.size(), kSearchLimit);
  for (uint64_t offset = 0; offset + 12 <= limit; offset += 4) {
    const uint32_t magic = load_le<uint32_t>(file.data() + offset);
    if (magic != kMultibootHeaderMagic) continue;
    const uint32_t flags = load_le<uint32_t>(file.data() + offset + 4);
    const uint32_t checksum = load_le<uint32_t>(file.data() + offset + 8);
    // Spec 3.1.2: magic + flags + checksum is zero modulo 2^32.
    if (static_cast<uint32_t>(magic + flags + checksum) != 0) continue;
    MultibootHeader header;
    header.file_offset = offset;
    header.flags = flags;
    if (flags & kFlagAoutKludge) {
      if (offset + 32 > file.size()) {
        return fail(ErrorCode::kCorrupt, "Multiboot header's address fields run past the file");
      }
      header.header_addr = load_le<uint32_t>(file.data() + offset + 12);
      header.load_addr = load_le<uint32_t>(file.data() + offset + 16);
      header.load_end_addr = load_le<uint32_t>(file.data() + offset + 20);
      header.bss_end_addr = load_le<uint32_t>(file.data() + offset + 24);
      header.entry_addr = load_le<uint32_t>(file.data() + offset + 28);
    }
    return header;
  }
  return fail(ErrorCode::kNotFound,
              "no Multiboot header (magic 0x1BADB002 with a valid checksum) in the first 8192 "
              "bytes of the kernel");
}

Result<MultibootLoadResult> load_multiboot(GuestMemory& memory, const MemoryLayout& layout,
                                           const MultibootLoadOptions& options) {
  auto header = find_multiboot_header(options.kernel);
  if (!header) return fail(header.error());
  const uint32_t unknown = header->flags & 0xFFFF & ~kKnownRequiredFlags;
  if (unknown != 0) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("Multiboot kernel requires features Lamina does not provide (flag "
                            "bits {:#x})",
                            unknown));
  }
  const std::vector<E820Entry> map = layout.e820();
  Result<Loaded> kernel = (header->flags & kFlagAoutKludge)
                              ? load_aout_kludge(memory, map, options.kernel, *header)
                              : load_elf32(memory, map, options.kernel);
  if (!kernel) return fail(kernel.error());
  MultibootLoadResult result;
  result.kernel_start = kernel->start;
  result.kernel_end = kernel->end;

  // Modules go after the kernel, page-aligned (spec 3.1.2 bit 0; we always align).
  uint64_t next_module = (kernel->end + kPage - 1) & ~(kPage - 1);
  for (size_t i = 0; i < options.modules.size(); ++i) {
    const MultibootModule& module = options.modules[i];
    const uint64_t start = next_module;
    const uint64_t end = start + module.data.size();
    if (auto placed = check_placement(map, fmt::format("Multiboot module {}", i), start,
                                      std::max(end, start + 1));
        !placed) {
      return fail(placed.error());
    }
    if (!module.data.empty()) {
      if (auto written = memory.write(start, module.data); !written) return fail(written.error());
    }
    result.modules.push_back({start, module.data.size()});
    next_module = (end + kPage - 1) & ~(kPage - 1);
  }

  // The boot data stays at its usual place unless something was loaded there; then it goes
  // after the last module (or the kernel), where nothing of the kernel's is.
  BootData boot = kDefaultBootData;
  if (kernel->start < kDefaultBootData.stack_top && kernel->end > kDefaultBootData.gdt) {
    boot = boot_data_at(next_module);
    if (auto placed =
            check_placement(map, "Lamina's Multiboot boot data", boot.gdt, boot.stack_top);
        !placed) {
      return fail(placed.error());
    }
  }
  result.boot_data = {boot.gdt, boot.stack_top - boot.gdt};

  InfoArea area(memory, boot.info, boot.info_end);
  std::vector<std::byte> module_list(options.modules.size() * 16);
  for (size_t i = 0; i < options.modules.size(); ++i) {
    auto name = area.put_string(options.modules[i].command_line);
    if (!name) return fail(name.error());
    // Module structure (spec 3.3): mod_start, mod_end (exclusive), string, reserved.
    const AddressRange& placed = result.modules[i];
    store_le<uint32_t>(&module_list[i * 16], static_cast<uint32_t>(placed.address));
    store_le<uint32_t>(&module_list[i * 16 + 4],
                       static_cast<uint32_t>(placed.address + placed.size));
    store_le<uint32_t>(&module_list[i * 16 + 8], static_cast<uint32_t>(*name));
  }

  // Memory map entries (spec 3.3): size (20, not counting itself), base, length, type.
  std::vector<std::byte> memory_map(map.size() * 24);
  uint64_t upper_kib = 0;
  for (size_t i = 0; i < map.size(); ++i) {
    std::byte* entry = &memory_map[i * 24];
    store_le<uint32_t>(entry, 20);
    store_le<uint64_t>(entry + 4, map[i].address);
    store_le<uint64_t>(entry + 12, map[i].size);
    store_le<uint32_t>(entry + 20, static_cast<uint32_t>(map[i].type));
    if (map[i].type == E820Type::kUsable && map[i].address == kHighMemoryStart) {
      upper_kib = map[i].size / kKiB;
    }
  }
  auto map_address = area.put(memory_map);
  if (!map_address) return fail(map_address.error());
  auto list_address = area.put(module_list);
  if (!list_address) return fail(list_address.error());
  auto command_line = area.put_string(options.command_line);
  if (!command_line) return fail(command_line.error());
  auto loader_name = area.put_string("Lamina");
  if (!loader_name) return fail(loader_name.error());

  std::array<std::byte, kInfoStructureSize> info{};
  store_le<uint32_t>(&info[0], kMultibootInfoMemory | kMultibootInfoCommandLine |
                                   kMultibootInfoModules | kMultibootInfoMemoryMap |
                                   kMultibootInfoBootLoaderName);
  // mem_lower: KiB from 0 to the EBDA; mem_upper: KiB from 1 MiB to the first hole.
  store_le<uint32_t>(&info[4], static_cast<uint32_t>(kEbdaStart / kKiB));
  store_le<uint32_t>(&info[8], static_cast<uint32_t>(std::min<uint64_t>(upper_kib, UINT32_MAX)));
  store_le<uint32_t>(&info[16], static_cast<uint32_t>(*command_line));
  store_le<uint32_t>(&info[20], static_cast<uint32_t>(options.modules.size()));
  store_le<uint32_t>(&info[24], static_cast<uint32_t>(*list_address));
  store_le<uint32_t>(&info[44], static_cast<uint32_t>(memory_map.size()));
  store_le<uint32_t>(&info[48], static_cast<uint32_t>(*map_address));
  store_le<uint32_t>(&info[64], static_cast<uint32_t>(*loader_name));
  if (auto written = memory.write(boot.info, info); !written) return fail(written.error());
  result.info_address = boot.info;

  if (auto gdt = write_boot_gdt(memory, boot.gdt); !gdt) return fail(gdt.error());
  result.state = protected_mode_boot_state(boot.gdt);
  result.state.rip = kernel->entry;
  result.state.rax = kMultibootBootloaderMagic;
  result.state.rbx = boot.info;
  result.state.rsp = boot.stack_top;
  return result;
}

}  // namespace lamina::machine
