// Test harness: prepares guest RAM exactly as Lamina's machine code does (memory map, ACPI
// tables, Linux loaded natively decompressed), then writes it out for QEMU so a real Linux can
// boot from it: raw blobs of the non-zero RAM below 4 GiB (loaded with QEMU's generic loader)
// and a 128 KiB firmware ROM holding the RSDP at 0xE0000 and, at the reset vector, a
// trampoline that establishes the BootState (long mode with our GDT and page tables, RSI = zero
// page) and jumps to the kernel. This proves the loader's and the tables' output against a real
// kernel before Lamina's own CPU can run it.
//
// Usage: qemu_boot_image KERNEL INITRD RAM_MIB CPUS OUT_DIR COMMAND_LINE [bzimage]
// (bzimage: enter the kernel's own decompressor instead of decompressing on the host)
// Prints QEMU arguments (one per line) for the blobs and the ROM.

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "base/byte_order.h"
#include "machine/acpi/acpi_tables.h"
#include "machine/linux_loader.h"

namespace {

using namespace lamina;
using namespace lamina::machine;

constexpr uint64_t kRomSize = 128 * kKiB;
constexpr uint64_t kRomBase = kFourGiB - kRomSize;  // also aliased at 0xE0000 (isa-bios)
constexpr uint64_t kTrampolineOffset = 0x1F000;     // IP 0xF000 in the reset code segment
constexpr uint64_t kGdtPointerOffset = 0x1F100;
constexpr uint64_t kLongModeOffset = 0x1F200;

std::vector<std::byte> read_file(const char* path) {
  std::ifstream file(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::vector<std::byte> result(bytes.size());
  std::memcpy(result.data(), bytes.data(), bytes.size());
  return result;
}

void emit(std::vector<std::byte>& rom, uint64_t& at, std::initializer_list<int> bytes) {
  for (int byte : bytes) rom[at++] = std::byte{static_cast<uint8_t>(byte)};
}
template <typename T>
void emit_le(std::vector<std::byte>& rom, uint64_t& at, T value) {
  store_le<T>(rom.data() + at, value);
  at += sizeof(T);
}

// Real mode -> long mode with the loader's GDT and page tables, then the BootState registers.
std::vector<std::byte> make_rom(const BootState& state, const std::vector<std::byte>& rsdp) {
  std::vector<std::byte> rom(kRomSize, std::byte{0xFF});
  std::memcpy(rom.data(), rsdp.data(), rsdp.size());  // ROM offset 0 appears at 0xE0000

  uint64_t at = kTrampolineOffset;
  emit(rom, at, {0xFA});                                    // cli
  emit(rom, at, {0x2E, 0x66, 0x0F, 0x01, 0x16});            // o32 lgdt cs:[disp16]
  emit_le<uint16_t>(rom, at, static_cast<uint16_t>(kGdtPointerOffset & 0xFFFF));
  emit(rom, at, {0x66, 0xB8});                              // mov eax, cr4 value
  emit_le<uint32_t>(rom, at, static_cast<uint32_t>(state.cr4));
  emit(rom, at, {0x0F, 0x22, 0xE0});                        // mov cr4, eax
  emit(rom, at, {0x66, 0xB8});                              // mov eax, cr3 value
  emit_le<uint32_t>(rom, at, static_cast<uint32_t>(state.cr3));
  emit(rom, at, {0x0F, 0x22, 0xD8});                        // mov cr3, eax
  emit(rom, at, {0x66, 0xB9, 0x80, 0x00, 0x00, 0xC0});      // mov ecx, IA32_EFER
  emit(rom, at, {0x66, 0xB8});                              // mov eax, efer value (LME)
  emit_le<uint32_t>(rom, at, static_cast<uint32_t>(state.efer & 0x100));
  emit(rom, at, {0x66, 0x31, 0xD2});                        // xor edx, edx
  emit(rom, at, {0x0F, 0x30});                              // wrmsr
  emit(rom, at, {0x66, 0xB8});                              // mov eax, cr0 value
  emit_le<uint32_t>(rom, at, static_cast<uint32_t>(state.cr0));
  emit(rom, at, {0x0F, 0x22, 0xC0});                        // mov cr0, eax
  emit(rom, at, {0x66, 0xEA});                              // jmp far ptr16:32
  emit_le<uint32_t>(rom, at, static_cast<uint32_t>(kRomBase + kLongModeOffset));
  emit_le<uint16_t>(rom, at, state.cs.selector);

  at = kGdtPointerOffset;
  emit_le<uint16_t>(rom, at, state.gdt.limit);
  emit_le<uint32_t>(rom, at, static_cast<uint32_t>(state.gdt.base));

  at = kLongModeOffset;
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

  at = kRomSize - 16;                                       // reset vector, IP 0xFFF0
  emit(rom, at, {0xE9});                                    // jmp near rel16 to the trampoline
  emit_le<uint16_t>(rom, at, static_cast<uint16_t>((kTrampolineOffset & 0xFFFF) - 0xFFF3));
  return rom;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7 && argc != 8) {
    std::fprintf(stderr, "usage: %s KERNEL INITRD RAM_MIB CPUS OUT_DIR COMMAND_LINE [bzimage]\n",
                 argv[0]);
    return 2;
  }
  const std::vector<std::byte> kernel = read_file(argv[1]);
  const std::vector<std::byte> initrd = read_file(argv[2]);
  const std::string out = argv[5];
  auto layout = MemoryLayout::create({.ram_size = std::stoull(argv[3]) * kMiB});
  if (!layout) return std::fprintf(stderr, "%s\n", layout.error().message().c_str()), 1;
  auto memory = GuestMemory::create(layout->ram_regions());
  if (!memory) return std::fprintf(stderr, "%s\n", memory.error().message().c_str()), 1;
  acpi::AcpiConfig config;
  config.cpu_count = static_cast<uint32_t>(std::stoul(argv[4]));
  auto tables = acpi::install_acpi_tables(*memory, *layout, config);
  if (!tables) return std::fprintf(stderr, "%s\n", tables.error().message().c_str()), 1;
  auto loaded = load_linux(*memory, *layout,
                           {.kernel = kernel, .initrd = initrd, .command_line = argv[6],
                            .entry = argc == 8 && std::string(argv[7]) == "bzimage"
                                         ? LinuxEntry::kBzImage64
                                         : LinuxEntry::kDecompressed,
                            .acpi_rsdp_address = tables->rsdp_address});
  if (!loaded) return std::fprintf(stderr, "%s\n", loaded.error().message().c_str()), 1;

  // Blobs: runs of non-zero 4 KiB pages of RAM below the PCI hole (not the BIOS area: the ROM).
  int blobs = 0;
  for (const RamRegion& region : layout->ram_regions()) {
    if (region.guest_physical == kBiosAreaStart || region.guest_physical >= kFourGiB) continue;
    const std::byte* host = memory->host_pointer(region.guest_physical, region.size);
    uint64_t page = 0;
    while (page < region.size) {
      auto zero = [&](uint64_t offset) {
        for (uint64_t i = 0; i < 4096; ++i) {
          if (host[offset + i] != std::byte{0}) return false;
        }
        return true;
      };
      if (zero(page)) {
        page += 4096;
        continue;
      }
      uint64_t end = page;
      while (end < region.size && !zero(end)) end += 4096;
      const std::string path = out + "/blob" + std::to_string(blobs++) + ".bin";
      std::ofstream(path, std::ios::binary)
          .write(reinterpret_cast<const char*>(host + page), static_cast<std::streamsize>(end - page));
      std::printf("-device\nloader,file=%s,addr=0x%llx,force-raw=on\n", path.c_str(),
                  static_cast<unsigned long long>(region.guest_physical + page));
      page = end;
    }
  }
  const std::vector<std::byte> rom = make_rom(loaded->state, tables->tables.front().bytes);
  const std::string rom_path = out + "/rom.bin";
  std::ofstream(rom_path, std::ios::binary)
      .write(reinterpret_cast<const char*>(rom.data()), static_cast<std::streamsize>(rom.size()));
  std::printf("-bios\n%s\n", rom_path.c_str());
  return 0;
}
