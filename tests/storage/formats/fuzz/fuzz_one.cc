#include "fuzz/fuzz_one.h"

#include <sys/mman.h>
#include <unistd.h>
#include <string>

#include "sparse_fuzz_file.h"

namespace lamina::storage::testing {

void fuzz_one(const uint8_t* data, size_t size, ImageFormat format) {
  int descriptor = ::memfd_create("lamina-fuzz-image", MFD_CLOEXEC);
  if (descriptor < 0) return;
  // Plain bytes, or a sparse file from the "SPRS" encoding (sparse_fuzz_file.h).
  if (test::write_fuzz_file(descriptor, {data, size})) {
    // The parsers open files by path; /proc/self/fd names the memfd.
    exercise_image("/proc/self/fd/" + std::to_string(descriptor), format, size);
  }
  ::close(descriptor);
}

}  // namespace lamina::storage::testing
