// The transport fuzz program (fuzz/transport_program.h) on seeded random inputs in every test
// run, with each device behind the transport: no crash or hang, and after each hostile program a
// reset gives a working device.

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "fuzz/transport_program.h"

namespace lamina::virtio {
namespace {

using Device = testing::TransportProgram::Device;

class TransportRobustnessTest : public ::testing::TestWithParam<Device> {};

// One function lives through all programs, as a VM's would through a hostile guest's life.
TEST_P(TransportRobustnessTest, RandomProgramsNeverBreakTheTransport) {
  testing::TransportProgram program(GetParam());
  for (uint32_t seed = 1; seed <= 300; ++seed) {
    std::mt19937 random(seed);
    std::vector<uint8_t> input(64 + random() % 2048);
    for (uint8_t& byte : input) byte = static_cast<uint8_t>(random());
    program.run(input);
    ASSERT_TRUE(program.recovers()) << "seed " << seed;
  }
}

// Programs biased toward a running device: repeated bring-ups, kicks and ring scribbles.
TEST_P(TransportRobustnessTest, RunningDeviceUnderRingScribbles) {
  testing::TransportProgram program(GetParam());
  uint64_t served_by_programs = 0;
  for (uint32_t seed = 1; seed <= 200; ++seed) {
    std::mt19937 random(seed);
    std::vector<uint8_t> input;
    for (int step = 0; step < 200; ++step) {
      const uint8_t ops[] = {2, 2, 5, 6, 3, 9, 10, 10, 10};
      input.push_back(ops[random() % std::size(ops)]);
      for (int i = 0; i < 12; ++i) input.push_back(static_cast<uint8_t>(random()));
    }
    const uint64_t before = program.bytes_served();
    program.run(input);
    served_by_programs += program.bytes_served() - before;
    ASSERT_TRUE(program.recovers()) << "seed " << seed;
  }
  // The scribbled rings are sometimes valid enough to be served: the data path is reached.
  EXPECT_GT(served_by_programs, 0u);
}

INSTANTIATE_TEST_SUITE_P(Devices, TransportRobustnessTest,
                         ::testing::Values(Device::kRng, Device::kConsole, Device::kTablet),
                         [](const ::testing::TestParamInfo<Device>& parameter) {
                           switch (parameter.param) {
                             case Device::kRng: return "Rng";
                             case Device::kConsole: return "Console";
                             case Device::kTablet: return "Tablet";
                           }
                           return "Unknown";
                         });

}  // namespace
}  // namespace lamina::virtio
