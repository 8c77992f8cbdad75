#pragma once
// One console WebSocket client (GET /v1/vms/NAME/console with an Upgrade), over any stream
// (laminad's Unix socket, or TLS on TCP): it gets the recent output, then everything the guest
// prints, as binary messages; a client that asked for mode=rw (the default) and holds the hub's
// writer token sends input as messages. A second writer is refused with close code 1008 and a
// reason. Output for a slow client is queued up to kMaxQueuedBytes, then the oldest is dropped.
//
// Runs on the connection's thread and its own io_context until either side closes.

#include <deque>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "mgmt/api_router.h"

namespace lamina::mgmt {

inline constexpr size_t kMaxQueuedBytes = 1 << 20;

// Stream: the connection, bound to `io`. All the session's work runs in io.run().
template <typename Stream>
class ConsoleSession : public std::enable_shared_from_this<ConsoleSession<Stream>> {
 public:
  ConsoleSession(boost::asio::io_context& io, Stream& stream, ApiRouter::ConsoleRequest console)
      : io_(io), ws_(stream), console_(std::move(console)) {}

  void start(const boost::beast::http::request<boost::beast::http::string_body>& request) {
    namespace websocket = boost::beast::websocket;
    boost::beast::error_code error;
    ws_.accept(request, error);
    if (error) return;
    ws_.binary(true);
    if (console_.write) {
      writer_ = console_.hub->claim_writer();
      if (!writer_) {
        ws_.close({websocket::close_code::policy_error,
                   "another client holds the console's input; attach with mode=ro to watch"},
                  error);
        return;
      }
    }
    auto self = this->shared_from_this();
    auto subscription = console_.hub->subscribe([self](std::string_view bytes, bool closed) {
      boost::asio::post(self->io_, [self, data = std::string(bytes), closed] {
        if (!data.empty()) self->queue(data);
        if (closed) self->vm_closed_ = true;
        self->pump();
      });
    });
    subscription_ = subscription.id;
    if (!subscription.backlog.empty()) queue(subscription.backlog);
    vm_closed_ = subscription.closed;
    pump();
    read();
  }

  void finish() {
    if (subscription_) console_.hub->unsubscribe(*subscription_);
    if (writer_) console_.hub->release_writer(*writer_);
  }

 private:
  void queue(const std::string& data) {
    queued_bytes_ += data.size();
    outgoing_.push_back(data);
    // The one in flight (front) stays; the oldest waiting ones go.
    while (queued_bytes_ > kMaxQueuedBytes && outgoing_.size() > 2) {
      queued_bytes_ -= outgoing_[1].size();
      outgoing_.erase(outgoing_.begin() + 1);
    }
  }

  void pump() {
    namespace websocket = boost::beast::websocket;
    if (writing_ || done_) return;
    if (outgoing_.empty()) {
      if (vm_closed_) {
        done_ = true;
        ws_.async_close({websocket::close_code::normal, "the VM stopped"},
                        [self = this->shared_from_this()](boost::beast::error_code) {
                          self->io_.stop();
                        });
      }
      return;
    }
    writing_ = true;
    ws_.async_write(boost::asio::buffer(outgoing_.front()),
                    [self = this->shared_from_this()](boost::beast::error_code error, size_t) {
                      self->writing_ = false;
                      self->queued_bytes_ -= self->outgoing_.front().size();
                      self->outgoing_.pop_front();
                      if (error) return self->io_.stop();
                      self->pump();
                    });
  }

  void read() {
    ws_.async_read(input_, [self = this->shared_from_this()](boost::beast::error_code error,
                                                             size_t) {
      if (error) return self->io_.stop();
      if (self->writer_) {
        const auto data = self->input_.cdata();
        (void)self->console_.hub->write_input(
            *self->writer_, std::string_view(static_cast<const char*>(data.data()), data.size()));
      }
      self->input_.consume(self->input_.size());
      self->read();
    });
  }

  boost::asio::io_context& io_;
  boost::beast::websocket::stream<Stream&> ws_;
  ApiRouter::ConsoleRequest console_;
  std::optional<uint64_t> writer_;
  std::optional<uint64_t> subscription_;
  std::deque<std::string> outgoing_;
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool vm_closed_ = false;
  bool done_ = false;
  boost::beast::flat_buffer input_;
};

template <typename Stream>
void serve_console_session(boost::asio::io_context& io, Stream& stream,
                           const boost::beast::http::request<boost::beast::http::string_body>& request,
                           ApiRouter::ConsoleRequest console) {
  auto session = std::make_shared<ConsoleSession<Stream>>(io, stream, std::move(console));
  session->start(request);
  io.run();
  session->finish();
}

}  // namespace lamina::mgmt
