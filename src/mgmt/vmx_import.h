#pragma once
// Reading a VMware VM (.vmx) for `lamina vm import`: the settings Lamina has an equivalent for
// (vCPUs, memory, disks on scsi/sata/ide/nvme controllers, network cards with their MAC
// addresses and connections) and a list of what it has none for (CD-ROMs, floppies, EFI
// firmware, USB, sound, ...), so the import can say so. The .vmx is user input: bounded in
// size, every value checked; disk file names resolve inside the .vmx's folder.
//
// Stateless functions; thread-safe.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace lamina::mgmt {

inline constexpr size_t kMaxVmxBytes = 1 << 20;

struct VmxDisk {
  std::string slot;  // "scsi0:0", "sata0:1", ...
  std::filesystem::path file;
};

struct VmxNic {
  unsigned index = 0;  // ethernetN
  std::string mac;     // "00:50:56:..."; empty when the .vmx has none
  std::string network; // the Lamina switch it goes to
  std::string origin;  // how VMware connected it, for the report
};

struct VmxMachine {
  std::string display_name;
  uint32_t cpus = 1;
  uint64_t memory_mib = 0;
  std::string guest_os;
  std::vector<VmxDisk> disks;  // in controller order (scsi, sata, ide, nvme; bus; unit)
  std::vector<VmxNic> nics;
  std::vector<std::string> not_carried;  // one line per setting without a Lamina equivalent
};

// Parses the text of `vmx` (its folder resolves relative disk names). kInvalidArgument naming
// the key for a bad value, kUnsupported for a disk that is not a file in that folder.
Result<VmxMachine> parse_vmx(std::string_view text, const std::filesystem::path& vmx);

// A VM name from a display name: allowed characters kept, others become '-'.
std::string vm_name_from(std::string_view display_name);

}  // namespace lamina::mgmt
