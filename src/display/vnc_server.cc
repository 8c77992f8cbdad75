#include "display/vnc_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <rfb/rfb.h>

#include <algorithm>
#include <array>
#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "base/log.h"
#include "display/keyboard_map.h"

namespace lamina::display {
namespace {

// What clients see while the guest's screen shows nothing renderable.
constexpr uint32_t kBlankWidth = 640;
constexpr uint32_t kBlankHeight = 480;

// RFB pointer buttons (RFC 6143 section 7.5.5: bit 0 left, 1 middle, 2 right) to PS/2's
// (bit 0 left, 1 right, 2 middle).
uint8_t ps2_buttons(int rfb_mask) {
  return static_cast<uint8_t>((rfb_mask & 1) | ((rfb_mask & 4) ? 2 : 0) | ((rfb_mask & 2) ? 4 : 0));
}

}  // namespace

// The libvncserver screen and the picture it serves: rfbGetScreen's default 32-bit format,
// red in the low byte (a Frame's 0x00RRGGBB is swapped into it).
struct VncServer::Screen {
  rfbScreenInfoPtr rfb = nullptr;
  std::vector<uint32_t> buffer;
  uint32_t width = 0;
  uint32_t height = 0;
  uint64_t generation = 0;
  bool drawn = false;
  int pointer_x = -1;
  int pointer_y = -1;
  uint8_t buttons = 0;
  // The password list libvncserver's rfbCheckPasswordByList reads (null-terminated).
  std::string password;
  std::array<char*, 2> passwords{};
};

Result<UniqueFd> listen_tcp(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int error = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); error != 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("--display: cannot resolve '{}': {}", host, ::gai_strerror(error)));
  }
  std::string last_error = "no address";
  UniqueFd listening;
  for (addrinfo* address = found; address != nullptr && !listening; address = address->ai_next) {
    UniqueFd fd(::socket(address->ai_family, address->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                         address->ai_protocol));
    if (!fd) {
      last_error = std::strerror(errno);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd.get(), address->ai_addr, address->ai_addrlen) != 0 ||
        ::listen(fd.get(), 4) != 0) {
      last_error = std::strerror(errno);
      continue;
    }
    listening = std::move(fd);
  }
  ::freeaddrinfo(found);
  if (!listening) {
    return fail(ErrorCode::kIo,
                fmt::format("--display: cannot listen on {}:{}: {}", host, port, last_error));
  }
  return listening;
}

std::string bound_address(int listening) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  if (::getsockname(listening, reinterpret_cast<sockaddr*>(&address), &length) != 0) return "?";
  char text[INET6_ADDRSTRLEN] = {};
  switch (address.ss_family) {
    case AF_INET: {
      const auto& inet = reinterpret_cast<const sockaddr_in&>(address);
      ::inet_ntop(AF_INET, &inet.sin_addr, text, sizeof(text));
      return fmt::format("{}:{}", text, ntohs(inet.sin_port));
    }
    case AF_INET6: {
      const auto& inet6 = reinterpret_cast<const sockaddr_in6&>(address);
      ::inet_ntop(AF_INET6, &inet6.sin6_addr, text, sizeof(text));
      return fmt::format("[{}]:{}", text, ntohs(inet6.sin6_port));
    }
    case AF_UNIX:
      return fmt::format("unix:{}", reinterpret_cast<const sockaddr_un&>(address).sun_path);
    default: return "?";
  }
}

VncServer::VncServer(UniqueFd listening, ScreenSource source, std::string name)
    : listening_(std::move(listening)),
      source_(std::move(source)),
      name_(std::move(name)),
      screen_(std::make_unique<Screen>()) {}

Result<std::unique_ptr<VncServer>> VncServer::create(UniqueFd listening, ScreenSource source,
                                                     std::string name, std::string password) {
  // A client that goes away makes libvncserver's write() fail; without this it would be a
  // SIGPIPE that ends the whole process.
  ::signal(SIGPIPE, SIG_IGN);
  // libvncserver's own log lines (each connection, each encoding) stay out of the VM's output.
  rfbLogEnable(0);
  std::unique_ptr<VncServer> server(
      new VncServer(std::move(listening), std::move(source), std::move(name)));
  Screen& screen = *server->screen_;
  int argc = 0;
  screen.width = kBlankWidth;
  screen.height = kBlankHeight;
  screen.buffer.assign(size_t{kBlankWidth} * kBlankHeight, 0);
  screen.rfb = rfbGetScreen(&argc, nullptr, static_cast<int>(kBlankWidth),
                            static_cast<int>(kBlankHeight), 8, 3, 4);
  if (screen.rfb == nullptr) return fail(ErrorCode::kInternal, "libvncserver: no screen");
  rfbScreenInfoPtr rfb = screen.rfb;
  rfb->frameBuffer = reinterpret_cast<char*>(screen.buffer.data());
  rfb->desktopName = server->name_.c_str();
  // Clients come from our own listening socket (rfbNewClient), never from libvncserver's.
  rfb->port = 0;
  rfb->ipv6port = 0;
  rfb->autoPort = FALSE;
  rfb->httpPort = 0;
  rfb->alwaysShared = TRUE;
  // Updates go out as soon as they are due (the frame rate is bounded by serve()'s polling).
  rfb->deferUpdateTime = 0;
  // No server-drawn cursor: the framebuffer clients get is exactly the guest's screen.
  rfb->cursor = nullptr;
  rfb->screenData = server.get();
  if (!password.empty()) {
    // Only VNC Authentication is offered then (libvncserver's security type list follows
    // authPasswdData); a wrong answer closes the connection.
    screen.password = std::move(password);
    screen.passwords = {screen.password.data(), nullptr};
    rfb->authPasswdData = screen.passwords.data();
    rfb->passwordCheck = rfbCheckPasswordByList;
    // libvncserver's challenge and DES come from libgcrypt, which opens its random source and
    // configuration on first use: done here, before a worker's sandbox forbids opening files.
    std::array<unsigned char, 16> challenge{};
    rfbRandomBytes(challenge.data());
    rfbEncryptBytes(challenge.data(), screen.password.data());
  }
  rfb->kbdAddEvent = [](rfbBool down, rfbKeySym keysym, rfbClientPtr client) {
    auto* self = static_cast<VncServer*>(client->screen->screenData);
    const std::vector<uint8_t> bytes = set1_scancodes(keysym, down != 0);
    if (!bytes.empty() && self->source_.keyboard) self->source_.keyboard(bytes);
  };
  rfb->ptrAddEvent = [](int mask, int x, int y, rfbClientPtr client) {
    auto* self = static_cast<VncServer*>(client->screen->screenData);
    Screen& state = *self->screen_;
    const uint8_t buttons = ps2_buttons(mask);
    // RFB buttons 4 and 5 (mask bits 3 and 4) are the wheel's clicks up and down, sent as a
    // press and a release: the press counts.
    const int wheel = ((mask & 8) ? 1 : 0) - ((mask & 16) ? 1 : 0);
    const int dx = state.pointer_x < 0 ? 0 : x - state.pointer_x;
    const int dy = state.pointer_y < 0 ? 0 : state.pointer_y - y;
    const bool first = state.pointer_x < 0;
    state.pointer_x = x;
    state.pointer_y = y;
    if ((first || dx != 0 || dy != 0 || buttons != state.buttons || wheel != 0) &&
        self->source_.pointer) {
      self->source_.pointer({.x = static_cast<uint32_t>(std::max(x, 0)),
                             .y = static_cast<uint32_t>(std::max(y, 0)),
                             .width = state.width,
                             .height = state.height,
                             .dx = dx,
                             .dy = dy,
                             .buttons = buttons,
                             .wheel = wheel});
    }
    state.buttons = buttons;
  };
  rfbInitServer(rfb);
  log_line(LogLevel::kInfo,
           fmt::format("VNC server on {}", bound_address(server->listening_.get())));
  return server;
}

void VncServer::start() {
  if (!thread_.joinable()) thread_ = std::jthread([this](std::stop_token stop) { serve(stop); });
}

VncServer::~VncServer() {
  thread_ = std::jthread();  // stops and joins the serving thread first
  if (screen_->rfb != nullptr) {
    rfbShutdownServer(screen_->rfb, TRUE);
    rfbScreenCleanup(screen_->rfb);
  }
}

void VncServer::serve(std::stop_token stop) {
  rfbScreenInfoPtr rfb = screen_->rfb;
  while (!stop.stop_requested()) {
    for (;;) {
      const int client = ::accept4(listening_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) break;
      // libvncserver owns the socket from here (it closes it when the client goes).
      rfbNewClient(rfb, client);
    }
    refresh();
    // Waits for client messages up to one frame's time, handles them and sends updates.
    rfbProcessEvents(rfb, 1'000'000 / kMaxFramesPerSecond);
  }
  // Clients get the last screen (a VM that stopped shows its final picture) before the end.
  refresh();
  rfbProcessEvents(rfb, 0);
}

void VncServer::refresh() {
  Screen& screen = *screen_;
  rfbScreenInfoPtr rfb = screen.rfb;
  const uint64_t generation = source_.generation ? source_.generation() : 0;
  if (screen.drawn && generation == screen.generation) return;
  screen.generation = generation;
  screen.drawn = true;
  Result<hw::Frame> frame = source_.frame ? source_.frame() : Result<hw::Frame>(hw::Frame{});
  hw::Frame blank;
  const hw::Frame& shown =
      frame && frame->width != 0 && frame->pixels.size() == size_t{frame->width} * frame->height
          ? *frame
          : blank;
  const uint32_t width = shown.width != 0 ? shown.width : kBlankWidth;
  const uint32_t height = shown.width != 0 ? shown.height : kBlankHeight;
  std::vector<uint32_t> pixels(size_t{width} * height, 0);
  for (size_t index = 0; index < shown.pixels.size(); ++index) {
    const uint32_t color = shown.pixels[index];
    pixels[index] = ((color >> 16) & 0xff) | (color & 0xff00) | ((color & 0xff) << 16);
  }
  if (width != screen.width || height != screen.height) {
    // A mode change: clients that support it get the new size (DesktopSize).
    std::swap(screen.buffer, pixels);
    screen.width = width;
    screen.height = height;
    rfbNewFramebuffer(rfb, reinterpret_cast<char*>(screen.buffer.data()), static_cast<int>(width),
                      static_cast<int>(height), 8, 3, 4);
    rfbMarkRectAsModified(rfb, 0, 0, static_cast<int>(width), static_cast<int>(height));
  } else {
    // Only the band of rows that changed is sent.
    uint32_t first = height;
    uint32_t last = 0;
    for (uint32_t y = 0; y < height; ++y) {
      const size_t row = size_t{y} * width;
      if (!std::equal(pixels.begin() + row, pixels.begin() + row + width,
                      screen.buffer.begin() + row)) {
        first = std::min(first, y);
        last = y;
      }
    }
    if (first <= last) {
      std::copy(pixels.begin() + size_t{first} * width, pixels.begin() + (size_t{last} + 1) * width,
                screen.buffer.begin() + size_t{first} * width);
      rfbMarkRectAsModified(rfb, 0, static_cast<int>(first), static_cast<int>(width),
                            static_cast<int>(last + 1));
    }
  }
}

}  // namespace lamina::display
