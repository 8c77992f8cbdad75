// Hostile guest: command lists, FISes, ATAPI packets and PRDTs full of random bytes, random
// register writes in between, polled and with interrupts on. The controller must neither crash nor hang, complete every
// issued slot, report errors through PxTFD/PxIS, and still serve a good command afterwards.
#include <random>

#include "ahci_harness.h"

namespace lamina::ahci::testing {
namespace {

class AhciRobustnessTest : public AhciBench {};

TEST_F(AhciRobustnessTest, RandomCommandTablesNeverStopTheController) {
  std::mt19937_64 random(0x5eed);
  auto pick = [&](uint64_t bound) { return random() % bound; };
  // Addresses mostly inside RAM, some just outside, some anywhere.
  auto address = [&]() -> uint64_t {
    switch (pick(8)) {
      case 0: return random();
      case 1: return kRamSize - pick(64);
      default: return pick(kRamSize);
    }
  };
  start_port(0);
  start_port(1);
  unsigned errors = 0;
  for (int iteration = 0; iteration < 100000; ++iteration) {
    // The first half runs polled (the issuing thread runs commands), the second on the I/O
    // thread (GHC.IE on).
    if (iteration == 50000) set_reg(kHostControl, kGhcAhciEnable | kGhcInterruptEnable);
    const unsigned port = static_cast<unsigned>(pick(2));
    const uint64_t list = kCommandList + port * 0x1000;
    const unsigned slot = static_cast<unsigned>(pick(32));
    // A header with random flags and PRDT length, its table somewhere in (or out of) RAM.
    std::array<std::byte, 32> header{};
    for (auto& byte : header) byte = static_cast<std::byte>(random());
    const uint64_t table = pick(4) == 0 ? address() : kTable;
    store_le<uint64_t>(header.data() + 8, table);
    put(list + slot * 32, header);
    if (table == kTable) {
      std::array<std::byte, 0x80 + 16 * 8> contents{};
      for (auto& byte : contents) byte = static_cast<std::byte>(random());
      // Mostly a plausible FIS with a command the drive knows, sometimes pure noise.
      if (pick(4) != 0) {
        static constexpr uint8_t kCommands[] = {0xec, 0xa1, 0x25, 0x35, 0xc8, 0xca, 0x20, 0x24,
                                                0xe7, 0xea, 0xef, 0xe5, 0xa0, 0x42, 0x08};
        contents[0] = std::byte{kFisRegisterH2d};
        contents[1] |= std::byte{0x80};
        contents[2] = std::byte{kCommands[pick(std::size(kCommands))]};
        static constexpr uint8_t kOpcodes[] = {0x00, 0x03, 0x12, 0x1b, 0x1e, 0x25, 0x28, 0x2b,
                                               0x43, 0x46, 0x4a, 0x5a, 0xa8, 0xbb, 0xbd, 0x51};
        contents[kCommandTableAtapi] = std::byte{kOpcodes[pick(std::size(kOpcodes))]};
      }
      for (int entry = 0; entry < 8; ++entry) {
        store_le<uint64_t>(contents.data() + kCommandTablePrdt + 16 * entry, address());
      }
      put(kTable, contents);
    }
    set_reg(port_reg(port, kPortCommandIssue), 1u << slot);
    // Now and then a register write at random, as a confused driver would.
    if (pick(16) == 0) {
      const uint64_t offset = pick(AhciController::kAbarSize) & ~uint64_t{3};
      // No HBA resets or port stops here: they would leave the ports idle for the rest.
      if (offset != kHostControl && (offset < kPortBase || (offset - kPortBase) % kPortStride !=
                                                                kPortCommand)) {
        set_reg(offset, static_cast<uint32_t>(random()));
      }
    }
    controller_->wait_idle();
    ASSERT_EQ(reg(port_reg(port, kPortCommandIssue)), 0u) << "iteration " << iteration;
    if (reg(port_reg(port, kPortInterruptStatus)) & kPortIrqTaskFileError) ++errors;
    set_reg(port_reg(port, kPortInterruptStatus), 0xffffffff);
    if (reg(port_reg(port, kPortSataControl)) & 0xf) set_reg(port_reg(port, kPortSataControl), 0);
  }
  // Most random commands are refused, and the guest was told each time.
  EXPECT_GT(errors, 10000u);
  // The controller still works.
  start_port(0);
  EXPECT_EQ(issue(0, {.command = 0xec, .regions = {{kBuffer, 512}}}) & 0xff, kStatusGood);
  EXPECT_EQ(load_le<uint64_t>(get(kBuffer + 200, 8).data()), kDiskBytes / 512);
}

}  // namespace
}  // namespace lamina::ahci::testing
