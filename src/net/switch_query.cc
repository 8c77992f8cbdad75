#include "net/switch_query.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/unique_fd.h"
#include "net/switch_paths.h"

namespace lamina::net {

namespace {

// A status larger than this is refused rather than buffered without end.
constexpr size_t kMaxStatusSize = size_t{64} << 20;

}  // namespace

Result<SwitchStatus> query_switch(std::string_view name, std::chrono::milliseconds timeout) {
  auto paths = switch_paths(name, /*create=*/false);
  if (!paths) {
    if (paths.error().code() == ErrorCode::kNotFound) {
      return fail(ErrorCode::kNotFound, fmt::format("switch {} is not running", name));
    }
    return fail(paths.error());
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) return fail(ErrorCode::kIo, fmt::format("socket: {}", std::strerror(errno)));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, paths->socket.c_str(), paths->socket.native().size() + 1);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    if (errno == ENOENT || errno == ECONNREFUSED) {
      return fail(ErrorCode::kNotFound, fmt::format("switch {} is not running", name));
    }
    return fail(ErrorCode::kIo, fmt::format("switch {}: cannot connect to {}: {}", name,
                                            paths->socket.string(), std::strerror(errno)));
  }
  SwitchHello query;
  query.role = SwitchRole::kQuery;
  std::string hello = encode_hello(query);
  if (::send(fd.get(), hello.data(), hello.size(), MSG_NOSIGNAL) < 0) {
    return fail(ErrorCode::kNotFound, fmt::format("switch {} is not running", name));
  }
  std::string text;
  std::vector<char> chunk(kQueryChunkSize);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd polled{fd.get(), POLLIN, 0};
    int ready = left.count() > 0 ? ::poll(&polled, 1, static_cast<int>(left.count())) : 0;
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      return fail(ErrorCode::kIo,
                  fmt::format("switch {} did not answer within {} ms", name, timeout.count()));
    }
    ssize_t length = ::recv(fd.get(), chunk.data(), chunk.size(), MSG_DONTWAIT);
    if (length < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    // A daemon that was exiting as we asked resets the connection.
    if (length < 0 && errno == ECONNRESET) {
      return fail(ErrorCode::kNotFound, fmt::format("switch {} is not running", name));
    }
    if (length < 0) {
      return fail(ErrorCode::kIo, fmt::format("switch {}: {}", name, std::strerror(errno)));
    }
    if (length == 0) break;
    text.append(chunk.data(), static_cast<size_t>(length));
    if (text.size() > kMaxStatusSize) {
      return fail(ErrorCode::kCorrupt, fmt::format("switch {} sent an oversized status", name));
    }
  }
  if (text.empty())
    return fail(ErrorCode::kNotFound, fmt::format("switch {} is not running", name));
  auto status = decode_status(text);
  if (!status) return fail(status.error().with_context(fmt::format("switch {}", name)));
  return status;
}

Result<std::vector<SwitchStatus>> list_switches(std::chrono::milliseconds timeout) {
  std::vector<SwitchStatus> switches;
  auto directory = switch_directory(/*create=*/false);
  if (!directory) {
    if (directory.error().code() == ErrorCode::kNotFound) return switches;
    return fail(directory.error());
  }
  std::error_code error;
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(*directory, error)) {
    const auto& path = entry.path();
    if (path.extension() != ".sock") continue;
    std::string name = path.stem().string();
    if (validate_switch_name(name)) names.push_back(std::move(name));
  }
  if (error) {
    return fail(ErrorCode::kIo,
                fmt::format("cannot list {}: {}", directory->string(), error.message()));
  }
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    auto status = query_switch(name, timeout);
    // A socket without a daemon is a leftover of one that was killed; not a running switch.
    if (!status && status.error().code() == ErrorCode::kNotFound) continue;
    if (!status) return fail(status.error());
    switches.push_back(std::move(*status));
  }
  return switches;
}

}  // namespace lamina::net
