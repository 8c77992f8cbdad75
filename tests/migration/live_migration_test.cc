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
#include <thread>

#include "base/byte_order.h"
#include "base/dirty_log.h"
#include "base/unique_fd.h"
#include "machine/machine_builder.h"
#include "migration/migration_protocol.h"

namespace lamina::migration {
namespace {

constexpr uint64_t kCodeAddress = 0x7c00;
constexpr uint64_t kStoreArea = 0x10000;

// vCPU 0 in real mode: `inc eax; xor di, di; mov cx, 0x4000; rep stosd; jmp` with ES at
// 0x1000, so every pass writes 64 KiB at 0x10000 with the next value.
std::unique_ptr<machine::Machine> storing_machine() {
  machine::MachineOptions options;
  options.cpus = 1;
  options.memory_bytes = 32 << 20;
  options.for_restore = true;
  auto built = machine::MachineBuilder::build(options);
  EXPECT_TRUE(built.has_value()) << built.error().message();
  if (!built) return nullptr;
  auto machine = std::move(*built);
  const uint8_t code[] = {0x66, 0x40, 0x31, 0xff, 0xb9, 0x00, 0x40, 0xf3, 0x66, 0xab, 0xeb, 0xf4};
  EXPECT_TRUE(machine->memory().write(kCodeAddress, std::as_bytes(std::span(code))).has_value());
  cpu::x86::CpuState state = machine->vcpu(0).state();
  state.segment[cpu::x86::kCs] = {0, 0, 0xffff, 0x9b};
  state.segment[cpu::x86::kEs] = {0x1000, 0x10000, 0xffff, 0x93};
  state.rip = kCodeAddress;
  machine->vcpu(0).set_state(state);
  return machine;
}

uint32_t stored_value(machine::Machine& machine) {
  std::array<std::byte, 4> bytes{};
  EXPECT_TRUE(machine.memory().read(kStoreArea, bytes).has_value());
  return load_le<uint32_t>(bytes.data());
}

// The destination's side, as laminad's IncomingMigration does it, into plain buffers.
struct Receiver {
  std::vector<RamRegion> regions;
  std::vector<std::vector<std::byte>> ram;
  std::vector<std::byte> stream;
  uint64_t pages = 0;

  explicit Receiver(const std::vector<RamRegion>& layout) : regions(layout) {
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
  // Reads until the switchover; false on a broken stream.
  bool receive_until_switchover(int link) {
    for (;;) {
      auto message = read_frame(link, 20000);
      if (!message) return false;
      auto type = message_type(*message);
      if (!type) return false;
      if (*type == MessageType::kSwitchover) return true;
      if (*type == MessageType::kState) {
        stream.assign(message->begin() + 1, message->end());
        continue;
      }
      auto decoded = decode_pages(*message);
      if (!decoded) return false;
      size_t at = 0;
      for (size_t index = 0; index < decoded->addresses.size(); ++index) {
        std::byte* target = page(decoded->addresses[index]);
        if (target == nullptr) return false;
        if (decoded->zero[index]) {
          std::memset(target, 0, kPageBytes);
        } else {
          std::memcpy(target, decoded->data.data() + at, kPageBytes);
          at += kPageBytes;
        }
        ++pages;
      }
    }
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

TEST(LiveMigrationTest, TheReceiverHoldsExactlyTheSourceRamAtTheSwitchover) {
  auto machine = storing_machine();
  ASSERT_TRUE(machine);
  std::jthread runner([&machine] { (void)machine->run(); });
  while (stored_value(*machine) < 50) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  Link ends = link();
  Receiver receiver(machine->memory().regions());
  bool identical = false;
  uint32_t value_at_switchover = 0;
  std::jthread destination([&] {
    if (!receiver.receive_until_switchover(ends.destination.get())) return;
    // The source is quiesced now: its RAM must be what the pages built here.
    value_at_switchover = stored_value(*machine);
    identical = true;
    for (size_t index = 0; index < receiver.regions.size(); ++index) {
      const RamRegion& region = receiver.regions[index];
      const std::byte* source = machine->memory().host_pointer(region.guest_physical, region.size);
      if (std::memcmp(source, receiver.ram[index].data(), region.size) != 0) identical = false;
    }
    (void)write_frame(ends.destination.get(), make_json_message(MessageType::kStarted, {}));
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
  // The guest rewrote its 64 KiB while the first round went: the log saw those pages.
  EXPECT_GE(reports.front().remaining_bytes, 16 * kPageBytes);
  EXPECT_EQ(reports.back().phase, "switchover");
  // Held after a successful switchover: the VM runs elsewhere now.
  const uint32_t held = stored_value(*machine);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(stored_value(*machine), held);
  EXPECT_FALSE(machine->memory().dirty_log().logging());
  machine->stops().post({machine::MachineExit::kHostStop, "test", 0});
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
