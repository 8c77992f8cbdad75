#include "fuzz/restore_input.h"

#include <sys/mman.h>
#include <unistd.h>

#include <memory>

#include "base/unique_fd.h"
#include "machine/machine_builder.h"
#include "migration/machine_state.h"
#include "virtio/virtio_rng.h"

namespace lamina::migration {
namespace {

machine::Machine& fuzz_machine() {
  static std::unique_ptr<machine::Machine> machine = [] {
    machine::MachineOptions options;
    options.cpus = 1;
    options.memory_bytes = 32 << 20;
    options.for_restore = true;
    options.virtio_devices.push_back([]() -> Result<std::unique_ptr<virtio::VirtioDevice>> {
      return std::make_unique<virtio::VirtioRng>();
    });
    auto built = machine::MachineBuilder::build(options);
    if (!built) std::abort();
    return std::move(*built);
  }();
  return *machine;
}

}  // namespace

bool restore_fuzz_input(std::span<const std::byte> input) {
  UniqueFd file(::memfd_create("lamina-restore-fuzz", MFD_CLOEXEC));
  if (!file) std::abort();
  for (size_t done = 0; done < input.size();) {
    const ssize_t written = ::write(file.get(), input.data() + done, input.size() - done);
    if (written <= 0) std::abort();
    done += static_cast<size_t>(written);
  }
  return restore_machine_state(fuzz_machine(), file.get(), RamLoad::kCopy).has_value();
}

}  // namespace lamina::migration
