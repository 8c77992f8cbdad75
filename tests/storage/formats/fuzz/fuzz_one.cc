#include "fuzz/fuzz_one.h"

#include <sys/mman.h>
#include <unistd.h>
#include <string>

namespace lamina::storage::testing {

void fuzz_one(const uint8_t* data, size_t size, ImageFormat format) {
  int descriptor = ::memfd_create("lamina-fuzz-image", MFD_CLOEXEC);
  if (descriptor < 0) return;
  if (::pwrite(descriptor, data, size, 0) == static_cast<ssize_t>(size)) {
    // The parsers open files by path; /proc/self/fd names the memfd.
    exercise_image("/proc/self/fd/" + std::to_string(descriptor), format, size);
  }
  ::close(descriptor);
}

}  // namespace lamina::storage::testing
