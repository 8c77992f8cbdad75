#pragma once
// One console WebSocket client (GET /v1/vms/NAME/console with an Upgrade): it gets the recent
// output, then everything the guest prints, as binary messages; a client that asked for
// mode=rw (the default) and holds the hub's writer token sends input as messages. A second
// writer is refused with close code 1008 and a reason. Output for a slow client is queued up
// to kMaxQueuedBytes, then the oldest is dropped.
//
// Runs on the connection's thread until either side closes. Stateless function.

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/http.hpp>

#include "mgmt/api_router.h"

namespace lamina::mgmt {

inline constexpr size_t kMaxQueuedBytes = 1 << 20;

void serve_console_session(boost::asio::local::stream_protocol::socket socket,
                           const boost::beast::http::request<boost::beast::http::string_body>& request,
                           ApiRouter::ConsoleRequest console);

}  // namespace lamina::mgmt
