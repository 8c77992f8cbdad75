#include "machine/display_option.h"

#include <charconv>
#include <functional>

#include <fmt/format.h>

#include "base/unix_listener.h"
#include "machine/boot_file.h"
#include "display/vnc_server.h"

namespace lamina::machine {

Result<VgaKind> parse_vga(std::string_view text) {
  if (text == "std") return VgaKind::kStd;
  if (text == "none") return VgaKind::kNone;
  return fail(ErrorCode::kInvalidArgument, fmt::format("--vga: '{}' is not std or none", text));
}

namespace {

// "HOST:PORT" or "unix:PATH" after "vnc:"; `bad` words the error.
Result<DisplayOption> parse_vnc_address(std::string_view rest,
                                        const std::function<Error(std::string_view)>& bad) {
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

}  // namespace

Result<DisplayOption> parse_display(std::string_view text) {
  auto bad = [text](std::string_view why) {
    return Error(
        ErrorCode::kInvalidArgument,
        fmt::format("--display: '{}' {} (none, vnc:HOST:PORT or vnc:unix:PATH, then "
                    "optionally ,password-file=PATH)",
                    text, why));
  };
  if (text == "none") return DisplayOption{};
  if (!text.starts_with("vnc:")) return fail(bad("is not a display"));
  std::string_view rest = text.substr(4);
  std::filesystem::path password_file;
  constexpr std::string_view kPasswordFile = ",password-file=";
  if (const size_t at = rest.rfind(kPasswordFile); at != std::string_view::npos) {
    password_file = std::filesystem::path(rest.substr(at + kPasswordFile.size()));
    if (password_file.empty()) return fail(bad("names no password file"));
    rest = rest.substr(0, at);
  }
  auto parsed = parse_vnc_address(rest, bad);
  if (!parsed) return parsed;
  parsed->password_file = std::move(password_file);
  return parsed;
}

Result<std::string> read_display_password(const DisplayOption& display, GrantedFiles* granted) {
  if (display.password_file.empty()) return std::string();
  const std::string path = display.password_file.string();
  auto bytes = read_boot_file(path, "VNC password", 4096, granted);
  if (!bytes) return fail(bytes.error());
  std::string password(reinterpret_cast<const char*>(bytes->data()), bytes->size());
  password = password.substr(0, password.find('\n'));
  if (!password.empty() && password.back() == '\r') password.pop_back();
  // RFB 6.2.2: VNC Authentication encrypts the challenge with the first 8 bytes of the
  // password; a longer one would only seem stronger.
  if (password.empty() || password.size() > 8) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("--display: the VNC password in {} must be 1 to 8 characters on its "
                            "first line (RFB's VNC Authentication uses 8)",
                            path));
  }
  return password;
}

VgaKind effective_vga(std::optional<VgaKind> vga, FirmwareKind firmware,
                      const DisplayOption& display) {
  if (vga) return *vga;
  if (firmware != FirmwareKind::kNone || display.kind != DisplayKind::kNone) return VgaKind::kStd;
  return VgaKind::kNone;
}

std::string describe(const DisplayOption& display) {
  switch (display.kind) {
    case DisplayKind::kNone: return "none";
    case DisplayKind::kVncTcp: return fmt::format("vnc:{}:{}", display.host, display.port);
    case DisplayKind::kVncUnix: return "vnc:unix:" + display.path.string();
  }
  return "none";
}

Result<bool> parse_tablet(std::string_view text) {
  if (text == "on") return true;
  if (text == "off") return false;
  return fail(ErrorCode::kInvalidArgument, fmt::format("--tablet: '{}' is not one of on, off", text));
}

bool effective_tablet(std::optional<bool> tablet, const DisplayOption& display) {
  return tablet.value_or(display.kind != DisplayKind::kNone);
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
