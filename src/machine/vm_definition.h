#pragma once
// A VM definition as JSON: what laminad stores, serves in its API and hands a worker, with the
// same vocabulary as `lamina run`'s options:
//   {"cpus": 2, "max_cpus": 4, "memory": "1G" (or "1G,max=4G"), "memory_target": "2G", "kernel": PATH, "initrd": PATH, "cmdline": "...",
//    "disks": ["PATH[,readonly][,serial=S][,bus=virtio|sata]", ...], "cdrom": ISO,
//    "boot": "disk|cdrom|order=...", "nets": ["switch:NAME[,mac=M]", ...],
//    "serial": "none|file:PATH", "console_port": "none|file:PATH|socket:PATH",
//    "rng": "host|none", "accel": "emu|kvm|auto", "cpu_engine": "jit|interp",
//    "cpu_model": "lamina|lamina-kvm|host",
//    "code_cache": "64M", "on_reboot": "exit|restart"}
// Every field is optional (the defaults are `lamina run`'s). Unknown fields, wrong types and
// bad values are refused with an error naming the field.
//
// Stateless functions; safe from any thread.

#include <span>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "machine/vm_config.h"

namespace lamina::machine {

// Parses and validates (machine::validate: ranges, files that exist, distinct MACs) a
// definition. A VM without a terminal cannot use stdio, so "stdio" is refused for serial and
// console_port. A worker passes HostChecks::kNone: laminad checked the host side.
Result<VmConfig> vm_config_from_definition(const nlohmann::json& definition,
                                           HostChecks checks = HostChecks::kHost);

// The field names a definition may have, in the order the API documents them.
std::span<const std::string_view> vm_definition_fields();

}  // namespace lamina::machine
