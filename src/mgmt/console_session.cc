#include "mgmt/console_session.h"

#include <deque>
#include <functional>
#include <memory>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>

namespace lamina::mgmt {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using Local = asio::local::stream_protocol;

// The session's state, all touched on its own io_context thread only.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(asio::io_context& io, Local::socket socket, ApiRouter::ConsoleRequest console)
      : io_(io), ws_(std::move(socket)), console_(std::move(console)) {}

  void start(const beast::http::request<beast::http::string_body>& request) {
    beast::error_code error;
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
    auto self = shared_from_this();
    auto subscription = console_.hub->subscribe([self](std::string_view bytes, bool closed) {
      asio::post(self->io_, [self, data = std::string(bytes), closed] {
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
    while (queued_bytes_ > kMaxQueuedBytes && outgoing_.size() > 1) {
      queued_bytes_ -= outgoing_.front().size();
      outgoing_.pop_front();
    }
  }

  void pump() {
    if (writing_ || done_) return;
    if (outgoing_.empty()) {
      if (vm_closed_) {
        done_ = true;
        ws_.async_close({websocket::close_code::normal, "the VM stopped"},
                        [self = shared_from_this()](beast::error_code) { self->io_.stop(); });
      }
      return;
    }
    writing_ = true;
    ws_.async_write(asio::buffer(outgoing_.front()),
                    [self = shared_from_this()](beast::error_code error, size_t) {
                      self->writing_ = false;
                      self->queued_bytes_ -= self->outgoing_.front().size();
                      self->outgoing_.pop_front();
                      if (error) return self->io_.stop();
                      self->pump();
                    });
  }

  void read() {
    ws_.async_read(input_, [self = shared_from_this()](beast::error_code error, size_t) {
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

  asio::io_context& io_;
  websocket::stream<Local::socket> ws_;
  ApiRouter::ConsoleRequest console_;
  std::optional<uint64_t> writer_;
  std::optional<uint64_t> subscription_;
  std::deque<std::string> outgoing_;
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool vm_closed_ = false;
  bool done_ = false;
  beast::flat_buffer input_;
};

}  // namespace

void serve_console_session(Local::socket socket,
                           const beast::http::request<beast::http::string_body>& request,
                           ApiRouter::ConsoleRequest console) {
  asio::io_context io;
  // The accepted socket belongs to the acceptor's context; the session runs its own.
  const int fd = socket.release();
  auto session = std::make_shared<Session>(io, Local::socket(io, Local(), fd), std::move(console));
  session->start(request);
  io.run();
  session->finish();
}

}  // namespace lamina::mgmt
