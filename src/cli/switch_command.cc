// `lamina switch`: the Lamina virtual switch. `serve` runs a switch daemon in the foreground
// (VMs start one themselves when they need it); `list` and `show` ask running daemons.

#include <fmt/format.h>
#include <signal.h>
#include <sys/signalfd.h>

#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "net/daemon_launcher.h"
#include "net/switch_daemon.h"
#include "net/switch_query.h"

namespace lamina::cli {

namespace {

constexpr int kSwitchFailureExitCode = 1;

[[noreturn]] void fail_switch_command(std::string_view command, const Error& error) {
  fmt::print(stderr, "lamina switch {}: {}\n", command, error.message());
  throw CLI::RuntimeError(kSwitchFailureExitCode);
}

std::string format_duration(double seconds) {
  auto whole = static_cast<uint64_t>(seconds);
  if (whole < 120) return fmt::format("{}s", whole);
  if (whole < 7200) return fmt::format("{}m", whole / 60);
  return fmt::format("{}h", whole / 3600);
}

void print_status(const net::SwitchStatus& status) {
  fmt::print(
      "switch {}: daemon pid {}, up {}, MAC age {}s, at most {} MACs ({} per port) and {} ports\n",
      status.name, status.pid, format_duration(status.uptime_seconds), status.mac_age_seconds,
      status.max_macs, status.max_macs_per_port, status.max_ports);
  fmt::print("frames flooded {}, filtered {}; sources not learned (table full) {}\n",
             status.flooded_frames, status.filtered_frames, status.unlearned_sources);
  // SPOOFED: frames dropped for a source address other than the port's MAC (spoofing off);
  // UNLEARNED: sources not learned because the port had its most addresses.
  fmt::print(
      "\n{:>5} {:>8} {:<20} {:<17} {:>5} {:>10} {:>12} {:>10} {:>12} {:>9} {:>8} {:>8} "
      "{:>9} {:>9}\n",
      "PORT", "PID", "LABEL", "MAC", "SPOOF", "RX-FRAMES", "RX-BYTES", "TX-FRAMES", "TX-BYTES",
      "MALFORMED", "DROPPED", "SPOOFED", "UNLEARNED", "CONNECTED");
  for (const auto& port : status.ports) {
    fmt::print(
        "{:>5} {:>8} {:<20} {:<17} {:>5} {:>10} {:>12} {:>10} {:>12} {:>9} {:>8} {:>8} "
        "{:>9} {:>9}\n",
        port.id, port.pid, port.label.empty() ? "-" : port.label, port.mac,
        port.mac_spoofing ? "on" : "off", port.received_frames, port.received_bytes,
        port.sent_frames, port.sent_bytes, port.malformed_frames, port.dropped_frames,
        port.spoofed_frames, port.unlearned_sources, format_duration(port.connected_seconds));
  }
  fmt::print("\n{:<17} {:>5} {:>6}\n", "MAC ADDRESS", "PORT", "AGE");
  for (const auto& mac : status.macs) {
    fmt::print("{:<17} {:>5} {:>6}\n", mac.address, mac.port, format_duration(mac.age_seconds));
  }
}

struct ServeArguments {
  std::string name;
  double mac_age = 300;
  size_t max_macs = 4096;
  size_t max_macs_per_port = 64;
  size_t max_ports = 256;
  double idle_exit = 0;
  int ready_fd = -1;
};

std::chrono::milliseconds to_milliseconds(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(seconds * 1000)));
}

void run_serve(const ServeArguments& arguments) {
  auto report_failure = [&](const Error& error) {
    net::report_to_launcher(arguments.ready_fd, "error: " + error.message());
    fail_switch_command("serve", error);
  };
  if (!(arguments.mac_age > 0 && arguments.mac_age <= 1e6)) {
    report_failure(Error(ErrorCode::kInvalidArgument, "--mac-age must be 0-1000000 seconds"));
  }
  if (!(arguments.idle_exit >= 0 && arguments.idle_exit <= 1e6)) {
    report_failure(Error(ErrorCode::kInvalidArgument, "--idle-exit must be 0-1000000 seconds"));
  }
  net::SwitchDaemonOptions options;
  options.mac_age = to_milliseconds(arguments.mac_age);
  options.max_macs = arguments.max_macs;
  options.max_macs_per_port = arguments.max_macs_per_port;
  options.max_ports = arguments.max_ports;
  options.idle_exit = to_milliseconds(arguments.idle_exit);

  // Ctrl-C and termination stop the daemon through a signalfd (its socket is then removed).
  sigset_t signals;
  sigemptyset(&signals);
  for (int signal_number : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&signals, signal_number);
  sigprocmask(SIG_BLOCK, &signals, nullptr);
  UniqueFd stop(::signalfd(-1, &signals, SFD_CLOEXEC));

  auto daemon = net::SwitchDaemon::start(arguments.name, options);
  if (!daemon) report_failure(daemon.error());
  if (!*daemon) {
    net::report_to_launcher(arguments.ready_fd, "busy");
    // Started by a VM that raced another: the other daemon serves, which is what it wanted.
    if (arguments.ready_fd >= 0) return;
    fail_switch_command("serve",
                        Error(ErrorCode::kInvalidArgument,
                              fmt::format("switch {} is already running", arguments.name)));
  }
  if (arguments.ready_fd < 0) {
    fmt::print("switch {} listening on {}\n", arguments.name, (*daemon)->paths().socket.string());
    std::fflush(stdout);
  }
  net::report_to_launcher(arguments.ready_fd, "ready");
  auto served = (*daemon)->run(stop.get());
  if (!served) fail_switch_command("serve", served.error());
}

}  // namespace

void add_switch_command(CLI::App& app) {
  auto* command =
      app.add_subcommand("switch",
                         "The Lamina virtual switch: connects VMs on this host without root "
                         "(lamina run --net switch:NAME)");
  command->require_subcommand(1);

  auto serve_arguments = std::make_shared<ServeArguments>();
  auto* serve = command->add_subcommand(
      "serve", "Run switch NAME in the foreground (a VM starts one in the background by itself)");
  serve->add_option("name", serve_arguments->name, "Switch name: 1-64 of A-Z a-z 0-9 _ . -")
      ->required();
  serve->add_option("--mac-age", serve_arguments->mac_age,
                    "Seconds a learned MAC address is kept unseen (default 300)");
  serve
      ->add_option("--max-macs", serve_arguments->max_macs,
                   "Size of the MAC address table (default 4096)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  serve
      ->add_option("--max-macs-per-port", serve_arguments->max_macs_per_port,
                   "Addresses one port may have learned (only ports with MAC spoofing on have "
                   "more than their own; default 64)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  serve->add_option("--max-ports", serve_arguments->max_ports, "Most ports (default 256)")
      ->check(CLI::Range(size_t{1}, size_t{4096}));
  serve->add_option("--idle-exit", serve_arguments->idle_exit,
                    "Exit this many seconds after the last port left (default 0: never)");
  // How a launching VM learns the daemon is ready (daemon_launcher.h); not for people.
  serve->add_option("--ready-fd", serve_arguments->ready_fd)->group("");
  serve->callback([serve_arguments] { run_serve(*serve_arguments); });

  auto list_json = std::make_shared<bool>(false);
  auto* list = command->add_subcommand("list", "List the running switches of this user");
  list->add_flag("--json", *list_json, "Print JSON");
  list->callback([list_json] {
    auto switches = net::list_switches();
    if (!switches) fail_switch_command("list", switches.error());
    if (*list_json) {
      nlohmann::json json = nlohmann::json::array();
      for (const auto& status : *switches) {
        json.push_back({{"name", status.name},
                        {"pid", status.pid},
                        {"ports", status.ports.size()},
                        {"macs", status.macs.size()},
                        {"uptime_seconds", status.uptime_seconds}});
      }
      fmt::print("{}\n", json.dump(2));
      return;
    }
    if (switches->empty()) {
      fmt::print("no switches are running\n");
      return;
    }
    fmt::print("{:<24} {:>5} {:>5} {:>8} {:>7}\n", "NAME", "PORTS", "MACS", "PID", "UPTIME");
    for (const auto& status : *switches) {
      fmt::print("{:<24} {:>5} {:>5} {:>8} {:>7}\n", status.name, status.ports.size(),
                 status.macs.size(), status.pid, format_duration(status.uptime_seconds));
    }
  });

  auto show_name = std::make_shared<std::string>();
  auto show_json = std::make_shared<bool>(false);
  auto* show = command->add_subcommand("show", "Show a switch's ports, counters and MAC table");
  show->add_option("name", *show_name, "Switch name")->required();
  show->add_flag("--json", *show_json, "Print JSON");
  show->callback([show_name, show_json] {
    auto status = net::query_switch(*show_name);
    if (!status) fail_switch_command("show", status.error());
    if (*show_json) {
      fmt::print("{}\n", net::status_json(*status).dump(2));
    } else {
      print_status(*status);
    }
  });
}

}  // namespace lamina::cli
