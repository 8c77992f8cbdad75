#pragma once
// SMBIOS tables (DMTF DSP0134 3.x, structures in their 2.8 layouts) for firmware: the fw_cfg
// files "etc/smbios/smbios-tables" (the structures) and "etc/smbios/smbios-anchor" (a 2.1
// 32-bit entry point whose table address and checksums SeaBIOS fills in when it places the
// structures). The set is the minimum an OS and dmidecode expect: BIOS (type 0), system (1),
// one processor per vCPU (4), the memory array, device and mapped ranges (16, 17, 19), system
// boot (32) and the end marker (127).
//
// Stateless functions.

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"
#include "machine/memory_layout.h"

namespace lamina::machine {

inline constexpr char kSmbiosTablesFile[] = "etc/smbios/smbios-tables";
inline constexpr char kSmbiosAnchorFile[] = "etc/smbios/smbios-anchor";

struct SmbiosFiles {
  std::vector<std::byte> tables;
  std::vector<std::byte> anchor;
};

struct SmbiosConfig {
  uint32_t cpus = 1;
  std::string firmware_version = "Lamina";
};

Result<SmbiosFiles> build_smbios_files(const SmbiosConfig& config, const MemoryLayout& layout);

}  // namespace lamina::machine
