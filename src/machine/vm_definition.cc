#include "machine/vm_definition.h"

#include <array>
#include <algorithm>

#include <fmt/format.h>

#include "base/size.h"
#include "virtio/virtio_block_setup.h"

namespace lamina::machine {
namespace {

constexpr std::array<std::string_view, 23> kFields = {
    "vga",     "display",  "tablet",
    "cpus",    "max_cpus", "memory",  "memory_target", "firmware",     "kernel",
    "initrd",  "cmdline",  "disks",   "cdrom",         "boot",         "nets",
    "serial",  "console_port", "rng", "accel",         "cpu_engine",   "code_cache",
    "on_reboot", "cpu_model"};

Error field_error(std::string_view field, std::string_view what) {
  return Error(ErrorCode::kInvalidArgument, fmt::format("{}: {}", field, what));
}

Result<std::string> string_field(const nlohmann::json& definition, std::string_view field) {
  const auto& value = definition.at(std::string(field));
  if (!value.is_string()) return fail(field_error(field, "must be a string"));
  return value.get<std::string>();
}

Result<std::vector<std::string>> string_list(const nlohmann::json& definition,
                                             std::string_view field) {
  const auto& value = definition.at(std::string(field));
  if (!value.is_array()) return fail(field_error(field, "must be an array of strings"));
  std::vector<std::string> list;
  for (const auto& entry : value) {
    if (!entry.is_string()) return fail(field_error(field, "must be an array of strings"));
    list.push_back(entry.get<std::string>());
  }
  return list;
}

// Applies one field of the definition to the config.
Result<void> apply_field(VmConfig& config, const nlohmann::json& definition,
                         std::string_view field) {
  if (field == "cpus") {
    const auto& value = definition.at("cpus");
    if (!value.is_number_unsigned() || value.get<uint64_t>() < 1 ||
        value.get<uint64_t>() > kMaxCpus) {
      return fail(field_error(field, fmt::format("must be a whole number from 1 to {}", kMaxCpus)));
    }
    config.cpus = value.get<uint32_t>();
    return {};
  }
  if (field == "max_cpus") {
    const auto& value = definition.at("max_cpus");
    if (!value.is_number_unsigned() || value.get<uint64_t>() > kMaxCpus) {
      return fail(field_error(field, fmt::format("must be a whole number up to {}", kMaxCpus)));
    }
    config.max_cpus = value.get<uint32_t>();
    return {};
  }
  if (field == "disks") {
    auto list = string_list(definition, field);
    if (!list) return fail(list.error());
    for (const std::string& text : *list) {
      auto disk = virtio::parse_disk_spec(text);
      if (!disk) return fail(disk.error());
      add_disk(config, std::move(*disk));
    }
    return {};
  }
  if (field == "nets") {
    auto list = string_list(definition, field);
    if (!list) return fail(list.error());
    for (const std::string& text : *list) {
      auto network = parse_network(text);
      if (!network) return fail(network.error());
      config.networks.push_back(*network);
    }
    return {};
  }
  auto text = string_field(definition, field);
  if (!text) return fail(text.error());
  if (field == "memory_target") {
    auto bytes = parse_size(*text);
    if (!bytes) return fail(bytes.error().with_context("memory_target"));
    config.memory_target_bytes = *bytes;
  } else if (field == "memory") {
    auto size = parse_memory(*text);
    if (!size) return fail(size.error());
    config.memory_bytes = size->bytes;
    config.max_memory_bytes = size->max_bytes;
  } else if (field == "firmware") {
    auto firmware = parse_firmware(*text);
    if (!firmware) return fail(firmware.error());
    config.firmware = *firmware;
  } else if (field == "cdrom") {
    if (!text->empty()) config.cdrom = *text;
  } else if (field == "boot") {
    auto boot = parse_boot(*text);
    if (!boot) return fail(boot.error());
    config.boot = std::move(*boot);
  } else if (field == "vga") {
    auto vga = parse_vga(*text);
    if (!vga) return fail(vga.error());
    config.vga = *vga;
  } else if (field == "tablet") {
    auto tablet = parse_tablet(*text);
    if (!tablet) return fail(tablet.error());
    config.tablet = *tablet;
  } else if (field == "display") {
    auto display = parse_display(*text);
    if (!display) return fail(display.error());
    config.display = *display;
  } else if (field == "kernel") {
    if (!text->empty()) config.kernel = *text;
  } else if (field == "initrd") {
    if (!text->empty()) config.initrd = *text;
  } else if (field == "cmdline") {
    config.cmdline = *text;
  } else if (field == "serial") {
    auto serial = parse_serial(*text);
    if (!serial) return fail(serial.error());
    if (serial->kind == SerialKind::kStdio) {
      return fail(field_error(field, "a managed VM has no terminal: use none or file:PATH"));
    }
    config.serial = *serial;
  } else if (field == "console_port") {
    auto port = parse_console_port(*text);
    if (!port) return fail(port.error());
    if (port->kind == ConsolePortKind::kStdio) {
      return fail(field_error(field, "a managed VM has no terminal: use none, file: or socket:"));
    }
    config.console_port = *port;
  } else if (field == "rng") {
    auto rng = parse_rng(*text);
    if (!rng) return fail(rng.error());
    config.rng = *rng;
  } else if (field == "accel") {
    auto accel = parse_accel(*text);
    if (!accel) return fail(accel.error());
    config.accel = *accel;
  } else if (field == "cpu_engine") {
    auto engine = parse_cpu_engine(*text);
    if (!engine) return fail(engine.error());
    config.cpu_engine = *engine;
  } else if (field == "cpu_model") {
    auto model = parse_cpu_model(*text);
    if (!model) return fail(model.error());
    config.cpu_model = *model;
  } else if (field == "code_cache") {
    auto bytes = parse_code_cache(*text);
    if (!bytes) return fail(bytes.error());
    config.code_cache_bytes = *bytes;
  } else if (field == "on_reboot") {
    auto action = parse_reboot_action(*text);
    if (!action) return fail(action.error());
    config.on_reboot = *action;
  }
  return {};
}

}  // namespace

std::span<const std::string_view> vm_definition_fields() { return kFields; }

Result<VmConfig> vm_config_from_definition(const nlohmann::json& definition, HostChecks checks) {
  if (!definition.is_object()) {
    return fail(ErrorCode::kInvalidArgument, "the definition must be a JSON object");
  }
  for (const auto& [key, value] : definition.items()) {
    if (std::find(kFields.begin(), kFields.end(), key) == kFields.end()) {
      return fail(field_error(key, "unknown field"));
    }
  }
  VmConfig config;
  // Without a terminal the default is no serial output at all (laminad names a log file).
  config.serial.kind = SerialKind::kNone;
  for (std::string_view field : kFields) {
    if (!definition.contains(std::string(field))) continue;
    if (auto applied = apply_field(config, definition, field); !applied) {
      return fail(applied.error());
    }
  }
  if (auto valid = validate(config, checks); !valid) return fail(valid.error());
  return config;
}

}  // namespace lamina::machine
