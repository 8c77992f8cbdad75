#pragma once
// The API's disks and virtual switches, beside the VMs: creating and inspecting images with
// the `lamina disk` code (storage/), and the switches running on this host with their ports
// and counters (net/switch_query). Paths must be absolute (laminad resolves nothing against
// its own working folder); image references follow the storage reference policy.
//
// Stateless functions; thread-safe.

#include <nlohmann/json.hpp>

#include "mgmt/vm_service.h"

namespace lamina::mgmt {

// body: {"path": P, "size": "10G", "format": "vhdx|vhd|raw", "type": "dynamic|fixed"} or
// {"path": P, "parent": PARENT} (a differencing disk in the parent's format). Never replaces a
// file: an existing path is 409.
ServiceResult<nlohmann::json> create_disk(const nlohmann::json& body);
// path: absolute; force_share reads an image another process holds for writing.
ServiceResult<nlohmann::json> inspect_disk(const std::string& path, bool force_share);

ServiceResult<nlohmann::json> list_switches();
ServiceResult<nlohmann::json> get_switch(const std::string& name);

}  // namespace lamina::mgmt
