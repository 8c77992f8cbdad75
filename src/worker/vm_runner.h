#pragma once
// VmRunner: one VM from a VmConfig, from opening its host resources to its last stop. It is the
// machine both `lamina run` (in the foreground) and `lamina-vm` (the worker laminad starts)
// run: open() reads the kernel and initrd and opens every host end (serial console, disk
// images, network ports) up front, so a worker can close its sandbox before run() executes
// the first guest instruction; run() boots Machines until one stops for good (a guest reboot
// boots a fresh Machine when the config says restart, or when the host asked for the reset).
//
// Ownership: owns the host ends and the current Machine. Thread-safety: run() on one thread;
// the host requests (power_button, pause, resume, reset, stop) and the queries from any other.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "base/error.h"
#include "display/vnc_server.h"
#include "hw/display/frame.h"
#include "machine/boot_file.h"
#include "machine/machine.h"
#include "machine/machine_builder.h"
#include "machine/serial_console.h"
#include "machine/virtio_devices.h"
#include "machine/vm_config.h"
#include "migration/live_migration.h"
#include "migration/machine_state.h"
#include "virtio/virtio_block.h"
#include "virtio/virtio_net.h"

namespace lamina::worker {

enum class VmState { kStarting, kRunning, kPaused, kStopped };
std::string_view to_string(VmState state);

// How a VM ended: `status` is `lamina run`'s exit status (0 poweroff or quit, the debug-exit
// value, 1 with `reason` for a triple fault, a reboot with --on-reboot exit or an error).
struct VmOutcome {
  machine::MachineExit exit = machine::MachineExit::kError;
  int status = 1;
  std::string reason;
};

// Whether the config's accel runs on KVM here: kAuto takes KVM only where it runs guest
// kernels in hardware, and never for firmware boots (built-in CPU only for now); kKvm on a host
// without a usable /dev/kvm is an error saying why.
Result<bool> resolve_kvm(const machine::VmConfig& config);

class VmRunner {
 public:
  // The kernel and initrd, opened and checked by open(), read before the first machine that
  // boots rather than restores (read_boot_files()).
  struct BootFiles {
    std::optional<machine::BootFile> kernel;
    std::optional<machine::BootFile> initrd;
  };

  // `label` names the VM to the virtual switch. kvm: from resolve_kvm(). A valid `console`
  // socket carries the first serial port instead of config.serial (a worker's link to laminad).
  // With `granted` every host end (kernel, initrd, images, output files, sockets, taps, switch
  // ports) comes from the descriptors laminad opened (base/granted_files.h); the config must
  // then name its kernel (laminad fills in the default guest's).
  static Result<std::unique_ptr<VmRunner>> open(const machine::VmConfig& config,
                                                std::string_view label, bool kvm,
                                                UniqueFd console = {},
                                                GrantedFiles* granted = nullptr);
  ~VmRunner();
  VmRunner(const VmRunner&) = delete;
  VmRunner& operator=(const VmRunner&) = delete;

  // Boots the VM and returns when it has stopped for good.
  VmOutcome run();

  // Host requests; each is a no-op when no machine runs. stop() ends run() with kHostStop.
  void power_button();
  void pause();
  void resume();
  void reset();
  void stop(std::string reason);
  // Runs first on every vCPU thread of every Machine booted from now on (before run()):
  // MachineOptions::guest_thread_setup.
  void set_guest_thread_setup(std::function<void()> setup) {
    options_.guest_thread_setup = std::move(setup);
  }
  // Called once, on run()'s thread, when the first machine is built (and restored, after
  // restore_from()) and its vCPUs are about to start: a restoring worker answers its start
  // then, so "started" means the VM runs. Set before run().
  void set_first_machine_listener(std::function<void()> listener) {
    first_machine_ready_ = std::move(listener);
  }
  // A new console link (laminad restarted); only for a VM opened with a console socket.
  [[nodiscard]] Result<void> attach_console(UniqueFd socket);

  // Checkpoints (migration/machine_state.h). restore_from(), before run(): the first machine
  // is built for restore and takes its RAM (mapped lazily) and state from `state`, which must
  // come from a VM of the same shape (vCPUs, memory, devices). save_and_stop(), while running:
  // quiesces the machine, writes its state to `state` (flushed), and ends run() with
  // kHostStop, the machine held so nothing (disk writes included) happens after the saved
  // instant; when saving fails the VM runs on and the error says why.
  // `saved_devices`: the state's device names (StateShape::devices); the virtio devices take
  // the PCI slots the state has them in (hotplug can leave them elsewhere than a fresh boot
  // would): disks in slot order are the definition's disks in order, network cards likewise.
  // A state with other virtio devices than the definition is kInvalidArgument.
  [[nodiscard]] Result<void> restore_from(UniqueFd state, const std::vector<std::string>& saved_devices);
  // The CPU model this VM's machines present (MachineBuilder::presented_cpu), for checking a
  // saved state's before the start is answered.
  [[nodiscard]] Result<accel::PresentedCpu> presented_cpu() const;
  [[nodiscard]] Result<migration::SaveStatistics> save_and_stop(int state);

  // Live migration's source side (migration/live_migration.h), from a host thread while the
  // VM runs: pre-copies the VM over `link` (the stream socket to the destination, through
  // laminad) and, when the destination runs it, ends run() with kHostStop ("migrated"); the
  // outcome goes to `finished` before that stop is posted. On a
  // failure the VM runs on and the error says why. Disks hand their write locks over at the
  // switchover (raw, VHD, VHDX; others are refused before anything is sent).
  [[nodiscard]] Result<migration::LiveMigrationResult> migrate_out(
      int link, const migration::LiveMigrationOptions& options,
      std::function<void(const migration::LiveMigrationProgress&)> progress,
      const std::function<void(const Result<migration::LiveMigrationResult>&)>& finished = {});
  // Hotplug (ACPI PCI hotplug, Machine::hot_add_virtio): a disk or network card joins the
  // running VM and every machine booted after it, or leaves them. Attach opens the image or
  // port (through `granted` in a worker), takes the lowest free PCI slot and returns it.
  // Detach asks the guest to let go and waits up to `timeout` for its eject (kIo naming the
  // timeout when it does not; the device then stays); then the device is gone, the image
  // flushed and closed (its lock released) or the port closed. Disks and cards are numbered
  // in definition order (config().disks, config().networks), which attach appends to and
  // detach erases from. A failed call changes nothing. One hotplug operation at a time.
  [[nodiscard]] Result<uint8_t> attach_disk(virtio::DiskSpec spec, GrantedFiles* granted);
  [[nodiscard]] Result<uint8_t> attach_network(const net::NetworkOption& option,
                                               GrantedFiles* granted);
  // The card with `mac` gets a new backend (the port `granted` holds, opened as attach opens
  // one): the card stays in its slot and its link comes up again (VirtioNet::replace_backend).
  // laminad calls this after a card's switch daemon died (set_network_failure_listener).
  [[nodiscard]] Result<void> reconnect_network(const net::MacAddress& mac, GrantedFiles* granted);
  // Told (from the card's I/O thread; must not block) when a card's backend fails.
  void set_network_failure_listener(machine::NetworkFailureListener listener) {
    std::lock_guard lock(listener_mutex_);
    network_failure_listener_ = std::move(listener);
  }
  [[nodiscard]] Result<void> detach_disk(size_t index, std::chrono::milliseconds timeout);
  [[nodiscard]] Result<void> detach_network(size_t index, std::chrono::milliseconds timeout);
  // vCPUs (ACPI CPU hotplug, Machine::hot_add_vcpu): adds or removes vCPUs until `count` are
  // present, in the running VM and the machines booted after it; refused past the VM's
  // maximum (config max_cpus) or on a VM without headroom. A removal the guest does not
  // answer within `timeout` stops there with an error (those removed so far stay removed).
  [[nodiscard]] Result<void> set_vcpus(uint32_t count, std::chrono::milliseconds timeout);
  size_t disk_count() const;
  size_t network_count() const;

  VmState state() const { return state_.load(); }
  uint32_t vcpus() const {
    std::lock_guard lock(mutex_);
    return config_.cpus;
  }
  // RAM the guest has now: boot RAM + what it plugged (virtio-mem).
  uint64_t memory_bytes() const;
  // Memory (virtio-mem, Machine::set_memory_size): the guest is asked to use `bytes` in all,
  // now and after a reboot; it plugs or unplugs by itself (poll memory_bytes()). Refused past
  // the VM's max, below its boot RAM, or on a VM without headroom.
  [[nodiscard]] Result<void> set_memory(uint64_t bytes);
  // Guest instructions retired in this VM's life (all boots), from any thread.
  uint64_t instructions() const;
  // The built-in CPU's code caches: translations and flushes over the VM's life, the bytes used
  // and the bound of the machine running now.
  accel::CodeCacheStats code_cache_stats() const;
  // Guest I/O of the VM's disks and network cards (in definition order) over its life.
  struct Traffic {
    std::vector<virtio::BlockRequestHandler::Traffic> disks;
    std::vector<virtio::VirtioNetStats> nics;
  };
  Traffic traffic() const;
  // Where each disk and card sits now (PCI slot on bus 0, definition order) and whether each
  // card's link is up (false while no machine runs or its backend is gone).
  struct Placement {
    std::vector<uint8_t> disk_slots;
    std::vector<uint8_t> network_slots;
    std::vector<bool> links_up;
  };
  Placement placement() const;
  // The screen (hw/display/std_vga.h): what the running machine's VGA shows, or the last
  // machine's last picture once it stopped. kNotFound for a VM without a VGA adapter,
  // kUnsupported while the screen shows nothing renderable.
  [[nodiscard]] Result<hw::Frame> screenshot() const;
  // Changes when the running machine's screen may have changed (display/vnc_server.h polls it).
  uint64_t screen_generation() const;
  // Host keyboard (scan code set 1 bytes) and pointer input to the running machine's i8042;
  // dropped while no machine runs.
  void keyboard_input(std::span<const uint8_t> set1_bytes);
  // The VNC client's pointer: to the tablet once its driver is ready, else the PS/2 mouse.
  void pointer_input(const display::PointerEvent& event);
  // Machines booted (1 + restarts).
  uint64_t boots() const { return boots_.load(); }

 private:
  explicit VmRunner(machine::VmConfig config) : config_(std::move(config)) {}
  VmOutcome outcome_of(const machine::MachineStop& stop) const;
  Traffic machine_traffic(const machine::Machine& vm) const;  // mutex_ held
  // Puts `factory` in the lowest free slot of options_ above every slot in `same_kind` (the
  // slots of the devices of its kind, so that their slot order stays the definition's order,
  // which a restore relies on) and, when a machine runs, into it.
  Result<uint8_t> plug(machine::VirtioDeviceFactory factory,
                       const std::vector<uint8_t>& same_kind);  // hotplug_mutex_ held
  // Takes the device in `slot` out of the running machine and of options_.
  Result<void> unplug(uint8_t slot, std::chrono::milliseconds timeout);  // hotplug_mutex_ held

  machine::VmConfig config_;
  bool console_is_socket_ = false;
  machine::MachineOptions options_;
  std::unique_ptr<machine::SerialConsole> console_;
  std::unique_ptr<machine::VirtioHostEnds> host_ends_;

  // Serializes hotplug operations; run() takes it before destroying a machine, so one that
  // a hotplug operation uses stays alive until it is done. Taken before mutex_.
  std::mutex hotplug_mutex_;
  // Reads boot_files_ into options_ (once; later boots reuse the bytes).
  [[nodiscard]] Result<void> read_boot_files();
  void network_failed(const net::MacAddress& mac, const Error& error) {
    std::lock_guard lock(listener_mutex_);
    if (network_failure_listener_) network_failure_listener_(mac, error);
  }
  std::mutex listener_mutex_;  // guards network_failure_listener_ (taken on cards' I/O threads)
  machine::NetworkFailureListener network_failure_listener_;
  mutable std::mutex mutex_;  // guards machine_, options_, config_'s devices and the below
  machine::Machine* machine_ = nullptr;
  bool stop_requested_ = false;
  std::string stop_reason_;
  bool host_reset_ = false;
  bool paused_ = false;
  bool migrating_ = false;          // migrate_out() uses machine_: run() waits before ending it
  bool machine_stopping_ = false;   // machine_'s run() returned: a migration gives up
  std::condition_variable migration_done_;
  uint64_t finished_instructions_ = 0;  // of machines already destroyed
  accel::CodeCacheStats finished_code_cache_;  // translations and flushes of those machines
  Traffic finished_traffic_;            // of machines already destroyed
  std::atomic<VmState> state_ = VmState::kStarting;
  std::atomic<uint64_t> boots_ = 0;
  UniqueFd kvm_device_;     // with --accel kvm: /dev/kvm, opened before the sandbox
  UniqueFd restore_state_;  // restore_from(): the state the first machine restores
  BootFiles boot_files_;    // until read_boot_files() (run()'s thread)
  std::function<void()> first_machine_ready_;  // set_first_machine_listener()
  hw::Frame last_frame_;               // the last stopped machine's screen
  uint64_t memory_target_ = 0;          // set_memory(); 0: the boot RAM
  uint8_t ps2_buttons_ = 0;             // the buttons the PS/2 mouse last reported
  std::vector<uint8_t> disk_slots_;     // PCI slot of config_.disks[i]
  std::vector<uint8_t> network_slots_;  // PCI slot of config_.networks[i]
  // Last: it calls into the above from its own thread until it is destroyed.
  std::unique_ptr<display::VncServer> vnc_;
};

}  // namespace lamina::worker
