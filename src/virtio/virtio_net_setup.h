#pragma once
// From a user's `--net` values to VirtioNet devices: parses `switch:NAME[,mac=M]` and
// `tap:IFNAME[,mac=M]` (net/network_option.h), checks the list before anything starts, and
// opens the backends. What `lamina run --net` calls once per NIC.
//
// Thread-safety: free functions on values.

#include <memory>
#include <span>
#include <string_view>

#include "base/error.h"
#include "net/network_option.h"
#include "net/switch_port.h"
#include "virtio/virtio_net.h"

namespace lamina::virtio {

// Two NICs of one VM with one MAC address, or one tap interface twice (a tap has one queue,
// so the second open would fail later), are refused naming the --net values.
[[nodiscard]] Result<void> validate_networks(std::span<const net::NetworkOption> networks);

// Opens the backend (a switch starts its daemon when none runs, as `switch_options` says) and
// makes the device with the option's MAC address. `switch_options.label` should name the VM,
// since `lamina switch show` lists ports by it.
[[nodiscard]] Result<std::unique_ptr<VirtioNet>> open_virtio_net(
    const net::NetworkOption& network, const net::SwitchConnectOptions& switch_options);

}  // namespace lamina::virtio
