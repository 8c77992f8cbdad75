// `lamina vm migrate NAME --to HOST:PORT`: live migration through laminad (vm_service.h's
// migrate): starts it, then follows the VM's events, showing each pre-copy round, until the
// migration completes (the VM runs on the destination) or fails (it runs on here).

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "base/json_text.h"
#include "cli/vm_support.h"

namespace lamina::cli {
namespace {

struct MigrateArguments {
  std::string vm;
  std::string to;
  std::string storage = "shared";
  std::string destination_dir;
  std::string accel;
  std::string destination_token_file;
  int64_t max_downtime_ms = 50;
  int64_t connections = 4;
  bool no_wait = false;
};

uint64_t number(const nlohmann::json& event, const char* key) {
  return event.contains(key) && event[key].is_number_unsigned() ? event[key].get<uint64_t>() : 0;
}

std::string mib(uint64_t bytes) { return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20)); }

}  // namespace

void add_vm_migrate_command(CLI::App& vm, const std::shared_ptr<VmOptions>& options) {
  auto arguments = std::make_shared<MigrateArguments>();
  auto* migrate = vm.add_subcommand(
      "migrate",
      "Live-migrate a running VM to another laminad: RAM is copied while the guest runs, then "
      "the guest stops for the last pages and its device state and runs on there. Both "
      "laminads run with --listen, --tls-cert, --tls-key and --tls-ca (mutual TLS); with "
      "--storage shared both hosts see the VM's disks at the same paths; with --storage copy "
      "the disks are copied along while the guest keeps writing (shared-nothing). On any "
      "failure the VM runs on here");
  migrate->add_option("name", arguments->vm, "The running VM")->required();
  migrate->add_option("--to", arguments->to, "The destination laminad's --listen HOST:PORT")
      ->required();
  migrate->add_option("--storage", arguments->storage,
                      "shared (the disks stay where they are; their locks move) or copy (new "
                      "images of the same formats are written on the destination, at the same "
                      "paths or in --destination-dir; the source's images are kept)")
      ->check(CLI::IsMember({"shared", "copy"}))
      ->capture_default_str();
  migrate->add_option("--destination-dir", arguments->destination_dir,
                      "With --storage copy: the destination's folder for the disks (same file "
                      "names); by default the same paths as here");
  migrate->add_option("--destination-token-file", arguments->destination_token_file,
                      "A file holding the destination laminad's bearer token, for a destination "
                      "started with --token-file as well as --tls-ca")
      ->check(CLI::ExistingFile);
  migrate->add_option("--max-downtime", arguments->max_downtime_ms,
                      "Milliseconds the guest may be stopped at the switchover (1-600000)")
      ->check(CLI::Range(int64_t{1}, int64_t{600000}))
      ->capture_default_str();
  migrate->add_option("--connections", arguments->connections,
                      "TCP connections to the destination (1-8): the first carries the offer, "
                      "the disks and the device state; the others carry RAM pages, each "
                      "compressed on a thread of its own (the destination may grant fewer)")
      ->check(CLI::Range(int64_t{1}, int64_t{8}))
      ->capture_default_str();
  migrate->add_option("--accel", arguments->accel,
                      "The accelerator the VM runs on at the destination: emu, kvm or auto (by "
                      "default its definition's; a VM moves between the built-in CPU and KVM "
                      "without a reset)")
      ->check(CLI::IsMember({"emu", "kvm", "auto"}));
  migrate->add_flag("--no-wait", arguments->no_wait,
                    "Return once the migration started (follow it with `lamina vm events -f`)");
  migrate->callback([options, arguments] {
    // Events from here on are this migration's: note where the log stands first.
    const auto before = call(*options, "migrate", "GET", "/v1/events?vm=" + arguments->vm);
    int64_t after = 0;
    for (const auto& event : before.value("events", nlohmann::json::array())) {
      after = std::max(after, event.value("id", int64_t{0}));
    }
    nlohmann::json body{{"to", arguments->to},
                        {"storage", arguments->storage},
                        {"max_downtime_ms", arguments->max_downtime_ms},
                        {"connections", arguments->connections}};
    if (!arguments->destination_dir.empty()) body["destination_dir"] = arguments->destination_dir;
    if (!arguments->accel.empty()) body["accel"] = arguments->accel;
    if (!arguments->destination_token_file.empty()) {
      std::ifstream file(arguments->destination_token_file);
      std::string token;
      std::getline(file, token);
      body["destination_token"] = token;
    }
    const auto started = call(*options, "migrate", "POST",
                              fmt::format("/v1/vms/{}/migrate", arguments->vm), body);
    if (arguments->no_wait) {
      if (options->json) return fmt::print("{}\n", json_text(started));
      return fmt::print("migration of {} to {} started\n", arguments->vm, arguments->to);
    }
    const bool terminal = ::isatty(STDERR_FILENO) != 0;
    nlohmann::json outcome = nlohmann::json::object();
    follow_events(*options, "migrate", fmt::format("vm={}&after={}", arguments->vm, after),
                  [&](const nlohmann::json& event) {
                    const std::string kind = event.value("kind", "");
                    const bool completed = outcome.value("phase", "") == "completed";
                    // Done once the source has let the VM go (its definition removed).
                    if (kind == "migrated") return !completed;
                    if ((kind == "crashed" || kind == "stopped") && !completed) {
                      outcome = {{"phase", "failed"},
                                 {"error", fmt::format("the VM {} during its migration", kind)}};
                      return false;
                    }
                    if (kind != "migration") return true;
                    const auto detail = event.value("detail", nlohmann::json::object());
                    const std::string phase = detail.value("phase", "");
                    if (phase == "completed") {
                      outcome = detail;
                      return true;
                    }
                    if (phase == "failed") {
                      outcome = detail;
                      return false;
                    }
                    if (phase != "disks" && phase != "copying" && phase != "switchover") return true;
                    if (options->json) return true;
                    const std::string line = phase == "disks" ? fmt::format(
                        "disks: {} of {} read, {} sent", mib(number(detail, "disk_copied_bytes")),
                        mib(number(detail, "disk_bytes")), mib(number(detail, "transferred_bytes"))) : fmt::format(
                        "{} round {}: {} sent, {} dirty ({}/s), link {}/s, throttle {}%",
                        phase, number(detail, "round"), mib(number(detail, "transferred_bytes")),
                        mib(number(detail, "remaining_bytes")), mib(number(detail, "dirty_rate")),
                        mib(number(detail, "bandwidth")), number(detail, "throttle_percent"));
                    if (terminal) {
                      fmt::print(stderr, "\r\033[K{}", line);
                    } else {
                      fmt::print(stderr, "{}\n", line);
                    }
                    std::fflush(stderr);
                    return true;
                  });
    if (terminal && !options->json) fmt::print(stderr, "\n");
    if (outcome.value("phase", "") != "completed") {
      fail_verb("migrate", fmt::format("{} did not move and runs on here: {}", arguments->vm,
                                       outcome.value("error", std::string("no reason given"))));
    }
    if (options->json) return fmt::print("{}\n", json_text(outcome));
    fmt::print("migrated {} to {} in {} ms: downtime {} ms, {} rounds, {} sent\n", arguments->vm,
               arguments->to, number(outcome, "total_ms"), number(outcome, "downtime_ms"),
               number(outcome, "rounds"), mib(number(outcome, "transferred_bytes")));
    // Where the downtime went, phase by phase (the destination's inside its answer's wait).
    if (outcome.contains("switchover") && outcome["switchover"].is_array()) {
      std::string phases;
      for (const auto& phase : outcome["switchover"]) {
        if (!phase.is_object()) continue;
        phases += fmt::format("{}{} {:.2f}", phases.empty() ? "" : ", ", phase.value("phase", "?"),
                              static_cast<double>(phase.value("us", uint64_t{0})) / 1000.0);
      }
      fmt::print("switchover (ms): {}\n", phases);
    }
  });
}

}  // namespace lamina::cli
