// Live migration's sender against a receiver in the test: a machine whose guest rewrites 64 KiB
// with a new value on every pass migrates over a socket pair; at the switchover the receiver's
// copy of RAM (built only from the pages sent) must equal the quiesced source's RAM byte for
// byte, which fails if the dirty log misses any store. A destination that answers kFailed, or
// a link that closes, leaves the source running. The wire format refuses hostile messages.
#include "migration/live_migration.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "base/byte_order.h"
#include "base/dirty_log.h"
#include "base/unique_fd.h"
#include "machine/machine_builder.h"
#include "migration/migration_protocol.h"
#include "migration/page_rounds.h"
#include "storage/image_format.h"
#include "storage/tracked_block_device.h"
#include "../lib/flat_long_mode.h"

namespace lamina::migration {
namespace {

constexpr uint64_t kCodeAddress = 0x7c00;

// Where each guest program keeps the value it stores on every pass.
enum class Program { kRealModeRepStos, kLongModeStores };
uint64_t store_area(Program program) { return program == Program::kRealModeRepStos ? 0x10000 : 0x200000; }

// kRealModeRepStos: vCPU 0 in real mode runs `inc eax; xor di, di; mov cx, 0x4000; rep stosd;
// jmp` with ES at 0x1000, so every pass writes 64 KiB at 0x10000 with the next value (the
// string handler's stores). kLongModeStores: in 64-bit mode with the first 32 MiB identity-
// mapped by 2 MiB pages, `inc rax; mov edi, 0x200000; mov ecx, 1024; 1: mov [rdi], rax;
// mov [rdi+0x800], eax; add rdi, 0x1000; dec ecx; jnz 1b; jmp` writes two words into each of
// 1024 pages (4 MiB) per pass: plain MOV stores, which the JIT inlines through the soft TLB's
// write pointers, so a dirty log that missed inlined stores fails the RAM comparison.
std::unique_ptr<machine::Machine> storing_machine(uint64_t memory_bytes = 32 << 20,
                                                  Program program = Program::kRealModeRepStos) {
  machine::MachineOptions options;
  options.cpus = 1;
  options.memory_bytes = memory_bytes;
  options.for_restore = true;
  auto built = machine::MachineBuilder::build(options);
  EXPECT_TRUE(built.has_value()) << built.error().message();
  if (!built) return nullptr;
  auto machine = std::move(*built);
  GuestMemory& memory = machine->memory();
  auto put = [&memory](uint64_t address, std::span<const uint8_t> bytes) {
    EXPECT_TRUE(memory.write(address, std::as_bytes(bytes)).has_value());
  };
  cpu::x86::CpuState state = machine->vcpu(0).state();
  if (program == Program::kRealModeRepStos) {
    const uint8_t code[] = {0x66, 0x40, 0x31, 0xff, 0xb9, 0x00, 0x40, 0xf3, 0x66, 0xab, 0xeb, 0xf4};
    put(kCodeAddress, code);
    state.segment[cpu::x86::kCs] = {0, 0, 0xffff, 0x9b};
    state.segment[cpu::x86::kEs] = {0x1000, 0x10000, 0xffff, 0x93};
  } else {
    const uint8_t code[] = {0x48, 0xff, 0xc0,                          // inc rax
                            0xbf, 0x00, 0x00, 0x20, 0x00,              // mov edi, 0x200000
                            0xb9, 0x00, 0x04, 0x00, 0x00,              // mov ecx, 1024
                            0x48, 0x89, 0x07,                          // mov [rdi], rax
                            0x89, 0x87, 0x00, 0x08, 0x00, 0x00,        // mov [rdi+0x800], eax
                            0x48, 0x81, 0xc7, 0x00, 0x10, 0x00, 0x00,  // add rdi, 0x1000
                            0xff, 0xc9,                                // dec ecx
                            0x75, 0xec,                                // jnz -20
                            0xeb, 0xdd};                               // jmp -35
    put(kCodeAddress, code);
    EXPECT_TRUE(lamina::test_support::write_flat_long_mode_tables(memory, 0x1000, 16));
    lamina::test_support::enter_flat_long_mode(state, 0x1000, kCodeAddress);
  }
  state.rip = kCodeAddress;
  machine->vcpu(0).set_state(state);
  return machine;
}

uint32_t stored_value(machine::Machine& machine, Program program = Program::kRealModeRepStos) {
  std::array<std::byte, 4> bytes{};
  EXPECT_TRUE(machine.memory().read(store_area(program), bytes).has_value());
  return load_le<uint32_t>(bytes.data());
}

uint64_t total_pages(const std::vector<RamRegion>& regions) {
  uint64_t pages = 0;
  for (const RamRegion& region : regions) pages += region.size / kPageBytes;
  return pages;
}

// The destination's side, as laminad's IncomingMigration does it, into plain buffers.
struct Receiver {
  std::vector<RamRegion> regions;
  std::vector<std::vector<std::byte>> ram;
  std::vector<std::byte> stream;
  std::atomic<uint64_t> pages = 0;
  std::atomic<bool> state_seen = false;
  PageRounds rounds;
  std::vector<std::vector<std::byte>> disks;  // --storage copy: the disks' content, from zeros
  uint64_t disk_chunks = 0;
  // A slow link: reads no faster than this many bytes a second (0: as fast as they come).
  double bytes_per_second = 0;
  uint64_t received_bytes = 0;

  explicit Receiver(const std::vector<RamRegion>& layout)
      : regions(layout), rounds(total_pages(layout)) {
    for (const RamRegion& region : regions) ram.emplace_back(region.size);
  }
  std::byte* page(uint64_t address) {
    for (size_t index = 0; index < regions.size(); ++index) {
      const RamRegion& region = regions[index];
      if (address >= region.guest_physical && address - region.guest_physical < region.size) {
        return ram[index].data() + (address - region.guest_physical);
      }
    }
    return nullptr;
  }
  // True when the RAM built from the pages received equals the machine's, byte for byte.
  bool holds_ram_of(machine::Machine& machine) {
    for (size_t index = 0; index < regions.size(); ++index) {
      const RamRegion& region = regions[index];
      const std::byte* source = machine.memory().host_pointer(region.guest_physical, region.size);
      if (std::memcmp(source, ram[index].data(), region.size) != 0) return false;
    }
    return true;
  }
  // Reads until the switchover; false on a broken stream.
  bool receive_until_switchover(int link) {
    const auto started = std::chrono::steady_clock::now();
    for (;;) {
      auto message = read_frame(link, 20000);
      if (!message) return false;
      received_bytes += message->size() + 4;
      if (bytes_per_second > 0) {
        std::this_thread::sleep_until(started + std::chrono::duration<double>(
                                                    static_cast<double>(received_bytes) / bytes_per_second));
      }
      auto type = message_type(*message);
      if (!type) return false;
      if (*type == MessageType::kSwitchover) return true;
      if (*type == MessageType::kState) {
        stream.assign(message->begin() + 1, message->end());
        state_seen = true;
        continue;
      }
      if (*type == MessageType::kDiskChunk) {
        auto chunk = decode_disk_chunk(*message);
        if (!chunk || chunk->disk >= disks.size()) return false;
        std::vector<std::byte>& disk = disks[chunk->disk];
        if (chunk->offset + chunk->length > disk.size()) return false;
        if (chunk->zero) {
          std::memset(disk.data() + chunk->offset, 0, chunk->length);
        } else {
          std::memcpy(disk.data() + chunk->offset, chunk->data.data(), chunk->length);
        }
        ++disk_chunks;
        continue;
      }
      if (!apply_pages(*message)) return false;
    }
  }
  // A lane: pages until its kLaneEnd (false on anything else). `delay`: a pause before
  // applying each message; `hold`: read nothing until the main link has brought the machine
  // state (or 2 s passed: the sender may wait for room in this lane's socket), so copies of a
  // page from different rounds arrive out of order.
  bool receive_lane(int lane, std::chrono::microseconds delay, bool hold) {
    const auto held_until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (hold && !state_seen && std::chrono::steady_clock::now() < held_until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    for (;;) {
      auto message = read_frame(lane, 20000);
      if (!message) return false;
      auto type = message_type(*message);
      if (!type) return false;
      if (*type == MessageType::kLaneEnd) return true;
      if (*type != MessageType::kPages) return false;
      std::this_thread::sleep_for(delay);
      if (!apply_pages(*message)) return false;
    }
  }
  // Pages from the main link and the lanes: each copy goes in unless a later round's copy of
  // that page already did (PageRounds, as the destination laminad keeps them).
  bool apply_pages(std::span<const std::byte> message) {
    auto decoded = decode_pages(message);
    if (!decoded) return false;
    size_t at = 0;
    for (size_t index = 0; index < decoded->addresses.size(); ++index) {
      std::byte* target = page(decoded->addresses[index]);
      if (target == nullptr) return false;
      const std::byte* data = decoded->zero[index] ? nullptr : decoded->data.data() + at;
      if (data != nullptr) at += kPageBytes;
      const bool applied = rounds.apply(page_index(decoded->addresses[index]), decoded->round, [&] {
        if (data == nullptr) {
          std::memset(target, 0, kPageBytes);
        } else {
          std::memcpy(target, data, kPageBytes);
        }
        return true;
      });
      if (!applied) return false;
      ++pages;
    }
    return true;
  }
  uint64_t page_index(uint64_t address) const {
    uint64_t index = 0;
    for (const RamRegion& region : regions) {
      if (address >= region.guest_physical && address - region.guest_physical < region.size) {
        return index + (address - region.guest_physical) / kPageBytes;
      }
      index += region.size / kPageBytes;
    }
    return index;
  }
};

struct Link {
  UniqueFd source;
  UniqueFd destination;
};
Link link() {
  int pair[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  return {UniqueFd(pair[0]), UniqueFd(pair[1])};
}

class StoringPrograms : public testing::TestWithParam<Program> {};

TEST_P(StoringPrograms, TheReceiverHoldsExactlyTheSourceRamAtTheSwitchover) {
  const Program program = GetParam();
  auto machine = storing_machine(32 << 20, program);
  ASSERT_TRUE(machine);
  std::jthread runner([&machine] { (void)machine->run(); });
  while (stored_value(*machine, program) < 50) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  Link ends = link();
  Receiver receiver(machine->memory().regions());
  bool identical = false;
  uint32_t value_at_switchover = 0;
  std::jthread destination([&] {
    if (!receiver.receive_until_switchover(ends.destination.get())) return;
    // The source is quiesced now: its RAM must be what the pages built here.
    value_at_switchover = stored_value(*machine, program);
    identical = receiver.holds_ram_of(*machine);
    // The destination's own breakdown rides on its answer; the bogus entry makes the source
    // leave the whole list out.
    nlohmann::json phases = nlohmann::json::array({{{"phase", "worker_start"}, {"us", 1234}}});
    if (program == Program::kLongModeStores) phases.push_back({{"phase", "../etc"}, {"us", 1}});
    (void)write_frame(ends.destination.get(),
                      make_json_message(MessageType::kStarted, {{"phases", phases}}));
  });
  LiveMigrationOptions options;
  options.max_downtime = std::chrono::milliseconds(1);
  options.max_rounds = 6;
  std::vector<LiveMigrationProgress> reports;
  LiveMigrationHooks hooks;
  hooks.progress = [&](const LiveMigrationProgress& progress) { reports.push_back(progress); };
  auto result = migrate_out(*machine, ends.source.get(), options, hooks);
  destination.join();
  ASSERT_TRUE(result.has_value()) << result.error().message();
  EXPECT_TRUE(identical) << "a page the guest wrote did not reach the destination";
  EXPECT_GT(value_at_switchover, 50u);
  EXPECT_FALSE(receiver.stream.empty());
  ASSERT_FALSE(reports.empty());
  // The guest rewrote its pages while the first round went: the log saw them.
  EXPECT_GE(reports.front().remaining_bytes, 16 * kPageBytes);
  EXPECT_EQ(reports.back().phase, "switchover");
  // Where the downtime went: the source's phases in order, then the destination's, which the
  // source's own wait for the answer contains.
  std::vector<std::string> names;
  for (const auto& phase : result->switchover.phases()) names.push_back(phase.name);
  std::vector<std::string> expected = {"source.quiesce", "source.last_pages",
                                       "source.machine_state_encode",
                                       "source.machine_state_send",
                                       "source.destination_answer"};
  if (program == Program::kRealModeRepStos) expected.push_back("destination.worker_start");
  EXPECT_EQ(names, expected);
  if (program == Program::kRealModeRepStos) {
    EXPECT_EQ(result->switchover.phases().back().microseconds, 1234u);
  }
  EXPECT_GE(result->downtime.count(),
            static_cast<int64_t>(result->switchover.total_microseconds() -
                                 (program == Program::kRealModeRepStos ? 1234 : 0)));
  // Held after a successful switchover: the VM runs elsewhere now.
  const uint32_t held = stored_value(*machine, program);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(stored_value(*machine, program), held);
  EXPECT_FALSE(machine->memory().dirty_log().logging());
  machine->stops().post({machine::MachineExit::kHostStop, "test", 0});
}

INSTANTIATE_TEST_SUITE_P(LiveMigrationTest, StoringPrograms,
                         testing::Values(Program::kRealModeRepStos, Program::kLongModeStores),
                         [](const testing::TestParamInfo<Program>& param_info) {
                           return param_info.param == Program::kRealModeRepStos ? "RealModeRepStos"
                                                                          : "LongModeInlinedStores";
                         });

// Several connections: the pages go over three lanes, each read here by a thread of its own
// at its own pace (one reads nothing until the others are done), so a page's copy from one
// round often arrives after its copy from the next; with the rounds kept per page the RAM at the switchover is still the
// source's byte for byte (applied in arrival order it is not: a stale copy wins).
TEST(LiveMigrationTest, PagesOnSeveralLanesArriveOutOfOrderAndTheLatestRoundWins) {
  auto machine = storing_machine(32 << 20, Program::kLongModeStores);
  ASSERT_TRUE(machine);
  std::jthread runner([&machine] { (void)machine->run(); });
  while (stored_value(*machine, Program::kLongModeStores) < 50) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  Link ends = link();
  std::vector<Link> lanes;
  for (int index = 0; index < 3; ++index) lanes.push_back(link());
  Receiver receiver(machine->memory().regions());
  std::atomic<int> lanes_ended = 0;
  std::vector<std::jthread> lane_readers;
  const std::chrono::microseconds delays[] = {std::chrono::microseconds(0),
                                              std::chrono::microseconds(300),
                                              std::chrono::microseconds(100)};
  for (size_t index = 0; index < lanes.size(); ++index) {
    lane_readers.emplace_back([&, index] {
      if (receiver.receive_lane(lanes[index].destination.get(), delays[index], index == 2)) {
        ++lanes_ended;
      }
    });
  }
  bool identical = false;
  std::jthread destination([&] {
    if (!receiver.receive_until_switchover(ends.destination.get())) return;
    for (auto& reader : lane_readers) reader.join();
    identical = lanes_ended == 3 && receiver.holds_ram_of(*machine);
    (void)write_frame(ends.destination.get(), make_json_message(MessageType::kStarted, {}));
  });
  LiveMigrationOptions options;
  options.max_downtime = std::chrono::milliseconds(1);
  options.max_rounds = 8;
  for (const Link& lane : lanes) options.lanes.push_back(lane.source.get());
  uint32_t rounds = 0;
  auto result = migrate_out(*machine, ends.source.get(), options, {});
  destination.join();
  ASSERT_TRUE(result.has_value()) << result.error().message();
  rounds = result->rounds;
  EXPECT_EQ(lanes_ended.load(), 3);
  EXPECT_TRUE(identical) << "the RAM built from the lanes' pages differs from the source's after "
                         << rounds << " rounds";
  EXPECT_GT(receiver.pages.load(), 1024u);
  machine->stops().post({machine::MachineExit::kHostStop, "test", 0});
}

// Copies of one page from different rounds, in any order: the latest round's stays.
TEST(PageRoundsTest, KeepsTheLatestRoundsCopyWhateverOrderTheyArriveIn) {
  PageRounds rounds(4);
  std::vector<int> page(4, -1);
  auto put = [&](uint64_t index, uint16_t round) {
    return rounds.apply(index, round, [&] {
      page[index] = round;
      return true;
    });
  };
  EXPECT_TRUE(put(1, 3));
  EXPECT_TRUE(put(1, 2));  // older: dropped
  EXPECT_EQ(page[1], 3);
  EXPECT_TRUE(put(1, 3));  // the same round again (a page sent twice in one round) is written
  EXPECT_TRUE(put(1, 5));
  EXPECT_EQ(page[1], 5);
  EXPECT_TRUE(put(2, 0));  // the first copy of a page, round 0
  EXPECT_EQ(page[2], 0);
  EXPECT_FALSE(rounds.apply(4, 1, [] { return true; }));  // outside the table
  EXPECT_FALSE(rounds.apply(0, 1, [] { return false; }));  // a failed write is not recorded
  EXPECT_TRUE(put(0, 0));
  EXPECT_EQ(page[0], 0);
}

// Over a slow link, a guest whose RAM is mostly zero pages: the bandwidth the rounds estimate
// the downtime with is the bytes the link carried, not the RAM the first round covered (zero
// pages cost nothing to send; counting them made a 16 MB/s link look like hundreds of MB/s,
// and a dirty set that needed far longer than the budget seemed to fit it).
TEST(LiveMigrationTest, TheBandwidthIsWhatTheLinkCarriedNotTheRamCovered) {
  auto machine = storing_machine(uint64_t{256} << 20);
  ASSERT_TRUE(machine);
  // 6 MiB that is not zero (the rest of the 256 MiB is): the first round sends that.
  std::vector<std::byte> filler(6 << 20, std::byte{0x5a});
  ASSERT_TRUE(machine->memory().write(uint64_t{16} << 20, filler).has_value());
  std::jthread runner([&machine] { (void)machine->run(); });
  while (stored_value(*machine) < 10) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  Link ends = link();
  Receiver receiver(machine->memory().regions());
  constexpr double kLinkRate = 16e6;
  receiver.bytes_per_second = kLinkRate;
  std::jthread destination([&] {
    if (receiver.receive_until_switchover(ends.destination.get())) {
      (void)write_frame(ends.destination.get(), make_json_message(MessageType::kStarted, {}));
    }
  });
  LiveMigrationOptions options;
  options.max_downtime = std::chrono::milliseconds(1);
  options.max_rounds = 3;
  std::vector<LiveMigrationProgress> reports;
  LiveMigrationHooks hooks;
  hooks.progress = [&](const LiveMigrationProgress& progress) { reports.push_back(progress); };
  auto result = migrate_out(*machine, ends.source.get(), options, hooks);
  destination.join();
  ASSERT_TRUE(result.has_value()) << result.error().message();
  int rounds = 0;
  for (const LiveMigrationProgress& progress : reports) {
    if (progress.phase != "copying") continue;
    ++rounds;
    // Socket buffers let the sender run a little ahead of the link; not 16 times.
    EXPECT_LE(static_cast<double>(progress.bandwidth), 2 * kLinkRate) << "round " << progress.round;
  }
  EXPECT_GE(rounds, 1);
  machine->stops().post({machine::MachineExit::kHostStop, "test", 0});
}

// A raw image of `size` bytes with a pattern in its first MiB and at 5 MiB, the rest holes.
std::unique_ptr<storage::TrackedBlockDevice> patterned_disk(const std::filesystem::path& path,
                                                           uint64_t size) {
  {
    std::ofstream file(path, std::ios::binary);
    std::vector<char> pattern(1 << 20);
    for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<char>(i * 7 + 1);
    file.write(pattern.data(), static_cast<std::streamsize>(pattern.size()));
    file.seekp(5 << 20);
    file.write(pattern.data(), 4096);
  }
  std::filesystem::resize_file(path, size);
  auto image = storage::open_image(path.string(), true);
  EXPECT_TRUE(image.has_value()) << image.error().message();
  if (!image) return nullptr;
  return std::make_unique<storage::TrackedBlockDevice>(std::move(*image));
}

std::vector<std::byte> disk_content(storage::BlockDevice& disk) {
  std::vector<std::byte> content(disk.size());
  EXPECT_TRUE(disk.read(0, content).has_value());
  return content;
}

// --storage copy: the disk goes whole, then what is written behind the first pass and between
// the rounds (new data, and data zeroed again) follows; at the switchover the receiver's disk
// equals the source's byte for byte, and the RAM still does.
TEST(LiveMigrationTest, CopiedStorageReachesTheReceiverWithEveryLaterWrite) {
  const auto folder = std::filesystem::temp_directory_path() /
                      ("lamina-copy-" + std::to_string(::getpid()));
  std::filesystem::create_directories(folder);
  auto disk = patterned_disk(folder / "disk.raw", 8 << 20);
  ASSERT_TRUE(disk);
  auto machine = storing_machine();
  ASSERT_TRUE(machine);
  std::jthread runner([&machine] { (void)machine->run(); });
  while (stored_value(*machine) < 5) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  Link ends = link();
  Receiver receiver(machine->memory().regions());
  receiver.disks.emplace_back(disk->size());
  bool disk_identical = false;
  bool ram_identical = false;
  std::jthread destination([&] {
    if (!receiver.receive_until_switchover(ends.destination.get())) return;
    disk_identical = receiver.disks[0] == disk_content(*disk);
    ram_identical = receiver.holds_ram_of(*machine);
    (void)write_frame(ends.destination.get(), make_json_message(MessageType::kStarted, {}));
  });
  // The "guest" writes from the progress reports, i.e. between the migration's steps: during
  // the first pass behind it (offset 0 was read already), and after each round's look at
  // the dirty chunks (so only a later look or the switchover's can catch them).
  const std::vector<std::byte> ones(8192, std::byte{0xee});
  int writes = 0;
  LiveMigrationOptions options;
  options.max_downtime = std::chrono::milliseconds(1);
  options.max_rounds = 4;
  options.copy_storage = true;
  LiveMigrationHooks hooks;
  hooks.copied_disks = {disk.get()};
  std::vector<LiveMigrationProgress> reports;
  hooks.progress = [&](const LiveMigrationProgress& progress) {
    reports.push_back(progress);
    if (progress.phase == "disks") {
      EXPECT_TRUE(disk->write(4096, ones).has_value());
    } else if (progress.phase == "copying") {
      const uint64_t at = (2 << 20) + static_cast<uint64_t>(writes++) * 100 * 1024;
      EXPECT_TRUE(disk->write(at, ones).has_value());
      EXPECT_TRUE(disk->write_zeroes(65536, 8192, false).has_value());  // pattern -> zeros
    }
  };
  auto result = migrate_out(*machine, ends.source.get(), options, hooks);
  destination.join();
  ASSERT_TRUE(result.has_value()) << result.error().message();
  EXPECT_GE(writes, 1);
  EXPECT_TRUE(disk_identical) << "a disk write did not reach the destination";
  EXPECT_TRUE(ram_identical);
  ASSERT_FALSE(reports.empty());
  EXPECT_EQ(reports.front().phase, "disks");
  EXPECT_EQ(reports.front().disk_bytes, uint64_t{8} << 20);
  // The holes were skipped: the first pass sent the two patterned MiB, not eight.
  EXPECT_LT(result->transferred_bytes, machine->memory().total_size() + (uint64_t{6} << 20));
  // Tracking ends with the migration.
  EXPECT_TRUE(disk->write(0, ones).has_value());
  EXPECT_EQ(disk->take_dirty()[0], 0u);
  machine->stops().post({machine::MachineExit::kHostStop, "test", 0});
  runner.join();
  disk.reset();
  std::filesystem::remove_all(folder);
}

// The destination refuses at the switchover (kFailed), or the link closes mid-way: the
// source's disks get their locks back and it runs on.
class LiveMigrationFailure : public testing::TestWithParam<bool> {};

TEST_P(LiveMigrationFailure, TheSourceRunsOn) {
  const bool refuse_at_switchover = GetParam();
  auto machine = storing_machine();
  ASSERT_TRUE(machine);
  std::jthread runner([&machine] { (void)machine->run(); });
  while (stored_value(*machine) < 10) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  Link ends = link();
  Receiver receiver(machine->memory().regions());
  std::jthread destination([&] {
    if (!refuse_at_switchover) {
      (void)read_frame(ends.destination.get(), 20000);  // one message, then the link goes
      ends.destination.reset();
      return;
    }
    if (receiver.receive_until_switchover(ends.destination.get())) {
      (void)write_frame(ends.destination.get(),
                        make_json_message(MessageType::kFailed, {{"error", "no room here"}}));
    }
  });
  int released = 0;
  int reacquired = 0;
  LiveMigrationHooks hooks;
  hooks.release_disks = [&]() -> Result<void> { ++released; return {}; };
  hooks.reacquire_disks = [&]() -> Result<void> { ++reacquired; return {}; };
  auto result = migrate_out(*machine, ends.source.get(), {}, hooks);
  destination.join();
  ASSERT_FALSE(result.has_value());
  if (refuse_at_switchover) {
    EXPECT_NE(result.error().message().find("no room here"), std::string::npos)
        << result.error().message();
    EXPECT_EQ(released, 1);
    EXPECT_EQ(reacquired, 1);
  } else {
    // The link may close before or after the switchover was written (socket buffers): the
    // locks were either never released or taken back.
    EXPECT_EQ(released, reacquired);
  }
  EXPECT_FALSE(machine->memory().dirty_log().logging());
  // It runs on.
  const uint32_t value = stored_value(*machine);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (stored_value(*machine) == value && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_NE(stored_value(*machine), value) << "the source stayed stopped";
  machine->stops().post({machine::MachineExit::kHostStop, "test", 0});
}

INSTANTIATE_TEST_SUITE_P(Outcomes, LiveMigrationFailure, testing::Values(true, false));

TEST(MigrationProtocolTest, PagesRoundTripWithZeroPagesAsFlags) {
  std::vector<std::byte> one(kPageBytes, std::byte{0x5a});
  std::vector<std::byte> two(kPageBytes, std::byte{0xa5});
  const Page pages[] = {{0x1000, one}, {0x2000, {}}, {0x7000, two}};
  auto decoded = decode_pages(encode_pages(pages));
  ASSERT_TRUE(decoded.has_value()) << decoded.error().message();
  EXPECT_EQ(decoded->addresses, (std::vector<uint64_t>{0x1000, 0x2000, 0x7000}));
  EXPECT_EQ(decoded->zero, (std::vector<bool>{false, true, false}));
  ASSERT_EQ(decoded->data.size(), 2 * kPageBytes);
  EXPECT_EQ(decoded->data[0], std::byte{0x5a});
  EXPECT_EQ(decoded->data[kPageBytes], std::byte{0xa5});
}

TEST(MigrationProtocolTest, HostileMessagesAreRefusedNeverTrusted) {
  std::vector<std::byte> data(kPageBytes, std::byte{1});
  const Page pages[] = {{0x3000, data}};
  const std::vector<std::byte> good = encode_pages(pages);
  // Every truncation.
  for (size_t length = 0; length < good.size(); ++length) {
    EXPECT_FALSE(decode_pages(std::span(good).first(length)).has_value()) << length;
  }
  // A count beyond the limit, an unaligned address, a frame that claims other pages.
  std::vector<std::byte> many = good;
  store_le<uint32_t>(many.data() + 4, kMaxPagesPerMessage + 1);
  EXPECT_FALSE(decode_pages(many).has_value());
  std::vector<std::byte> unaligned = good;
  store_le<uint64_t>(unaligned.data() + 12, 0x3010);
  EXPECT_FALSE(decode_pages(unaligned).has_value());
  std::vector<std::byte> zero_flag = good;
  store_le<uint64_t>(zero_flag.data() + 12, 0x3001);  // says zero, yet a frame follows
  EXPECT_FALSE(decode_pages(zero_flag).has_value());
  // Flipped bytes never crash and never yield a wrong amount of data.
  for (size_t at = 0; at < good.size(); ++at) {
    std::vector<std::byte> flipped = good;
    flipped[at] ^= std::byte{0x41};
    auto decoded = decode_pages(flipped);
    if (decoded) {
      size_t data_pages = 0;
      for (bool zero : decoded->zero) data_pages += zero ? 0 : 1;
      EXPECT_EQ(decoded->data.size(), data_pages * kPageBytes);
    }
  }
  EXPECT_FALSE(message_type(std::vector<std::byte>{}).has_value());
  EXPECT_FALSE(message_type(std::vector<std::byte>{std::byte{99}}).has_value());
  EXPECT_FALSE(message_json(make_message(MessageType::kOffer, std::as_bytes(std::span("[1]", 3)))).has_value());
}

TEST(MigrationProtocolTest, DiskChunksRoundTripAndRefuseHostileHeaders) {
  std::vector<std::byte> data(4096, std::byte{0x33});
  auto decoded = decode_disk_chunk(encode_disk_chunk(2, 1 << 20, data, false));
  ASSERT_TRUE(decoded.has_value()) << decoded.error().message();
  EXPECT_EQ(decoded->disk, 2u);
  EXPECT_EQ(decoded->offset, uint64_t{1} << 20);
  EXPECT_EQ(decoded->data, data);
  auto zero = decode_disk_chunk(encode_disk_chunk(0, 512, std::span(data).first(1024), true));
  ASSERT_TRUE(zero.has_value());
  EXPECT_TRUE(zero->zero);
  EXPECT_EQ(zero->length, 1024u);
  EXPECT_TRUE(zero->data.empty());
  const std::vector<std::byte> good = encode_disk_chunk(0, 0, data, false);
  for (size_t length = 0; length < good.size(); ++length) {
    EXPECT_FALSE(decode_disk_chunk(std::span(good).first(length)).has_value()) << length;
  }
  auto altered = [&](size_t at, auto value) {
    std::vector<std::byte> message = good;
    store_le(message.data() + at, value);
    return decode_disk_chunk(message).has_value();
  };
  EXPECT_FALSE(altered(16, uint32_t{kMaxDiskChunk + 512}));  // too long
  EXPECT_FALSE(altered(16, uint32_t{4000}));                 // not whole sectors
  EXPECT_FALSE(altered(8, uint64_t{100}));                   // unaligned offset
  EXPECT_FALSE(altered(16, uint32_t{8192}));                 // the frame holds 4096
  EXPECT_FALSE(altered(1, uint8_t{1}));                      // "zero", yet data follows
  EXPECT_FALSE(altered(1, uint8_t{4}));                      // unknown flag
  for (size_t at = 0; at < good.size(); ++at) {
    std::vector<std::byte> flipped = good;
    flipped[at] ^= std::byte{0x41};
    auto chunk = decode_disk_chunk(flipped);
    if (chunk && !chunk->zero) {
      EXPECT_EQ(chunk->data.size(), chunk->length);
    }
  }
}

TEST(TrackedBlockDeviceTest, MarksTheChunksWritesTouchOnlyWhileTracking) {
  const auto path = std::filesystem::temp_directory_path() / ("lamina-tracked-" + std::to_string(::getpid()));
  { std::ofstream(path, std::ios::binary).put('\0'); }
  std::filesystem::resize_file(path, 1 << 20);
  auto image = storage::open_image(path.string(), true);
  ASSERT_TRUE(image.has_value()) << image.error().message();
  storage::TrackedBlockDevice disk(std::move(*image));
  const std::vector<std::byte> sector(512, std::byte{1});
  ASSERT_TRUE(disk.write(0, sector).has_value());
  disk.start_tracking();
  EXPECT_EQ(disk.take_dirty()[0], 0u) << "writes before tracking are not marked";
  ASSERT_TRUE(disk.write(65536 - 512, std::vector<std::byte>(1024)).has_value());  // chunks 0, 1
  ASSERT_TRUE(disk.discard(5 * 65536, 512).has_value());                           // chunk 5
  ASSERT_TRUE(disk.write_zeroes(7 * 65536, 65536, true).has_value());               // chunk 7
  std::vector<std::byte> back(512);
  ASSERT_TRUE(disk.read(3 * 65536, back).has_value());                              // not a write
  EXPECT_EQ(disk.take_dirty()[0], 0b10100011u);
  EXPECT_EQ(disk.take_dirty()[0], 0u);
  disk.stop_tracking();
  ASSERT_TRUE(disk.write(0, sector).has_value());
  EXPECT_EQ(disk.take_dirty()[0], 0u);
  std::filesystem::remove(path);
}

TEST(DirtyLogTest, CountsInUnitsOfItsGranularity) {
  DirtyLog log(1 << 20, 65536);
  EXPECT_EQ(log.units(), 16u);
  EXPECT_EQ(log.unit_bytes(), 65536u);
  log.start();
  log.mark(65535, 2);  // units 0 and 1
  log.mark(15 * 65536 + 100, 1 << 20);  // the last unit, cut at the end
  EXPECT_EQ(log.take()[0], 0b1000000000000011u);
}

TEST(MigrationProtocolTest, FramesRefuseOversizedAndTruncatedMessages) {
  Link ends = link();
  std::byte huge[4];
  store_le<uint32_t>(huge, kMaxMessage + 1);
  ASSERT_EQ(::send(ends.source.get(), huge, 4, 0), 4);
  EXPECT_EQ(read_frame(ends.destination.get(), 1000).error().code(), ErrorCode::kCorrupt);
  Link other = link();
  std::byte partial[6];
  store_le<uint32_t>(partial, 100);
  ASSERT_EQ(::send(other.source.get(), partial, 6, 0), 6);
  other.source.reset();
  EXPECT_EQ(read_frame(other.destination.get(), 1000).error().code(), ErrorCode::kIo);
  Link quiet = link();
  EXPECT_EQ(read_frame(quiet.destination.get(), 50).error().code(), ErrorCode::kIo);
}

TEST(DirtyLogTest, MarksPagesWhileLoggingAndTakesThemOnce) {
  DirtyLog log(1 << 20);
  log.mark(0x5000, 1);
  EXPECT_EQ(log.take()[0], 0u) << "marks before start() are not kept";
  log.start();
  log.mark(0x5000, 1);
  log.mark(0x6fff, 2);          // crosses into page 7
  log.mark(uint64_t{1} << 40, 4096);  // past the end: ignored
  log.mark(~uint64_t{0} - 10, 100);   // wraps: cut at the end, no crash
  const std::vector<uint64_t> taken = log.take();
  EXPECT_EQ(taken[0], (uint64_t{1} << 5) | (uint64_t{1} << 6) | (uint64_t{1} << 7));
  EXPECT_EQ(log.take()[0], 0u);
  log.stop();
  log.mark(0x5000, 1);
  EXPECT_EQ(log.take()[0], 0u);
}

}  // namespace
}  // namespace lamina::migration
