#include "mgmt/console_hub.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "base/wakeup_event.h"

namespace lamina::mgmt {
namespace {

// How long input waits for room in the socket before it is refused (a guest that reads no
// input must not hold a client's request).
constexpr int kInputWaitMilliseconds = 2000;

}  // namespace

Result<std::shared_ptr<ConsoleHub>> ConsoleHub::start(UniqueFd socket,
                                                      const std::filesystem::path& log,
                                                      bool append) {
  UniqueFd file(::open(log.c_str(),
                       O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (append ? O_APPEND : O_TRUNC),
                       0600));
  if (!file) {
    return fail(ErrorCode::kIo, fmt::format("{}: {}", log.string(), std::strerror(errno)));
  }
  std::shared_ptr<ConsoleHub> hub(new ConsoleHub(std::move(socket), std::move(file)));
  struct stat status {};
  if (::fstat(hub->log_.get(), &status) == 0) hub->log_bytes_ = static_cast<uint64_t>(status.st_size);
  hub->reader_ = std::jthread([raw = hub.get()](std::stop_token stop) { raw->read_output(stop); });
  return hub;
}

ConsoleHub::ConsoleHub(UniqueFd socket, UniqueFd log)
    : socket_(std::move(socket)), log_(std::move(log)) {}

ConsoleHub::~ConsoleHub() {
  if (reader_.joinable()) {
    reader_.request_stop();
    reader_.join();
  }
}

void ConsoleHub::record(std::string_view bytes) {
  if (log_bytes_ + bytes.size() > kMaxLogBytes) {
    // Start the file over rather than let a chatty guest fill the host's disk.
    if (::ftruncate(log_.get(), 0) == 0) ::lseek(log_.get(), 0, SEEK_SET);
    log_bytes_ = 0;
  }
  if (::write(log_.get(), bytes.data(), bytes.size()) > 0) log_bytes_ += bytes.size();
}

void ConsoleHub::read_output(std::stop_token stop) {
  std::array<char, 4096> buffer{};
  // A stop request wakes the poll (without an eventfd, a 200 ms timeout notices it).
  auto wakeup = WakeupEvent::create("laminad's console hub");
  std::stop_callback wake_on_stop(stop, [&wakeup] {
    if (wakeup) wakeup->signal();
  });
  while (!stop.stop_requested()) {
    pollfd waiting[2] = {{socket_.get(), POLLIN, 0}, {wakeup ? wakeup->fd() : -1, POLLIN, 0}};
    const int ready = ::poll(waiting, 2, wakeup ? -1 : 200);
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0 || (waiting[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
    const ssize_t count = ::recv(socket_.get(), buffer.data(), buffer.size(), 0);
    if (count < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (count <= 0) break;
    const std::string_view bytes(buffer.data(), static_cast<size_t>(count));
    record(bytes);
    std::lock_guard lock(mutex_);
    backlog_.append(bytes);
    if (backlog_.size() > kBacklogBytes) backlog_.erase(0, backlog_.size() - kBacklogBytes);
    for (auto& [id, listener] : listeners_) listener(bytes, false);
  }
  std::lock_guard lock(mutex_);
  closed_ = true;
  for (auto& [id, listener] : listeners_) listener({}, true);
  listeners_.clear();
}

ConsoleHub::Subscription ConsoleHub::subscribe(Listener listener) {
  std::lock_guard lock(mutex_);
  Subscription subscription{next_id_++, backlog_, closed_};
  if (!closed_) listeners_[subscription.id] = std::move(listener);
  return subscription;
}

void ConsoleHub::unsubscribe(uint64_t id) {
  std::lock_guard lock(mutex_);
  listeners_.erase(id);
}

std::optional<uint64_t> ConsoleHub::claim_writer() {
  std::lock_guard lock(mutex_);
  if (writer_ || closed_) return std::nullopt;
  writer_ = next_id_++;
  return writer_;
}

void ConsoleHub::release_writer(uint64_t token) {
  std::lock_guard lock(mutex_);
  if (writer_ == token) writer_.reset();
}

Result<void> ConsoleHub::write_input(uint64_t token, std::string_view bytes) {
  {
    std::lock_guard lock(mutex_);
    if (writer_ != token) {
      return fail(ErrorCode::kInvalidArgument, "another client holds the console's input");
    }
  }
  std::lock_guard one_writer(input_mutex_);
  while (!bytes.empty()) {
    const ssize_t sent = ::send(socket_.get(), bytes.data(), bytes.size(),
                                MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent > 0) {
      bytes.remove_prefix(static_cast<size_t>(sent));
      continue;
    }
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0 && errno == EAGAIN) {
      pollfd waiting{socket_.get(), POLLOUT, 0};
      if (::poll(&waiting, 1, kInputWaitMilliseconds) > 0) continue;
      return fail(ErrorCode::kIo, "the guest is not reading its console input");
    }
    return fail(ErrorCode::kIo, "the VM's console is closed");
  }
  return {};
}

std::string ConsoleHub::backlog() const {
  std::lock_guard lock(mutex_);
  return backlog_;
}

}  // namespace lamina::mgmt
