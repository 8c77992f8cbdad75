// libFuzzer target: a program of guest actions (transport_program.h) against the virtio-pci
// transport with a virtio-rng; nothing may crash or hang, and a reset must always recover.

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "transport_program.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lamina::virtio::testing::TransportProgram program;
  program.run({data, size});
  if (!program.recovers()) std::abort();
  return 0;
}
