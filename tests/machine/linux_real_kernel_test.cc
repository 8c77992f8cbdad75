// Loads the default guest's real Debian kernel (scripts/make-guest; the ctest fixture
// default_guest provides it and LAMINA_GUEST_DIR names its folder).

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

#include "base/byte_order.h"
#include "machine/boot_params.h"
#include "machine/bzimage.h"
#include "machine/elf_image.h"
#include "machine/kernel_decompressor.h"
#include "machine/linux_loader.h"

namespace lamina::machine {
namespace {

namespace off = boot_params_offset;

std::vector<std::byte> read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::vector<std::byte> result(bytes.size());
  std::memcpy(result.data(), bytes.data(), bytes.size());
  return result;
}

class RealKernel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* folder = std::getenv("LAMINA_GUEST_DIR");
    if (folder == nullptr) return;
    kernel_ = new std::vector<std::byte>(read_file(std::string(folder) + "/vmlinuz"));
    initrd_ = new std::vector<std::byte>(read_file(std::string(folder) + "/initrd.img"));
  }
  static void TearDownTestSuite() {
    delete kernel_;
    delete initrd_;
  }
  void SetUp() override {
    if (std::getenv("LAMINA_GUEST_DIR") == nullptr) GTEST_SKIP() << "LAMINA_GUEST_DIR not set";
    ASSERT_GT(kernel_->size(), 1u << 20) << "the default guest's vmlinuz is missing";
    ASSERT_GT(initrd_->size(), 0u) << "the default guest's initrd.img is missing";
  }
  // The kernel_version string the setup code carries (boot.rst: kernel_version at 0x20E is a
  // pointer to it, minus 0x200), e.g. "6.1.0-56-amd64 (debian-kernel@...) #1 SMP ...".
  static std::string setup_kernel_version() {
    const uint16_t pointer = load_le<uint16_t>(kernel_->data() + 0x20E);
    std::string text;
    for (size_t i = pointer + 0x200u; i < kernel_->size() && kernel_->at(i) != std::byte{0}; ++i) {
      text.push_back(static_cast<char>(kernel_->at(i)));
    }
    return text;
  }

  static inline std::vector<std::byte>* kernel_ = nullptr;
  static inline std::vector<std::byte>* initrd_ = nullptr;
};

TEST_F(RealKernel, SetupHeaderIsA64BitRelocatableBzImage) {
  auto image = parse_bzimage(*kernel_);
  ASSERT_TRUE(image.has_value()) << image.error().message();
  const SetupHeader& header = image->header;
  EXPECT_GE(header.version, 0x020C);
  EXPECT_NE(header.xloadflags & kXlfKernel64, 0);
  EXPECT_TRUE(header.relocatable);
  EXPECT_EQ(header.pref_address % header.kernel_alignment, 0u);
  EXPECT_GE(header.init_size, image->payload.size());
  EXPECT_GT(header.cmdline_size, 255u);
  EXPECT_FALSE(image->payload.empty());
  EXPECT_TRUE(detect_compression(image->payload).has_value());
  EXPECT_EQ(setup_kernel_version().rfind("6.", 0), 0u) << setup_kernel_version();
}

TEST_F(RealKernel, DecompressesToAnX86_64VmlinuxAtLoadPhysicalAddr) {
  auto image = parse_bzimage(*kernel_);
  ASSERT_TRUE(image.has_value());
  auto vmlinux = decompress_kernel_payload(image->payload, 512 << 20);
  ASSERT_TRUE(vmlinux.has_value()) << vmlinux.error().message();
  auto elf = parse_elf(vmlinux->bytes());
  ASSERT_TRUE(elf.has_value()) << elf.error().message();
  EXPECT_TRUE(elf->is_64_bit);
  EXPECT_EQ(elf->machine, kElfMachineX86_64);
  // LOAD_PHYSICAL_ADDR is what a relocatable kernel declares as pref_address, and where the
  // ELF's first segment and entry (phys_startup_64) are.
  EXPECT_EQ(elf->physical_start(), image->header.pref_address);
  EXPECT_EQ(elf->entry, image->header.pref_address);
  // The kernel's memory needs (from the ELF) fit in what init_size promises.
  EXPECT_LE(elf->physical_end() - elf->physical_start(), image->header.init_size);
}

TEST_F(RealKernel, LoadsNativelyWithBannerBootParamsAndInitrd) {
  auto layout = MemoryLayout::create({.ram_size = 512 * kMiB});
  ASSERT_TRUE(layout.has_value());
  auto memory = GuestMemory::create(layout->ram_regions());
  ASSERT_TRUE(memory.has_value());
  auto loaded = load_linux(*memory, *layout,
                           {.kernel = *kernel_, .initrd = *initrd_,
                            .command_line = "console=ttyS0 lamina_run=\"uname -a\""});
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  auto image = parse_bzimage(*kernel_);
  ASSERT_TRUE(image.has_value());
  EXPECT_EQ(loaded->state.rip, image->header.pref_address);
  EXPECT_EQ(loaded->state.rsi, kBootParamsAddress);

  // linux_banner ("Linux version <release> (<builder>) (<compiler>) #<build> ...") is in the
  // loaded kernel's memory, and agrees with the setup code's kernel_version string
  // ("<release> (<builder>) #<build> ...").
  const std::string version = setup_kernel_version();
  const std::string release = version.substr(0, version.find(' '));
  const std::string build = version.substr(version.find('#'));
  ASSERT_EQ(release.rfind("6.1", 0), 0u) << version;
  const uint64_t size = loaded->kernel_end - loaded->kernel_start;
  const std::byte* start = memory->host_pointer(loaded->kernel_start, size);
  ASSERT_NE(start, nullptr);
  const std::string_view kernel_memory(reinterpret_cast<const char*>(start), size);
  const std::string prefix = "Linux version " + release + " (";
  bool found = false;
  for (size_t at = kernel_memory.find(prefix); at != std::string_view::npos && !found;
       at = kernel_memory.find(prefix, at + 1)) {
    const std::string_view line = kernel_memory.substr(at, kernel_memory.find('\n', at) - at);
    found = line.find(build) != std::string_view::npos;
  }
  EXPECT_TRUE(found) << prefix << "... " << build;

  // boot_params carries the kernel's own header, updated.
  std::array<std::byte, kBootParamsSize> params{};
  ASSERT_TRUE(memory->read(kBootParamsAddress, params).has_value());
  EXPECT_EQ(std::memcmp(&params[off::kSetupHeader], image->header_bytes.data(), 0x210 - 0x1F1), 0);
  EXPECT_EQ(params[off::kTypeOfLoader], std::byte{0xFF});
  EXPECT_EQ(static_cast<uint8_t>(params[off::kLoadflags]) & kKaslrFlag, 0);
  EXPECT_EQ(load_le<uint16_t>(&params[off::kVersion]), image->header.version);
  const size_t entries = static_cast<size_t>(params[off::kE820Entries]);
  EXPECT_EQ(entries, layout->e820().size());
  // e820: sorted, disjoint, usable RAM includes the kernel and the initrd.
  uint64_t previous_end = 0;
  bool kernel_usable = false;
  bool initrd_usable = false;
  for (size_t i = 0; i < entries; ++i) {
    const std::byte* entry = &params[off::kE820Table + i * 20];
    const uint64_t address = load_le<uint64_t>(entry);
    const uint64_t length = load_le<uint64_t>(entry + 8);
    const uint32_t type = load_le<uint32_t>(entry + 16);
    EXPECT_GE(address, previous_end);
    previous_end = address + length;
    if (type != 1) continue;
    kernel_usable |= loaded->kernel_start >= address && loaded->kernel_end <= address + length;
    initrd_usable |= loaded->initrd_address >= address &&
                     loaded->initrd_address + loaded->initrd_size <= address + length;
  }
  EXPECT_TRUE(kernel_usable);
  EXPECT_TRUE(initrd_usable);

  // Initrd placement: outside kernel + init_size, below initrd_addr_max, its bytes intact.
  const uint64_t initrd = loaded->initrd_address;
  EXPECT_GE(initrd, image->header.pref_address + image->header.init_size);
  EXPECT_LE(initrd + initrd_->size() - 1, image->header.initrd_addr_max);
  EXPECT_EQ(load_le<uint32_t>(&params[off::kRamdiskImage]), initrd);
  EXPECT_EQ(load_le<uint32_t>(&params[off::kRamdiskSize]), initrd_->size());
  EXPECT_EQ(std::memcmp(memory->host_pointer(initrd, initrd_->size()), initrd_->data(),
                        initrd_->size()),
            0);
  const uint32_t cmdline = load_le<uint32_t>(&params[off::kCmdLinePtr]);
  EXPECT_STREQ(reinterpret_cast<const char*>(memory->host_pointer(cmdline, 1)),
               "console=ttyS0 lamina_run=\"uname -a\"");
}

TEST_F(RealKernel, BzImageEntryPutsTheImageAtPrefAddress) {
  auto layout = MemoryLayout::create({.ram_size = 256 * kMiB});
  ASSERT_TRUE(layout.has_value());
  auto memory = GuestMemory::create(layout->ram_regions());
  ASSERT_TRUE(memory.has_value());
  auto loaded = load_linux(*memory, *layout,
                           {.kernel = *kernel_, .initrd = *initrd_,
                            .entry = LinuxEntry::kBzImage64});
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  auto image = parse_bzimage(*kernel_);
  ASSERT_TRUE(image.has_value());
  EXPECT_EQ(loaded->state.rip, image->header.pref_address + 0x200);
  EXPECT_EQ(std::memcmp(memory->host_pointer(image->header.pref_address,
                                             image->protected_mode.size()),
                        image->protected_mode.data(), image->protected_mode.size()),
            0);
  EXPECT_GE(loaded->initrd_address, image->header.pref_address + image->header.init_size);
}

TEST_F(RealKernel, TruncatedRealImageFailsCleanly) {
  auto layout = MemoryLayout::create({.ram_size = 256 * kMiB});
  ASSERT_TRUE(layout.has_value());
  auto memory = GuestMemory::create(layout->ram_regions());
  ASSERT_TRUE(memory.has_value());
  for (size_t size : {size_t{100}, size_t{4096}, kernel_->size() / 2, kernel_->size() - 4096}) {
    const std::span<const std::byte> cut(kernel_->data(), size);
    auto loaded = load_linux(*memory, *layout, {.kernel = cut});
    ASSERT_FALSE(loaded.has_value()) << size;
    EXPECT_EQ(loaded.error().code(), ErrorCode::kCorrupt) << loaded.error().message();
  }
}

}  // namespace
}  // namespace lamina::machine
