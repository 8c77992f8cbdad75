// `lamina vm`: manages VMs through laminad's API (cli/api_client.h). Tables for people, --json
// for scripts, errors as one line "lamina vm VERB: why" (exit 1; usage errors exit 2).

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "base/json_text.h"
#include "cli/api_client.h"
#include "cli/commands.h"
#include "machine/vm_config.h"
#include "cli/console_client.h"
#include "cli/vnc_client.h"
#include "cli/vm_support.h"

namespace lamina::cli {
namespace {

// `lamina vm create` options: the same vocabulary as `lamina run`.
struct CreateOptions {
  std::string name;
  std::string from;
  std::string cpus;
  std::string memory, firmware, kernel, initrd, cmdline, serial, console_port, rng, accel,
      cpu_engine, cpu_model, code_cache, on_reboot, cdrom, boot, vga, display, tablet;
  std::vector<std::string> disks, networks;
  bool autostart = false;
  std::string on_crash;
};

}  // namespace

void fail_verb(std::string_view verb, std::string_view message, int status) {
  fmt::print(stderr, "lamina vm {}: {}\n", verb, message);
  throw CLI::RuntimeError(status);
}

void follow_events(const VmOptions& options, std::string_view verb, const std::string& query,
                   const std::function<bool(const nlohmann::json&)>& on_event) {
  // The Server-Sent Events stream: each message's data line is one event.
  auto client = ApiClient::connect(options.connect);
  if (!client) fail_verb(verb, client.error().message());
  std::string pending;
  bool more = true;
  auto reply = (*client)->follow("/v1/events/stream?" + query, [&](std::string_view text) {
    pending += text;
    for (size_t end; more && (end = pending.find('\n')) != std::string::npos;) {
      const std::string line = pending.substr(0, end);
      pending.erase(0, end + 1);
      if (!line.starts_with("data: ")) continue;  // id, event, comments: the data says all
      auto event = nlohmann::json::parse(line.substr(6), nullptr, /*allow_exceptions=*/false);
      if (event.is_object()) more = on_event(event);
    }
    return more;
  });
  if (!reply) fail_verb(verb, reply.error().message());
  if (!more) return;
  const auto& error = reply->body.is_object() && reply->body.contains("error")
                          ? reply->body["error"]
                          : nlohmann::json::object();
  fail_verb(verb, error.value("message", fmt::format("HTTP {}", reply->status)));
}

nlohmann::json call(const VmOptions& options, std::string_view verb, const std::string& method,
                    const std::string& target, const nlohmann::json& body) {
  auto client = ApiClient::connect(options.connect);
  if (!client) fail_verb(verb, client.error().message());
  auto reply = (*client)->call(method, target, body);
  if (!reply) fail_verb(verb, reply.error().message());
  if (reply->status >= 400) {
    const auto& error = reply->body.is_object() && reply->body.contains("error")
                            ? reply->body["error"]
                            : nlohmann::json::object();
    std::string message = error.value("message", fmt::format("HTTP {}", reply->status));
    const std::string field = error.value("field", "");
    if (!field.empty() && message.find(field) == std::string::npos) {
      message = fmt::format("{}: {}", field, message);
    }
    fail_verb(verb, message);
  }
  return reply->body;
}

namespace {

std::string absolute(const std::string& path) {
  if (path.empty()) return path;
  std::error_code error;
  auto made = std::filesystem::absolute(path, error);
  return error ? path : made.string();
}

// "PATH[,options]" with PATH made absolute (laminad resolves nothing against its own cwd).
std::string absolute_spec(const std::string& spec) {
  const size_t comma = spec.find(',');
  return absolute(spec.substr(0, comma)) + (comma == std::string::npos ? "" : spec.substr(comma));
}

nlohmann::json definition_of(const CreateOptions& options) {
  nlohmann::json definition = nlohmann::json::object();
  if (!options.from.empty()) {
    std::ifstream file(options.from);
    if (!file) fail_verb("create", fmt::format("--from {}: cannot read it", options.from), 2);
    nlohmann::json loaded = nlohmann::json::parse(file, nullptr, false);
    if (!loaded.is_object()) {
      fail_verb("create", fmt::format("--from {}: not a JSON object", options.from), 2);
    }
    // Either a whole create body or a bare definition.
    definition = loaded.contains("definition") ? loaded["definition"] : loaded;
  }
  if (!options.cpus.empty()) {
    auto cpus = machine::parse_cpus(options.cpus);
    if (!cpus) fail_verb("create", cpus.error().message(), 2);
    definition["cpus"] = cpus->cpus;
    if (cpus->max_cpus != 0) definition["max_cpus"] = cpus->max_cpus;
  }
  auto set = [&](const char* key, const std::string& value) {
    if (!value.empty()) definition[key] = value;
  };
  set("memory", options.memory);
  if (options.firmware.starts_with("bios:")) {
    set("firmware", "bios:" + absolute(options.firmware.substr(5)));
  } else {
    set("firmware", options.firmware);
  }
  set("kernel", absolute(options.kernel));
  set("initrd", absolute(options.initrd));
  set("cmdline", options.cmdline);
  set("serial", options.serial);
  set("console_port", options.console_port);
  set("vga", options.vga);
  set("tablet", options.tablet);
  {
    // Paths in the display (a socket, a password file) are made absolute: laminad opens them.
    std::string display = options.display;
    std::string password;
    constexpr std::string_view kPasswordFile = ",password-file=";
    if (const size_t at = display.rfind(kPasswordFile); at != std::string::npos) {
      password = std::string(kPasswordFile) + absolute(display.substr(at + kPasswordFile.size()));
      display.resize(at);
    }
    if (display.starts_with("vnc:unix:")) display = "vnc:unix:" + absolute(display.substr(9));
    set("display", display.empty() ? display : display + password);
  }
  set("rng", options.rng);
  set("accel", options.accel);
  set("cpu_engine", options.cpu_engine);
  set("cpu_model", options.cpu_model);
  set("code_cache", options.code_cache);
  set("on_reboot", options.on_reboot);
  set("cdrom", absolute(options.cdrom));
  set("boot", options.boot);
  for (const auto& disk : options.disks) definition["disks"].push_back(absolute_spec(disk));
  for (const auto& net : options.networks) definition["nets"].push_back(net);
  return definition;
}

void print_vm(const nlohmann::json& vm) {
  const auto& definition = vm.value("definition", nlohmann::json::object());
  fmt::print("name:       {}\n", vm.value("name", ""));
  fmt::print("uuid:       {}\n", vm.value("uuid", ""));
  fmt::print("state:      {}\n", vm.value("state", ""));
  if (vm.contains("pid")) fmt::print("worker pid: {}\n", vm["pid"].get<int64_t>());
  if (vm.contains("last_stop")) fmt::print("last stop:  {}\n", vm.value("last_stop", ""));
  fmt::print("cpus:       {}{}\n", definition.value("cpus", 1),
             definition.contains("max_cpus")
                 ? fmt::format(" (max {})", definition.value("max_cpus", 0))
                 : std::string());
  fmt::print("memory:     {}{}\n", definition.value("memory", "512M"),
             definition.contains("memory_target")
                 ? fmt::format(" (set to {})", definition.value("memory_target", ""))
                 : std::string());
  fmt::print("kernel:     {}\n", definition.value("kernel", "(the default guest)"));
  // Each disk and card with the id `vm detach` takes.
  for (const auto& device : vm.value("devices", nlohmann::json::array())) {
    // A running VM's: where it sits on PCI now, and a card's link.
    std::string live;
    if (device.contains("pci_slot")) live = "PCI " + device.value("pci_slot", "");
    if (device.contains("link")) live += ", link " + device.value("link", "");
    fmt::print("{:<11} {}{}\n", device.value("id", "") + ":", device.value("spec", ""),
               live.empty() ? "" : fmt::format("  ({})", live));
  }
  fmt::print("autostart:  {}\n", vm.value("autostart", false) ? "yes" : "no");
  fmt::print("on crash:   {}\n", vm.value("on_crash", "stay"));
  fmt::print("console:    {}\n", vm.value("console_log", ""));
}

void print_json(const nlohmann::json& value) { fmt::print("{}\n", json_text(value, 2)); }

void print_event(const nlohmann::json& event) {
  std::string detail;
  const auto& fields = event.value("detail", nlohmann::json::object());
  if (fields.contains("reason") && fields["reason"].is_string()) {
    detail = fields["reason"].get<std::string>();
  } else if (!fields.empty()) {
    detail = json_text(fields);
  }
  fmt::print("{}  {:<12} {:<14} {}\n", event.value("time", ""), event.value("vm", ""),
             event.value("kind", ""), detail);
}

void add_simple_action(CLI::App& vm, const std::shared_ptr<VmOptions>& options, const char* verb,
                       const char* help) {
  auto name = std::make_shared<std::string>();
  auto* command = vm.add_subcommand(verb, help);
  command->add_option("name", *name, "The VM")->required();
  command->callback([options, name, verb] {
    auto result = call(*options, verb, "POST", fmt::format("/v1/vms/{}/{}", *name, verb));
    if (options->json) print_json(result);
  });
}

}  // namespace

// `lamina vm screenshot NAME FILE.png`: GET /v1/vms/{name}/screenshot, written to FILE.
void add_screenshot_command(CLI::App& vm, const std::shared_ptr<VmOptions>& options) {
  auto name = std::make_shared<std::string>();
  auto file = std::make_shared<std::string>();
  auto* command = vm.add_subcommand("screenshot", "Save a running VM's screen as a PNG file");
  command->add_option("name", *name, "The VM")->required();
  command->add_option("file", *file, "The PNG file to write")->required();
  command->callback([options, name, file] {
    auto client = ApiClient::connect(options->connect);
    if (!client) fail_verb("screenshot", client.error().message());
    auto reply = (*client)->call("GET", fmt::format("/v1/vms/{}/screenshot", *name));
    if (!reply) fail_verb("screenshot", reply.error().message());
    if (reply->status >= 400) {
      const auto& error = reply->body.is_object() && reply->body.contains("error")
                              ? reply->body["error"]
                              : nlohmann::json::object();
      fail_verb("screenshot", error.value("message", fmt::format("HTTP {}", reply->status)));
    }
    std::ofstream out(*file, std::ios::binary | std::ios::trunc);
    out.write(reply->text.data(), static_cast<std::streamsize>(reply->text.size()));
    out.close();
    if (!out) fail_verb("screenshot", fmt::format("cannot write {}", *file));
    if (options->json) print_json({{"file", *file}, {"bytes", reply->text.size()}});
  });
}

void add_vm_command(CLI::App& app) {
  auto options = std::make_shared<VmOptions>();
  auto* vm = app.add_subcommand("vm", "Manage VMs through laminad, the management service");
  vm->add_option("--connect", options->connect,
                 "Where laminad listens: unix:PATH (default: LAMINA_CONNECT, else laminad's "
                 "default socket)");
  vm->add_flag("--json", options->json, "Print JSON for scripts");
  vm->require_subcommand(1);
  vm->footer(
      "Start laminad first (build/laminad). Exit status: 0 on success, 1 with one line "
      "when laminad refuses or cannot be reached, 2 for usage errors.");

  auto create = std::make_shared<CreateOptions>();
  auto* create_command = vm->add_subcommand(
      "create", "Define a VM (the same options as `lamina run`, or --from FILE.json)");
  create_command->add_option("name", create->name, "Name: [A-Za-z0-9][A-Za-z0-9._-]{0,62}")
      ->required();
  create_command->add_option("--from", create->from, "A JSON definition (or create body)");
  create_command->add_option("--cpus", create->cpus,
                             "vCPUs (1-64); N,max=M: up to M while it runs (lamina vm set)");
  create_command->add_option("--memory", create->memory, "Guest RAM, e.g. 512M");
  create_command->add_option("--kernel", create->kernel, "Kernel (default: the default guest)");
  create_command->add_option("--initrd", create->initrd, "Initial RAM disk");
  create_command->add_option("--cmdline", create->cmdline, "Kernel command line");
  create_command->add_option("--firmware", create->firmware,
                             "none, bios or bios:FILE (default: bios with disks and no kernel, initrd or cmdline)");
  create_command->add_option("--disk", create->disks,
                             "PATH[,readonly][,serial=S][,bus=virtio|sata], repeatable")
      ->take_all()
      ->allow_extra_args(false);
  create_command->add_option("--cdrom", create->cdrom, "An ISO image as a SATA CD-ROM");
  create_command->add_option("--boot", create->boot, "disk, cdrom or order=KIND,KIND");
  create_command->add_option("--net", create->networks, "switch:NAME[,mac=M] or tap:IFNAME[,mac=M]")
      ->take_all()
      ->allow_extra_args(false);
  create_command->add_option("--serial", create->serial,
                             "none or file:PATH (default: console.log in laminad's VM folder)");
  create_command->add_option("--console-port", create->console_port,
                             "none, file:PATH, socket:PATH");
  create_command->add_option("--rng", create->rng, "host or none");
  create_command->add_option("--vga", create->vga, "std or none (default: std with firmware)");
  create_command->add_option("--display", create->display,
                             "none, vnc:HOST:PORT or vnc:unix:PATH (laminad opens the socket), then optionally "
                             ",password-file=FILE (clients must give the password on its first "
                             "line, 1-8 characters: RFB's VNC Authentication)");
  create_command->add_option("--tablet", create->tablet,
                             "on or off: an absolute pointer for VNC (default: on with a --display)");
  create_command->add_option("--accel", create->accel, "emu, kvm or auto");
  create_command->add_option("--cpu-engine", create->cpu_engine, "jit or interp (built-in CPU)");
  create_command->add_option("--cpu-model", create->cpu_model,
                             "lamina, lamina-kvm or host (KVM only): the CPU model the guest sees");
  create_command->add_option("--code-cache", create->code_cache, "JIT code cache, 1M to 1G");
  create_command->add_option("--on-reboot", create->on_reboot, "exit or restart");
  create_command->add_flag("--autostart", create->autostart, "Start when laminad starts");
  create_command->add_option("--on-crash", create->on_crash, "stay or restart");
  create_command->callback([options, create] {
    nlohmann::json body{{"name", create->name}, {"definition", definition_of(*create)}};
    if (create->autostart) body["autostart"] = true;
    if (!create->on_crash.empty()) body["on_crash"] = create->on_crash;
    auto result = call(*options, "create", "POST", "/v1/vms", body);
    if (options->json) {
      print_json(result);
    } else {
      fmt::print("created {}\n", create->name);
    }
  });

  auto* list = vm->add_subcommand("list", "VMs and their states");
  list->callback([options] {
    auto result = call(*options, "list", "GET", "/v1/vms");
    if (options->json) return print_json(result);
    fmt::print("{:<24} {:<9} {:>4} {:>7} {:>8}\n", "NAME", "STATE", "CPUS", "MEMORY", "PID");
    for (const auto& entry : result.value("vms", nlohmann::json::array())) {
      const auto& definition = entry.value("definition", nlohmann::json::object());
      fmt::print("{:<24} {:<9} {:>4} {:>7} {:>8}\n", entry.value("name", ""),
                 entry.value("state", ""), definition.value("cpus", 1),
                 definition.value("memory", "512M"),
                 entry.contains("pid") ? std::to_string(entry["pid"].get<int64_t>()) : "-");
    }
  });

  auto show_name = std::make_shared<std::string>();
  auto* show = vm->add_subcommand("show", "One VM in detail");
  show->add_option("name", *show_name, "The VM")->required();
  show->callback([options, show_name] {
    auto result = call(*options, "show", "GET", "/v1/vms/" + *show_name);
    if (options->json) return print_json(result);
    print_vm(result);
  });

  add_simple_action(*vm, options, "start", "Start a VM (a sandboxed worker boots it)");
  add_simple_action(*vm, options, "kill", "Kill a VM's worker at once");
  add_simple_action(*vm, options, "pause", "Hold a VM's vCPUs");
  add_screenshot_command(*vm, options);
  add_simple_action(*vm, options, "resume", "Let a paused VM run");
  add_simple_action(*vm, options, "reset", "Reset a VM's machine");

  struct StopArguments {
    std::string name;
    bool force = false;
    double timeout = 30;
  };
  auto stop_arguments = std::make_shared<StopArguments>();
  auto* stop = vm->add_subcommand(
      "stop", "Stop a VM: the ACPI power button, forced after --timeout seconds");
  stop->add_option("name", stop_arguments->name, "The VM")->required();
  stop->add_flag("--force", stop_arguments->force, "Stop at once, without asking the guest");
  stop->add_option("--timeout", stop_arguments->timeout, "Seconds for the guest to power off")
      ->capture_default_str();
  stop->callback([options, stop_arguments] {
    nlohmann::json body{{"force", stop_arguments->force}, {"timeout", stop_arguments->timeout}};
    auto result =
        call(*options, "stop", "POST", fmt::format("/v1/vms/{}/stop", stop_arguments->name), body);
    if (options->json) return print_json(result);
    fmt::print("stopped {} ({})\n", stop_arguments->name, result.value("how", ""));
  });

  struct AttachArguments {
    std::string name;
    std::string disk;
    std::string net;
  };
  auto attach_arguments = std::make_shared<AttachArguments>();
  auto* attach = vm->add_subcommand(
      "attach", "Add a disk or network card; a running guest gets it at once (PCI hotplug)");
  attach->add_option("name", attach_arguments->name, "The VM")->required();
  auto* attach_disk = attach->add_option("--disk", attach_arguments->disk,
                                         "PATH[,readonly][,serial=S]: a disk image");
  auto* attach_net =
      attach->add_option("--net", attach_arguments->net, "switch:NAME[,mac=M] or tap:IFNAME");
  attach_disk->excludes(attach_net);
  attach->callback([options, attach_arguments] {
    if (attach_arguments->disk.empty() == attach_arguments->net.empty()) {
      fail_verb("attach", "give one of --disk or --net", 2);
    }
    const nlohmann::json body = attach_arguments->disk.empty()
                                    ? nlohmann::json{{"net", attach_arguments->net}}
                                    : nlohmann::json{{"disk", absolute_spec(attach_arguments->disk)}};
    auto result = call(*options, "attach", "POST",
                       fmt::format("/v1/vms/{}/devices", attach_arguments->name), body);
    if (options->json) return print_json(result);
    fmt::print("attached {} to {}\n", result.value("attached", ""), attach_arguments->name);
  });

  struct SetArguments {
    std::string name;
    std::optional<uint32_t> cpus;
    std::string memory;
  };
  auto set_arguments = std::make_shared<SetArguments>();
  auto* set = vm->add_subcommand(
      "set", "Change a VM's vCPUs and memory: live when it runs (up to its max), stored when stopped");
  set->add_option("name", set_arguments->name, "The VM")->required();
  set->add_option("--cpus", set_arguments->cpus, "vCPUs present (1 to the VM's max)");
  set->add_option("--memory", set_arguments->memory,
                  "Guest RAM (up to the VM's max; a running guest plugs it through virtio-mem)");
  set->callback([options, set_arguments] {
    nlohmann::json body = nlohmann::json::object();
    if (set_arguments->cpus) body["cpus"] = *set_arguments->cpus;
    if (!set_arguments->memory.empty()) body["memory"] = set_arguments->memory;
    if (body.empty()) fail_verb("set", "give --cpus and/or --memory", 2);
    auto result = call(*options, "set", "POST",
                       fmt::format("/v1/vms/{}/resize", set_arguments->name), body);
    if (options->json) return print_json(result);
    const auto definition = result.value("definition", nlohmann::json::object());
    fmt::print("{} has {} vCPUs and {} of memory\n", set_arguments->name,
               definition.value("cpus", 1),
               definition.value("memory_target", definition.value("memory", "512M")));
  });

  struct DetachArguments {
    std::string name;
    std::string device;
    unsigned timeout = 10;
  };
  auto detach_arguments = std::make_shared<DetachArguments>();
  auto* detach = vm->add_subcommand(
      "detach", "Remove a disk or network card; a running guest is asked to release it first");
  detach->add_option("name", detach_arguments->name, "The VM")->required();
  detach->add_option("device", detach_arguments->device,
                     "Its id from `lamina vm show` (disk1, net0) or a disk's path")
      ->required();
  detach->add_option("--timeout", detach_arguments->timeout,
                     "Seconds for the guest to release it")
      ->check(CLI::Range(1, 120))
      ->capture_default_str();
  detach->callback([options, detach_arguments] {
    std::string device = detach_arguments->device;
    // A path goes by its id: the API's path segment cannot hold one.
    if (device.find('/') != std::string::npos) {
      auto described = call(*options, "detach", "GET", "/v1/vms/" + detach_arguments->name);
      const std::string wanted = absolute(device);
      std::string id;
      for (const auto& entry : described.value("devices", nlohmann::json::array())) {
        const std::string spec = entry.value("spec", "");
        if (entry.value("kind", "") == "disk" && spec.substr(0, spec.find(',')) == wanted) {
          id = entry.value("id", "");
        }
      }
      if (id.empty()) {
        fail_verb("detach", fmt::format("{} has no disk {}", detach_arguments->name, wanted));
      }
      device = id;
    }
    auto result = call(*options, "detach", "DELETE",
                       fmt::format("/v1/vms/{}/devices/{}?timeout={}", detach_arguments->name,
                                   device, detach_arguments->timeout));
    if (options->json) return print_json(result);
    fmt::print("detached {} from {}\n", result.value("detached", ""), detach_arguments->name);
  });

  struct DeleteArguments {
    std::string name;
    bool with_disks = false;
  };
  auto delete_arguments = std::make_shared<DeleteArguments>();
  auto* remove = vm->add_subcommand("delete", "Delete a stopped VM");
  remove->add_option("name", delete_arguments->name, "The VM")->required();
  remove->add_flag("--with-disks", delete_arguments->with_disks,
                   "Also delete the disk images it names");
  remove->callback([options, delete_arguments] {
    auto result = call(*options, "delete", "DELETE",
                       fmt::format("/v1/vms/{}{}", delete_arguments->name,
                                   delete_arguments->with_disks ? "?with_disks=true" : ""));
    if (options->json) return print_json(result);
    fmt::print("deleted {}\n", delete_arguments->name);
  });

  struct EventArguments {
    std::string name;
    bool follow = false;
  };
  auto event_arguments = std::make_shared<EventArguments>();
  auto* events = vm->add_subcommand("events", "State changes with their reasons");
  events->add_option("name", event_arguments->name, "Only this VM's events");
  events->add_flag("--follow,-f", event_arguments->follow, "Keep waiting for new events");
  events->callback([options, event_arguments] {
    const auto print_one = [&](const nlohmann::json& event) {
      if (options->json) {
        fmt::print("{}\n", json_text(event));
      } else {
        print_event(event);
      }
      std::fflush(stdout);
    };
    const std::string only = event_arguments->name.empty() ? "" : "vm=" + event_arguments->name;
    if (!event_arguments->follow) {
      auto result = call(*options, "events", "GET", "/v1/events?" + only);
      for (const auto& event : result.value("events", nlohmann::json::array())) print_one(event);
      return;
    }
    follow_events(*options, "events", only, [&](const nlohmann::json& event) {
      print_one(event);
      return true;
    });
    fail_verb("events", "the event stream ended");
  });

  add_vm_import_command(*vm, options);
  add_vm_checkpoint_commands(*vm, options);
  add_vm_migrate_command(*vm, options);

  auto console_options = std::make_shared<ConsoleAttachOptions>();
  auto* console = vm->add_subcommand(
      "console", "Attach to a running VM's serial console (Ctrl-A x detaches; the VM runs on)");
  console->add_option("name", console_options->vm, "The VM")->required();
  console->add_flag("--read-only", console_options->read_only,
                    "Watch only (any number of readers; one client at a time may type)");
  console->add_option("--send", console_options->send,
                      "Type this line (and Enter) into the console and detach at once, for scripts; "
                      "fails while another client holds the input")
      ->excludes("--read-only");
  console->callback([options, console_options] {
    console_options->connect = options->connect;
    if (auto attached = attach_console(*console_options); !attached) {
      fail_verb("console", attached.error().message());
    }
  });

  auto vnc_options = std::make_shared<VncRelayOptions>();
  auto* vnc = vm->add_subcommand(
      "vnc", "Show a running VM's screen to VNC viewers here, through laminad's relay (over the "
             "API's TLS and token to a remote laminad); the VM's VNC password still applies");
  vnc->add_option("name", vnc_options->vm, "The VM (its definition has a --display vnc:...)")
      ->required();
  vnc->add_option("--listen", vnc_options->listen,
                  "Where viewers connect: HOST:PORT (port 0 picks one, printed) or unix:PATH")
      ->capture_default_str();
  vnc->add_flag("--once", vnc_options->once, "End after the first viewer's session");
  vnc->callback([options, vnc_options] {
    vnc_options->connect = options->connect;
    if (auto relayed = relay_vnc(*vnc_options); !relayed) fail_verb("vnc", relayed.error().message());
  });
}

}  // namespace lamina::cli
