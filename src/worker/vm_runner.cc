#include "worker/vm_runner.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <utility>

#include <fmt/format.h>

#include "accel/accelerator.h"
#include "base/log.h"
#include "machine/boot_file.h"
#include "machine/boot_order.h"
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

Result<bool> resolve_kvm(const machine::VmConfig& config) {
  machine::AccelKind accel = config.accel;
  if (accel == machine::AccelKind::kEmu) return false;
  // The host's CPU model exists on KVM only: auto cannot fall back to the built-in CPU.
  if (config.cpu_model == machine::CpuModel::kHost) accel = machine::AccelKind::kKvm;
  if (accel == machine::AccelKind::kAuto &&
      machine::effective_firmware(config).kind != machine::FirmwareKind::kNone) {
    return false;
  }
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

// The VGA adapter and, with firmware, its option ROM (read now: a worker's sandbox closes the
// file system before the machine is built).
Result<void> display_options(const machine::VmConfig& config, GrantedFiles* granted,
                             machine::MachineOptions& options) {
  const machine::FirmwareKind firmware = machine::effective_firmware(config).kind;
  options.vga = machine::effective_vga(config.vga, firmware, config.display) ==
                machine::VgaKind::kStd;
  if (!options.vga || firmware == machine::FirmwareKind::kNone) return {};
  auto rom = machine::read_boot_file(machine::kDefaultVgaRomPath, "VGA option ROM",
                                     machine::kMaxVgaRomSize, granted);
  if (!rom) return fail(rom.error());
  options.vga_rom_image = std::make_shared<const std::vector<std::byte>>(std::move(*rom));
  return {};
}

// The kernel, initrd and command line the config boots: its own, or the default guest's. The
// kernel and initrd are opened and checked here, and read by VmRunner::read_boot_files().
Result<machine::MachineOptions> boot_options(const machine::VmConfig& config,
                                             GrantedFiles* granted, VmRunner::BootFiles& files) {
  machine::MachineOptions options;
  options.cpus = config.cpus;
  options.max_cpus = config.max_cpus;
  options.memory_bytes = config.memory_bytes;
  options.max_memory_bytes = config.max_memory_bytes;
  options.cmdline = config.cmdline;
  options.debug_exit = config.debug_exit;
  options.jit = config.cpu_engine == machine::CpuEngine::kJit;
  options.code_cache_bytes = config.code_cache_bytes;
  if (const machine::FirmwareChoice firmware = machine::effective_firmware(config);
      firmware.kind != machine::FirmwareKind::kNone) {
    options.firmware = firmware.kind;
    options.firmware_path = firmware.file;
    auto image = machine::read_boot_file(firmware.file.string(), "firmware",
                                         machine::kMaxFirmwareSize, granted);
    if (!image) return fail(image.error());
    // Refused here, before a worker says it started, rather than when the machine is built.
    if (auto checked = machine::check_firmware_image(*image, firmware.file); !checked) {
      return fail(checked.error());
    }
    options.firmware_image = std::make_shared<const std::vector<std::byte>>(std::move(*image));
    if (auto display = display_options(config, granted, options); !display) {
      return fail(display.error());
    }
    return options;
  }
  if (auto display = display_options(config, granted, options); !display) {
    return fail(display.error());
  }
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
  // The second boot of a kernel reads its decompressed copy instead of running xz again. Not
  // in a laminad worker (`granted`): its sandbox has no file system to keep a cache in, and
  // its seccomp filter ends the process at the first open.
  if (granted == nullptr) options.kernel_cache = machine::KernelCache::default_folder();
  auto kernel = machine::BootFile::open(options.kernel.string(), "kernel",
                                        machine::kMaxBootFileSize, granted);
  if (!kernel) return fail(kernel.error());
  files.kernel.emplace(std::move(*kernel));
  if (options.initrd) {
    auto initrd = machine::BootFile::open(options.initrd->string(), "initrd",
                                          machine::kMaxBootFileSize, granted);
    if (!initrd) return fail(initrd.error());
    files.initrd.emplace(std::move(*initrd));
  }
  return options;
}

// --storage copy sends the virtio disks (block dirty tracking, in the definition's order);
// SATA disks are not among them.
Error sata_copy_unsupported() {
  return Error(ErrorCode::kUnsupported,
               "--storage copy moves virtio disks only; this VM has SATA disks (bus=sata): "
               "migrate it with --storage shared");
}

}  // namespace

Result<std::unique_ptr<VmRunner>> VmRunner::open(const machine::VmConfig& config,
                                                 std::string_view label, bool kvm,
                                                 UniqueFd console_socket,
                                                 GrantedFiles* granted) {
  std::unique_ptr<VmRunner> runner(new VmRunner(config));
  auto options = boot_options(config, granted, runner->boot_files_);
  if (!options) return fail(options.error());
  runner->options_ = std::move(*options);
  runner->options_.kvm = kvm;
  runner->options_.cpu_model = config.cpu_model == machine::CpuModel::kHost
                                   ? accel::CpuModelKind::kHost
                                   : accel::CpuModelKind::kLamina;
  if (config.cpu_model == machine::CpuModel::kLaminaKvm && !kvm) {
    // Read now: the worker's sandbox hides /dev/kvm from the machines it builds later.
    auto support = accel::kvm_cpuid_support();
    if (!support) {
      return fail(support.error().with_context(
          "--cpu-model lamina-kvm (Lamina's model as this host's KVM runs it)"));
    }
    runner->options_.cpu_support_limit = std::move(*support);
  }
  if (kvm) {
    // Every boot's machine makes its KVM VM from this device: the worker's sandbox, entered
    // before the first boot, cannot open /dev/kvm (nor see it in its new root).
    auto device = accel::open_kvm_device();
    if (!device) return fail(device.error().with_context("--accel kvm"));
    runner->kvm_device_ = std::move(*device);
    runner->options_.kvm_device = runner->kvm_device_.get();
  }
  if (console_socket) {
    runner->console_ = machine::SerialConsole::open_socket(std::move(console_socket));
    runner->console_is_socket_ = true;
  } else {
    auto console = machine::SerialConsole::open(config.serial, granted);
    if (!console) return fail(console.error());
    runner->console_ = std::move(*console);
  }
  runner->options_.com1_backend = runner->console_.get();
  // The display's socket and server are made now; its thread starts with run() (a worker
  // enters its sandbox, which needs a single thread, in between).
  if (config.display.kind != machine::DisplayKind::kNone) {
    auto listening = machine::open_display_listener(config.display, granted);
    if (!listening) return fail(listening.error());
    auto password = machine::read_display_password(config.display, granted);
    if (!password) return fail(password.error());
    VmRunner* self = runner.get();
    display::ScreenSource source{
        .generation = [self] { return self->screen_generation(); },
        .frame = [self] { return self->screenshot(); },
        .keyboard = [self](std::span<const uint8_t> bytes) { self->keyboard_input(bytes); },
        .pointer = [self](const display::PointerEvent& event) { self->pointer_input(event); },
    };
    auto vnc = display::VncServer::create(std::move(*listening), std::move(source),
                                          std::string(label), std::move(*password));
    if (!vnc) return fail(vnc.error());
    runner->vnc_ = std::move(*vnc);
  }
  // Host ends of the virtio devices live across restarts, like the serial console.
  auto host_ends = machine::open_virtio_host_ends(config, label, granted);
  if (!host_ends) return fail(host_ends.error());
  runner->host_ends_ = std::make_unique<machine::VirtioHostEnds>(std::move(*host_ends));
  machine::add_virtio_devices(config, *runner->host_ends_, runner->options_,
                              [raw = runner.get()](const net::MacAddress& mac, const Error& error) {
                                raw->network_failed(mac, error);
                              });
  runner->memory_target_ = config.memory_target_bytes;
  // add_virtio_devices' order: rng, console port, disks, network cards from slot 1, then the
  // tablet.
  const size_t others = (config.rng ? 1 : 0) + (runner->host_ends_->console_port ? 1 : 0);
  for (size_t i = 0; i < runner->host_ends_->disks.size(); ++i) {
    runner->disk_slots_.push_back(static_cast<uint8_t>(1 + others + i));
  }
  for (size_t i = 0; i < runner->host_ends_->network_ports.size(); ++i) {
    runner->network_slots_.push_back(
        static_cast<uint8_t>(1 + others + runner->host_ends_->disks.size() + i));
  }
  machine::add_sata_drives(runner->host_ends_->sata, runner->options_);
  if (runner->options_.firmware != machine::FirmwareKind::kNone) {
    runner->options_.boot_order = machine::firmware_boot_order(config, runner->disk_slots_);
  }
  return runner;
}

VmRunner::~VmRunner() = default;

Result<accel::PresentedCpu> VmRunner::presented_cpu() const {
  std::lock_guard lock(mutex_);
  return machine::MachineBuilder::presented_cpu(options_);
}

Result<void> VmRunner::read_boot_files() {
  std::shared_ptr<const std::vector<std::byte>> kernel;
  std::shared_ptr<const std::vector<std::byte>> initrd;
  if (boot_files_.kernel) {
    auto bytes = boot_files_.kernel->read();
    if (!bytes) return fail(bytes.error());
    kernel = std::make_shared<const std::vector<std::byte>>(std::move(*bytes));
  }
  if (boot_files_.initrd) {
    auto bytes = boot_files_.initrd->read();
    if (!bytes) return fail(bytes.error());
    initrd = std::make_shared<const std::vector<std::byte>>(std::move(*bytes));
  }
  std::lock_guard lock(mutex_);
  if (kernel) options_.kernel_image = std::move(kernel);
  if (initrd) options_.initrd_image = std::move(initrd);
  boot_files_ = {};
  return {};
}

Result<void> VmRunner::restore_from(UniqueFd state, const std::vector<std::string>& saved_devices) {
  // The saved virtio functions by kind, in slot order ("pci-00:SS.0-virtio-blk").
  std::map<std::string, std::vector<uint8_t>> saved;
  for (const std::string& name : saved_devices) {
    unsigned slot = 0;
    char kind[32] = {};
    if (std::sscanf(name.c_str(), "pci-00:%2x.0-%31s", &slot, kind) != 2 || slot == 0 || slot > 30) {
      continue;  // not a hotplug slot's device (virtio-mem sits in slot 31)
    }
    saved[kind].push_back(static_cast<uint8_t>(slot));
  }
  for (auto& [kind, slots] : saved) std::sort(slots.begin(), slots.end());
  // add_virtio_devices' order: rng, console port, disks, network cards.
  std::vector<std::string> other_kinds;
  if (config_.rng) other_kinds.push_back("virtio-rng");
  if (host_ends_->console_port) other_kinds.push_back("virtio-console");
  const size_t others = other_kinds.size();
  auto count = [&](const std::string& kind) { return saved.contains(kind) ? saved[kind].size() : 0; };
  bool others_match = options_.virtio_devices.size() == others + disk_slots_.size() + network_slots_.size();
  for (const std::string& kind : other_kinds) others_match = others_match && count(kind) == 1;
  if (count("virtio-blk") != disk_slots_.size() || count("virtio-net") != network_slots_.size() ||
      !others_match) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("the saved state has {} disks and {} network cards, this definition "
                            "{} and {}",
                            count("virtio-blk"), count("virtio-net"), disk_slots_.size(),
                            network_slots_.size()));
  }
  std::vector<machine::VirtioDeviceFactory> laid_out;
  auto place = [&](uint8_t slot, machine::VirtioDeviceFactory& factory) {
    if (laid_out.size() < slot) laid_out.resize(slot);
    laid_out[slot - 1] = std::move(factory);
  };
  for (size_t i = 0; i < others; ++i) place(saved[other_kinds[i]].front(), options_.virtio_devices[i]);
  for (size_t i = 0; i < disk_slots_.size(); ++i) {
    place(saved["virtio-blk"][i], options_.virtio_devices[others + i]);
    disk_slots_[i] = saved["virtio-blk"][i];
  }
  for (size_t i = 0; i < network_slots_.size(); ++i) {
    place(saved["virtio-net"][i], options_.virtio_devices[others + disk_slots_.size() + i]);
    network_slots_[i] = saved["virtio-net"][i];
  }
  options_.virtio_devices = std::move(laid_out);
  restore_state_ = std::move(state);
  return {};
}

uint64_t VmRunner::instructions() const {
  std::lock_guard lock(mutex_);
  return finished_instructions_ + (machine_ ? machine_->instructions() : 0);
}

accel::CodeCacheStats VmRunner::code_cache_stats() const {
  std::lock_guard lock(mutex_);
  accel::CodeCacheStats total = finished_code_cache_;
  if (machine_) total += machine_->code_cache_stats();
  return total;
}

namespace {

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

VmRunner::Traffic VmRunner::machine_traffic(const machine::Machine& vm) const {
  // In definition order: each disk's and card's device found by its slot.
  Traffic traffic;
  for (uint8_t slot : disk_slots_) {
    auto* function = vm.virtio_function_at(slot);
    auto* block = function ? dynamic_cast<virtio::VirtioBlock*>(&function->device()) : nullptr;
    traffic.disks.push_back(block ? block->traffic() : virtio::BlockRequestHandler::Traffic{});
  }
  for (uint8_t slot : network_slots_) {
    auto* function = vm.virtio_function_at(slot);
    auto* net = function ? dynamic_cast<virtio::VirtioNet*>(&function->device()) : nullptr;
    traffic.nics.push_back(net ? net->stats() : virtio::VirtioNetStats{});
  }
  return traffic;
}

Result<void> VmRunner::set_vcpus(uint32_t count, std::chrono::milliseconds timeout) {
  std::lock_guard hotplug(hotplug_mutex_);
  machine::Machine* vm = nullptr;
  uint32_t present = 0;
  {
    std::lock_guard lock(mutex_);
    const uint32_t maximum = std::max(config_.cpus, config_.max_cpus);
    if (config_.max_cpus <= 1 && count != config_.cpus) {
      return fail(ErrorCode::kInvalidArgument,
                  "the VM was created without vCPU headroom: create it with --cpus N,max=M");
    }
    if (count < 1 || count > maximum) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("{} vCPUs: the VM takes 1 to {} (its max)", count, maximum));
    }
    vm = machine_;
    present = config_.cpus;
  }
  // Added in order and removed from the top, so the present vCPUs are always 0..count-1.
  Result<void> result;
  while (present != count && result) {
    if (present < count) {
      if (vm) result = vm->hot_add_vcpu(present);
      if (result) ++present;
    } else {
      if (vm) result = vm->hot_remove_vcpu(present - 1, timeout);
      if (result) --present;
    }
  }
  std::lock_guard lock(mutex_);
  config_.cpus = present;
  options_.cpus = present;
  return result;
}

Result<void> VmRunner::set_memory(uint64_t bytes) {
  std::lock_guard hotplug(hotplug_mutex_);
  std::lock_guard lock(mutex_);
  if (config_.max_memory_bytes <= config_.memory_bytes) {
    return fail(ErrorCode::kInvalidArgument,
                "the VM was created without memory headroom: create it with --memory SIZE,max=MAX");
  }
  if (bytes < config_.memory_bytes || bytes > config_.max_memory_bytes || bytes % (2 << 20) != 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} MiB: the running VM takes whole 2 MiB from the {} MiB it booted "
                            "with to {} MiB (its max); stop it to shrink below that",
                            bytes >> 20, config_.memory_bytes >> 20,
                            config_.max_memory_bytes >> 20));
  }
  if (machine_) {
    if (auto set = machine_->set_memory_size(bytes); !set) return set;
  }
  memory_target_ = bytes;
  return {};
}

uint64_t VmRunner::memory_bytes() const {
  std::lock_guard lock(mutex_);
  return machine_ ? machine_->memory_size() : config_.memory_bytes;
}

size_t VmRunner::disk_count() const {
  std::lock_guard lock(mutex_);
  return config_.disks.size();
}

size_t VmRunner::network_count() const {
  std::lock_guard lock(mutex_);
  return config_.networks.size();
}

Result<uint8_t> VmRunner::plug(machine::VirtioDeviceFactory factory,
                               const std::vector<uint8_t>& same_kind) {
  // Under mutex_: traffic() looks at the machine's functions, which this changes (briefly).
  std::lock_guard lock(mutex_);
  size_t index = 0;
  for (uint8_t slot : same_kind) index = std::max<size_t>(index, slot);  // slot - 1 + 1
  while (index < options_.virtio_devices.size() && options_.virtio_devices[index]) ++index;
  // Slot 0 is the host bridge and slot 31 virtio-mem's: 30 functions at most.
  if (index >= 30) {
    return fail(ErrorCode::kInvalidArgument,
                same_kind.empty() ? std::string("every PCI slot of the VM is taken (30 devices)")
                                  : fmt::format("no PCI slot is free after the VM's last device of "
                                                "this kind (slot {}); detach that one first",
                                                same_kind.back()));
  }
  const auto slot = static_cast<uint8_t>(index + 1);
  if (machine_ != nullptr) {
    auto device = factory();
    if (!device) return fail(device.error());
    if (auto added = machine_->hot_add_virtio(slot, std::move(*device)); !added) {
      return fail(added.error());
    }
  }
  if (index >= options_.virtio_devices.size()) options_.virtio_devices.resize(index + 1);
  options_.virtio_devices[index] = std::move(factory);
  return slot;
}

Result<void> VmRunner::unplug(uint8_t slot, std::chrono::milliseconds timeout) {
  machine::Machine* vm = nullptr;
  {
    std::lock_guard lock(mutex_);
    vm = machine_;
  }
  // The wait for the guest without mutex_ (queries go on), the removal under it.
  if (vm != nullptr) {
    if (auto released = vm->wait_for_virtio_release(slot, timeout); !released) return released;
  }
  std::lock_guard lock(mutex_);
  if (vm != nullptr) vm->remove_virtio_function(slot);
  options_.virtio_devices.at(slot - 1) = nullptr;
  // Trailing empty slots go, so the next boot's slot count is what is used.
  while (!options_.virtio_devices.empty() && !options_.virtio_devices.back()) {
    options_.virtio_devices.pop_back();
  }
  return {};
}

Result<uint8_t> VmRunner::attach_disk(virtio::DiskSpec spec, GrantedFiles* granted) {
  if (spec.bus == virtio::DiskBus::kSata) {
    return fail(ErrorCode::kUnsupported,
                "SATA disks are fixed at start; a disk attached while the VM runs is a virtio "
                "disk (leave out bus=sata)");
  }
  std::lock_guard hotplug(hotplug_mutex_);
  {
    std::lock_guard lock(mutex_);
    // The rule of validate_disks at start (laminad checked the file itself).
    for (const auto& disk : config_.disks) {
      if (disk.path == spec.path && !(disk.read_only && spec.read_only)) {
        return fail(ErrorCode::kInvalidArgument,
                    fmt::format("{} is attached to this VM already; an image may be attached "
                                "twice only read-only",
                                spec.path));
      }
    }
  }
  spec.references.granted = granted;
  auto opened = virtio::open_disk(spec);
  if (!opened) return fail(opened.error().with_context(fmt::format("--disk {}", spec.path)));
  spec.references.granted = nullptr;
  auto slot = plug(machine::disk_device_factory(*opened), disk_slots_);
  if (!slot) return fail(slot.error());
  std::lock_guard lock(mutex_);
  config_.disks.push_back(std::move(spec));
  disk_slots_.push_back(*slot);
  host_ends_->disks.push_back(std::move(*opened));
  return slot;
}

Result<uint8_t> VmRunner::attach_network(const net::NetworkOption& option, GrantedFiles* granted) {
  std::lock_guard hotplug(hotplug_mutex_);
  {
    std::lock_guard lock(mutex_);
    for (const auto& other : config_.networks) {
      if (other.mac == option.mac) {
        return fail(ErrorCode::kInvalidArgument,
                    fmt::format("--net {}: another card of this VM has MAC {}",
                                net::describe(option), option.mac.to_string()));
      }
    }
  }
  machine::VmConfig one;
  one.networks.push_back(option);
  net::SwitchConnectOptions switch_options;
  switch_options.label = "lamina hotplug";
  auto ports = machine::open_network_ports(one, switch_options, granted);
  if (!ports) return fail(ports.error());
  auto port = std::make_unique<net::ReplaceablePort>(std::move(ports->front()));
  auto slot = plug(machine::network_device_factory(*port, option.mac,
                                                   [this](const net::MacAddress& mac, const Error& error) {
                                                     network_failed(mac, error);
                                                   }),
                   network_slots_);
  if (!slot) return fail(slot.error());
  std::lock_guard lock(mutex_);
  config_.networks.push_back(option);
  network_slots_.push_back(*slot);
  host_ends_->network_ports.push_back(std::move(port));
  return slot;
}

Result<void> VmRunner::reconnect_network(const net::MacAddress& mac, GrantedFiles* granted) {
  std::lock_guard hotplug(hotplug_mutex_);
  machine::VmConfig one;
  {
    std::lock_guard lock(mutex_);
    for (const auto& card : config_.networks) {
      if (card.mac == mac) one.networks.push_back(card);
    }
  }
  if (one.networks.empty()) {
    return fail(ErrorCode::kNotFound, fmt::format("the VM has no network card with MAC {}", mac.to_string()));
  }
  net::SwitchConnectOptions switch_options;
  switch_options.label = "lamina reconnect";
  auto ports = machine::open_network_ports(one, switch_options, granted);
  if (!ports) return fail(ports.error());
  std::unique_ptr<net::FramePort> backend = std::move(ports->front());
  std::lock_guard lock(mutex_);
  for (size_t index = 0; index < config_.networks.size(); ++index) {
    if (config_.networks[index].mac != mac) continue;
    net::ReplaceablePort& port = *host_ends_->network_ports[index];
    auto swap = [&] { port.replace(std::move(backend)); };
    auto* function = machine_ != nullptr ? machine_->virtio_function_at(network_slots_[index]) : nullptr;
    auto* card = function != nullptr ? dynamic_cast<virtio::VirtioNet*>(&function->device()) : nullptr;
    // Between two boots no card uses the port: the next boot's card starts on the new backend.
    if (card != nullptr) {
      card->replace_backend(swap);
    } else {
      swap();
    }
    return {};
  }
  return fail(ErrorCode::kNotFound, fmt::format("the card with MAC {} went while it was reconnected", mac.to_string()));
}

Result<void> VmRunner::detach_disk(size_t index, std::chrono::milliseconds timeout) {
  std::lock_guard hotplug(hotplug_mutex_);
  uint8_t slot = 0;
  {
    std::lock_guard lock(mutex_);
    if (index >= disk_slots_.size()) {
      return fail(ErrorCode::kNotFound,
                  fmt::format("the VM has no disk {} (it has {})", index, disk_slots_.size()));
    }
    slot = disk_slots_[index];
  }
  if (auto removed = unplug(slot, timeout); !removed) return removed;
  virtio::OpenedDisk disk;
  std::string path;
  {
    std::lock_guard lock(mutex_);
    disk = std::move(host_ends_->disks[index]);
    host_ends_->disks.erase(host_ends_->disks.begin() + static_cast<ptrdiff_t>(index));
    path = config_.disks[index].path;
    config_.disks.erase(config_.disks.begin() + static_cast<ptrdiff_t>(index));
    disk_slots_.erase(disk_slots_.begin() + static_cast<ptrdiff_t>(index));
    if (index < finished_traffic_.disks.size()) {
      finished_traffic_.disks.erase(finished_traffic_.disks.begin() +
                                    static_cast<ptrdiff_t>(index));
    }
  }
  // The device is gone with its requests complete; what the guest wrote reaches the disk
  // before the image (and its lock) is let go.
  auto flushed = disk.image->flush();
  disk = {};
  if (!flushed) {
    return fail(flushed.error().with_context(
        fmt::format("{} was detached, but its last flush failed", path)));
  }
  return {};
}

Result<void> VmRunner::detach_network(size_t index, std::chrono::milliseconds timeout) {
  std::lock_guard hotplug(hotplug_mutex_);
  uint8_t slot = 0;
  {
    std::lock_guard lock(mutex_);
    if (index >= network_slots_.size()) {
      return fail(ErrorCode::kNotFound, fmt::format("the VM has no network card {} (it has {})",
                                                    index, network_slots_.size()));
    }
    slot = network_slots_[index];
  }
  if (auto removed = unplug(slot, timeout); !removed) return removed;
  std::unique_ptr<net::ReplaceablePort> port;
  {
    std::lock_guard lock(mutex_);
    port = std::move(host_ends_->network_ports[index]);
    host_ends_->network_ports.erase(host_ends_->network_ports.begin() +
                                    static_cast<ptrdiff_t>(index));
    config_.networks.erase(config_.networks.begin() + static_cast<ptrdiff_t>(index));
    network_slots_.erase(network_slots_.begin() + static_cast<ptrdiff_t>(index));
    if (index < finished_traffic_.nics.size()) {
      finished_traffic_.nics.erase(finished_traffic_.nics.begin() +
                                   static_cast<ptrdiff_t>(index));
    }
  }
  return {};
}

VmRunner::Traffic VmRunner::traffic() const {
  std::lock_guard lock(mutex_);
  Traffic total = finished_traffic_;
  if (machine_) add(total, machine_traffic(*machine_));
  return total;
}

VmRunner::Placement VmRunner::placement() const {
  std::lock_guard lock(mutex_);
  Placement placement{disk_slots_, network_slots_, {}};
  for (uint8_t slot : network_slots_) {
    auto* function = machine_ ? machine_->virtio_function_at(slot) : nullptr;
    auto* card = function ? dynamic_cast<virtio::VirtioNet*>(&function->device()) : nullptr;
    placement.links_up.push_back(card != nullptr && card->link_up());
  }
  return placement;
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
  std::lock_guard hotplug(hotplug_mutex_);
  std::lock_guard lock(mutex_);
  if (!machine_ || stop_requested_) {
    return fail(ErrorCode::kInvalidArgument, "the VM is not running, so there is nothing to save");
  }
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
    if (options.copy_storage && !host_ends_->sata.disks.empty()) return fail(sata_copy_unsupported());
    if (migrating_) return fail(ErrorCode::kInvalidArgument, "the VM is already migrating");
    vm = machine_;
    migrating_ = true;
  }
  // Shared storage: every writable disk must be able to hand its lock over; asking to lock
  // what is locked already is that check, before anything is sent. Copied storage: the
  // destination writes images of its own, so the locks stay here until the VM ends.
  std::vector<storage::BlockDevice*> writable;
  std::vector<storage::TrackedBlockDevice*> copied;
  for (const virtio::OpenedDisk& disk : host_ends_->disks) {
    copied.push_back(disk.image.get());
    if (disk.image->read_only()) continue;
    writable.push_back(disk.image.get());
  }
  // SATA disks hand their locks over as virtio disks do (the CD-ROM is read-only).
  for (const virtio::OpenedDisk& disk : host_ends_->sata.disks) {
    if (!disk.image->read_only()) writable.push_back(disk.image.get());
  }
  // The disks whose write locks move to the destination at the switchover.
  const std::vector<storage::BlockDevice*> handed_over =
      options.copy_storage ? std::vector<storage::BlockDevice*>() : writable;
  Result<void> checked;
  for (storage::BlockDevice* disk : handed_over) {
    if (checked = disk->set_write_lock(true); !checked) break;
  }
  Result<migration::LiveMigrationResult> result = fail(ErrorCode::kInternal, "not run");
  if (checked) {
    migration::LiveMigrationHooks hooks;
    if (options.copy_storage) hooks.copied_disks = copied;
    hooks.release_disks = [&]() -> Result<void> {
      for (storage::BlockDevice* disk : writable) {
        if (auto flushed = disk->flush(); !flushed) return flushed;
      }
      for (storage::BlockDevice* disk : handed_over) {
        if (auto released = disk->set_write_lock(false); !released) return released;
      }
      return {};
    };
    hooks.reacquire_disks = [&]() -> Result<void> {
      for (storage::BlockDevice* disk : handed_over) {
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
  if (vnc_) vnc_->start();
  for (;;) {
    // Hotplug waits while a machine is built, so what it changes is in this one or the next.
    std::unique_lock hotplug(hotplug_mutex_);
    const bool restoring = restore_state_.valid();
    // A restored VM reads its kernel and initrd at its first reboot, not while it resumes.
    if (!restoring) {
      if (auto read = read_boot_files(); !read) {
        state_ = VmState::kStopped;
        return {machine::MachineExit::kError, 1, read.error().message()};
      }
    }
    machine::MachineOptions options;
    {
      std::lock_guard lock(mutex_);
      options = options_;
    }
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
    // The memory the host asked for outlives a reboot: the new guest's driver plugs it again.
    if (memory_target_ > options.memory_bytes && !restoring) {
      (void)vm->set_memory_size(memory_target_);
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
    hotplug.unlock();
    if (first_machine_ready_) std::exchange(first_machine_ready_, {})();
    boots_.fetch_add(1);
    const machine::MachineStop stop = vm->run();
    console_->detach();
    bool restart = false;
    // A hotplug operation on this machine finishes first (its waits end: run() returned).
    hotplug.lock();
    {
      std::unique_lock lock(mutex_);
      // A migration still reading this machine gives up first.
      machine_stopping_ = true;
      migration_done_.wait(lock, [this] { return !migrating_; });
      machine_stopping_ = false;
      finished_instructions_ += vm->instructions();
      const accel::CodeCacheStats cache = vm->code_cache_stats();
      finished_code_cache_.translations += cache.translations;
      finished_code_cache_.flushes += cache.flushes;
      if (hw::StdVga* vga = vm->vga()) vga->render(last_frame_);
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

Result<hw::Frame> VmRunner::screenshot() const {
  hw::Frame frame;
  {
    std::lock_guard lock(mutex_);
    if (!options_.vga) {
      return fail(ErrorCode::kNotFound,
                  "the VM has no VGA adapter (--vga none, or no firmware and no --display)");
    }
    if (machine_ == nullptr) {
      frame = last_frame_;
    } else if (hw::StdVga* vga = machine_->vga()) {
      vga->render(frame);
    }
  }
  if (frame.width == 0) {
    return fail(ErrorCode::kUnsupported,
                "the screen shows nothing to capture (display off, or a mode Lamina does not "
                "draw)");
  }
  return frame;
}

uint64_t VmRunner::screen_generation() const {
  std::lock_guard lock(mutex_);
  if (machine_ == nullptr) return boots_.load();
  hw::StdVga* vga = machine_->vga();
  // A new machine is a new screen even when its counter starts where the last one was.
  return (vga ? vga->generation() : 0) + (boots_.load() << 48);
}

void VmRunner::keyboard_input(std::span<const uint8_t> set1_bytes) {
  std::lock_guard lock(mutex_);
  if (machine_ != nullptr) machine_->i8042().keyboard_input(set1_bytes);
}

void VmRunner::pointer_input(const display::PointerEvent& event) {
  std::lock_guard lock(mutex_);
  if (machine_ == nullptr) return;
  if (virtio::VirtioTablet* tablet = machine_->tablet(); tablet != nullptr && tablet->driver_ready()) {
    tablet->post_pointer(event.x, event.y, event.width, event.height, event.buttons, event.wheel);
    return;
  }
  // The PS/2 mouse moves relatively; the first event of a client only places its pointer.
  if (event.dx != 0 || event.dy != 0 || event.buttons != ps2_buttons_) {
    machine_->i8042().mouse_input(event.dx, event.dy, event.buttons);
  }
  ps2_buttons_ = event.buttons;
}

}  // namespace lamina::worker
