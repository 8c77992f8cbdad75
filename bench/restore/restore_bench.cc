// Restore latency of a saved machine (issue 11: a 1 GiB VM running again in <= 50 ms;
// Firecracker restores in about 5-10 ms). A 1 GiB, 1-vCPU machine (virtio-rng, the platform
// devices) runs a counting loop with 256 MiB of its RAM written, is quiesced and saved to a
// file in the folder given (default /tmp); then, per round, a fresh machine is built for restore,
// restored with RAM mapped from the file (and, for comparison, copied), and run until the guest
// loop has counted on. Prints each phase's median over the rounds.
//   lamina_restore_bench [DIR] [ROUNDS]
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "base/byte_order.h"
#include "base/unique_fd.h"
#include "machine/machine_builder.h"
#include "migration/machine_state.h"
#include "virtio/virtio_rng.h"

namespace {

using namespace lamina;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMemory = uint64_t{1} << 30;
constexpr uint64_t kCounter = 0x1000;
constexpr uint64_t kTouched = uint64_t{256} << 20;

machine::MachineOptions options() {
  machine::MachineOptions result;
  result.cpus = 1;
  result.memory_bytes = kMemory;
  result.for_restore = true;
  result.virtio_devices.push_back([]() -> Result<std::unique_ptr<virtio::VirtioDevice>> {
    return std::make_unique<virtio::VirtioRng>();
  });
  return result;
}

uint32_t counter(machine::Machine& machine) {
  std::array<std::byte, 4> bytes{};
  (void)machine.memory().read(kCounter, bytes);
  return load_le<uint32_t>(bytes.data());
}

double ms(Clock::duration duration) {
  return std::chrono::duration<double, std::milli>(duration).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

[[noreturn]] void die(const std::string& what) {
  fmt::print(stderr, "lamina_restore_bench: {}\n", what);
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "/tmp";
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 7;
  const std::string path = fmt::format("{}/lamina-restore-bench-{}.state", dir, ::getpid());

  // The saved machine: `inc dword [0x1000]; jmp` in real mode, 256 MiB of RAM written.
  {
    auto built = machine::MachineBuilder::build(options());
    if (!built) die(built.error().message());
    machine::Machine& vm = **built;
    const std::byte code[] = {std::byte{0x66}, std::byte{0xff}, std::byte{0x06}, std::byte{0x00},
                              std::byte{0x10}, std::byte{0xeb}, std::byte{0xf9}};
    (void)vm.memory().write(0x7c00, code);
    std::byte* ram = vm.memory().host_pointer(uint64_t{16} << 20, kTouched);
    for (uint64_t at = 0; at < kTouched; at += 8)
      store_le<uint64_t>(ram + at, at * 0x9e3779b97f4a7c15ull | 1);
    cpu::x86::CpuState state = vm.vcpu(0).state();
    state.segment[cpu::x86::kCs] = {0, 0, 0xffff, 0x9b};
    state.rip = 0x7c00;
    vm.vcpu(0).set_state(state);
    std::jthread runner([&vm] { (void)vm.run(); });
    while (counter(vm) < 100000) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    vm.quiesce();
    UniqueFd file(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!file) die(fmt::format("{}: {}", path, std::strerror(errno)));
    const auto start = Clock::now();
    auto saved = migration::save_machine_state(vm, file.get());
    if (!saved) die(saved.error().message());
    fmt::print("save: 1 GiB VM, {} MiB of RAM written, {:.1f} ms (fdatasync included)\n",
               saved->ram_written >> 20, ms(Clock::now() - start));
    vm.stops().post({machine::MachineExit::kHostStop, "bench", 0});
  }

  for (const auto ram : {migration::RamLoad::kMap, migration::RamLoad::kCopy}) {
    std::vector<double> build_ms, restore_ms, running_ms;
    for (int round = 0; round < rounds; ++round) {
      const auto start = Clock::now();
      auto built = machine::MachineBuilder::build(options());
      if (!built) die(built.error().message());
      machine::Machine& vm = **built;
      const auto was_built = Clock::now();
      UniqueFd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      auto restored = migration::restore_machine_state(vm, file.get(), ram);
      if (!restored) die(restored.error().message());
      const uint32_t at_save = counter(vm);
      const auto was_restored = Clock::now();
      std::jthread runner([&vm] { (void)vm.run(); });
      while (counter(vm) == at_save) std::this_thread::yield();
      const auto running = Clock::now();
      vm.stops().post({machine::MachineExit::kHostStop, "bench", 0});
      runner.join();
      build_ms.push_back(ms(was_built - start));
      restore_ms.push_back(ms(was_restored - was_built));
      running_ms.push_back(ms(running - start));
    }
    fmt::print(
        "restore ({}), median of {}: build {:.1f} ms, restore {:.1f} ms, guest running "
        "again after {:.1f} ms (target <= 50 ms; Firecracker ~5-10 ms)\n",
        ram == migration::RamLoad::kMap ? "RAM mapped lazily" : "RAM copied", rounds,
        median(build_ms), median(restore_ms), median(running_ms));
  }
  ::unlink(path.c_str());
  return 0;
}
