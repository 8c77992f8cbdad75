// CodeCache: W^X (no mapping of the process is writable and executable), install/flush, bound.
#include "cpu/x86/jit/code_cache.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

namespace lamina::cpu::x86::jit {
namespace {

// The lines of /proc/self/maps whose permissions have both w and x.
std::vector<std::string> writable_and_executable_mappings() {
  std::ifstream maps("/proc/self/maps");
  std::vector<std::string> found;
  std::string line;
  while (std::getline(maps, line)) {
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.size() < space + 5) continue;
    const std::string permissions = line.substr(space + 1, 4);
    if (permissions[1] == 'w' && permissions[2] == 'x') found.push_back(line);
  }
  return found;
}

TEST(CodeCacheTest, NoMappingIsWritableAndExecutable) {
  auto cache = CodeCache::create(1 << 20);
  ASSERT_TRUE(cache) << cache.error().message();
  const std::byte ret[] = {std::byte{0xc3}};
  const std::byte* code = (*cache)->install(ret);
  ASSERT_NE(code, nullptr);
  EXPECT_TRUE((*cache)->contains(code));
  // The installed code runs from the executable mapping.
  reinterpret_cast<void (*)()>(const_cast<std::byte*>(code))();
  const auto both = writable_and_executable_mappings();
  EXPECT_TRUE(both.empty()) << both.front();
}

TEST(CodeCacheTest, ReturnsNullWhenFullAndFlushStartsOver) {
  auto created = CodeCache::create(4096);
  ASSERT_TRUE(created);
  CodeCache& cache = **created;
  EXPECT_EQ(cache.capacity(), 4096u);
  const std::vector<std::byte> chunk(1000, std::byte{0x90});
  size_t installed = 0;
  while (cache.install(chunk) != nullptr) ++installed;
  // 1000-byte pieces at 64-byte alignment: 4 fit (the fifth would end at 5056).
  EXPECT_EQ(installed, 4u);
  EXPECT_LE(cache.used(), cache.capacity());
  const uint64_t epoch = cache.epoch();
  cache.flush();
  EXPECT_EQ(cache.used(), 0u);
  EXPECT_NE(cache.epoch(), epoch);
  EXPECT_EQ(cache.flushes(), 1u);
  EXPECT_NE(cache.install(chunk), nullptr);
  // Larger than the whole cache: never fits.
  const std::vector<std::byte> huge(8192, std::byte{0x90});
  cache.flush();
  EXPECT_EQ(cache.install(huge), nullptr);
}

TEST(CodeCacheTest, RefusesSizeZero) { EXPECT_FALSE(CodeCache::create(0)); }

}  // namespace
}  // namespace lamina::cpu::x86::jit
