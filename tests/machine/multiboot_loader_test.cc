#include "machine/multiboot_loader.h"

#include <gtest/gtest.h>

#include <string>

#include "machine/boot_tables.h"
#include "test_images.h"

namespace lamina::machine {
namespace {

using testing::Bytes;
using testing::make_elf;
using testing::put;
using testing::put_bytes;
using testing::to_bytes;

// Writes a Multiboot header (spec 3.1) at `offset`, with the a.out-kludge fields when given.
void put_header(Bytes& file, size_t offset, uint32_t flags, std::vector<uint32_t> addresses = {}) {
  put<uint32_t>(file, offset, kMultibootHeaderMagic);
  put<uint32_t>(file, offset + 4, flags);
  put<uint32_t>(file, offset + 8, 0u - kMultibootHeaderMagic - flags);
  for (size_t i = 0; i < addresses.size(); ++i) put<uint32_t>(file, offset + 12 + 4 * i, addresses[i]);
}

// An a.out-kludge kernel: 0x400 bytes of file, header at 0x40, loaded at 1 MiB up to 0x300,
// .bss to 0x102000, entry at 0x100100 (a HLT).
Bytes aout_kernel(uint32_t flags = 0x00010003) {
  Bytes file(0x400, std::byte{0x90});
  put_header(file, 0x40, flags, {0x100040, 0x100000, 0x100300, 0x102000, 0x100100});
  file[0x100] = std::byte{0xF4};
  put_bytes(file, 0x2F0, to_bytes("DATA"));
  put_bytes(file, 0x350, to_bytes("NOT LOADED"));
  return file;
}

struct Guest {
  MemoryLayout layout;
  GuestMemory memory;
};

Guest make_guest(uint64_t ram = 64 * kMiB) {
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

std::string peek_string(const GuestMemory& memory, uint64_t address) {
  std::string text;
  while (text.size() < 4096) {
    const char c = static_cast<char>(peek<uint8_t>(memory, address + text.size()));
    if (c == '\0') break;
    text.push_back(c);
  }
  return text;
}

TEST(MultibootLoader, FindsTheHeaderOnlyWhereTheSpecSays) {
  Bytes file(0x3000);
  put_header(file, 0x1000, 0x3);
  auto found = find_multiboot_header(file);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->file_offset, 0x1000u);
  EXPECT_EQ(found->flags, 0x3u);
  // Beyond the first 8192 bytes: not found.
  Bytes late(0x3000);
  put_header(late, 0x2000, 0x3);
  EXPECT_EQ(find_multiboot_header(late).error().code(), ErrorCode::kNotFound);
  // Unaligned: not found.
  Bytes unaligned(0x1000);
  put_header(unaligned, 0x102, 0x3);
  EXPECT_FALSE(find_multiboot_header(unaligned).has_value());
  // Bad checksum: not found.
  Bytes bad(0x1000);
  put_header(bad, 0x100, 0x3);
  put<uint32_t>(bad, 0x108, 0);
  EXPECT_FALSE(find_multiboot_header(bad).has_value());
}

TEST(MultibootLoader, LoadsAnAoutKludgeKernelWithModules) {
  Guest guest = make_guest();
  const Bytes kernel = aout_kernel();
  const Bytes first(5000, std::byte{0x11});
  const Bytes second(100, std::byte{0x22});
  auto loaded = load_multiboot(guest.memory, guest.layout,
                               {.kernel = kernel, .command_line = "kernel --verbose",
                                .modules = {{first, "initrd.img"}, {second, "extra arg=1"}}});
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();

  // Image: file bytes from load_addr to load_end_addr, zeros to bss_end_addr.
  EXPECT_EQ(peek<uint8_t>(guest.memory, 0x100100), 0xF4);
  EXPECT_EQ(peek<uint32_t>(guest.memory, 0x100040), kMultibootHeaderMagic);
  EXPECT_EQ(peek<uint32_t>(guest.memory, 0x1002F0), 0x41544144u);  // "DATA"
  EXPECT_EQ(peek<uint64_t>(guest.memory, 0x100350), 0u);
  EXPECT_EQ(peek<uint64_t>(guest.memory, 0x101FF8), 0u);
  EXPECT_EQ(loaded->kernel_start, 0x100000u);
  EXPECT_EQ(loaded->kernel_end, 0x102000u);

  // Entry state (spec 3.2).
  const BootState& state = loaded->state;
  EXPECT_EQ(state.mode, CpuMode::kProtected32);
  EXPECT_EQ(state.rip, 0x100100u);
  EXPECT_EQ(state.rax, 0x2BADB002u);
  EXPECT_EQ(state.rbx, loaded->info_address);
  EXPECT_EQ(state.cr0 & 0x80000001, 0x1u);
  EXPECT_EQ(state.rflags & (1 << 9), 0u);
  EXPECT_EQ(state.cs.selector, kBootCode32Selector);
  EXPECT_EQ(state.cs.limit, 0xFFFFFFFFu);
  EXPECT_NE(state.cs.attributes & (1 << 14), 0);  // D: 32-bit
  const uint64_t code = peek<uint64_t>(guest.memory, kBootGdtAddress + kBootCode32Selector);
  EXPECT_NE(code & (1ull << 54), 0u);  // D
  EXPECT_EQ(code & (1ull << 53), 0u);  // not L

  // Information structure (spec 3.3).
  const uint64_t info = loaded->info_address;
  const uint32_t flags = peek<uint32_t>(guest.memory, info);
  for (uint32_t bit : {0u, 2u, 3u, 6u, 9u}) EXPECT_NE(flags & (1u << bit), 0u) << bit;
  EXPECT_EQ(peek<uint32_t>(guest.memory, info + 4), 639u);
  EXPECT_EQ(peek<uint32_t>(guest.memory, info + 8),
            (guest.layout.acpi_area_base() - kHighMemoryStart) / kKiB);
  EXPECT_EQ(peek_string(guest.memory, peek<uint32_t>(guest.memory, info + 16)), "kernel --verbose");
  EXPECT_EQ(peek_string(guest.memory, peek<uint32_t>(guest.memory, info + 64)), "Lamina");

  ASSERT_EQ(peek<uint32_t>(guest.memory, info + 20), 2u);
  const uint32_t modules = peek<uint32_t>(guest.memory, info + 24);
  const Bytes* contents[] = {&first, &second};
  const char* names[] = {"initrd.img", "extra arg=1"};
  uint32_t previous_end = static_cast<uint32_t>(loaded->kernel_end);
  for (uint32_t i = 0; i < 2; ++i) {
    const uint32_t start = peek<uint32_t>(guest.memory, modules + 16 * i);
    const uint32_t end = peek<uint32_t>(guest.memory, modules + 16 * i + 4);
    EXPECT_EQ(start % 4096, 0u);
    EXPECT_GE(start, previous_end);
    EXPECT_EQ(end - start, contents[i]->size());
    EXPECT_EQ(std::memcmp(guest.memory.host_pointer(start, end - start), contents[i]->data(),
                          contents[i]->size()),
              0);
    EXPECT_EQ(peek_string(guest.memory, peek<uint32_t>(guest.memory, modules + 16 * i + 8)),
              names[i]);
    previous_end = end;
  }

  // The memory map, walked as the spec's example does (size excludes itself).
  const uint32_t map_length = peek<uint32_t>(guest.memory, info + 44);
  const uint32_t map_address = peek<uint32_t>(guest.memory, info + 48);
  std::vector<E820Entry> walked;
  for (uint64_t at = map_address; at < map_address + map_length;
       at += peek<uint32_t>(guest.memory, at) + 4) {
    walked.push_back({peek<uint64_t>(guest.memory, at + 4), peek<uint64_t>(guest.memory, at + 12),
                      static_cast<E820Type>(peek<uint32_t>(guest.memory, at + 20))});
  }
  EXPECT_EQ(walked, guest.layout.e820());
}

TEST(MultibootLoader, LoadsAnElf32KernelAndTranslatesAVirtualEntry) {
  Guest guest = make_guest();
  Bytes text(0x100, std::byte{0x90});
  put_header(text, 0, 0x00000003);  // page-align modules, memory info; ELF (bit 16 clear)
  text[0x10] = std::byte{0xF4};
  const Bytes kernel = make_elf(false, 3, 0xC0200010,
                                {{0x200000, 0xC0200000, text, 0x2000},
                                 {0x300000, 0xC0300000, to_bytes("data"), 4}});
  auto loaded = load_multiboot(guest.memory, guest.layout, {.kernel = kernel});
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  EXPECT_EQ(loaded->state.rip, 0x200010u);
  EXPECT_EQ(peek<uint8_t>(guest.memory, 0x200010), 0xF4);
  EXPECT_EQ(peek<uint32_t>(guest.memory, 0x300000), 0x61746164u);
  EXPECT_EQ(peek<uint64_t>(guest.memory, 0x201F00), 0u);
  EXPECT_EQ(loaded->kernel_end, 0x300004u);
  EXPECT_EQ(peek<uint32_t>(guest.memory, loaded->info_address + 20), 0u);
  EXPECT_EQ(peek_string(guest.memory, peek<uint32_t>(guest.memory, loaded->info_address + 16)), "");
}

TEST(MultibootLoader, MovesItsBootDataAwayFromAKernelLoadedLow) {
  // An ELF kernel at 0x8000 (as kernels made for QEMU may be) whose 128 KiB cover the usual
  // boot data area, with a module after it.
  Guest guest = make_guest();
  Bytes text(0x20000, std::byte{0xA5});
  put_header(text, 0, 0x00000003);
  text[0x10] = std::byte{0xF4};
  const Bytes kernel = make_elf(false, 3, 0x8010, {{0x8000, 0x8000, text, 0x20000}});
  const Bytes module(3000, std::byte{0x33});
  auto loaded = load_multiboot(
      guest.memory, guest.layout,
      {.kernel = kernel, .command_line = "low kernel", .modules = {{module, "module"}}});
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  EXPECT_EQ(loaded->kernel_start, 0x8000u);
  EXPECT_EQ(loaded->kernel_end, 0x28000u);
  // The image is intact: nothing of Lamina's was written into it.
  EXPECT_EQ(std::memcmp(guest.memory.host_pointer(0x8000, text.size()), text.data(), text.size()),
            0);
  // The boot data lies after the module, and everything the kernel is told about is in it.
  const AddressRange& boot = loaded->boot_data;
  ASSERT_EQ(loaded->modules.size(), 1u);
  EXPECT_GE(boot.address, loaded->modules[0].address + loaded->modules[0].size);
  auto inside = [&boot](uint64_t address) {
    return address >= boot.address && address < boot.address + boot.size;
  };
  const uint64_t info = loaded->info_address;
  EXPECT_TRUE(inside(info));
  EXPECT_TRUE(inside(peek<uint32_t>(guest.memory, info + 16)));  // command line
  EXPECT_TRUE(inside(peek<uint32_t>(guest.memory, info + 24)));  // module list
  EXPECT_TRUE(inside(peek<uint32_t>(guest.memory, info + 48)));  // memory map
  EXPECT_EQ(peek_string(guest.memory, peek<uint32_t>(guest.memory, info + 16)), "low kernel");
  EXPECT_EQ(peek<uint32_t>(guest.memory, peek<uint32_t>(guest.memory, info + 24)),
            loaded->modules[0].address);
  // The GDT and the stack moved with it.
  const BootState& state = loaded->state;
  EXPECT_TRUE(inside(state.gdt.base));
  EXPECT_NE(peek<uint64_t>(guest.memory, state.gdt.base + kBootCode32Selector), 0u);
  EXPECT_EQ(state.rsp, boot.address + boot.size);
  EXPECT_EQ(state.rbx, info);
  EXPECT_EQ(state.rip, 0x8010u);

  // A kernel above the usual area leaves the boot data where it always is.
  auto usual = load_multiboot(guest.memory, guest.layout, {.kernel = aout_kernel()});
  ASSERT_TRUE(usual.has_value());
  EXPECT_EQ(usual->boot_data.address, kBootGdtAddress);
  EXPECT_EQ(usual->info_address, kMultibootInfoAddress);
  EXPECT_EQ(usual->state.rsp, kBootStackTop);
}

void expect_error(const Bytes& kernel, ErrorCode code, std::string_view words,
                  std::vector<MultibootModule> modules = {}, uint64_t ram = 64 * kMiB) {
  Guest guest = make_guest(ram);
  auto loaded = load_multiboot(guest.memory, guest.layout,
                               {.kernel = kernel, .modules = std::move(modules)});
  ASSERT_FALSE(loaded.has_value());
  EXPECT_EQ(loaded.error().code(), code) << loaded.error().message();
  EXPECT_NE(loaded.error().message().find(words), std::string::npos) << loaded.error().message();
}

TEST(MultibootLoader, RejectsBadKernelsCleanly) {
  expect_error(Bytes(0x4000), ErrorCode::kNotFound, "no Multiboot header");
  // A required feature we do not know (bit 3).
  expect_error(aout_kernel(0x00010008), ErrorCode::kUnsupported, "0x8");
  // a.out addresses that contradict the file.
  auto with = [](std::vector<uint32_t> addresses) {
    Bytes file = aout_kernel();
    put_header(file, 0x40, 0x00010003, std::move(addresses));
    return file;
  };
  expect_error(with({0x100040, 0x100080, 0, 0, 0x100100}), ErrorCode::kCorrupt, "disagree");
  expect_error(with({0x100040, 0x0F0000, 0, 0, 0x100100}), ErrorCode::kCorrupt, "disagree");
  expect_error(with({0x100040, 0x100000, 0x200000, 0, 0x100100}), ErrorCode::kCorrupt,
               "load_end_addr");
  expect_error(with({0x100040, 0x100000, 0x100300, 0x100100, 0x100100}), ErrorCode::kCorrupt,
               "bss_end_addr");
  expect_error(with({0x100040, 0x100000, 0, 0, 0x500000}), ErrorCode::kCorrupt, "entry_addr");
  // Outside RAM.
  Bytes high = aout_kernel();
  put_header(high, 0x40, 0x00010003, {0x10000040, 0x10000000, 0, 0, 0x10000100});
  expect_error(high, ErrorCode::kInvalidArgument, "more memory");
  // Header without the kludge, in a file that is not an ELF; and an ELF64 without the kludge.
  Bytes flat(0x1000);
  put_header(flat, 0, 0x3);
  expect_error(flat, ErrorCode::kCorrupt, "ELF");
  Bytes text(0x100);
  put_header(text, 0, 0x3);
  expect_error(make_elf(true, 62, 0x200000, {{0x200000, 0x200000, text, 0x100}}),
               ErrorCode::kUnsupported, "32-bit");
  // A module that does not fit.
  const Bytes big(10 * kMiB);
  expect_error(aout_kernel(), ErrorCode::kInvalidArgument, "module 0", {{big, "big"}}, 8 * kMiB);
  // Module strings overflowing the information area.
  const std::string long_name(100000, 'n');
  expect_error(aout_kernel(), ErrorCode::kInvalidArgument, "too long", {{big, long_name}});
}

}  // namespace
}  // namespace lamina::machine
