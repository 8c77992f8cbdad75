#include "base/message_channel.h"
#include "base/json_text.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace lamina {

Result<std::pair<MessageChannel, MessageChannel>> MessageChannel::make_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) {
    return fail(ErrorCode::kIo, fmt::format("socketpair: {}", std::strerror(errno)));
  }
  return std::pair{MessageChannel(UniqueFd(fds[0])), MessageChannel(UniqueFd(fds[1]))};
}

Result<void> MessageChannel::send(const nlohmann::json& message, std::span<const int> fds) {
  const std::string text = json_text(message);
  if (text.size() > kMaxMessageBytes || fds.size() > kMaxFds) {
    return fail(
        ErrorCode::kInvalidArgument,
        fmt::format("control message too large ({} bytes, {} fds)", text.size(), fds.size()));
  }
  iovec vector{const_cast<char*>(text.data()), text.size()};
  msghdr header{};
  header.msg_iov = &vector;
  header.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  if (!fds.empty()) {
    header.msg_control = control;
    header.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* entry = CMSG_FIRSTHDR(&header);
    entry->cmsg_level = SOL_SOCKET;
    entry->cmsg_type = SCM_RIGHTS;
    entry->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(entry), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    if (::sendmsg(socket_.get(), &header, MSG_NOSIGNAL) >= 0) return {};
    if (errno != EINTR) {
      return fail(ErrorCode::kIo, fmt::format("control channel: {}", std::strerror(errno)));
    }
  }
}

Result<std::optional<MessageChannel::Received>> MessageChannel::receive(
    std::optional<std::chrono::milliseconds> timeout) {
  if (timeout) {
    pollfd waiting{socket_.get(), POLLIN, 0};
    int ready;
    do {
      ready = ::poll(&waiting, 1, static_cast<int>(timeout->count()));
    } while (ready < 0 && errno == EINTR);
    if (ready == 0) return std::nullopt;
  }
  // One byte more than the limit tells an oversized message from one of exactly the limit.
  std::string text(kMaxMessageBytes + 1, '\0');
  iovec vector{text.data(), text.size()};
  msghdr header{};
  header.msg_iov = &vector;
  header.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  header.msg_control = control;
  header.msg_controllen = sizeof(control);
  ssize_t got;
  do {
    got = ::recvmsg(socket_.get(), &header, MSG_CMSG_CLOEXEC);
  } while (got < 0 && errno == EINTR);
  if (got < 0) {
    if (errno == ECONNRESET) return std::nullopt;
    return fail(ErrorCode::kIo, fmt::format("control channel: {}", std::strerror(errno)));
  }
  // Take ownership of every fd first, so a bad message leaks none.
  Received received;
  for (cmsghdr* entry = CMSG_FIRSTHDR(&header); entry; entry = CMSG_NXTHDR(&header, entry)) {
    if (entry->cmsg_level != SOL_SOCKET || entry->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (entry->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(entry) + i * sizeof(int), sizeof(int));
      received.fds.emplace_back(fd);
    }
  }
  if (got == 0 && received.fds.empty()) return std::nullopt;  // orderly close
  if ((header.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 ||
      static_cast<size_t>(got) > kMaxMessageBytes) {
    return fail(ErrorCode::kCorrupt, "control channel: message too large");
  }
  text.resize(static_cast<size_t>(got));
  received.message = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!received.message.is_object()) {
    return fail(ErrorCode::kCorrupt, "control channel: a message is not a JSON object");
  }
  return received;
}

}  // namespace lamina
