#include "mgmt/vmx_import.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <optional>

#include <fmt/format.h>

#include <array>
#include <cctype>
#include <tuple>

namespace lamina::mgmt {
namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r')) {
    text.remove_suffix(1);
  }
  return text;
}

// `key = "value"` lines; keys are case-insensitive in VMware's files.
Result<std::map<std::string, std::string>> read_pairs(std::string_view text) {
  std::map<std::string, std::string> pairs;
  size_t line_number = 0;
  while (!text.empty()) {
    const size_t end = std::min(text.find('\n'), text.size());
    std::string_view line = trim(text.substr(0, end));
    text.remove_prefix(std::min(end + 1, text.size()));
    ++line_number;
    if (line.empty() || line.front() == '#' || line.starts_with(".encoding")) continue;
    const size_t equals = line.find('=');
    if (equals == std::string_view::npos) {
      return fail(ErrorCode::kInvalidArgument, fmt::format("line {}: not key = value", line_number));
    }
    std::string_view value = trim(line.substr(equals + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    pairs[lower(trim(line.substr(0, equals)))] = std::string(value);
  }
  return pairs;
}

bool is_true(const std::map<std::string, std::string>& pairs, const std::string& key) {
  auto found = pairs.find(key);
  return found != pairs.end() && lower(found->second) == "true";
}

std::string value_of(const std::map<std::string, std::string>& pairs, const std::string& key) {
  auto found = pairs.find(key);
  return found == pairs.end() ? std::string() : found->second;
}

std::optional<uint64_t> number(std::string_view text) {
  uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

bool valid_mac(std::string_view mac) {
  if (mac.size() != 17) return false;
  for (size_t i = 0; i < mac.size(); ++i) {
    if (i % 3 == 2 ? mac[i] != ':' : !std::isxdigit(static_cast<unsigned char>(mac[i]))) {
      return false;
    }
  }
  return true;
}

// A switch name from a VMware network name or connection type.
std::string switch_name(std::string_view text) {
  std::string name = "vmware-" + lower(text);
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '-';
  }
  return name.substr(0, 32);
}

}  // namespace

std::string vm_name_from(std::string_view display_name) {
  std::string name;
  for (char c : display_name.substr(0, 63)) {
    const bool allowed = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    name += allowed ? c : '-';
  }
  if (name.empty() || !std::isalnum(static_cast<unsigned char>(name[0]))) name = "vm" + name;
  return name.substr(0, 63);
}

Result<VmxMachine> parse_vmx(std::string_view text, const std::filesystem::path& vmx) {
  if (text.size() > kMaxVmxBytes) {
    return fail(ErrorCode::kInvalidArgument, "the .vmx is larger than 1 MiB");
  }
  auto read = read_pairs(text);
  if (!read) return fail(read.error());
  const auto& pairs = *read;
  VmxMachine machine;
  machine.display_name = value_of(pairs, "displayname");
  machine.guest_os = value_of(pairs, "guestos");
  if (auto cpus = value_of(pairs, "numvcpus"); !cpus.empty()) {
    auto value = number(cpus);
    if (!value || *value < 1 || *value > 64) {
      return fail(ErrorCode::kInvalidArgument, fmt::format("numvcpus: '{}' is not 1-64", cpus));
    }
    machine.cpus = static_cast<uint32_t>(*value);
  }
  const std::string memory = value_of(pairs, "memsize");
  auto memory_mib = number(memory);
  if (!memory_mib || *memory_mib < 16 || *memory_mib > (uint64_t{1} << 20)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("memsize: '{}' is not a size in MiB from 16", memory));
  }
  machine.memory_mib = *memory_mib;
  if (const std::string firmware = lower(value_of(pairs, "firmware")); firmware == "efi") {
    machine.not_carried.push_back(
        "firmware = efi: Lamina has no UEFI firmware yet; the VM boots its disk through "
        "SeaBIOS (BIOS), or Lamina's direct kernel boot once you set a kernel or command line");
  }

  // Disks and CD-ROMs: CONTROLLERn:m.present with a fileName.
  const std::filesystem::path folder = vmx.parent_path();
  struct Slot {
    int controller_rank;
    uint64_t bus;
    uint64_t unit;
    std::string name;
  };
  std::vector<Slot> slots;
  const std::array<std::string_view, 4> controllers = {"scsi", "sata", "ide", "nvme"};
  for (const auto& [key, value] : pairs) {
    if (!key.ends_with(".present") || lower(value) != "true") continue;
    const std::string slot = key.substr(0, key.size() - 8);
    for (size_t rank = 0; rank < controllers.size(); ++rank) {
      if (!slot.starts_with(controllers[rank])) continue;
      const size_t colon = slot.find(':');
      if (colon == std::string::npos) break;  // the controller itself
      auto bus = number(std::string_view(slot).substr(controllers[rank].size(),
                                                      colon - controllers[rank].size()));
      auto unit = number(std::string_view(slot).substr(colon + 1));
      if (bus && unit) slots.push_back({static_cast<int>(rank), *bus, *unit, slot});
    }
    if (slot.starts_with("floppy") || slot.starts_with("usb") || slot.starts_with("sound") ||
        slot.starts_with("serial") || slot.starts_with("parallel")) {
      machine.not_carried.push_back(fmt::format("{}: no Lamina equivalent; left out", slot));
    }
  }
  std::sort(slots.begin(), slots.end(), [](const Slot& a, const Slot& b) {
    return std::tie(a.controller_rank, a.bus, a.unit) < std::tie(b.controller_rank, b.bus, b.unit);
  });
  for (const Slot& slot : slots) {
    const std::string type = lower(value_of(pairs, slot.name + ".devicetype"));
    const std::string file = value_of(pairs, slot.name + ".filename");
    if (type.find("cdrom") != std::string::npos || type == "atapi-cdrom") {
      machine.not_carried.push_back(fmt::format(
          "{}: a CD-ROM ({}); Lamina has no CD-ROM device yet; left out", slot.name,
          file.empty() ? "empty" : file));
      continue;
    }
    if (file.empty()) continue;
    // Disk files are looked for next to the .vmx only: an import never reaches elsewhere.
    const std::filesystem::path name(file);
    if (name.is_absolute() || file.find("..") != std::string::npos ||
        name.filename() != name) {
      return fail(ErrorCode::kUnsupported,
                  fmt::format("{}.fileName: '{}' is not a file next to the .vmx", slot.name, file));
    }
    machine.disks.push_back({slot.name, folder / name});
  }

  // Network cards: ethernetN.present, with a static or generated MAC and a connection.
  for (unsigned index = 0; index < 10; ++index) {
    const std::string prefix = fmt::format("ethernet{}", index);
    if (!is_true(pairs, prefix + ".present")) continue;
    VmxNic nic;
    nic.index = index;
    const std::string type = lower(value_of(pairs, prefix + ".addresstype"));
    nic.mac = lower(value_of(pairs, prefix + (type == "static" ? ".address" : ".generatedaddress")));
    if (nic.mac.empty()) nic.mac = lower(value_of(pairs, prefix + ".address"));
    if (!nic.mac.empty() && !valid_mac(nic.mac)) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("{}: '{}' is not a MAC address", prefix, nic.mac));
    }
    const std::string network = value_of(pairs, prefix + ".networkname");
    const std::string connection = lower(value_of(pairs, prefix + ".connectiontype"));
    const std::string source = !network.empty() ? network : !connection.empty() ? connection : "bridged";
    nic.network = switch_name(source);
    nic.origin = fmt::format("{} ({}{})", prefix, network.empty() ? connection : network,
                             value_of(pairs, prefix + ".virtualdev").empty()
                                 ? ""
                                 : ", " + value_of(pairs, prefix + ".virtualdev"));
    machine.nics.push_back(nic);
  }
  return machine;
}

}  // namespace lamina::mgmt
