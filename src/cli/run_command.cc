#include <string>
#include <vector>

#include <fcntl.h>
#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

#include "accel/accelerator.h"
#include "base/log.h"
#include "base/retrying_worker.h"
#include "base/size.h"
#include "base/unique_fd.h"
#include "cli/commands.h"
#include "cli/not_built.h"
#include "display/png_writer.h"
#include "machine/default_guest.h"
#include "machine/vm_config.h"
#include "migration/machine_state.h"
#include "storage/staged_file.h"
#include "virtio/virtio_block_setup.h"
#include "worker/vm_runner.h"

namespace lamina::cli {

namespace {

// Raw option text as typed; turned into a VmConfig and validated before anything starts.
struct RunOptions {
  std::string firmware;  // empty: the default (see machine::effective_firmware)
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  std::string cpus = "1";
  std::string memory = "512M";
  std::string accel = "emu";
  std::string cpu_engine = "jit";
  std::string cpu_model = "lamina";
  std::string code_cache = fmt::format("{}M", machine::kDefaultCodeCacheBytes >> 20);
  std::string serial = "stdio";
  std::string on_reboot = "exit";
  std::string rng = "host";
  std::string console_port = "none";
  std::vector<std::string> disks;
  std::string cdrom;  // --cdrom ISO
  std::string boot;   // --boot
  std::vector<std::string> networks;  // --net, repeatable
  std::string vga;            // empty: the default (see machine::effective_vga)
  std::string display = "none";
  std::string tablet;  // empty: the default (see machine::effective_tablet)
  std::string screenshot_on_exit;   // PNG of the screen when the run ends
  std::string screen_text_on_exit;  // the text-mode screen as text when the run ends
  bool debug_exit = false;
  std::string state_file;  // --state-file: SIGUSR1 saves the VM there and ends the run
  std::string restore;     // --restore: continue a saved VM
};

[[noreturn]] void report_bad_option(const Error& error) {
  fmt::print(stderr, "lamina run: {}\n", error.message());
  throw CLI::RuntimeError(2);
}

machine::VmConfig to_config(const RunOptions& options) {
  machine::VmConfig config;
  if (!options.firmware.empty()) {
    auto firmware = machine::parse_firmware(options.firmware);
    if (!firmware) report_bad_option(firmware.error());
    config.firmware = *firmware;
  }
  if (!options.kernel.empty()) config.kernel = options.kernel;
  if (!options.initrd.empty()) config.initrd = options.initrd;
  config.cmdline = options.cmdline;
  auto cpus = machine::parse_cpus(options.cpus);
  if (!cpus) report_bad_option(cpus.error());
  config.cpus = cpus->cpus;
  config.max_cpus = cpus->max_cpus;
  auto memory = machine::parse_memory(options.memory);
  if (!memory) report_bad_option(memory.error());
  config.memory_bytes = memory->bytes;
  config.max_memory_bytes = memory->max_bytes;
  auto accel = machine::parse_accel(options.accel);
  if (!accel) report_bad_option(accel.error());
  config.accel = *accel;
  auto engine = machine::parse_cpu_engine(options.cpu_engine);
  if (!engine) report_bad_option(engine.error());
  config.cpu_engine = *engine;
  auto cpu_model = machine::parse_cpu_model(options.cpu_model);
  if (!cpu_model) report_bad_option(cpu_model.error());
  config.cpu_model = *cpu_model;
  auto code_cache = machine::parse_code_cache(options.code_cache);
  if (!code_cache) report_bad_option(code_cache.error());
  config.code_cache_bytes = *code_cache;
  auto serial = machine::parse_serial(options.serial);
  if (!serial) report_bad_option(serial.error());
  config.serial = *serial;
  auto on_reboot = machine::parse_reboot_action(options.on_reboot);
  if (!on_reboot) report_bad_option(on_reboot.error());
  config.on_reboot = *on_reboot;
  auto rng = machine::parse_rng(options.rng);
  if (!rng) report_bad_option(rng.error());
  config.rng = *rng;
  auto console_port = machine::parse_console_port(options.console_port);
  if (!console_port) report_bad_option(console_port.error());
  config.console_port = *console_port;
  for (const std::string& text : options.disks) {
    auto disk = virtio::parse_disk_spec(text);
    if (!disk) report_bad_option(disk.error());
    machine::add_disk(config, std::move(*disk));
  }
  if (!options.cdrom.empty()) config.cdrom = options.cdrom;
  if (!options.boot.empty()) {
    auto boot = machine::parse_boot(options.boot);
    if (!boot) report_bad_option(boot.error());
    config.boot = std::move(*boot);
  }
  for (const std::string& text : options.networks) {
    auto network = machine::parse_network(text);
    if (!network) report_bad_option(network.error());
    config.networks.push_back(*network);
  }
  if (!options.vga.empty()) {
    auto vga = machine::parse_vga(options.vga);
    if (!vga) report_bad_option(vga.error());
    config.vga = *vga;
  }
  auto display = machine::parse_display(options.display);
  if (!display) report_bad_option(display.error());
  config.display = *display;
  if (!options.tablet.empty()) {
    auto tablet = machine::parse_tablet(options.tablet);
    if (!tablet) report_bad_option(tablet.error());
    config.tablet = *tablet;
  }
  config.debug_exit = options.debug_exit;
  if (auto valid = machine::validate(config); !valid) report_bad_option(valid.error());
  // Without --kernel the default guest boots; a missing one is a usage error saying how to
  // make it.
  if (!config.kernel && machine::effective_firmware(config).kind == machine::FirmwareKind::kNone) {
    if (auto guest = machine::find_default_guest(); !guest) report_bad_option(guest.error());
  }
  return config;
}

// Ends `lamina run` with a status; a non-zero one comes with one line naming the reason.
[[noreturn]] void finish(int status, std::string_view reason = {}) {
  if (!reason.empty()) {
    std::string line(reason);
    for (char& c : line) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    fmt::print(stderr, "lamina run: {}\n", line);
  }
  throw CLI::RuntimeError(status);
}

// Saves the VM's state to `path` when SIGUSR1 arrives (blocked in every thread, taken here):
// written under a temporary name, flushed and renamed, so `path` is always a whole state or
// absent. Saving ends the run; a failed save leaves the VM running.
void serve_save_signal(std::stop_token stop, worker::VmRunner& runner, const std::string& path) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGUSR1);
  const timespec poll_interval{0, 100'000'000};
  while (!stop.stop_requested()) {
    if (::sigtimedwait(&signals, nullptr, &poll_interval) != SIGUSR1) continue;
    auto staged = storage::StagedFile::prepare(path, true);
    if (!staged) {
      log_warn("cannot save the VM: {}", staged.error().message());
      continue;
    }
    UniqueFd file(
        ::open(staged->temporary_path().c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!file) {
      log_warn("cannot save the VM: {}: {}", staged->temporary_path(), std::strerror(errno));
      continue;
    }
    auto saved = runner.save_and_stop(file.get());
    if (!saved) {
      log_warn("the VM's state was not saved (it runs on): {}", saved.error().message());
      continue;
    }
    file.reset();
    if (auto committed = staged->commit(); !committed) {
      log_warn("the VM's state was not saved: {}", committed.error().message());
      return;
    }
    log_line(LogLevel::kInfo,
             fmt::format("saved the VM's state to {} ({} of RAM written, {} in the file)", path,
                         format_size(saved->ram_written), format_size(saved->file_bytes)));
    return;
  }
}

// --screenshot-on-exit and --screen-text-on-exit: the last screen, written after the run; a
// failure is reported and does not change the exit status.
void save_screen(const worker::VmRunner& runner, const RunOptions& options) {
  if (options.screenshot_on_exit.empty() && options.screen_text_on_exit.empty()) return;
  auto frame = runner.screenshot();
  if (!frame) {
    log_warn("no screenshot: {}", frame.error().message());
    return;
  }
  if (!options.screenshot_on_exit.empty()) {
    if (auto written = display::write_png(*frame, options.screenshot_on_exit); !written) {
      log_warn("--screenshot-on-exit: {}", written.error().message());
    }
  }
  if (!options.screen_text_on_exit.empty()) {
    std::ofstream file(options.screen_text_on_exit, std::ios::trunc);
    file << frame->text;
    file.close();
    if (!file) log_warn("--screen-text-on-exit: cannot write {}", options.screen_text_on_exit);
  }
}

// Boots the VM and returns only by throwing the exit status (see finish()).
[[noreturn]] void run_vm(const machine::VmConfig& config, const RunOptions& options) {
  // --accel kvm on a host without a usable /dev/kvm ends here with status 3 (not available).
  auto kvm = worker::resolve_kvm(config);
  if (!kvm) {
    fmt::print(stderr, "lamina run: {}\n", kvm.error().message());
    throw CLI::RuntimeError(kNotBuiltExitCode);
  }
  UniqueFd restore;
  std::vector<std::string> saved_devices;
  if (!options.restore.empty()) {
    restore = UniqueFd(::open(options.restore.c_str(), O_RDONLY | O_CLOEXEC));
    if (!restore) finish(1, fmt::format("--restore {}: {}", options.restore, std::strerror(errno)));
    auto shape = migration::read_state_shape(restore.get());
    if (!shape) finish(1, shape.error().with_context("--restore " + options.restore).message());
    saved_devices = shape->devices;
  }
  if (!options.state_file.empty()) {
    // Blocked before any thread starts, so only serve_save_signal takes it.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGUSR1);
    ::pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  }
  auto runner =
      worker::VmRunner::open(config, fmt::format("lamina run pid {}", ::getpid()), *kvm);
  if (!runner) finish(1, runner.error().message());
  if (restore) {
    if (auto laid_out = (*runner)->restore_from(std::move(restore), saved_devices); !laid_out) {
      finish(1, laid_out.error().with_context("--restore " + options.restore).message());
    }
  }
  // A card whose switch daemon dies is plugged into a restarted one (the switch is started
  // again from this binary, as at boot), ten tries a second apart.
  RetryingWorker reconnector(10, std::chrono::seconds(1));
  (*runner)->set_network_failure_listener([&reconnector, &runner](const net::MacAddress& mac, const Error&) {
    reconnector.post([&runner, mac] { return (*runner)->reconnect_network(mac, nullptr); },
                     [mac](const Result<void>& last, int tries) {
                       if (last) {
                         log_line(LogLevel::kInfo, fmt::format("network card {}: reconnected ({} tries)",
                                                               mac.to_string(), tries));
                       } else {
                         log_warn("network card {}: not reconnected: {}", mac.to_string(), last.error().message());
                       }
                     });
  });
  std::jthread saver;
  if (!options.state_file.empty()) {
    saver = std::jthread([&runner, &options](std::stop_token stop) {
      serve_save_signal(std::move(stop), **runner, options.state_file);
    });
  }
  const worker::VmOutcome outcome = (*runner)->run();
  saver = std::jthread();
  reconnector.stop();
  save_screen(**runner, options);
  // Closing the console first leaves the terminal's raw mode before the last line.
  runner->reset();
  finish(outcome.status, outcome.status == 0 ? std::string_view{} : outcome.reason);
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto options = std::make_shared<RunOptions>();
  auto* run = app.add_subcommand(
      "run", "Start one VM in the foreground with its first serial port on the terminal");
  run->add_option("--firmware", options->firmware,
                  "none: Lamina loads --kernel itself; bios: boot through SeaBIOS (" +
                      std::string(machine::kDefaultBiosPath) +
                      ") from the first bootable --disk, as a PC does, its screen mirrored to "
                      "the serial console; bios:FILE: another BIOS image. Default: bios for a "
                      "VM with --disk and no --kernel, --initrd or --cmdline, else none");
  run->add_option("--kernel", options->kernel,
                  "Linux bzImage or ELF vmlinux, or a Multiboot v1 kernel (default: the default "
                  "guest from scripts/make-guest)");
  run->add_option("--initrd", options->initrd, "Initial RAM disk for the kernel");
  run->add_option("--cmdline", options->cmdline, "Kernel command line");
  run->add_option("--cpus", options->cpus,
                  "Number of vCPUs (1-64); N,max=M lets a VM under laminad grow to M")
      ->capture_default_str();
  run->add_option("--memory", options->memory, "Guest RAM, e.g. 256M or 4G; SIZE,max=MAX adds a virtio-mem device")->capture_default_str();
  run->add_option("--accel", options->accel,
                  "CPU backend: emu (built-in x86-64 CPU), kvm (/dev/kvm; exit status 3 when "
                  "unusable) or auto (kvm when usable, else emu)")
      ->capture_default_str();
  run->add_option("--cpu-model", options->cpu_model,
                  "CPU model the guest sees: lamina (the same on emu and kvm, so the VM can move "
                  "between them), lamina-kvm (lamina without what this host's KVM lacks, also on "
                  "emu) or host (the host's instruction set; --accel kvm only)")
      ->capture_default_str();
  run->add_option("--cpu-engine", options->cpu_engine,
                  "How the built-in CPU runs guest code: jit (translated to host code) or interp "
                  "(the interpreter)")
      ->capture_default_str();
  run->add_option("--code-cache", options->code_cache,
                  "Translated-code cache of the VM (jit engine), 1M to 1G; flushed when full")
      ->capture_default_str();
  run->add_option("--serial", options->serial,
                  "First serial port: stdio (the terminal; Ctrl-A x quits), file:PATH or none")
      ->capture_default_str();
  run->add_option("--rng", options->rng,
                  "Entropy device (virtio-rng): host (fed from the host's getrandom) or none")
      ->capture_default_str();
  run->add_option("--console-port", options->console_port,
                  "Extra console port (virtio-console, /dev/hvc0 in Linux): none, stdio (needs "
                  "--serial other than stdio), file:PATH (output only) or socket:PATH (a Unix "
                  "socket lamina listens on; one client at a time)")
      ->capture_default_str();
  run->add_option("--disk", options->disks,
                  "A disk: PATH[,readonly][,serial=S][,bus=virtio|sata]; repeat for more disks. "
                  "bus=virtio (the default) is virtio-blk (the first is /dev/vda in Linux); "
                  "bus=sata puts it on the AHCI SATA controller (ports 0-5 in order, /dev/sda "
                  "first), for guests without virtio drivers. Any image format `lamina disk` "
                  "reads; qcow2 and VMDK need readonly. The serial (at most 20 characters) "
                  "defaults to one derived from the path")
      ->take_all()
      ->allow_extra_args(false);
  run->add_option("--cdrom", options->cdrom,
                  "An ISO image as a read-only ATAPI CD-ROM on the AHCI SATA controller (the port "
                  "after the bus=sata disks); the BIOS boots it first unless --boot says "
                  "otherwise (El Torito)");
  run->add_option("--boot", options->boot,
                  "What the BIOS boots first: disk, cdrom or order=KIND,KIND (default: cdrom "
                  "when --cdrom is given, else SeaBIOS's own order)");
  run->add_option("--net", options->networks,
                  "Network card (virtio-net), once per card: switch:NAME[,mac=M][,mac-spoofing="
                  "on|off] (the Lamina virtual switch NAME, started when none runs; it drops "
                  "frames from other source MACs unless mac-spoofing=on) or tap:IFNAME[,mac=M]; "
                  "without mac= a random local address")
      ->take_all()
      ->allow_extra_args(false);
  run->add_option("--vga", options->vga,
                  "Display adapter: std (a Bochs-compatible standard VGA with SeaBIOS's VGA "
                  "BIOS) or none. Default: std with --firmware bios or a --display, else none");
  run->add_option("--display", options->display,
                  "Where the screen goes: none, vnc:HOST:PORT (a VNC server; port 0 picks a "
                  "free one and logs it) or vnc:unix:PATH (a VNC server on a Unix socket); "
                  "append ,password-file=FILE to make clients give the password on the file's "
                  "first line (1-8 characters, RFB's VNC Authentication)")
      ->capture_default_str();
  run->add_option("--tablet", options->tablet,
                  "An absolute pointer (virtio-input tablet) for the VNC client's pointer: on or "
                  "off. Default: on with a --display. The guest needs a driver (Linux's "
                  "virtio_input); until it has one, the pointer moves the PS/2 mouse");
  run->add_option("--screenshot-on-exit", options->screenshot_on_exit,
                  "Write the screen as it was when the run ended to this PNG file");
  run->add_option("--screen-text-on-exit", options->screen_text_on_exit,
                  "Write the text-mode screen as it was when the run ended to this file, one "
                  "line per row");
  run->add_flag("--debug-exit", options->debug_exit,
                "Give the guest the debug-exit port 0xf4 (QEMU's isa-debug-exit): writing N ends "
                "the run with status (N << 1) | 1. For test guests; without it writes there are "
                "ignored, so a guest cannot choose lamina's exit status");
  run->add_option("--on-reboot", options->on_reboot,
                  "When the guest reboots: exit (non-zero) or restart")
      ->capture_default_str();
  run->footer(
      "Exit status: 0 when the guest powers off (or Ctrl-A x on the console); with --debug-exit, "
      "(N << 1) | 1 when it writes N to port 0xf4 (low 8 bits); 1 with a one-line reason on a "
      "triple fault, a reboot with --on-reboot exit, or a machine error; 3 when --accel kvm "
      "finds KVM unusable.");
  run->add_option("--state-file", options->state_file,
                  "Where SIGUSR1 saves the VM's whole state (vCPUs, devices, RAM; written under "
                  "a temporary name, then renamed); saving ends the run with status 0 and "
                  "--restore continues it");
  run->add_option("--restore", options->restore,
                  "Continue a VM from a state file --state-file saved; the other options must "
                  "describe the same VM (vCPUs, memory, devices, the same disks unchanged since)");
  run->callback([options] { run_vm(to_config(*options), *options); });
}

}  // namespace lamina::cli
