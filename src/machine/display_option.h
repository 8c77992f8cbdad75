#pragma once
// How a VM shows its screen: whether it has a VGA adapter (`--vga`) and where its screen goes
// (`--display`): nowhere, or a VNC server on a TCP address or a Unix socket. Plain values and
// their parsers; the VNC server itself is display/vnc_server.h.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "base/error.h"
#include "base/granted_files.h"
#include "base/unique_fd.h"
#include "machine/firmware_kind.h"

namespace lamina::machine {

// kStd: the Bochs-compatible standard VGA (hw/display/std_vga_pci.h).
enum class VgaKind { kNone, kStd };

// SeaBIOS's option ROM for the standard VGA (Debian's seabios package).
inline constexpr char kDefaultVgaRomPath[] = "/usr/share/seabios/vgabios-stdvga.bin";
// Option ROMs larger than this are refused (the PC's option ROM area is 128 KiB).
inline constexpr uint64_t kMaxVgaRomSize = uint64_t{128} << 10;

enum class DisplayKind { kNone, kVncTcp, kVncUnix };
struct DisplayOption {
  DisplayKind kind = DisplayKind::kNone;
  std::string host;            // kVncTcp
  uint16_t port = 0;           // kVncTcp (0: the kernel picks one)
  std::filesystem::path path;  // kVncUnix
  // ",password-file=PATH": clients must pass RFB's VNC Authentication with the password on
  // the file's first line (1 to 8 characters: the scheme uses 8); empty: no authentication.
  std::filesystem::path password_file;
  bool operator==(const DisplayOption&) const = default;
};

// Parses "std" or "none".
Result<VgaKind> parse_vga(std::string_view text);
// Parses "none", "vnc:HOST:PORT" or "vnc:unix:PATH", each optionally followed by
// ",password-file=PATH".
Result<DisplayOption> parse_display(std::string_view text);
// The VNC password of `display` (empty without a password file), read through `granted`
// when given (laminad grants the file to the worker like a boot file). Errors name the file.
Result<std::string> read_display_password(const DisplayOption& display, GrantedFiles* granted);
// The adapter a VM gets: the one asked for, else std when it boots through firmware (whose
// screen a VGA BIOS draws) or has a display, else none.
VgaKind effective_vga(std::optional<VgaKind> vga, FirmwareKind firmware,
                      const DisplayOption& display);

// "none", "vnc:HOST:PORT" or "vnc:unix:PATH" (without the password file).
std::string describe(const DisplayOption& display);

// Parses --tablet "on" or "off".
Result<bool> parse_tablet(std::string_view text);
// Whether a VM gets the virtio tablet (virtio/virtio_tablet.h): as asked, else when it has a
// VNC display (whose pointer is absolute).
bool effective_tablet(std::optional<bool> tablet, const DisplayOption& display);

// The listening socket of a VNC display (kInvalidArgument for kNone): opened here, or, with
// `granted`, obtained through it (laminad opens it and the worker gets the descriptor, so a
// sandboxed worker never binds a socket itself).
Result<UniqueFd> open_display_listener(const DisplayOption& display, GrantedFiles* granted);

}  // namespace lamina::machine
