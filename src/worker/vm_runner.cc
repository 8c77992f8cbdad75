#include "worker/vm_runner.h"

#include <cstdlib>

#include <fmt/format.h>

#include "accel/accelerator.h"
#include "base/log.h"
#include "machine/boot_file.h"
#include "machine/default_guest.h"

namespace lamina::worker {

std::string_view to_string(VmState state) {
  switch (state) {
    case VmState::kStarting: return "starting";
    case VmState::kRunning: return "running";
    case VmState::kPaused: return "paused";
    case VmState::kStopped: return "stopped";
  }
  return "unknown";
}

Result<bool> resolve_kvm(machine::AccelKind accel) {
  if (accel == machine::AccelKind::kEmu) return false;
  auto host = accel::probe_kvm();
  if (accel == machine::AccelKind::kAuto) return host && !host->software_pvm;
  if (!host) return fail(host.error().with_context("--accel kvm"));
  if (host->software_pvm) {
    log_warn(
        "this host's KVM is PVM without hardware virtualization; it emulates unmodified guest "
        "kernels slowly and stops at instructions it cannot emulate (--accel emu is faster "
        "here)");
  }
  return true;
}

namespace {

// The kernel, initrd and command line the config boots: its own, or the default guest's.
Result<machine::MachineOptions> boot_options(const machine::VmConfig& config,
                                             GrantedFiles* granted) {
  machine::MachineOptions options;
  options.cpus = config.cpus;
  options.memory_bytes = config.memory_bytes;
  options.cmdline = config.cmdline;
  options.debug_exit = config.debug_exit;
  if (config.kernel) {
    options.kernel = *config.kernel;
    options.initrd = config.initrd;
  } else {
    auto guest = machine::find_default_guest();
    if (!guest) return fail(guest.error());
    options.kernel = guest->kernel;
    options.initrd = config.initrd ? *config.initrd : guest->initrd;
    if (options.cmdline.empty()) options.cmdline = guest->cmdline;
  }
  // LAMINA_LINUX_ENTRY=bzimage enters the bzImage's own decompressor instead of the host-side
  // decompression path (for comparing the two while bringing up the CPU).
  if (const char* entry = std::getenv("LAMINA_LINUX_ENTRY");
      entry && std::string_view(entry) == "bzimage") {
    options.linux_entry = machine::LinuxEntry::kBzImage64;
  }
  auto kernel = machine::read_boot_file(options.kernel.string(), "kernel",
                                        machine::kMaxBootFileSize, granted);
  if (!kernel) return fail(kernel.error());
  options.kernel_image = std::make_shared<const std::vector<std::byte>>(std::move(*kernel));
  if (options.initrd) {
    auto initrd = machine::read_boot_file(options.initrd->string(), "initrd",
                                          machine::kMaxBootFileSize, granted);
    if (!initrd) return fail(initrd.error());
    options.initrd_image = std::make_shared<const std::vector<std::byte>>(std::move(*initrd));
  }
  return options;
}

// The KVM backend's CpuState conversion leaves out the TSC, PAT/MTRRs, AVX state and KVM's
// pending events (ARCHITECTURE.md, KVM), so its machines are not saved or restored yet.
Error kvm_state_unsupported() {
  return Error(ErrorCode::kUnsupported,
               "saving and restoring a VM's state works on the built-in CPU only (--accel emu); "
               "the KVM backend does not carry all of a vCPU's state yet");
}

}  // namespace

Result<std::unique_ptr<VmRunner>> VmRunner::open(const machine::VmConfig& config,
                                                 std::string_view label, bool kvm,
                                                 UniqueFd console_socket,
                                                 GrantedFiles* granted) {
  std::unique_ptr<VmRunner> runner(new VmRunner(config));
  auto options = boot_options(config, granted);
  if (!options) return fail(options.error());
  runner->options_ = std::move(*options);
  runner->options_.kvm = kvm;
  if (console_socket) {
    runner->console_ = machine::SerialConsole::open_socket(std::move(console_socket));
    runner->console_is_socket_ = true;
  } else {
    auto console = machine::SerialConsole::open(config.serial, granted);
    if (!console) return fail(console.error());
    runner->console_ = std::move(*console);
  }
  runner->options_.com1_backend = runner->console_.get();
  // Host ends of the virtio devices live across restarts, like the serial console.
  auto host_ends = machine::open_virtio_host_ends(config, label, granted);
  if (!host_ends) return fail(host_ends.error());
  runner->host_ends_ = std::make_unique<machine::VirtioHostEnds>(std::move(*host_ends));
  machine::add_virtio_devices(config, *runner->host_ends_, runner->options_);
  return runner;
}

VmRunner::~VmRunner() = default;

uint64_t VmRunner::instructions() const {
  std::lock_guard lock(mutex_);
  return finished_instructions_ + (machine_ ? machine_->instructions() : 0);
}

namespace {

// The traffic of one machine's devices, in slot order (disks, then network cards).
VmRunner::Traffic machine_traffic(const machine::Machine& vm) {
  VmRunner::Traffic traffic;
  for (const auto& function : vm.virtio_functions()) {
    virtio::VirtioDevice& device = function->device();
    if (auto* block = dynamic_cast<virtio::VirtioBlock*>(&device)) {
      traffic.disks.push_back(block->traffic());
    } else if (auto* net = dynamic_cast<virtio::VirtioNet*>(&device)) {
      traffic.nics.push_back(net->stats());
    }
  }
  return traffic;
}

void add(VmRunner::Traffic& total, const VmRunner::Traffic& more) {
  total.disks.resize(std::max(total.disks.size(), more.disks.size()));
  total.nics.resize(std::max(total.nics.size(), more.nics.size()));
  for (size_t i = 0; i < more.disks.size(); ++i) {
    total.disks[i].read_ops += more.disks[i].read_ops;
    total.disks[i].read_bytes += more.disks[i].read_bytes;
    total.disks[i].write_ops += more.disks[i].write_ops;
    total.disks[i].write_bytes += more.disks[i].write_bytes;
    total.disks[i].flushes += more.disks[i].flushes;
  }
  for (size_t i = 0; i < more.nics.size(); ++i) {
    total.nics[i].transmitted_frames += more.nics[i].transmitted_frames;
    total.nics[i].transmit_dropped += more.nics[i].transmit_dropped;
    total.nics[i].received_frames += more.nics[i].received_frames;
    total.nics[i].receive_dropped += more.nics[i].receive_dropped;
  }
}

}  // namespace

VmRunner::Traffic VmRunner::traffic() const {
  std::lock_guard lock(mutex_);
  Traffic total = finished_traffic_;
  if (machine_) add(total, machine_traffic(*machine_));
  return total;
}

void VmRunner::power_button() {
  std::lock_guard lock(mutex_);
  if (machine_) machine_->press_power_button();
}

void VmRunner::pause() {
  std::lock_guard lock(mutex_);
  paused_ = true;
  if (!machine_) return;
  machine_->pause();
  state_ = VmState::kPaused;
}

void VmRunner::resume() {
  std::lock_guard lock(mutex_);
  paused_ = false;
  if (!machine_) return;
  machine_->resume();
  state_ = VmState::kRunning;
}

void VmRunner::reset() {
  std::lock_guard lock(mutex_);
  if (!machine_) return;
  host_reset_ = true;
  machine_->stops().post({machine::MachineExit::kReset, "reset by the host", 0});
}

void VmRunner::stop(std::string reason) {
  std::lock_guard lock(mutex_);
  stop_requested_ = true;
  stop_reason_ = std::move(reason);
  if (machine_) machine_->stops().post({machine::MachineExit::kHostStop, stop_reason_, 0});
}

Result<void> VmRunner::attach_console(UniqueFd socket) {
  if (!console_is_socket_) {
    return fail(ErrorCode::kInvalidArgument, "this VM's serial port is not linked to laminad");
  }
  console_->replace_socket(std::move(socket));
  return {};
}

Result<migration::SaveStatistics> VmRunner::save_and_stop(int state) {
  std::lock_guard lock(mutex_);
  if (!machine_ || stop_requested_) {
    return fail(ErrorCode::kInvalidArgument, "the VM is not running, so there is nothing to save");
  }
  if (options_.kvm) return fail(kvm_state_unsupported());
  machine_->quiesce();
  auto saved = migration::save_machine_state(*machine_, state);
  if (!saved) {
    machine_->release();
    return fail(saved.error());
  }
  stop_requested_ = true;
  stop_reason_ = "the VM's state was saved";
  machine_->stops().post({machine::MachineExit::kHostStop, stop_reason_, 0});
  return saved;
}

Result<migration::LiveMigrationResult> VmRunner::migrate_out(
    int link, const migration::LiveMigrationOptions& options,
    std::function<void(const migration::LiveMigrationProgress&)> progress,
    const std::function<void(const Result<migration::LiveMigrationResult>&)>& finished) {
  machine::Machine* vm = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (!machine_ || stop_requested_ || machine_stopping_) {
      return fail(ErrorCode::kInvalidArgument, "the VM is not running, so there is nothing to migrate");
    }
    if (options_.kvm) return fail(kvm_state_unsupported());
    if (migrating_) return fail(ErrorCode::kInvalidArgument, "the VM is already migrating");
    vm = machine_;
    migrating_ = true;
  }
  // Every writable disk must be able to hand its lock over; asking to lock what is locked
  // already is that check, before anything is sent.
  std::vector<storage::BlockDevice*> writable;
  for (const virtio::OpenedDisk& disk : host_ends_->disks) {
    if (disk.image->read_only()) continue;
    writable.push_back(disk.image.get());
  }
  Result<void> checked;
  for (storage::BlockDevice* disk : writable) {
    if (checked = disk->set_write_lock(true); !checked) break;
  }
  Result<migration::LiveMigrationResult> result = fail(ErrorCode::kInternal, "not run");
  if (checked) {
    migration::LiveMigrationHooks hooks;
    hooks.release_disks = [&]() -> Result<void> {
      for (storage::BlockDevice* disk : writable) {
        if (auto flushed = disk->flush(); !flushed) return flushed;
      }
      for (storage::BlockDevice* disk : writable) {
        if (auto released = disk->set_write_lock(false); !released) return released;
      }
      return {};
    };
    hooks.reacquire_disks = [&]() -> Result<void> {
      for (storage::BlockDevice* disk : writable) {
        if (auto taken = disk->set_write_lock(true); !taken) return taken;
      }
      return {};
    };
    hooks.cancelled = [this] {
      std::lock_guard lock(mutex_);
      return machine_stopping_;
    };
    hooks.progress = std::move(progress);
    result = migration::migrate_out(*vm, link, options, hooks);
  } else {
    result = fail(checked.error());
  }
  // Reported before the VM stops, so the report is out before the worker's stopped event.
  if (finished) finished(result);
  std::lock_guard lock(mutex_);
  if (result) {
    stop_requested_ = true;
    stop_reason_ = "migrated to another host";
    vm->stops().post({machine::MachineExit::kHostStop, stop_reason_, 0});
  }
  migrating_ = false;
  migration_done_.notify_all();
  return result;
}

VmOutcome VmRunner::outcome_of(const machine::MachineStop& stop) const {
  using machine::MachineExit;
  switch (stop.exit) {
    case MachineExit::kPowerOff:
    case MachineExit::kUserQuit: return {stop.exit, 0, {}};
    case MachineExit::kHostStop: return {stop.exit, 0, stop.reason};
    case MachineExit::kDebugExit: return {stop.exit, static_cast<int>(stop.status & 0xff), {}};
    case MachineExit::kReset:
      return {stop.exit, 1,
              fmt::format("the guest rebooted ({}); --on-reboot restart boots it again",
                          stop.reason)};
    case MachineExit::kTripleFault:
    case MachineExit::kError: return {stop.exit, 1, stop.reason};
  }
  return {MachineExit::kError, 1, "unknown machine stop"};
}

VmOutcome VmRunner::run() {
  for (;;) {
    const bool restoring = restore_state_.valid();
    if (restoring && options_.kvm) {
      state_ = VmState::kStopped;
      return {machine::MachineExit::kError, 1, kvm_state_unsupported().message()};
    }
    machine::MachineOptions options = options_;
    options.for_restore = restoring;
    auto built = machine::MachineBuilder::build(options);
    if (!built) {
      state_ = VmState::kStopped;
      return {machine::MachineExit::kError, 1, built.error().message()};
    }
    std::unique_ptr<machine::Machine> vm = std::move(*built);
    if (restoring) {
      const UniqueFd state = std::move(restore_state_);
      if (auto restored = migration::restore_machine_state(*vm, state.get()); !restored) {
        state_ = VmState::kStopped;
        return {machine::MachineExit::kError, 1,
                restored.error().with_context("restoring the saved state").message()};
      }
    }
    console_->attach(vm->com1(), vm->stops());
    {
      std::lock_guard lock(mutex_);
      machine_ = vm.get();
      host_reset_ = false;
      if (stop_requested_) vm->stops().post({machine::MachineExit::kHostStop, stop_reason_, 0});
      if (paused_) vm->pause();
      state_ = paused_ ? VmState::kPaused : VmState::kRunning;
    }
    boots_.fetch_add(1);
    const machine::MachineStop stop = vm->run();
    console_->detach();
    bool restart = false;
    {
      std::unique_lock lock(mutex_);
      // A migration still reading this machine gives up first.
      machine_stopping_ = true;
      migration_done_.wait(lock, [this] { return !migrating_; });
      machine_stopping_ = false;
      finished_instructions_ += vm->instructions();
      add(finished_traffic_, machine_traffic(*vm));
      machine_ = nullptr;
      if (stop.exit == machine::MachineExit::kReset && !stop_requested_) {
        // A Ctrl-A x that lost the race against the reset still quits.
        restart = !console_->quit_requested() &&
                  (host_reset_ || config_.on_reboot == machine::RebootAction::kRestart);
      }
    }
    vm.reset();
    if (restart) continue;
    state_ = VmState::kStopped;
    if (stop.exit == machine::MachineExit::kReset && console_->quit_requested()) {
      return {machine::MachineExit::kUserQuit, 0, {}};
    }
    return outcome_of(stop);
  }
}

}  // namespace lamina::worker
