#pragma once
// grant_host_ends: what laminad opens for one VM's sandboxed worker, which can open no host
// path itself. It opens, under the user's rights and the image reference policy, exactly what
// the worker's VmRunner::open will ask for — the kernel and initrd (the default guest's when
// the definition names none), the serial and console-port outputs or sockets, every disk image
// with its parents, backing files and extents (locks taken), each tap and switch port — and
// records them in a GrantedFiles whose descriptors travel with the start request. The worker
// then opens the same config through the grants, so the two sides run one opening code.
//
// Stateless; the returned grants own their descriptors.

#include <string_view>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/granted_files.h"
#include "machine/vm_config.h"
#include "net/switch_port.h"

namespace lamina::machine {

struct WorkerGrants {
  // The definition the worker gets: the stored one with its boot files named.
  nlohmann::json definition;
  // The same, parsed (checked against the host before anything was opened).
  VmConfig config;
  GrantedFiles files;
};

// Errors are the definition's (checked against the host) or the opens', naming the option.
// `label` names the VM to its switches; `switch_options` says how to start a switch daemon.
Result<WorkerGrants> grant_host_ends(const nlohmann::json& definition, std::string_view label,
                                     const net::SwitchConnectOptions& switch_options);

// What laminad opens for one device hot-plugged into a running worker: a disk image (with
// its chain and lock) or a network port, the way grant_host_ends opens those of a whole VM.
// `device` holds that one disk or card (and nothing else).
Result<GrantedFiles> grant_device(const VmConfig& device, std::string_view label,
                                  const net::SwitchConnectOptions& switch_options);

}  // namespace lamina::machine
