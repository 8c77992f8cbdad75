// libFuzzer target: a program of guest actions (transport_program.h) against the virtio-pci
// transport with a virtio-rng or virtio-console; nothing may crash or hang, and a reset must always
// recover.

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "transport_program.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using lamina::virtio::testing::TransportProgram;
  if (size == 0) return 0;
  // The first byte picks the device behind the transport.
  TransportProgram program(data[0] % 2 ? TransportProgram::Device::kConsole
                                       : TransportProgram::Device::kRng);
  program.run({data + 1, size - 1});
  if (!program.recovers()) std::abort();
  return 0;
}
