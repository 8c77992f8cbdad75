// Test harness: prepares guest RAM exactly as Lamina's machine code does (memory map, ACPI
// tables, Linux loaded natively decompressed), then writes it out for QEMU so a real Linux can
// boot from it: raw blobs of the non-zero RAM below 4 GiB (loaded with QEMU's generic loader)
// and a 128 KiB firmware ROM holding the RSDP at 0xE0000 and, at the reset vector, a
// trampoline that establishes the BootState (long mode with our GDT and page tables, RSI = zero
// page) and jumps to the kernel. This proves the loader's and the tables' output against a real
// kernel before Lamina's own CPU can run it.
//
// Usage: qemu_boot_image linux KERNEL INITRD|- RAM_MIB CPUS OUT_DIR COMMAND_LINE [bzimage]
//          (bzimage: enter the kernel's own decompressor instead of decompressing on the host)
//        qemu_boot_image multiboot OUT_DIR RAM_MIB COMMAND_LINE MODULE_FILE MODULE_STRING
//          (loads the Multiboot probe kernel of multiboot_probe_kernel.h, and writes it to
//          OUT_DIR/probe.bin so QEMU's own loader can run it too)
// Prints QEMU arguments (one per line) for the blobs and the ROM.

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "base/byte_order.h"
#include "machine/acpi/acpi_tables.h"
#include "machine/boot_file.h"
#include "machine/linux_loader.h"
#include "machine/multiboot_loader.h"
#include "multiboot_probe_kernel.h"

namespace {

using namespace lamina;
using namespace lamina::machine;

constexpr uint64_t kRomSize = 128 * kKiB;
constexpr uint64_t kRomBase = kFourGiB - kRomSize;  // also aliased at 0xE0000 (isa-bios)
constexpr uint64_t kTrampolineOffset = 0x1F000;     // IP 0xF000 in the reset code segment
constexpr uint64_t kGdtPointerOffset = 0x1F100;
constexpr uint64_t kLongModeOffset = 0x1F200;


void emit(std::vector<std::byte>& rom, uint64_t& at, std::initializer_list<int> bytes) {
  for (int byte : bytes) rom[at++] = std::byte{static_cast<uint8_t>(byte)};
}
template <typename T>
void emit_le(std::vector<std::byte>& rom, uint64_t& at, T value) {
  store_le<T>(rom.data() + at, value);
  at += sizeof(T);
}

// 64-bit stub: data segments, RSI, RSP, then jump to RIP.
void emit_long_mode_stub(std::vector<std::byte>& rom, const BootState& state) {
  uint64_t at = kLongModeOffset;
  emit(rom, at, {0xB8});                                    // mov eax, data selector
  emit_le<uint32_t>(rom, at, state.ds.selector);
  emit(rom, at, {0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0, 0x8E, 0xE0, 0x8E, 0xE8});  // ds es ss fs gs
  emit(rom, at, {0x48, 0xBE});                              // mov rsi, imm64
  emit_le<uint64_t>(rom, at, state.rsi);
  emit(rom, at, {0x48, 0xBC});                              // mov rsp, imm64
  emit_le<uint64_t>(rom, at, state.rsp);
  emit(rom, at, {0x48, 0xB8});                              // mov rax, imm64
  emit_le<uint64_t>(rom, at, state.rip);
  emit(rom, at, {0xFF, 0xE0});                              // jmp rax
}

// 32-bit stub: data segments, ESP, EBX, EAX, then jump to EIP.
void emit_protected_mode_stub(std::vector<std::byte>& rom, const BootState& state) {
  uint64_t at = kLongModeOffset;
  emit(rom, at, {0xB8});                                    // mov eax, data selector
  emit_le<uint32_t>(rom, at, state.ds.selector);
  emit(rom, at, {0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0, 0x8E, 0xE0, 0x8E, 0xE8});  // ds es ss fs gs
  emit(rom, at, {0xBC});                                    // mov esp, imm32
  emit_le<uint32_t>(rom, at, static_cast<uint32_t>(state.rsp));
  emit(rom, at, {0xBB});                                    // mov ebx, imm32
  emit_le<uint32_t>(rom, at, static_cast<uint32_t>(state.rbx));
  emit(rom, at, {0xB9});                                    // mov ecx, imm32
  emit_le<uint32_t>(rom, at, static_cast<uint32_t>(state.rip));
  emit(rom, at, {0xB8});                                    // mov eax, imm32
  emit_le<uint32_t>(rom, at, static_cast<uint32_t>(state.rax));
  emit(rom, at, {0xFF, 0xE1});                              // jmp ecx
}

// Real mode -> the BootState's mode with the loader's GDT (and page tables for long mode).
std::vector<std::byte> make_rom(const BootState& state, const std::vector<std::byte>& rsdp) {
  std::vector<std::byte> rom(kRomSize, std::byte{0xFF});
  std::memcpy(rom.data(), rsdp.data(), rsdp.size());  // ROM offset 0 appears at 0xE0000

  uint64_t at = kTrampolineOffset;
  emit(rom, at, {0xFA});                                    // cli
  emit(rom, at, {0x2E, 0x66, 0x0F, 0x01, 0x16});            // o32 lgdt cs:[disp16]
  emit_le<uint16_t>(rom, at, static_cast<uint16_t>(kGdtPointerOffset & 0xFFFF));
  if (state.mode == CpuMode::kLong64) {
    emit(rom, at, {0x66, 0xB8});                            // mov eax, cr4 value
    emit_le<uint32_t>(rom, at, static_cast<uint32_t>(state.cr4));
    emit(rom, at, {0x0F, 0x22, 0xE0});                      // mov cr4, eax
    emit(rom, at, {0x66, 0xB8});                            // mov eax, cr3 value
    emit_le<uint32_t>(rom, at, static_cast<uint32_t>(state.cr3));
    emit(rom, at, {0x0F, 0x22, 0xD8});                      // mov cr3, eax
    emit(rom, at, {0x66, 0xB9, 0x80, 0x00, 0x00, 0xC0});    // mov ecx, IA32_EFER
    emit(rom, at, {0x66, 0xB8});                            // mov eax, efer value (LME)
    emit_le<uint32_t>(rom, at, static_cast<uint32_t>(state.efer & 0x100));
    emit(rom, at, {0x66, 0x31, 0xD2});                      // xor edx, edx
    emit(rom, at, {0x0F, 0x30});                            // wrmsr
  }
  emit(rom, at, {0x66, 0xB8});                              // mov eax, cr0 value
  emit_le<uint32_t>(rom, at, static_cast<uint32_t>(state.cr0));
  emit(rom, at, {0x0F, 0x22, 0xC0});                        // mov cr0, eax
  emit(rom, at, {0x66, 0xEA});                              // jmp far ptr16:32
  emit_le<uint32_t>(rom, at, static_cast<uint32_t>(kRomBase + kLongModeOffset));
  emit_le<uint16_t>(rom, at, state.cs.selector);

  at = kGdtPointerOffset;
  emit_le<uint16_t>(rom, at, state.gdt.limit);
  emit_le<uint32_t>(rom, at, static_cast<uint32_t>(state.gdt.base));

  if (state.mode == CpuMode::kLong64) {
    emit_long_mode_stub(rom, state);
  } else {
    emit_protected_mode_stub(rom, state);
  }

  at = kRomSize - 16;                                       // reset vector, IP 0xFFF0
  emit(rom, at, {0xE9});                                    // jmp near rel16 to the trampoline
  emit_le<uint16_t>(rom, at, static_cast<uint16_t>((kTrampolineOffset & 0xFFFF) - 0xFFF3));
  return rom;
}

void write_file(const std::string& path, std::span<const std::byte> bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Blobs: runs of non-zero 4 KiB pages of RAM below the PCI hole (not the BIOS area: the ROM),
// each printed as a QEMU generic-loader device.
void write_blobs(const GuestMemory& memory, const MemoryLayout& layout, const std::string& out) {
  int blobs = 0;
  for (const RamRegion& region : layout.ram_regions()) {
    if (region.guest_physical == kBiosAreaStart || region.guest_physical >= kFourGiB) continue;
    const std::byte* host = memory.host_pointer(region.guest_physical, region.size);
    auto zero = [&](uint64_t offset) {
      for (uint64_t i = 0; i < 4096; ++i) {
        if (host[offset + i] != std::byte{0}) return false;
      }
      return true;
    };
    uint64_t page = 0;
    while (page < region.size) {
      if (zero(page)) {
        page += 4096;
        continue;
      }
      uint64_t end = page;
      while (end < region.size && !zero(end)) end += 4096;
      const std::string path = out + "/blob" + std::to_string(blobs++) + ".bin";
      write_file(path, std::span(host + page, end - page));
      std::printf("-device\nloader,file=%s,addr=0x%llx,force-raw=on\n", path.c_str(),
                  static_cast<unsigned long long>(region.guest_physical + page));
      page = end;
    }
  }
}

int fail_with(const Error& error) {
  std::fprintf(stderr, "%s\n", error.message().c_str());
  return 1;
}

int boot_linux(char** argv, int argc) {
  auto kernel = read_boot_file(argv[0], "kernel", 1 * kGiB);
  if (!kernel) return fail_with(kernel.error());
  // "-" means no initrd.
  auto initrd = std::string(argv[1]) == "-" ? Result<std::vector<std::byte>>()
                                             : read_boot_file(argv[1], "initrd", 1 * kGiB);
  if (!initrd) return fail_with(initrd.error());
  const std::string out = argv[4];
  auto layout = MemoryLayout::create({.ram_size = std::stoull(argv[2]) * kMiB});
  if (!layout) return fail_with(layout.error());
  auto memory = GuestMemory::create(layout->ram_regions());
  if (!memory) return fail_with(memory.error());
  acpi::AcpiConfig config;
  config.cpu_count = static_cast<uint32_t>(std::stoul(argv[3]));
  config.pci_mmio64_base = layout->pci_mmio64_base();
  config.pci_mmio64_size = layout->pci_mmio64_size();
  auto tables = acpi::install_acpi_tables(*memory, *layout, config);
  if (!tables) return fail_with(tables.error());
  const bool bzimage = argc == 7 && std::string(argv[6]) == "bzimage";
  auto loaded = load_linux(*memory, *layout,
                           {.kernel = *kernel, .initrd = *initrd, .command_line = argv[5],
                            .entry = bzimage ? LinuxEntry::kBzImage64 : LinuxEntry::kDecompressed,
                            .acpi_rsdp_address = tables->rsdp_address});
  if (!loaded) return fail_with(loaded.error());
  std::fprintf(stderr, "qemu_boot_image: %s\n", describe(loaded->state).c_str());
  write_blobs(*memory, *layout, out);
  write_file(out + "/rom.bin", make_rom(loaded->state, tables->tables.front().bytes));
  std::printf("-bios\n%s/rom.bin\n", out.c_str());
  return 0;
}

int boot_multiboot(char** argv) {
  const std::string out = argv[0];
  const std::span<const std::byte> kernel(
      reinterpret_cast<const std::byte*>(testing::kMultibootProbeKernel),
      sizeof testing::kMultibootProbeKernel);
  write_file(out + "/probe.bin", kernel);
  auto module = read_boot_file(argv[3], "module", 1 * kGiB);
  if (!module) return fail_with(module.error());
  auto layout = MemoryLayout::create({.ram_size = std::stoull(argv[1]) * kMiB});
  if (!layout) return fail_with(layout.error());
  auto memory = GuestMemory::create(layout->ram_regions());
  if (!memory) return fail_with(memory.error());
  auto tables = acpi::install_acpi_tables(*memory, *layout, {});
  if (!tables) return fail_with(tables.error());
  auto loaded = load_multiboot(*memory, *layout,
                               {.kernel = kernel, .command_line = argv[2],
                                .modules = {{*module, argv[4]}}});
  if (!loaded) return fail_with(loaded.error());
  std::fprintf(stderr, "qemu_boot_image: %s\n", describe(loaded->state).c_str());
  write_blobs(*memory, *layout, out);
  write_file(out + "/rom.bin", make_rom(loaded->state, tables->tables.front().bytes));
  std::printf("-bios\n%s/rom.bin\n", out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "linux" && (argc == 8 || argc == 9)) return boot_linux(argv + 2, argc - 2);
  if (mode == "multiboot" && argc == 7) return boot_multiboot(argv + 2);
  std::fprintf(stderr,
               "usage: %s linux KERNEL INITRD RAM_MIB CPUS OUT_DIR COMMAND_LINE [bzimage]\n"
               "       %s multiboot OUT_DIR RAM_MIB COMMAND_LINE MODULE_FILE MODULE_STRING\n",
               argv[0], argv[0]);
  return 2;
}
