#include "net/tap_port.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

namespace lamina::net {

namespace {

Result<void> validate_interface_name(std::string_view name) {
  // IFNAMSIZ includes the terminating NUL; the kernel's dev_valid_name() refuses '/', ':' and
  // white space, and "." and "..".
  bool ok = !name.empty() && name.size() < IFNAMSIZ && name != "." && name != "..";
  for (char c : name) {
    ok = ok && c != '/' && c != ':' && c > ' ' && c < 127;
  }
  if (!ok) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("'{}' is not an interface name: use 1-{} characters without '/', ':' "
                            "or spaces",
                            name, IFNAMSIZ - 1));
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<TapPort>> TapPort::open(std::string_view interface_name) {
  auto fd = open_descriptor(interface_name);
  if (!fd) return fail(fd.error());
  return adopt(std::string(interface_name), std::move(*fd));
}

std::unique_ptr<TapPort> TapPort::adopt(std::string interface_name, UniqueFd fd) {
  return std::unique_ptr<TapPort>(new TapPort(std::move(interface_name), std::move(fd)));
}

Result<UniqueFd> TapPort::open_descriptor(std::string_view interface_name) {
  if (auto valid = validate_interface_name(interface_name); !valid) return fail(valid.error());
  std::string name(interface_name);
  UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT || errno == ENODEV || errno == ENXIO) {
      return fail(ErrorCode::kNotFound,
                  "tap: /dev/net/tun is missing: load the tun module (modprobe tun) or, in a "
                  "container, pass the device in");
    }
    return fail(
        ErrorCode::kIo,
        fmt::format("tap: cannot open /dev/net/tun: {}{}", std::strerror(errno),
                    errno == EACCES || errno == EPERM ? " (it needs read and write access)" : ""));
  }
  ifreq request{};
  std::memcpy(request.ifr_name, name.c_str(), name.size() + 1);
  // tuntap.rst: IFF_TAP for Ethernet frames, IFF_NO_PI for no 4-byte packet-information header.
  request.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (::ioctl(fd.get(), TUNSETIFF, &request) != 0) {
    int error = errno;
    std::string why;
    switch (error) {
      case EPERM:
      case EACCES:
        why = fmt::format(
            "no permission to attach to or create it: create it for your user "
            "with 'ip tuntap add dev {} mode tap user $USER', or run with "
            "CAP_NET_ADMIN",
            name);
        break;
      case EBUSY: why = "it is in use by another program"; break;
      case EINVAL: why = "an interface of that name exists and is not a tap"; break;
      default: why = std::strerror(error); break;
    }
    return fail(error == EINVAL ? ErrorCode::kInvalidArgument : ErrorCode::kIo,
                fmt::format("tap {}: {}", name, why));
  }
  return fd;
}

TapPort::TapPort(std::string interface_name, UniqueFd fd)
    : interface_name_(std::move(interface_name)),
      description_("tap:" + interface_name_),
      fd_(std::move(fd)) {}

Result<SendStatus> TapPort::send(std::span<const std::byte> frame) {
  if (auto size_ok = check_frame_size(frame); !size_ok) return fail(size_ok.error());
  for (;;) {
    ssize_t written = ::write(fd_.get(), frame.data(), frame.size());
    if (written == static_cast<ssize_t>(frame.size())) {
      count_sent(frame.size());
      return SendStatus::kSent;
    }
    if (written < 0 && errno == EINTR) continue;
    if (written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return SendStatus::kBusy;
    // The kernel refused this frame (the interface is down: EIO; a frame it cannot parse:
    // EINVAL): it is lost like on an unplugged cable, and counted.
    if (written < 0 && (errno == EIO || errno == EINVAL || errno == ENOMEM || errno == ENOBUFS)) {
      count_dropped();
      return SendStatus::kSent;
    }
    // EBADFD: the interface was deleted under us.
    return fail(ErrorCode::kIo, fmt::format("{}: write: {}", description_,
                                            written < 0 ? std::strerror(errno) : "short write"));
  }
}

Result<std::optional<size_t>> TapPort::receive(std::span<std::byte> buffer) {
  std::span<std::byte> target = buffer;
  if (buffer.size() < kMaxFrameSize) {
    bounce_.resize(kMaxFrameSize);
    target = bounce_;
  }
  for (;;) {
    ssize_t length = ::read(fd_.get(), target.data(), target.size());
    if (length < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return std::optional<size_t>();
      return fail(ErrorCode::kIo, fmt::format("{}: read: {}", description_, std::strerror(errno)));
    }
    if (length == 0) return std::optional<size_t>();
    auto size = static_cast<size_t>(length);
    if (size > buffer.size()) {
      count_dropped();
      continue;
    }
    if (target.data() != buffer.data()) std::memcpy(buffer.data(), target.data(), size);
    count_received(size);
    return std::optional<size_t>(size);
  }
}

}  // namespace lamina::net
