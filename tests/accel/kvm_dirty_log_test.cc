// KVM_GET_DIRTY_LOG's bitmap turned into GuestMemory dirty-log marks: bit i of word i / 64 is
// page i of the slot, offset by the slot's guest-physical start; bits past the slot's pages
// (the bitmap is rounded up to 64 bits) are ignored.
#include <gtest/gtest.h>

#include "accel/kvm_dirty_log.h"

namespace lamina::accel::kvm {
namespace {

std::vector<uint64_t> marked_pages(DirtyLog& log) {
  std::vector<uint64_t> pages;
  const std::vector<uint64_t> bitmap = log.take();
  for (size_t word = 0; word < bitmap.size(); ++word) {
    for (unsigned bit = 0; bit < 64; ++bit) {
      if ((bitmap[word] >> bit) & 1) pages.push_back(word * 64 + bit);
    }
  }
  return pages;
}

TEST(KvmDirtyLog, BitmapPagesAreMarkedAtTheSlotsAddress) {
  DirtyLog log(uint64_t{1} << 30);
  log.start();
  // A 70-page slot at 1 MiB (page 256): pages 0, 63, 64 and 69 dirty, and bit 70 beyond it.
  const std::vector<uint64_t> bitmap = {(uint64_t{1} << 63) | 1, (uint64_t{1} << 5) | 1 | (uint64_t{1} << 6)};
  KvmDirtyLog::mark_bitmap(bitmap, 0x100000, 70, log);
  EXPECT_EQ(marked_pages(log), (std::vector<uint64_t>{256, 256 + 63, 256 + 64, 256 + 69}));
  KvmDirtyLog::mark_bitmap({0, 0}, 0x100000, 70, log);
  EXPECT_TRUE(marked_pages(log).empty());
}

}  // namespace
}  // namespace lamina::accel::kvm
