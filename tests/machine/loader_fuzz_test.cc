// Mutation tests for every file parser in src/machine: thousands of damaged variants of valid
// images (flipped bytes, overwritten fields, truncation) go through the loaders, which must
// answer with a value or an error and never crash, hang or touch memory outside guest RAM (run
// under -DLAMINA_SANITIZE=ON to check the last part).

#include <gtest/gtest.h>
#include <zlib.h>

#include <random>

#include "machine/bzimage.h"
#include "machine/elf_image.h"
#include "machine/linux_loader.h"
#include "machine/multiboot_loader.h"
#include "test_images.h"

namespace lamina::machine {
namespace {

using testing::Bytes;

Bytes gzip(const Bytes& input) {
  Bytes output(compressBound(input.size()) + 64);
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

// Damages a copy: a few random bytes, sometimes a random 32-bit field, sometimes truncation.
Bytes mutate(const Bytes& original, std::mt19937& random, size_t hot_end) {
  Bytes bytes = original;
  std::uniform_int_distribution<size_t> anywhere(0, bytes.size() - 1);
  std::uniform_int_distribution<size_t> hot(0, std::min(hot_end, bytes.size()) - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  const int edits = 1 + static_cast<int>(random() % 4);
  for (int i = 0; i < edits; ++i) {
    // Headers are where parsers decide things: aim most edits there.
    const size_t at = (random() % 4 != 0) ? hot(random) : anywhere(random);
    bytes[at] = std::byte{static_cast<uint8_t>(byte(random))};
  }
  if (random() % 3 == 0 && bytes.size() >= 4) {
    const size_t at = hot(random) & ~size_t{3};
    if (at + 4 <= bytes.size()) {
      const uint32_t values[] = {0, 0xFFFFFFFF, 0x80000000, static_cast<uint32_t>(random()),
                                 static_cast<uint32_t>(bytes.size())};
      testing::put<uint32_t>(bytes, at, values[random() % 5]);
    }
  }
  if (random() % 5 == 0) bytes.resize(anywhere(random));
  return bytes;
}

struct Guest {
  MemoryLayout layout;
  GuestMemory memory;
};

Guest make_guest() {
  auto layout = MemoryLayout::create({.ram_size = 64 * kMiB});
  auto memory = GuestMemory::create(layout->ram_regions());
  return Guest{*layout, std::move(*memory)};
}

TEST(LoaderFuzz, DamagedBzImagesAndVmlinuxesNeverCrash) {
  Bytes text(0x2000, std::byte{0xCC});
  const Bytes vmlinux = testing::make_elf(true, 62, 0x1000000,
                                          {{0x1000000, 0xFFFFFFFF81000000, text, 0x4000},
                                           {0x1200000, 0xFFFFFFFF81200000, Bytes(64), 0x1000}});
  const Bytes image = testing::make_bzimage(
      testing::with_size(gzip(vmlinux), static_cast<uint32_t>(vmlinux.size())));
  Guest guest = make_guest();
  std::mt19937 random(1234);
  int loaded = 0;
  for (int i = 0; i < 3000; ++i) {
    const bool elf = i % 2 == 0;
    const Bytes damaged = mutate(elf ? vmlinux : image, random, elf ? 0x100 : 0x500);
    const LinuxEntry entry = (i % 3 == 0) ? LinuxEntry::kBzImage64 : LinuxEntry::kDecompressed;
    auto result = load_linux(guest.memory, guest.layout,
                             {.kernel = damaged, .initrd = text, .command_line = "x",
                              .entry = entry, .max_decompressed_size = 16 * kMiB});
    if (result) {
      ++loaded;
      // Whatever loaded must lie in RAM.
      EXPECT_TRUE(guest.memory.contains(result->state.rip, 1)) << i;
      EXPECT_TRUE(guest.memory.contains(result->initrd_address, text.size())) << i;
    }
  }
  // Some damage is harmless (padding, code bytes): the loaders are not just refusing all.
  EXPECT_GT(loaded, 100);
}

TEST(LoaderFuzz, DamagedMultibootKernelsNeverCrash) {
  Bytes aout(0x400, std::byte{0x90});
  const uint32_t flags = 0x00010003;
  testing::put<uint32_t>(aout, 0x40, kMultibootHeaderMagic);
  testing::put<uint32_t>(aout, 0x44, flags);
  testing::put<uint32_t>(aout, 0x48, 0u - kMultibootHeaderMagic - flags);
  const uint32_t addresses[] = {0x100040, 0x100000, 0x100300, 0x102000, 0x100100};
  for (size_t i = 0; i < 5; ++i) testing::put<uint32_t>(aout, 0x4C + 4 * i, addresses[i]);
  Bytes text(0x100, std::byte{0x90});
  testing::put<uint32_t>(text, 0, kMultibootHeaderMagic);
  testing::put<uint32_t>(text, 4, 3);
  testing::put<uint32_t>(text, 8, 0u - kMultibootHeaderMagic - 3);
  const Bytes elf = testing::make_elf(false, 3, 0x200010, {{0x200000, 0x200000, text, 0x1000}});
  Guest guest = make_guest();
  std::mt19937 random(99);
  const Bytes module(5000, std::byte{1});
  int loaded = 0;
  for (int i = 0; i < 3000; ++i) {
    // The checksum guards the header, so also re-balance it half the time to reach the fields.
    Bytes damaged = mutate(i % 2 ? aout : elf, random, i % 2 ? 0x70 : 0x90);
    const size_t header = i % 2 ? 0x40 : 84;
    if (random() % 2 == 0 && damaged.size() >= header + 12) {
      const uint32_t mutated_flags = load_le<uint32_t>(damaged.data() + header + 4);
      testing::put<uint32_t>(damaged, header, kMultibootHeaderMagic);
      testing::put<uint32_t>(damaged, header + 8, 0u - kMultibootHeaderMagic - mutated_flags);
    }
    auto result = load_multiboot(guest.memory, guest.layout,
                                 {.kernel = damaged, .command_line = "c",
                                  .modules = {{module, "m"}}});
    if (result) {
      ++loaded;
      EXPECT_TRUE(guest.memory.contains(result->kernel_start,
                                        result->kernel_end - result->kernel_start))
          << i;
      EXPECT_TRUE(guest.memory.contains(result->modules[0].address, module.size())) << i;
    }
  }
  EXPECT_GT(loaded, 100);
}

}  // namespace
}  // namespace lamina::machine
