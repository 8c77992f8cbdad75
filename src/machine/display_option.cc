#include "machine/display_option.h"

#include <charconv>

#include <fmt/format.h>

#include "base/unix_listener.h"
#include "display/vnc_server.h"

namespace lamina::machine {

Result<VgaKind> parse_vga(std::string_view text) {
  if (text == "std") return VgaKind::kStd;
  if (text == "none") return VgaKind::kNone;
  return fail(ErrorCode::kInvalidArgument, fmt::format("--vga: '{}' is not std or none", text));
}

Result<DisplayOption> parse_display(std::string_view text) {
  auto bad = [text](std::string_view why) {
    return Error(
        ErrorCode::kInvalidArgument,
        fmt::format("--display: '{}' {} (none, vnc:HOST:PORT or vnc:unix:PATH)", text, why));
  };
  if (text == "none") return DisplayOption{};
  if (!text.starts_with("vnc:")) return fail(bad("is not a display"));
  std::string_view rest = text.substr(4);
  if (rest.starts_with("unix:")) {
    const std::string_view path = rest.substr(5);
    if (path.empty()) return fail(bad("names no socket path"));
    // sockaddr_un holds 108 bytes with the terminating NUL.
    if (path.size() > 107) return fail(bad("has a socket path longer than 107 bytes"));
    DisplayOption option;
    option.kind = DisplayKind::kVncUnix;
    option.path = std::filesystem::path(path);
    return option;
  }
  const size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return fail(bad("names no HOST:PORT"));
  const std::string_view port_text = rest.substr(colon + 1);
  unsigned port = 0;
  auto [end, error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (error != std::errc() || end != port_text.data() + port_text.size() || port > 65535) {
    return fail(bad("has no port number from 0 to 65535"));
  }
  DisplayOption option;
  option.kind = DisplayKind::kVncTcp;
  option.host = std::string(rest.substr(0, colon));
  option.port = static_cast<uint16_t>(port);
  return option;
}

VgaKind effective_vga(std::optional<VgaKind> vga, FirmwareKind firmware,
                      const DisplayOption& display) {
  if (vga) return *vga;
  if (firmware != FirmwareKind::kNone || display.kind != DisplayKind::kNone) return VgaKind::kStd;
  return VgaKind::kNone;
}

Result<UniqueFd> open_display_listener(const DisplayOption& display, GrantedFiles* granted) {
  GrantedFiles::Opener open;
  std::string key;
  switch (display.kind) {
    case DisplayKind::kNone:
      return fail(ErrorCode::kInvalidArgument, "--display none has no socket");
    case DisplayKind::kVncTcp:
      key = fmt::format("vnc:{}:{}", display.host, display.port);
      open = [&display] { return display::listen_tcp(display.host, display.port); };
      break;
    case DisplayKind::kVncUnix:
      key = display.path.string();
      open = [&display] { return listen_unix_socket(display.path, "--display"); };
      break;
  }
  if (!granted) return open();
  auto obtained = granted->obtain(key, FileAccess::kListen, open);
  if (!obtained) return fail(obtained.error());
  return std::move(obtained->fd);
}

}  // namespace lamina::machine
