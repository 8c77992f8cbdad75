#include "machine/linux_loader.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "machine/acpi/acpi_tables.h"
#include "machine/boot_params.h"
#include "machine/boot_tables.h"
#include "machine/bzimage.h"
#include "test_images.h"

namespace lamina::machine {
namespace {

using testing::Bytes;
using testing::make_bzimage;
using testing::make_elf;
using testing::put;
using testing::to_bytes;
using testing::with_size;
namespace off = boot_params_offset;

constexpr uint64_t kKernelBase = 0x1000000;
const std::string kBanner = "Linux version 9.9.9-test (lamina) #1";

Bytes gzip(const Bytes& input) {
  uLongf size = compressBound(input.size()) + 64;
  Bytes output(size);
  z_stream stream{};
  deflateInit2(&stream, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(input.data()));
  stream.avail_in = static_cast<uInt>(input.size());
  stream.next_out = reinterpret_cast<Bytef*>(output.data());
  stream.avail_out = static_cast<uInt>(output.size());
  deflate(&stream, Z_FINISH);
  output.resize(stream.total_out);
  deflateEnd(&stream);
  return output;
}

// A vmlinux-shaped ELF64: text at 16 MiB linked at the kernel map, the banner in it, and a
// second segment with .bss (memory size beyond its file size).
Bytes fake_vmlinux() {
  Bytes text(0x3000, std::byte{0xCC});
  testing::put_bytes(text, 0x1000, to_bytes(kBanner));
  Bytes data(0x800, std::byte{0xAB});
  return make_elf(true, 62, kKernelBase,
                  {{kKernelBase, 0xFFFFFFFF81000000, text, 0x3000},
                   {kKernelBase + 0x200000, 0xFFFFFFFF81200000, data, 0x10000}});
}

Bytes fake_bzimage(testing::TestBzImageFields fields = {}) {
  const Bytes vmlinux = fake_vmlinux();
  return make_bzimage(with_size(gzip(vmlinux), static_cast<uint32_t>(vmlinux.size())), fields);
}

struct Guest {
  MemoryLayout layout;
  GuestMemory memory;
};

Guest make_guest(uint64_t ram) {
  auto layout = MemoryLayout::create({.ram_size = ram});
  EXPECT_TRUE(layout.has_value());
  auto memory = GuestMemory::create(layout->ram_regions());
  EXPECT_TRUE(memory.has_value());
  return Guest{*layout, std::move(*memory)};
}

template <typename T>
T peek(const GuestMemory& memory, uint64_t address) {
  std::byte* host = memory.host_pointer(address, sizeof(T));
  EXPECT_NE(host, nullptr) << std::hex << address;
  return host == nullptr ? T{} : load_le<T>(host);
}

std::string peek_string(const GuestMemory& memory, uint64_t address, size_t size) {
  std::string text(size, '\0');
  std::byte* host = memory.host_pointer(address, size);
  if (host != nullptr) std::memcpy(text.data(), host, size);
  return text;
}

// Walks 4-level page tables as the CPU would (Intel SDM vol. 3, section 4.5), independently
// of the code that wrote them; returns the physical address or UINT64_MAX when not present.
uint64_t translate(const GuestMemory& memory, uint64_t cr3, uint64_t virtual_address) {
  uint64_t table = cr3 & ~0xFFFull;
  for (int level = 3; level >= 0; --level) {
    const uint64_t index = (virtual_address >> (12 + 9 * level)) & 0x1FF;
    const uint64_t entry = peek<uint64_t>(memory, table + index * 8);
    if ((entry & 1) == 0) return UINT64_MAX;
    const uint64_t frame = entry & 0x000FFFFFFFFFF000ull;
    if (level > 0 && level < 3 && (entry & 0x80) != 0) {
      const uint64_t page_mask = (1ull << (12 + 9 * level)) - 1;
      return (frame & ~page_mask) | (virtual_address & page_mask);
    }
    table = frame;
  }
  return table | (virtual_address & 0xFFF);
}

TEST(LinuxLoader, DecompressesAndEntersTheVmlinux) {
  Guest guest = make_guest(256 * kMiB);
  testing::TestBzImageFields fields;
  Bytes image = fake_bzimage(fields);
  image[0x211] |= std::byte{kKaslrFlag};  // the loader must clear it
  put<uint64_t>(image, 0x250, 0xDEADBEEF000);  // setup_data: the loader passes none
  const Bytes initrd(3 * kMiB + 17, std::byte{0x5A});
  auto loaded = load_linux(guest.memory, guest.layout,
                           {.kernel = image, .initrd = initrd, .command_line = "console=ttyS0 quiet",
                            .acpi_rsdp_address = 0xE0000});
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  EXPECT_EQ(loaded->compression, Compression::kGzip);
  EXPECT_EQ(loaded->boot_protocol, 0x020F);

  // Entry state (boot.rst 64-bit protocol).
  const BootState& state = loaded->state;
  EXPECT_EQ(state.mode, CpuMode::kLong64);
  EXPECT_EQ(state.rip, kKernelBase);
  EXPECT_EQ(state.rsi, kBootParamsAddress);
  EXPECT_EQ(state.cs.selector, 0x10);
  EXPECT_EQ(state.ds.selector, 0x18);
  EXPECT_EQ(state.ss.selector, 0x18);
  EXPECT_EQ(state.rflags & (1 << 9), 0u) << "interrupts must be off";
  EXPECT_NE(state.cr0 & 0x80000001, 0u);
  EXPECT_NE(state.cr4 & 0x20, 0u);
  EXPECT_EQ(state.efer & 0x500, 0x500u);

  // The kernel's bytes are where its ELF says, .bss zeroed.
  EXPECT_EQ(peek_string(guest.memory, kKernelBase + 0x1000, kBanner.size()), kBanner);
  EXPECT_EQ(peek<uint8_t>(guest.memory, kKernelBase + 0x200000), 0xAB);
  EXPECT_EQ(peek<uint64_t>(guest.memory, kKernelBase + 0x200000 + 0x900), 0u);

  // GDT descriptors: 0x10 64-bit code (L=1), 0x18 flat data.
  const uint64_t code = peek<uint64_t>(guest.memory, kBootGdtAddress + 0x10);
  const uint64_t data = peek<uint64_t>(guest.memory, kBootGdtAddress + 0x18);
  EXPECT_NE(code & (1ull << 53), 0u);   // L
  EXPECT_NE(code & (1ull << 47), 0u);   // P
  EXPECT_EQ((code >> 40) & 0x8, 0x8u);  // executable
  EXPECT_EQ((data >> 40) & 0xA, 0x2u);  // data, writable
  EXPECT_EQ(state.gdt.base, kBootGdtAddress);

  // Identity map of the first 4 GiB.
  for (uint64_t address : {uint64_t{0}, kKernelBase + 0x1234, uint64_t{0xFEE00000},
                           uint64_t{0xFFFFFFFF}, kBootParamsAddress}) {
    EXPECT_EQ(translate(guest.memory, state.cr3, address), address) << std::hex << address;
  }
  EXPECT_EQ(translate(guest.memory, state.cr3, 4 * kGiB), UINT64_MAX);

  // boot_params.
  const uint64_t params = kBootParamsAddress;
  EXPECT_EQ(peek<uint32_t>(guest.memory, params + off::kHeaderMagic), 0x53726448u);
  EXPECT_EQ(peek<uint8_t>(guest.memory, params + off::kTypeOfLoader), 0xFF);
  EXPECT_EQ(peek<uint8_t>(guest.memory, params + off::kLoadflags) & kKaslrFlag, 0);
  EXPECT_EQ(peek<uint8_t>(guest.memory, params + off::kLoadflags) & kLoadedHigh, kLoadedHigh);
  EXPECT_EQ(peek<uint64_t>(guest.memory, params + off::kAcpiRsdpAddr), 0xE0000u);
  EXPECT_EQ(peek<uint64_t>(guest.memory, params + off::kSetupData), 0u);
  const uint32_t cmdline = peek<uint32_t>(guest.memory, params + off::kCmdLinePtr);
  EXPECT_EQ(peek_string(guest.memory, cmdline, 20), std::string("console=ttyS0 quiet\0", 20));
  const std::vector<E820Entry> map = guest.layout.e820();
  ASSERT_EQ(peek<uint8_t>(guest.memory, params + off::kE820Entries), map.size());
  for (size_t i = 0; i < map.size(); ++i) {
    const uint64_t entry = params + off::kE820Table + i * 20;
    EXPECT_EQ(peek<uint64_t>(guest.memory, entry), map[i].address);
    EXPECT_EQ(peek<uint64_t>(guest.memory, entry + 8), map[i].size);
    EXPECT_EQ(peek<uint32_t>(guest.memory, entry + 16), static_cast<uint32_t>(map[i].type));
  }

  // Initrd: page-aligned, high, below initrd_addr_max, outside kernel + init_size, in usable
  // RAM, and its bytes are there.
  const uint32_t ramdisk = peek<uint32_t>(guest.memory, params + off::kRamdiskImage);
  EXPECT_EQ(ramdisk, loaded->initrd_address);
  EXPECT_EQ(peek<uint32_t>(guest.memory, params + off::kRamdiskSize), initrd.size());
  EXPECT_EQ(ramdisk % 4096, 0u);
  EXPECT_GE(ramdisk, kKernelBase + fields.init_size);
  EXPECT_LE(ramdisk + initrd.size(), guest.layout.acpi_area_base());
  EXPECT_GT(ramdisk, guest.layout.acpi_area_base() - initrd.size() - 4096);
  EXPECT_EQ(peek<uint8_t>(guest.memory, ramdisk + initrd.size() - 1), 0x5A);
}

TEST(LinuxLoader, InitrdStaysBelowInitrdAddrMax) {
  Guest guest = make_guest(256 * kMiB);
  testing::TestBzImageFields fields;
  fields.initrd_addr_max = 0x4000000 - 1;  // 64 MiB
  const Bytes initrd(kMiB, std::byte{1});
  auto loaded = load_linux(guest.memory, guest.layout,
                           {.kernel = fake_bzimage(fields), .initrd = initrd});
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  EXPECT_EQ(loaded->initrd_address, 0x4000000u - kMiB);
}

TEST(LinuxLoader, BzImageEntryRunsTheKernelsOwnDecompressor) {
  Guest guest = make_guest(256 * kMiB);
  const Bytes image = fake_bzimage();
  auto loaded = load_linux(guest.memory, guest.layout,
                           {.kernel = image, .entry = LinuxEntry::kBzImage64});
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  EXPECT_EQ(loaded->state.rip, kKernelBase + 0x200);
  EXPECT_FALSE(loaded->compression.has_value());
  // The protected-mode part (after 2 setup sectors) sits at pref_address.
  EXPECT_EQ(std::memcmp(guest.memory.host_pointer(kKernelBase, image.size() - 1024),
                        image.data() + 1024, image.size() - 1024),
            0);
  EXPECT_EQ(peek<uint32_t>(guest.memory, kBootParamsAddress + off::kCode32Start), kKernelBase);
  EXPECT_EQ(loaded->kernel_end, kKernelBase + 0x400000);  // init_size
}

TEST(LinuxLoader, LoadsAPlainElfVmlinuxWithASynthesizedHeader) {
  Guest guest = make_guest(64 * kMiB);
  auto loaded = load_linux(guest.memory, guest.layout,
                           {.kernel = fake_vmlinux(), .command_line = "root=/dev/vda"});
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  EXPECT_EQ(loaded->state.rip, kKernelBase);
  EXPECT_EQ(loaded->boot_protocol, 0);
  EXPECT_EQ(peek<uint32_t>(guest.memory, kBootParamsAddress + off::kHeaderMagic), 0x53726448u);
  EXPECT_GE(peek<uint16_t>(guest.memory, kBootParamsAddress + off::kVersion), 0x020C);
  EXPECT_EQ(peek<uint16_t>(guest.memory, kBootParamsAddress + off::kBootFlag), 0xAA55);
  EXPECT_EQ(peek<uint8_t>(guest.memory, kBootParamsAddress + off::kTypeOfLoader), 0xFF);
  EXPECT_EQ(peek_string(guest.memory, kBootParamsAddress + 0, 1), std::string(1, '\0'));
  // The bzImage entry makes no sense for an ELF.
  EXPECT_FALSE(load_linux(guest.memory, guest.layout,
                          {.kernel = fake_vmlinux(), .entry = LinuxEntry::kBzImage64})
                   .has_value());
}

void expect_error(const Bytes& kernel, ErrorCode code, std::string_view words,
                  LinuxLoadOptions options = {}, uint64_t ram = 64 * kMiB) {
  Guest guest = make_guest(ram);
  options.kernel = kernel;
  auto loaded = load_linux(guest.memory, guest.layout, options);
  ASSERT_FALSE(loaded.has_value());
  EXPECT_EQ(loaded.error().code(), code) << loaded.error().message();
  EXPECT_NE(loaded.error().message().find(words), std::string::npos) << loaded.error().message();
}

TEST(LinuxLoader, RejectsCorruptImagesCleanly) {
  const Bytes good = fake_bzimage();
  // Truncated: cut inside the setup sectors, and inside the payload.
  expect_error(Bytes(good.begin(), good.begin() + 800), ErrorCode::kCorrupt, "too short");
  expect_error(Bytes(good.begin(), good.begin() + 1030), ErrorCode::kCorrupt, "truncated");
  expect_error(Bytes(good.begin(), good.end() - 40), ErrorCode::kCorrupt, "truncated");
  // Bad magic.
  Bytes bad_magic = good;
  bad_magic[0x203] = std::byte{'x'};
  expect_error(bad_magic, ErrorCode::kCorrupt, "HdrS");
  Bytes bad_flag = good;
  bad_flag[0x1FE] = std::byte{0};
  expect_error(bad_flag, ErrorCode::kCorrupt, "0xAA55");
  // Too old a protocol.
  expect_error(fake_bzimage({.version = 0x020B}), ErrorCode::kUnsupported, "2.11");
  // No 64-bit entry.
  expect_error(fake_bzimage({.xloadflags = 0}), ErrorCode::kUnsupported, "XLF_KERNEL_64");
  // Payload out of bounds.
  Bytes out_of_bounds = good;
  put<uint32_t>(out_of_bounds, 0x24C, 0x7FFFFFF0);
  expect_error(out_of_bounds, ErrorCode::kCorrupt, "payload");
  // Header end beyond the setup sectors.
  Bytes long_header = good;
  long_header[0x201] = std::byte{0xFF};
  put<uint8_t>(long_header, 0x1F1, 0);  // 4 sectors: still fine, so the file is then too short
  Guest guest = make_guest(64 * kMiB);
  EXPECT_FALSE(load_linux(guest.memory, guest.layout, {.kernel = long_header}).has_value());
  // Not a kernel at all.
  expect_error(to_bytes(std::string(4096, 'z')), ErrorCode::kCorrupt, "HdrS");
}

TEST(LinuxLoader, RejectsBombsAndCorruptPayloads) {
  const Bytes vmlinux = fake_vmlinux();
  // A payload claiming 1 GiB against a 16 MiB limit.
  const Bytes bomb = make_bzimage(with_size(gzip(vmlinux), 1u << 30));
  expect_error(bomb, ErrorCode::kCorrupt, "limit", {.max_decompressed_size = 16 * kMiB});
  // A payload that decompresses to something that is not an ELF.
  const Bytes not_elf(4096, std::byte{0x33});
  expect_error(make_bzimage(with_size(gzip(not_elf), 4096)), ErrorCode::kCorrupt, "ELF");
  // An ELF whose segment lies outside the file.
  Bytes broken = vmlinux;
  put<uint64_t>(broken, 64 + 32, 0x100000);  // first segment's file size
  expect_error(make_bzimage(with_size(gzip(broken), static_cast<uint32_t>(broken.size()))),
               ErrorCode::kCorrupt, "outside");
  // A vmlinux linked below 1 MiB would overlap the boot structures.
  const Bytes low = make_elf(true, 62, 0x2000, {{0x2000, 0x2000, Bytes(16), 16}});
  expect_error(low, ErrorCode::kCorrupt, "below 1 MiB");
  // A 32-bit ELF is not a 64-bit kernel.
  const Bytes elf32 = make_elf(false, 3, 0x100000, {{0x100000, 0x100000, Bytes(16), 16}});
  expect_error(elf32, ErrorCode::kUnsupported, "x86-64");
}

TEST(LinuxLoader, RejectsWhatDoesNotFit) {
  // 8 MiB of RAM cannot hold a kernel linked at 16 MiB.
  expect_error(fake_bzimage(), ErrorCode::kInvalidArgument, "more memory", {}, 8 * kMiB);
  // Command line longer than the kernel's cmdline_size (255 in the fake header).
  const std::string long_line(300, 'a');
  expect_error(fake_bzimage(), ErrorCode::kInvalidArgument, "command line",
               {.command_line = long_line});
  // An initrd larger than the free RAM.
  const Bytes huge(60 * kMiB);
  expect_error(fake_bzimage(), ErrorCode::kInvalidArgument, "initrd", {.initrd = huge});
}

// The whole boot-time picture a machine sets up: ACPI tables installed, then the kernel, with
// boot_params pointing at a valid RSDP and nothing overlapping.
TEST(LinuxLoader, BootsWithAcpiTablesInPlace) {
  Guest guest = make_guest(128 * kMiB);
  auto tables = acpi::install_acpi_tables(guest.memory, guest.layout, {.cpu_count = 2});
  ASSERT_TRUE(tables.has_value()) << tables.error().message();
  const Bytes initrd(8 * kMiB, std::byte{7});
  auto loaded = load_linux(guest.memory, guest.layout,
                           {.kernel = fake_bzimage(), .initrd = initrd,
                            .acpi_rsdp_address = tables->rsdp_address});
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  const uint64_t rsdp = peek<uint64_t>(guest.memory, kBootParamsAddress + off::kAcpiRsdpAddr);
  EXPECT_EQ(peek_string(guest.memory, rsdp, 8), "RSD PTR ");
  // Every ACPI table is still intact after the kernel and initrd were written.
  for (const acpi::PlacedTable& table : tables->tables) {
    EXPECT_EQ(std::memcmp(guest.memory.host_pointer(table.address, table.bytes.size()),
                          table.bytes.data(), table.bytes.size()),
              0)
        << table.signature;
    EXPECT_TRUE(table.address + table.bytes.size() <= loaded->initrd_address ||
                table.address >= loaded->initrd_address + initrd.size());
  }
}

// memtest86+ (Debian package memtest86+) ships a 64-bit Linux-boot-protocol image, not a
// Multiboot one: load it the bzImage way, at its fixed code32_start.
TEST(LinuxLoader, LoadsDebiansMemtest86PlusThroughTheBzImageEntry) {
  const char* path = "/boot/memtest86+x64.bin";
  std::FILE* file = std::fopen(path, "rb");
  if (file == nullptr) GTEST_SKIP() << path << " missing: install memtest86+";
  Bytes image;
  std::byte buffer[65536];
  size_t got;
  while ((got = std::fread(buffer, 1, sizeof buffer, file)) > 0) {
    image.insert(image.end(), buffer, buffer + got);
  }
  std::fclose(file);
  auto parsed = parse_bzimage(image);
  ASSERT_TRUE(parsed.has_value()) << parsed.error().message();
  EXPECT_FALSE(parsed->header.relocatable);
  Guest guest = make_guest(64 * kMiB);
  auto loaded = load_linux(guest.memory, guest.layout,
                           {.kernel = image, .command_line = "console=ttyS0",
                            .entry = LinuxEntry::kBzImage64});
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  EXPECT_EQ(loaded->state.rip, parsed->header.code32_start + 0x200u);
  EXPECT_EQ(std::memcmp(guest.memory.host_pointer(parsed->header.code32_start,
                                                  parsed->protected_mode.size()),
                        parsed->protected_mode.data(), parsed->protected_mode.size()),
            0);
  // It carries no compressed payload, so the native path refuses it clearly.
  auto native = load_linux(guest.memory, guest.layout, {.kernel = image});
  ASSERT_FALSE(native.has_value());
  EXPECT_NE(native.error().message().find("payload"), std::string::npos);
}

}  // namespace
}  // namespace lamina::machine
