// AhciController with an ATA disk and an ATAPI CD-ROM, driven through its registers and
// command lists as SeaBIOS (src/hw/ahci.c) and Linux's ahci driver do.
#include "ahci_harness.h"

namespace lamina::ahci::testing {
namespace {

class AhciTest : public AhciBench {};

std::vector<uint8_t> cdb(std::initializer_list<int> bytes) {
  std::vector<uint8_t> out(12);
  size_t i = 0;
  for (int byte : bytes) out[i++] = static_cast<uint8_t>(byte);
  return out;
}

TEST_F(AhciTest, HbaRegistersDescribeAnIch9StyleController) {
  EXPECT_EQ(controller_->config_read(0, 4), 0x29228086u);
  EXPECT_EQ(controller_->config_read(0x08, 4) >> 8, 0x010601u);
  const uint32_t capabilities = reg(kHostCapabilities);
  EXPECT_EQ(capabilities & 0x1f, AhciController::kPorts - 1);
  EXPECT_EQ((capabilities >> 8) & 0x1f, 31u);
  EXPECT_TRUE(capabilities & kCapSam);
  EXPECT_EQ(reg(kHostPortsImplemented), 0x3fu);
  EXPECT_EQ(reg(kHostVersion), 0x00010300u);
  EXPECT_TRUE(reg(kHostControl) & kGhcAhciEnable);
  // Devices on ports 0 and 1 with their signatures; the others are empty.
  EXPECT_EQ(reg(port_reg(0, kPortSataStatus)), 0x113u);
  EXPECT_EQ(reg(port_reg(0, kPortSignature)), 0x00000101u);
  EXPECT_EQ(reg(port_reg(1, kPortSignature)), 0xeb140101u);
  EXPECT_EQ(reg(port_reg(2, kPortSataStatus)), 0u);
  EXPECT_EQ(reg(port_reg(0, kPortTaskFile)) & (kStatusBusy | kStatusDataRequest), 0u);
}

TEST_F(AhciTest, IdentifyDeviceReportsCapacityAndPostsPioSetup) {
  start_port(0);
  const uint32_t task_file = issue(0, {.command = 0xec, .regions = {{kBuffer, 512}}});
  EXPECT_EQ(task_file & 0xff, kStatusGood);
  const auto id = get(kBuffer, 512);
  const uint64_t sectors = load_le<uint64_t>(id.data() + 200);
  EXPECT_EQ(sectors, kDiskBytes / 512);
  EXPECT_EQ(load_le<uint16_t>(id.data() + 2 * 83) & (1 << 10), 1 << 10);  // LBA48
  // Serial in words 10-19, first character in the high byte.
  EXPECT_EQ(static_cast<char>(id[21]), 'd');
  EXPECT_EQ(static_cast<char>(id[20]), 'i');
  uint8_t sum = 0;
  for (std::byte b : id) sum = static_cast<uint8_t>(sum + static_cast<uint8_t>(b));
  EXPECT_EQ(sum, 0);  // integrity word
  EXPECT_EQ(reg(port_reg(0, kPortInterruptStatus)) & (kPortIrqPioSetup | kPortIrqD2hRegister),
            kPortIrqPioSetup | kPortIrqD2hRegister);
  EXPECT_EQ(get8(kFisArea + kReceivedPioSetup), kFisPioSetup);
  EXPECT_EQ(get8(kFisArea + kReceivedPioSetup + 15), kStatusGood);
  // PRDBC counts the bytes moved.
  EXPECT_EQ(load_le<uint32_t>(get(kCommandList + 4, 4).data()), 512u);
}

TEST_F(AhciTest, IdentifyPacketOnADiskIsAbortedAsSeaBiosProbesIt) {
  start_port(0);
  const uint32_t task_file = issue(0, {.command = 0xa1, .regions = {{kBuffer, 512}}});
  EXPECT_EQ(task_file & kStatusError, kStatusError);
  EXPECT_EQ((task_file >> 8) & kErrorAbort, kErrorAbort);
  EXPECT_TRUE(reg(port_reg(0, kPortInterruptStatus)) & kPortIrqTaskFileError);
  EXPECT_EQ(get8(kFisArea + kReceivedD2hRegister + 2) & kStatusError, kStatusError);
}

TEST_F(AhciTest, WriteThenReadDmaExtAcrossTwoRegions) {
  start_port(0);
  std::vector<std::byte> pattern(4096);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<std::byte>(i * 13 + 5);
  put(kBuffer, std::span(pattern).first(1024));
  put(kBuffer + 0x10000, std::span(pattern).subspan(1024));
  EXPECT_EQ(issue(0, {.command = 0x35, .lba = 100, .count = 8, .write = true,
                      .regions = {{kBuffer, 1024}, {kBuffer + 0x10000, 3072}}}) & 0xff,
            kStatusGood);
  EXPECT_TRUE(std::equal(pattern.begin(), pattern.end(), disk_->bytes_.begin() + 100 * 512));
  EXPECT_EQ(issue(0, {.command = 0x25, .lba = 100, .count = 8,
                      .regions = {{kBuffer + 0x20000, 2048}, {kBuffer + 0x30000, 2048}}}) & 0xff,
            kStatusGood);
  auto first = get(kBuffer + 0x20000, 2048);
  auto second = get(kBuffer + 0x30000, 2048);
  EXPECT_TRUE(std::equal(first.begin(), first.end(), pattern.begin()));
  EXPECT_TRUE(std::equal(second.begin(), second.end(), pattern.begin() + 2048));
  // 28-bit READ DMA as SeaBIOS sends small reads.
  EXPECT_EQ(issue(0, {.command = 0xc8, .lba = 100, .count = 1, .regions = {{kBuffer, 512}}}) & 0xff,
            kStatusGood);
  auto sector = get(kBuffer, 512);
  EXPECT_TRUE(std::equal(sector.begin(), sector.end(), pattern.begin()));
}

TEST_F(AhciTest, ErrorsReachTheGuestThroughTheTaskFile) {
  start_port(0);
  // Past the end of the disk: ID NOT FOUND.
  uint32_t task_file = issue(0, {.command = 0x25, .lba = kDiskBytes / 512, .count = 1,
                                 .regions = {{kBuffer, 512}}});
  EXPECT_EQ(task_file & kStatusError, kStatusError);
  EXPECT_EQ((task_file >> 8) & 0xff, kErrorIdNotFound);
  // A PRDT shorter than the transfer, and one pointing outside RAM: aborted.
  task_file = issue(0, {.command = 0x25, .lba = 0, .count = 2, .regions = {{kBuffer, 512}}});
  EXPECT_EQ((task_file >> 8) & kErrorAbort, kErrorAbort);
  task_file = issue(0, {.command = 0x25, .lba = 0, .count = 1, .regions = {{kRamSize, 512}}});
  EXPECT_EQ((task_file >> 8) & kErrorAbort, kErrorAbort);
  // The port goes on after an error.
  EXPECT_EQ(issue(0, {.command = 0xe7}) & 0xff, kStatusGood);
  EXPECT_EQ(disk_->flushes.load(), 1);
}

TEST_F(AhciTest, CompletionInterruptsThroughIntxWhenEnabled) {
  start_port(0);
  set_reg(kHostControl, kGhcAhciEnable | kGhcInterruptEnable);
  issue(0, {.command = 0xe7});
  EXPECT_FALSE(line_.level.load());  // PxIE is still 0
  set_reg(port_reg(0, kPortInterruptEnable), kPortIrqD2hRegister);
  EXPECT_TRUE(line_.level.load());
  EXPECT_EQ(reg(kHostInterruptStatus), 1u);
  set_reg(port_reg(0, kPortInterruptStatus), kPortIrqD2hRegister);
  set_reg(kHostInterruptStatus, 1);
  EXPECT_FALSE(line_.level.load());
  issue(0, {.command = 0xe7});  // issue() clears PxIS first, so this is a new interrupt
  EXPECT_TRUE(line_.level.load());
}

TEST_F(AhciTest, WithInterruptsOnCommandsRunOnTheIoThread) {
  start_port(0);
  start_port(1);
  set_reg(kHostControl, kGhcAhciEnable | kGhcInterruptEnable);
  set_reg(port_reg(0, kPortInterruptEnable), kPortIrqD2hRegister);
  for (int round = 0; round < 20; ++round) {
    const uint64_t lba = 7 * round;
    EXPECT_EQ(issue(0, {.command = 0x25, .lba = lba, .count = 3,
                        .regions = {{kBuffer, 1536}}}) & 0xff,
              kStatusGood);
    const auto read = get(kBuffer, 1536);
    EXPECT_TRUE(std::equal(read.begin(), read.end(), disk_->bytes_.begin() + lba * 512));
    EXPECT_TRUE(line_.level.load());
    EXPECT_EQ(issue(1, {.command = 0xa0, .features = 1,
                        .packet = cdb({0x28, 0, 0, 0, 0, round, 0, 0, 1}),
                        .regions = {{kBuffer, 2048}}}) & 0xff,
              kStatusGood);
  }
}

TEST_F(AhciTest, StoppingThePortClearsIssuedCommandsAndResetRestoresTheSignature) {
  start_port(0);
  set_reg(port_reg(0, kPortCommand), kCmdFisReceiveEnable);
  EXPECT_EQ(reg(port_reg(0, kPortCommand)) & kCmdListRunning, 0u);
  // CI writes are ignored while ST is clear.
  set_reg(port_reg(0, kPortCommandIssue), 1);
  EXPECT_EQ(reg(port_reg(0, kPortCommandIssue)), 0u);
  // COMRESET: link down while DET = 1, then the signature FIS.
  set_reg(port_reg(0, kPortSataControl), 1);
  EXPECT_EQ(reg(port_reg(0, kPortSataStatus)), 0u);
  set_reg(port_reg(0, kPortSataControl), 0);
  EXPECT_EQ(reg(port_reg(0, kPortSataStatus)), 0x113u);
  EXPECT_EQ(reg(port_reg(0, kPortTaskFile)) & 0xff, kStatusGood);
  EXPECT_EQ(get8(kFisArea + kReceivedD2hRegister), kFisRegisterD2h);
  // HBA reset.
  set_reg(kHostControl, kGhcReset);
  EXPECT_EQ(reg(kHostControl), kGhcAhciEnable);
  EXPECT_EQ(reg(port_reg(0, kPortCommand)) & (kCmdStart | kCmdFisReceiveEnable), 0u);
}

TEST_F(AhciTest, AtapiIdentifyInquiryCapacityAndRead) {
  start_port(1);
  EXPECT_EQ(issue(1, {.command = 0xa1, .regions = {{kBuffer, 512}}}) & 0xff, kStatusGood);
  const auto id = get(kBuffer, 512);
  EXPECT_EQ((load_le<uint16_t>(id.data()) >> 8) & 0x1f, 0x05);  // CD-ROM
  // IDENTIFY DEVICE is aborted by a PACKET device.
  EXPECT_TRUE(issue(1, {.command = 0xec, .regions = {{kBuffer, 512}}}) & kStatusError);

  EXPECT_EQ(issue(1, {.command = 0xa0, .features = 1, .packet = cdb({0x12, 0, 0, 0, 36}),
                      .regions = {{kBuffer, 36}}}) & 0xff,
            kStatusGood);
  EXPECT_EQ(get8(kBuffer), 0x05);
  EXPECT_EQ(issue(1, {.command = 0xa0, .features = 1, .packet = cdb({0x25}),
                      .regions = {{kBuffer, 8}}}) & 0xff,
            kStatusGood);
  const auto capacity = get(kBuffer, 8);
  EXPECT_EQ(load_be<uint32_t>(capacity.data()), kDiscBytes / 2048 - 1);
  EXPECT_EQ(load_be<uint32_t>(capacity.data() + 4), 2048u);
  // READ(10) of blocks 3 and 4, as SeaBIOS's cdrom_read does.
  EXPECT_EQ(issue(1, {.command = 0xa0, .features = 1, .packet = cdb({0x28, 0, 0, 0, 0, 3, 0, 0, 2}),
                      .regions = {{kBuffer, 4096}}}) & 0xff,
            kStatusGood);
  const auto blocks = get(kBuffer, 4096);
  EXPECT_TRUE(std::equal(blocks.begin(), blocks.end(), disc_->bytes_.begin() + 3 * 2048));
  // TOC: track 1 and the lead-out at the disc's end.
  EXPECT_EQ(issue(1, {.command = 0xa0, .features = 1, .packet = cdb({0x43, 0, 0, 0, 0, 0, 0, 0, 20}),
                      .regions = {{kBuffer, 20}}}) & 0xff,
            kStatusGood);
  const auto toc = get(kBuffer, 20);
  EXPECT_EQ(load_be<uint16_t>(toc.data()), 18);
  EXPECT_EQ(static_cast<uint8_t>(toc[14]), 0xaa);
  EXPECT_EQ(load_be<uint32_t>(toc.data() + 16), kDiscBytes / 2048);
}

TEST_F(AhciTest, UnknownScsiCommandsEndInCheckConditionWithIllegalRequestSense) {
  start_port(1);
  uint32_t task_file = issue(1, {.command = 0xa0, .features = 1, .packet = cdb({0xff}),
                                 .regions = {{kBuffer, 512}}});
  EXPECT_EQ(task_file & kStatusError, kStatusError);
  EXPECT_EQ((task_file >> 8) >> 4, 0x05u);  // sense key in the Error register
  EXPECT_EQ(issue(1, {.command = 0xa0, .features = 1, .packet = cdb({0x03, 0, 0, 0, 18}),
                      .regions = {{kBuffer, 18}}}) & 0xff,
            kStatusGood);
  const auto sense = get(kBuffer, 18);
  EXPECT_EQ(static_cast<uint8_t>(sense[0]), 0x70);
  EXPECT_EQ(static_cast<uint8_t>(sense[2]), 0x05);
  EXPECT_EQ(static_cast<uint8_t>(sense[12]), 0x20);
  // Reads past the disc: LOGICAL BLOCK ADDRESS OUT OF RANGE.
  task_file = issue(1, {.command = 0xa0, .features = 1,
                        .packet = cdb({0x28, 0, 0, 0, 0, 64, 0, 0, 1}), .regions = {{kBuffer, 2048}}});
  EXPECT_TRUE(task_file & kStatusError);
  issue(1, {.command = 0xa0, .features = 1, .packet = cdb({0x03, 0, 0, 0, 18}),
            .regions = {{kBuffer, 18}}});
  EXPECT_EQ(get8(kBuffer + 12), 0x21);
  // Writes to the disc are refused (a read-only image) and ATA writes too.
  EXPECT_TRUE(issue(1, {.command = 0x35, .lba = 0, .count = 1, .write = true,
                        .regions = {{kBuffer, 512}}}) & kStatusError);
}

// A machine state: the registers of both ports, the pending interrupt and the CD-ROM's sense
// data survive a save into a new controller on the same drives, which then runs commands; a
// controller whose ports hold other drives refuses the state.
TEST_F(AhciTest, SaveAndLoadCarryRegistersInterruptsAndSenseData) {
  start_port(0);
  start_port(1);
  set_reg(kHostControl, kGhcAhciEnable | kGhcInterruptEnable);
  // A failed READ past the disc leaves LBA OUT OF RANGE sense data and an error interrupt.
  issue(1, {.command = 0xa0, .features = 1, .packet = cdb({0x28, 0, 0, 0, 0, 64, 0, 0, 1}),
            .regions = {{kBuffer, 2048}}});
  set_reg(port_reg(1, kPortInterruptEnable), kPortIrqTaskFileError | kPortIrqD2hRegister);
  ASSERT_TRUE(line_.level.load());
  controller_->wait_idle();
  StateWriter writer;
  controller_->save(writer);

  std::vector<std::unique_ptr<SataDrive>> drives;
  drives.push_back(std::make_unique<AtaDisk>(disk_, "disk-serial"));
  drives.push_back(std::make_unique<AtapiCdrom>(disc_, "cd-serial"));
  auto restored = std::make_unique<AhciController>(dma_, std::move(drives));
  CountingLine restored_line;
  restored->set_intx_line(&restored_line);
  StateReader reader(writer.data());
  ASSERT_TRUE(restored->load(reader).has_value());
  EXPECT_TRUE(restored_line.level.load()) << "the pending interrupt was not asserted again";
  auto restored_reg = [&](uint64_t offset) {
    std::array<std::byte, 4> value{};
    restored->abar().read(offset, value);
    return load_le<uint32_t>(value.data());
  };
  for (uint64_t offset : {kHostControl, kHostInterruptStatus}) {
    EXPECT_EQ(restored_reg(offset), reg(offset)) << "HBA register " << offset;
  }
  for (unsigned port = 0; port < 2; ++port) {
    for (uint64_t offset : {kPortCommandListBase, kPortFisBase, kPortInterruptStatus,
                            kPortInterruptEnable, kPortCommand, kPortTaskFile, kPortSignature,
                            kPortSataStatus, kPortSataControl, kPortSataError}) {
      EXPECT_EQ(restored_reg(port_reg(port, offset)), reg(port_reg(port, offset)))
          << "port " << port << " register " << offset;
    }
  }
  // The restored controller answers REQUEST SENSE with the saved sense, and reads the disk.
  controller_ = std::move(restored);
  line_.level = false;
  controller_->set_intx_line(&line_);
  set_reg(port_reg(1, kPortInterruptStatus), ~0u);
  set_reg(kHostInterruptStatus, ~0u);
  EXPECT_EQ(issue(1, {.command = 0xa0, .features = 1, .packet = cdb({0x03, 0, 0, 0, 18}),
                      .regions = {{kBuffer, 18}}}) & 0xff,
            kStatusGood);
  EXPECT_EQ(get8(kBuffer + 2), 0x05);
  EXPECT_EQ(get8(kBuffer + 12), 0x21);
  EXPECT_EQ(issue(0, {.command = 0x25, .lba = 3, .count = 1, .regions = {{kBuffer, 512}}}) & 0xff,
            kStatusGood);
  auto sector = get(kBuffer, 512);
  EXPECT_TRUE(std::equal(sector.begin(), sector.end(), disk_->bytes_.begin() + 3 * 512));

  // Port 1 empty now: the state says it held a CD-ROM.
  std::vector<std::unique_ptr<SataDrive>> disk_only;
  disk_only.push_back(std::make_unique<AtaDisk>(disk_, "disk-serial"));
  AhciController other(dma_, std::move(disk_only));
  StateReader again(writer.data());
  auto refused = other.load(again);
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message().find("port 1 held cdrom when saved and holds nothing now"),
            std::string::npos)
      << refused.error().message();
}

}  // namespace
}  // namespace lamina::ahci::testing

namespace lamina::ahci::testing {
namespace {

// A disk whose reads wait until released, counting how many run at once.
class GatedDisk final : public storage::BlockDevice {
 public:
  uint64_t size() const override { return 1 << 20; }
  bool read_only() const override { return false; }
  Result<void> read(uint64_t, std::span<std::byte> data) override {
    const int now = ++inside;
    int seen = most;
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
    std::unique_lock lock(mutex);
    ++reads;
    changed.notify_all();
    changed.wait(lock, [this] { return open; });
    std::fill(data.begin(), data.end(), std::byte{0x5a});
    --inside;
    return {};
  }
  Result<void> write(uint64_t, std::span<const std::byte>) override { return {}; }
  Result<void> flush() override { return {}; }
  Result<void> discard(uint64_t, uint64_t) override { return {}; }
  void wait_reads(int count) {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return reads >= count; });
  }
  void release() {
    std::lock_guard lock(mutex);
    open = true;
    changed.notify_all();
  }

  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  std::mutex mutex;
  std::condition_variable changed;
  int reads = 0;
  bool open = false;
};

class AhciAbandonTest : public AhciBench {};

TEST_F(AhciAbandonTest, AnAbandonedCommandFinishesBeforeTheDriveTakesAnother) {
  auto gated = std::make_shared<GatedDisk>();
  std::vector<std::unique_ptr<SataDrive>> drives;
  drives.push_back(std::make_unique<AtaDisk>(gated, "gated"));
  controller_ = std::make_unique<AhciController>(dma_, std::move(drives));
  start_port(0);
  set_reg(kHostControl, kGhcAhciEnable | kGhcInterruptEnable);
  // Slot 0: a read the drive blocks in, on the I/O thread.
  Command read{.command = 0x25, .lba = 0, .count = 1, .regions = {{kBuffer, 512}}};
  std::array<std::byte, 32> header{};
  store_le<uint32_t>(header.data(), 5 | 1u << 16);
  store_le<uint64_t>(header.data() + 8, kTable);
  put(kCommandList, header);
  std::array<std::byte, 0x90> table{};
  table[0] = std::byte{kFisRegisterH2d};
  table[1] = std::byte{0x80};
  table[2] = std::byte{read.command};
  table[12] = std::byte{1};
  store_le<uint64_t>(table.data() + kCommandTablePrdt, kBuffer);
  store_le<uint32_t>(table.data() + kCommandTablePrdt + 12, 511);
  put(kTable, table);
  set_reg(port_reg(0, kPortCommandIssue), 1);
  gated->wait_reads(1);
  // The driver gives up on it (ST off), starts the port again and issues the same read.
  set_reg(port_reg(0, kPortCommand), kCmdFisReceiveEnable);
  EXPECT_EQ(reg(port_reg(0, kPortCommandIssue)), 0u);
  set_reg(port_reg(0, kPortCommand), kCmdFisReceiveEnable | kCmdStart);
  // Polled now: the issuing thread would run the read itself, beside the abandoned one, if
  // the controller let it (then `most` shows 2; the releaser ends both reads either way).
  set_reg(kHostControl, kGhcAhciEnable);
  std::jthread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    gated->release();
  });
  set_reg(port_reg(0, kPortCommandIssue), 1);
  releaser.join();
  controller_->wait_idle();
  EXPECT_EQ(reg(port_reg(0, kPortCommandIssue)), 0u);
  EXPECT_EQ(gated->reads, 2);
  EXPECT_EQ(gated->most.load(), 1) << "two commands ran on the drive at once";
  EXPECT_EQ(reg(port_reg(0, kPortTaskFile)) & 0xff, kStatusGood);
  EXPECT_EQ(get8(kBuffer), 0x5a);
}

}  // namespace
}  // namespace lamina::ahci::testing
