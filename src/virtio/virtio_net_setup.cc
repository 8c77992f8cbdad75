#include "virtio/virtio_net_setup.h"

#include <fmt/format.h>

namespace lamina::virtio {

Result<void> validate_networks(std::span<const net::NetworkOption> networks) {
  for (size_t i = 0; i < networks.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (networks[i].mac == networks[j].mac) {
        return fail(
            ErrorCode::kInvalidArgument,
            fmt::format("--net {} and --net {} have the same MAC address {}; give each "
                        "NIC its own mac=",
                        net::describe(networks[j]), net::describe(networks[i]), networks[i].mac.to_string()));
      }
      if (networks[i].backend == net::NetworkBackend::kTap &&
          networks[j].backend == net::NetworkBackend::kTap &&
          networks[i].name == networks[j].name) {
        return fail(ErrorCode::kInvalidArgument,
                    fmt::format("--net tap:{} is given twice; a tap interface serves one NIC",
                                networks[i].name));
      }
    }
  }
  return {};
}

Result<std::unique_ptr<VirtioNet>> open_virtio_net(
    const net::NetworkOption& network, const net::SwitchConnectOptions& switch_options) {
  auto port = net::open_frame_port(network, switch_options);
  if (!port) return fail(port.error().with_context(fmt::format("--net {}", net::describe(network))));
  return VirtioNet::create(std::move(*port), network.mac);
}

}  // namespace lamina::virtio
