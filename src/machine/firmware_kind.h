#pragma once
// Which firmware a VM boots through (`--firmware`, a definition's "firmware"): none (Lamina
// loads the kernel itself) or a BIOS image, SeaBIOS from Debian's seabios package by default.
// Plain values.

#include <filesystem>

namespace lamina::machine {

enum class FirmwareKind { kNone, kBios };

inline constexpr char kDefaultBiosPath[] = "/usr/share/seabios/bios-256k.bin";

struct FirmwareChoice {
  FirmwareKind kind = FirmwareKind::kNone;
  std::filesystem::path file;  // the BIOS image for kBios
  bool operator==(const FirmwareChoice&) const = default;
};

}  // namespace lamina::machine
