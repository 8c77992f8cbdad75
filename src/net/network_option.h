#pragma once
// The `--net` option of `lamina run`: which backend a VM's network card is plugged into.
//   switch:NAME[,mac=52:54:00:12:34:56][,mac-spoofing=on|off]
//                                         the Lamina virtual switch NAME (switch_port.h)
//   tap:IFNAME[,mac=...]                  the host tap interface IFNAME (tap_port.h)
// Without mac= the card gets a random locally administered address. mac-spoofing (switch
// only, off by default) lets the guest send from addresses other than the card's. Free
// functions and a value type.

#include <memory>
#include <string>
#include <string_view>

#include "base/error.h"
#include "base/granted_files.h"
#include "net/frame_port.h"
#include "net/mac_address.h"
#include "net/switch_port.h"

namespace lamina::net {

enum class NetworkBackend { kSwitch, kTap };

struct NetworkOption {
  NetworkBackend backend = NetworkBackend::kSwitch;
  std::string name;           // switch name or interface name
  MacAddress mac;             // the guest card's address
  bool mac_spoofing = false;  // switch only: frames from other source addresses pass
};

// Parses one --net value; kInvalidArgument names what is wrong (unknown backend, bad name,
// bad or group MAC address, unknown key, mac-spoofing on a tap).
[[nodiscard]] Result<NetworkOption> parse_network_option(std::string_view text);

// "switch:NAME" or "tap:NAME", as --net names it (for messages).
std::string describe(const NetworkOption& option);

// Opens the backend the option names. `switch_options` applies to switch backends (its label
// and how to start a daemon). With `granted` the tap or switch connection comes through it
// (base/granted_files.h: laminad connects, a sandboxed worker gets the descriptor).
[[nodiscard]] Result<std::unique_ptr<FramePort>> open_frame_port(
    const NetworkOption& option, const SwitchConnectOptions& switch_options,
    GrantedFiles* granted = nullptr);

}  // namespace lamina::net
