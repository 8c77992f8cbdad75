#pragma once
// Asking running switch daemons what they are doing (`lamina switch list` and `show`): a
// "query" hello on NAME.sock, answered with the SwitchStatus (switch_protocol.h). Never starts
// a daemon. Free functions, no state.

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "net/switch_protocol.h"

namespace lamina::net {

// The status of switch `name`. kNotFound when no daemon serves it; kIo/kCorrupt when it did
// not answer properly within `timeout`.
[[nodiscard]] Result<SwitchStatus> query_switch(
    std::string_view name, std::chrono::milliseconds timeout = std::chrono::seconds(2));

// Every switch of this user with a running daemon, sorted by name (sockets of dead daemons are
// skipped). An empty list when the switch folder does not exist yet.
[[nodiscard]] Result<std::vector<SwitchStatus>> list_switches(
    std::chrono::milliseconds timeout = std::chrono::seconds(2));

}  // namespace lamina::net
