#include "machine/linux_loader.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "machine/boot_params.h"
#include "machine/boot_tables.h"
#include "machine/bzimage.h"
#include "machine/elf_image.h"

namespace lamina::machine {

namespace {

// Limits for a kernel that carries no setup header (ELF vmlinux): COMMAND_LINE_SIZE - 1 and the
// historical initrd_addr_max.
constexpr uint32_t kDefaultCmdlineSize = 2047;
constexpr uint64_t kDefaultInitrdAddrMax = 0x7FFFFFFF;
// 64-bit entry point offset from the start of the protected-mode kernel (boot.rst).
constexpr uint64_t kEntry64Offset = 0x200;

Error does_not_fit(std::string_view what, uint64_t start, uint64_t end) {
  return Error(ErrorCode::kInvalidArgument,
               fmt::format("{} at {:#x}-{:#x} does not fit in the guest's usable RAM; give the VM "
                           "more memory",
                           what, start, end));
}

struct LoadedKernel {
  uint64_t start;
  uint64_t end;
  uint64_t entry;
};

Result<LoadedKernel> load_vmlinux(GuestMemory& memory, const std::vector<E820Entry>& map,
                                  std::span<const std::byte> file) {
  auto elf = parse_elf(file);
  if (!elf) return fail(elf.error().with_context("vmlinux"));
  if (!elf->is_64_bit || elf->machine != kElfMachineX86_64) {
    return fail(ErrorCode::kUnsupported, "vmlinux is not an x86-64 ELF kernel");
  }
  for (const ElfSegment& segment : elf->load_segments) {
    // Below 1 MiB lie Lamina's boot structures (GDT, page tables, boot_params, command line).
    if (segment.physical_address < kHighMemoryStart) {
      return fail(ErrorCode::kCorrupt,
                  fmt::format("vmlinux segment at physical {:#x} lies below 1 MiB, where no "
                              "Linux kernel is linked",
                              segment.physical_address));
    }
    if (!in_usable_ram(map, segment.physical_address, segment.memory_size)) {
      return fail(does_not_fit("kernel segment", segment.physical_address,
                               segment.physical_address + segment.memory_size));
    }
  }
  // e_entry is physical: the kernel's linker script says ENTRY(phys_startup_64).
  auto entry = elf->physical_entry();
  if (!entry) return fail(entry.error());
  if (auto loaded = load_elf_segments(memory, file, *elf); !loaded) return fail(loaded.error());
  return LoadedKernel{elf->physical_start(), elf->physical_end(), *entry};
}

Result<LoadedKernel> load_protected_mode(GuestMemory& memory, const std::vector<E820Entry>& map,
                                         const BzImage& image) {
  const SetupHeader& header = image.header;
  // A relocatable kernel goes at pref_address (its LOAD_PHYSICAL_ADDR); an old fixed one at
  // code32_start. The 64-bit entry needs the kernel_alignment either way.
  const uint64_t load = header.relocatable ? header.pref_address : header.code32_start;
  const uint64_t alignment = std::max<uint64_t>(header.kernel_alignment, 1);
  if (load % alignment != 0) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("kernel load address {:#x} is not aligned to kernel_alignment {:#x}",
                            load, alignment));
  }
  if (load < kHighMemoryStart) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("kernel asks to be loaded at {:#x}, below 1 MiB", load));
  }
  const uint64_t footprint = std::max<uint64_t>(header.init_size, image.protected_mode.size());
  if (!in_usable_ram(map, load, footprint)) {
    return fail(does_not_fit("kernel (init_size)", load, load + footprint));
  }
  if (auto written = memory.write(load, image.protected_mode); !written) {
    return fail(written.error());
  }
  return LoadedKernel{load, load + footprint, load + kEntry64Offset};
}

}  // namespace

Result<LinuxLoadResult> load_linux(GuestMemory& memory, const MemoryLayout& layout,
                                   const LinuxLoadOptions& options) {
  const std::vector<E820Entry> map = layout.e820();
  LinuxLoadResult result;
  std::optional<BzImage> image;
  uint32_t cmdline_size = kDefaultCmdlineSize;
  uint64_t initrd_addr_max = kDefaultInitrdAddrMax;
  LoadedKernel kernel{};

  if (is_elf(options.kernel)) {
    if (options.entry == LinuxEntry::kBzImage64) {
      return fail(ErrorCode::kInvalidArgument,
                  "the bzImage entry needs a bzImage, but the kernel is an ELF vmlinux");
    }
    auto loaded = load_vmlinux(memory, map, options.kernel);
    if (!loaded) return fail(loaded.error());
    kernel = *loaded;
  } else {
    auto parsed = parse_bzimage(options.kernel);
    if (!parsed) return fail(parsed.error().with_context("bzImage"));
    image = *parsed;
    const SetupHeader& header = image->header;
    if ((header.xloadflags & kXlfKernel64) == 0) {
      return fail(ErrorCode::kUnsupported,
                  "kernel has no 64-bit entry point (xloadflags.XLF_KERNEL_64 is clear); Lamina "
                  "boots 64-bit kernels");
    }
    result.boot_protocol = header.version;
    cmdline_size = header.cmdline_size;
    initrd_addr_max = header.initrd_addr_max;
    if (options.entry == LinuxEntry::kDecompressed) {
      if (image->payload.empty()) {
        return fail(ErrorCode::kCorrupt, "bzImage has no compressed kernel payload");
      }
      auto compression = detect_compression(image->payload);
      if (!compression) return fail(compression.error());
      result.compression = *compression;
      auto vmlinux = options.kernel_cache != nullptr
                         ? options.kernel_cache->decompress(image->payload, options.max_decompressed_size)
                         : decompress_kernel_payload(image->payload, options.max_decompressed_size);
      if (!vmlinux) return fail(vmlinux.error());
      auto loaded = load_vmlinux(memory, map, vmlinux->bytes());
      if (!loaded) return fail(loaded.error());
      kernel = *loaded;
      // The decompressor also needs init_size from the load address; keep the initrd clear of
      // that range too, as a loader of the bzImage would.
      if (header.relocatable && kernel.start == header.pref_address) {
        kernel.end = std::max<uint64_t>(kernel.end, kernel.start + header.init_size);
      }
    } else {
      auto loaded = load_protected_mode(memory, map, *image);
      if (!loaded) return fail(loaded.error());
      kernel = *loaded;
    }
  }
  result.kernel_start = kernel.start;
  result.kernel_end = kernel.end;

  // Command line: boot.rst says cmdline_size excludes the terminating NUL.
  if (options.command_line.size() > cmdline_size ||
      options.command_line.size() + 1 > kCommandLineMax) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("kernel command line is {} bytes; this kernel accepts at most {}",
                            options.command_line.size(),
                            std::min<uint64_t>(cmdline_size, kCommandLineMax - 1)));
  }
  std::vector<std::byte> command_line(options.command_line.size() + 1);
  std::copy(options.command_line.begin(), options.command_line.end(),
            reinterpret_cast<char*>(command_line.data()));
  if (auto written = memory.write(kCommandLineAddress, command_line); !written) {
    return fail(written.error());
  }
  result.command_line_address = kCommandLineAddress;

  // Initrd: as high as possible below initrd_addr_max (inclusive) and the PCI hole, page
  // aligned, never inside the kernel or the first MiB.
  if (!options.initrd.empty()) {
    const uint64_t limit = std::min<uint64_t>(initrd_addr_max + 1, layout.below_4g_ram_end());
    auto address = find_highest_free(map, options.initrd.size(), 4096, limit,
                                     {{0, kHighMemoryStart},
                                      {kernel.start, kernel.end - kernel.start}});
    if (!address) {
      return fail(Error(ErrorCode::kInvalidArgument,
                        fmt::format("no room for the {}-byte initrd below {:#x} outside the "
                                    "kernel; give the VM more memory",
                                    options.initrd.size(), limit)));
    }
    if (auto written = memory.write(*address, options.initrd); !written) {
      return fail(written.error());
    }
    result.initrd_address = *address;
    result.initrd_size = options.initrd.size();
  }

  BootParamsInput params_input;
  if (image) params_input.setup_header = image->header_bytes;
  params_input.command_line_address = kCommandLineAddress;
  params_input.initrd_address = result.initrd_address;
  params_input.initrd_size = result.initrd_size;
  params_input.acpi_rsdp_address = options.acpi_rsdp_address;
  if (image && options.entry == LinuxEntry::kBzImage64) {
    params_input.code32_start = kernel.start;
  }
  params_input.e820 = map;
  auto params = build_boot_params(params_input);
  if (!params) return fail(params.error());
  if (auto written = memory.write(kBootParamsAddress, *params); !written) {
    return fail(written.error());
  }
  result.boot_params_address = kBootParamsAddress;

  if (auto gdt = write_boot_gdt(memory, kBootGdtAddress); !gdt) return fail(gdt.error());
  if (auto tables = write_identity_page_tables(memory, kBootPageTablesAddress); !tables) {
    return fail(tables.error());
  }
  result.state = long_mode_boot_state(kBootGdtAddress, kBootPageTablesAddress);
  result.state.rip = kernel.entry;
  result.state.rsi = kBootParamsAddress;
  result.state.rsp = kBootStackTop;
  return result;
}

}  // namespace lamina::machine
