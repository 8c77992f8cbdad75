#include <fmt/format.h>

#include "base/size.h"
#include "cli/commands.h"
#include "cli/not_built.h"
#include "machine/default_guest.h"
#include "machine/vm_config.h"

namespace lamina::cli {

namespace {

// Raw option text as typed; turned into a VmConfig and validated before anything starts.
struct RunOptions {
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  uint32_t cpus = 1;
  std::string memory = "512M";
  std::string accel = "emu";
  std::string serial = "stdio";
  std::string on_reboot = "exit";
};

[[noreturn]] void report_bad_option(const Error& error) {
  fmt::print(stderr, "lamina run: {}\n", error.message());
  throw CLI::RuntimeError(2);
}

machine::VmConfig to_config(const RunOptions& options) {
  machine::VmConfig config;
  if (!options.kernel.empty()) config.kernel = options.kernel;
  if (!options.initrd.empty()) config.initrd = options.initrd;
  config.cmdline = options.cmdline;
  config.cpus = options.cpus;
  auto memory = parse_size(options.memory);
  if (!memory) report_bad_option(memory.error().with_context("--memory"));
  config.memory_bytes = *memory;
  auto accel = machine::parse_accel(options.accel);
  if (!accel) report_bad_option(accel.error());
  config.accel = *accel;
  auto serial = machine::parse_serial(options.serial);
  if (!serial) report_bad_option(serial.error());
  config.serial = *serial;
  auto on_reboot = machine::parse_reboot_action(options.on_reboot);
  if (!on_reboot) report_bad_option(on_reboot.error());
  config.on_reboot = *on_reboot;
  if (auto valid = machine::validate(config); !valid) report_bad_option(valid.error());
  return config;
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto options = std::make_shared<RunOptions>();
  auto* run = app.add_subcommand(
      "run", "Start one VM in the foreground with its first serial port on the terminal");
  run->add_option("--kernel", options->kernel,
                  "Linux bzImage or ELF vmlinux, or a Multiboot v1 kernel (default: the default "
                  "guest from scripts/make-guest)");
  run->add_option("--initrd", options->initrd, "Initial RAM disk for the kernel");
  run->add_option("--cmdline", options->cmdline, "Kernel command line");
  run->add_option("--cpus", options->cpus, "Number of vCPUs (1-64)")->capture_default_str();
  run->add_option("--memory", options->memory, "Guest RAM, e.g. 256M or 4G")->capture_default_str();
  run->add_option("--accel", options->accel, "CPU backend: emu (built-in x86-64 CPU) or kvm")
      ->capture_default_str();
  run->add_option("--serial", options->serial,
                  "First serial port: stdio (the terminal; Ctrl-A x quits), file:PATH or none")
      ->capture_default_str();
  run->add_option("--on-reboot", options->on_reboot,
                  "When the guest reboots: exit (non-zero) or restart")
      ->capture_default_str();
  run->footer(
      "Exit status: 0 when the guest powers off; non-zero with a one-line reason otherwise.\n"
      "Status: options are checked, but booting is not built yet: it needs the built-in x86-64 "
      "CPU (issue #3) and the PC platform (issue #4).");
  run->callback([options] {
    machine::VmConfig config = to_config(*options);
    if (!config.kernel) {
      auto guest = machine::find_default_guest();
      if (!guest) report_bad_option(guest.error());
    }
    report_not_built("run",
                     "booting guests needs the built-in x86-64 CPU and the PC platform, which "
                     "are in progress (issues #3 and #4)");
  });
}

}  // namespace lamina::cli
