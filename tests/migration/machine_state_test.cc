// Whole-machine state: a machine running a guest loop is quiesced, saved, restored into a
// fresh machine (RAM mapped and copied), and runs on from where it was; unknown, truncated,
// corrupt and mismatched files are refused with a clear error.
#include "migration/machine_state.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "base/byte_order.h"
#include "base/unique_fd.h"
#include "fuzz/restore_input.h"
#include "machine/machine_builder.h"
#include "storage/crc32c.h"
#include "virtio/virtio_rng.h"

namespace lamina::migration {
namespace {

using machine::Machine;
using machine::MachineBuilder;
using machine::MachineOptions;

constexpr uint64_t kCodeAddress = 0x7c00;
constexpr uint64_t kCounterAddress = 0x1000;
constexpr uint64_t kPatternAddress = 0x200000;

MachineOptions options(uint32_t cpus = 1, uint64_t memory = 32 << 20) {
  MachineOptions result;
  result.cpus = cpus;
  result.memory_bytes = memory;
  result.for_restore = true;
  result.virtio_devices.push_back([]() -> Result<std::unique_ptr<virtio::VirtioDevice>> {
    return std::make_unique<virtio::VirtioRng>();
  });
  return result;
}

std::unique_ptr<Machine> build(const MachineOptions& machine_options) {
  auto built = MachineBuilder::build(machine_options);
  EXPECT_TRUE(built.has_value()) << built.error().message();
  return built ? std::move(*built) : nullptr;
}

// vCPU 0 in real mode at 0x7c00 running `inc dword [0x1000]; jmp 0x7c00` forever, and a
// recognizable pattern at 2 MiB.
std::unique_ptr<Machine> counting_machine(uint32_t cpus = 1) {
  auto machine = build(options(cpus));
  if (!machine) return nullptr;
  const std::byte code[] = {std::byte{0x66}, std::byte{0xff}, std::byte{0x06}, std::byte{0x00},
                            std::byte{0x10}, std::byte{0xeb}, std::byte{0xf9}};
  EXPECT_TRUE(machine->memory().write(kCodeAddress, code).has_value());
  std::vector<std::byte> pattern(64 << 10);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<std::byte>(i * 7 + 1);
  EXPECT_TRUE(machine->memory().write(kPatternAddress, pattern).has_value());
  cpu::x86::CpuState state = machine->vcpu(0).state();
  state.segment[cpu::x86::kCs] = {0, 0, 0xffff, 0x9b};
  state.rip = kCodeAddress;
  machine->vcpu(0).set_state(state);
  return machine;
}

uint32_t counter(Machine& machine) {
  std::array<std::byte, 4> bytes{};
  EXPECT_TRUE(machine.memory().read(kCounterAddress, bytes).has_value());
  return load_le<uint32_t>(bytes.data());
}

UniqueFd temporary_file() {
  return UniqueFd(::memfd_create("lamina-machine-state-test", MFD_CLOEXEC));
}

std::vector<std::byte> file_bytes(int fd) {
  struct stat status {};
  EXPECT_EQ(::fstat(fd, &status), 0);
  std::vector<std::byte> bytes(static_cast<size_t>(status.st_size));
  EXPECT_EQ(::pread(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  return bytes;
}

UniqueFd file_with(std::span<const std::byte> bytes) {
  UniqueFd fd = temporary_file();
  EXPECT_EQ(::pwrite(fd.get(), bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  return fd;
}

// Runs `machine` on another thread for a while, then quiesces and saves it into `fd`.
void run_quiesce_save(Machine& machine, int fd, uint32_t& counter_at_save) {
  std::jthread runner([&machine] { (void)machine.run(); });
  while (counter(machine) < 10000) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  machine.quiesce();
  counter_at_save = counter(machine);
  // Held: the guest loop makes no progress while quiesced.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(counter(machine), counter_at_save);
  auto saved = save_machine_state(machine, fd);
  ASSERT_TRUE(saved.has_value()) << saved.error().message();
  EXPECT_EQ(saved->ram_bytes, machine.memory().total_size());
  // Almost all of RAM is zero and left as holes.
  EXPECT_LT(saved->ram_written, 1u << 20);
  machine.release();
  while (counter(machine) == counter_at_save) std::this_thread::yield();
  machine.stops().post({machine::MachineExit::kHostStop, "test", 0});
}

class MachineStateRoundTrip : public testing::TestWithParam<RamLoad> {};

TEST_P(MachineStateRoundTrip, ARestoredMachineRunsOnFromTheSavedInstant) {
  auto original = counting_machine();
  ASSERT_TRUE(original);
  UniqueFd file = temporary_file();
  uint32_t at_save = 0;
  run_quiesce_save(*original, file.get(), at_save);
  if (HasFatalFailure()) return;

  auto restored = build(options());
  ASSERT_TRUE(restored);
  auto done = restore_machine_state(*restored, file.get(), GetParam());
  ASSERT_TRUE(done.has_value()) << done.error().message();
  file.reset();  // a mapped file stays readable after its descriptor is gone
  EXPECT_EQ(counter(*restored), at_save);
  std::vector<std::byte> pattern(64 << 10);
  ASSERT_TRUE(restored->memory().read(kPatternAddress, pattern).has_value());
  for (size_t i = 0; i < pattern.size(); ++i) {
    ASSERT_EQ(pattern[i], static_cast<std::byte>(i * 7 + 1)) << i;
  }
  const cpu::x86::CpuState state = restored->vcpu(0).state();
  EXPECT_GE(state.rip, kCodeAddress);
  EXPECT_LE(state.rip, kCodeAddress + 5);
  EXPECT_EQ(state.msr, original->vcpu(0).state().msr);
  // The clock goes on from the saved time, not from zero.
  EXPECT_GT(restored->clock().now_ns(), 1'000'000u);

  // And it runs: the counter moves on from the saved value.
  std::jthread runner([&restored] { (void)restored->run(); });
  while (counter(*restored) < at_save + 1000) std::this_thread::yield();
  restored->stops().post({machine::MachineExit::kHostStop, "test", 0});
}

INSTANTIATE_TEST_SUITE_P(RamLoads, MachineStateRoundTrip,
                         testing::Values(RamLoad::kMap, RamLoad::kCopy));

TEST(MachineStateTest, AnApplicationProcessorWaitingForItsSipiStaysWaiting) {
  auto original = counting_machine(2);
  ASSERT_TRUE(original);
  UniqueFd file = temporary_file();
  uint32_t at_save = 0;
  run_quiesce_save(*original, file.get(), at_save);
  if (HasFatalFailure()) return;
  EXPECT_TRUE(original->vcpu(1).state().waiting_for_startup);
  auto restored = build(options(2));
  ASSERT_TRUE(restored);
  ASSERT_TRUE(restore_machine_state(*restored, file.get()).has_value());
  EXPECT_TRUE(restored->vcpu(1).state().waiting_for_startup);
  EXPECT_FALSE(restored->vcpu(0).state().waiting_for_startup);
}

TEST(MachineStateTest, ASecondSaveOfARestoredMachineHasTheSameCpuAndRam) {
  auto original = counting_machine();
  ASSERT_TRUE(original);
  UniqueFd first = temporary_file();
  uint32_t at_save = 0;
  run_quiesce_save(*original, first.get(), at_save);
  if (HasFatalFailure()) return;
  auto restored = build(options());
  ASSERT_TRUE(restore_machine_state(*restored, first.get()).has_value());
  UniqueFd second = temporary_file();
  ASSERT_TRUE(save_machine_state(*restored, second.get()).has_value());
  const auto a = file_bytes(first.get());
  const auto b = file_bytes(second.get());
  ASSERT_EQ(a.size(), b.size());
  // RAM (from the RAM offset on) is identical; so is the vCPU section.
  const uint64_t ram_offset = load_le<uint64_t>(a.data() + 32);
  EXPECT_TRUE(std::equal(a.begin() + static_cast<ptrdiff_t>(ram_offset), a.end(),
                         b.begin() + static_cast<ptrdiff_t>(ram_offset)));
  const std::string_view text(reinterpret_cast<const char*>(a.data()), ram_offset);
  const size_t vcpu = text.find("vcpu");
  ASSERT_NE(vcpu, std::string_view::npos);
  EXPECT_EQ(std::memcmp(a.data() + vcpu, b.data() + vcpu, 400), 0);
}

class MachineStateRefusal : public testing::Test {
 protected:
  void SetUp() override {
    auto machine = counting_machine();
    ASSERT_TRUE(machine);
    UniqueFd file = temporary_file();
    ASSERT_TRUE(save_machine_state(*machine, file.get()).has_value());
    good_ = file_bytes(file.get());
  }
  std::string refusal(std::span<const std::byte> bytes, const MachineOptions& shape = options()) {
    auto machine = build(shape);
    UniqueFd file = file_with(bytes);
    auto done = restore_machine_state(*machine, file.get());
    return done ? std::string() : done.error().message();
  }
  // Rewrites the header checksum after a change to the header.
  static void reseal_header(std::vector<std::byte>& bytes) {
    store_le<uint32_t>(bytes.data() + 60, storage::crc32c(std::span(bytes).first(60)));
  }
  std::vector<std::byte> good_;
};

TEST_F(MachineStateRefusal, AGoodFileRestores) { EXPECT_EQ(refusal(good_), ""); }

TEST_F(MachineStateRefusal, NotAStateFile) {
  std::vector<std::byte> junk(4096, std::byte{'x'});
  EXPECT_NE(refusal(junk).find("not a Lamina machine state file"), std::string::npos);
  EXPECT_NE(refusal({}).find("ends inside the header"), std::string::npos);
}

TEST_F(MachineStateRefusal, AnotherMajorOrANewerMinorVersion) {
  auto major = good_;
  store_le<uint16_t>(major.data() + 8, 2);
  reseal_header(major);
  EXPECT_NE(refusal(major).find(fmt::format("format 2.{} is not readable", kStateMinor)), std::string::npos);
  auto minor = good_;
  store_le<uint16_t>(minor.data() + 10, kStateMinor + 1);
  reseal_header(minor);
  EXPECT_NE(refusal(minor).find("is not readable by this Lamina"), std::string::npos);
}

TEST_F(MachineStateRefusal, TruncatedAnywhere) {
  const uint64_t ram_offset = load_le<uint64_t>(good_.data() + 32);
  for (size_t length : {size_t{10}, size_t{63}, size_t{64}, size_t{100},
                        static_cast<size_t>(ram_offset), good_.size() / 2, good_.size() - 1}) {
    const std::string why = refusal(std::span(good_).first(length));
    EXPECT_FALSE(why.empty()) << length;
  }
  EXPECT_NE(refusal(std::span(good_).first(good_.size() - 4096)).find("truncated"),
            std::string::npos);
}

TEST_F(MachineStateRefusal, DamagedHeaderOrStream) {
  auto header = good_;
  header[20] ^= std::byte{1};
  EXPECT_NE(refusal(header).find("header checksum"), std::string::npos);
  auto stream = good_;
  stream[200] ^= std::byte{0x40};
  EXPECT_NE(refusal(stream).find("state checksum"), std::string::npos);
}

// Header fields that contradict each other or the file, with the header checksum made right.
TEST_F(MachineStateRefusal, InconsistentHeaderFields) {
  auto with = [&](size_t at, uint64_t value, size_t width = 8) {
    auto bytes = good_;
    if (width == 8) store_le<uint64_t>(bytes.data() + at, value);
    if (width == 4) store_le<uint32_t>(bytes.data() + at, static_cast<uint32_t>(value));
    reseal_header(bytes);
    return refusal(bytes);
  };
  EXPECT_NE(with(24, uint64_t{1} << 40).find("inconsistent"), std::string::npos);  // stream length
  EXPECT_NE(with(32, 4097).find("inconsistent"), std::string::npos);  // RAM not page-aligned
  EXPECT_NE(with(40, UINT64_MAX - 100).find("inconsistent"), std::string::npos);  // RAM wraps
  EXPECT_NE(with(40, uint64_t{1} << 40).find("truncated"), std::string::npos);  // past the end
  EXPECT_NE(with(16, 0).find("inconsistent"), std::string::npos);        // stream offset
  EXPECT_NE(with(52, 1, 4).find("inconsistent"), std::string::npos);     // unknown flags
  EXPECT_NE(with(12, 128, 4).find("inconsistent"), std::string::npos);   // header size
}

TEST_F(MachineStateRefusal, AnotherShape) {
  EXPECT_NE(refusal(good_, options(2)).find("1 vCPUs and 32 MiB"), std::string::npos);
  EXPECT_NE(refusal(good_, options(1, 64 << 20)).find("this VM has 1 and 64 MiB"),
            std::string::npos);
  MachineOptions no_rng = options();
  no_rng.virtio_devices.clear();
  EXPECT_NE(refusal(good_, no_rng).find("devices"), std::string::npos);
}

// A machine that cannot present the CPU the guest saw refuses, before anything is loaded: here
// the built-in CPU with the model reduced to a backend without SSE4.2, as `--cpu-model
// lamina-kvm` does on such a KVM host.
TEST_F(MachineStateRefusal, AnotherCpuModel) {
  MachineOptions lesser = options();
  cpu::x86::CpuidSupport support;
  support.feature_bits = [](const cpu::x86::CpuidWord& word) -> uint32_t {
    return word.leaf == 1 && word.name == cpu::x86::CpuidRegister::kEcx ? ~(1u << 20) : ~0u;
  };
  lesser.cpu_support_limit = support;
  const std::string why = refusal(good_, lesser);
  EXPECT_NE(why.find("cannot present the CPU the guest was started with: CPUID 0x1.0 ECX bits "
                     "20 are missing here"),
            std::string::npos)
      << why;
  // The host's model needs KVM: the built-in CPU's machine is not even built.
  MachineOptions host = options();
  host.cpu_model = accel::CpuModelKind::kHost;
  auto built = MachineBuilder::build(host);
  ASSERT_FALSE(built);
  EXPECT_NE(built.error().message().find("--cpu-model host needs --accel kvm"), std::string::npos);
}

// A format 1.1 file (before the cpu_model section) restores, unchecked.
TEST_F(MachineStateRefusal, AnOlderFileWithoutTheCpuModelRestores) {
  const uint64_t state_length = load_le<uint64_t>(good_.data() + 24);
  const std::string_view stream(reinterpret_cast<const char*>(good_.data()) + 64, state_length);
  const size_t name = stream.find("cpu_model");
  ASSERT_NE(name, std::string_view::npos);
  // The section: u16 name length, the name, u32 version, u64 payload length, the payload.
  const size_t start = 64 + name - 2;
  const uint64_t payload = load_le<uint64_t>(good_.data() + 64 + name + 9 + 4);
  const size_t length = 2 + 9 + 4 + 8 + payload;
  auto old = good_;
  old.erase(old.begin() + static_cast<ptrdiff_t>(start),
            old.begin() + static_cast<ptrdiff_t>(start + length));
  // RAM stays where it was: pad the end of the stream's old room with zeros.
  old.insert(old.begin() + static_cast<ptrdiff_t>(64 + state_length - length), length,
             std::byte{0});
  store_le<uint16_t>(old.data() + 10, 1);
  store_le<uint64_t>(old.data() + 24, state_length - length);
  store_le<uint32_t>(old.data() + 48,
                     storage::crc32c(std::span(old).subspan(64, state_length - length)));
  reseal_header(old);
  EXPECT_EQ(refusal(old), "");
}

// The fuzz harness on mutations of a real file, with the stream checksum made right again so
// the mutations reach the parsers behind it: no crash, no hang, and a clear error or success.
TEST_F(MachineStateRefusal, MutatedStreamsNeverCrash) {
  const uint64_t state_length = load_le<uint64_t>(good_.data() + 24);
  // LAMINA_RESTORE_MUTATIONS=N[:SEED] runs a longer campaign (e.g. under ASan).
  int rounds = 150;
  uint64_t seed = 11;
  if (const char* text = std::getenv("LAMINA_RESTORE_MUTATIONS")) {
    rounds = std::atoi(text);
    if (const char* colon = std::strchr(text, ':')) seed = std::strtoull(colon + 1, nullptr, 10);
  }
  std::mt19937_64 random(seed);
  int refused = 0;
  for (int round = 0; round < rounds; ++round) {
    auto bytes = good_;
    const int flips = 1 + static_cast<int>(random() % 4);
    for (int i = 0; i < flips; ++i) {
      const size_t at = 64 + random() % state_length;
      bytes[at] = static_cast<std::byte>(random());
    }
    store_le<uint32_t>(bytes.data() + 48,
                       storage::crc32c(std::span(bytes).subspan(64, state_length)));
    reseal_header(bytes);
    if (!restore_fuzz_input(bytes)) ++refused;
  }
  // Most single-byte damage lands in a length, a name, a version or a checked value.
  EXPECT_GT(refused, rounds / 6);
  EXPECT_TRUE(restore_fuzz_input(good_));
}

}  // namespace
}  // namespace lamina::migration
