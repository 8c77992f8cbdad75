#include "machine/vm_config.h"

#include <algorithm>
#include <charconv>
#include <optional>

#include <fmt/format.h>
#include <unistd.h>

#include "base/size.h"
#include "virtio/virtio_net_setup.h"

namespace lamina::machine {

namespace {

Result<void> check_readable_file(std::string_view option, const std::filesystem::path& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return fail(ErrorCode::kNotFound,
                fmt::format("{}: '{}' is not a file", option, path.string()));
  }
  if (::access(path.c_str(), R_OK) != 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: '{}' is not readable", option, path.string()));
  }
  return {};
}

}  // namespace

Result<SerialConfig> parse_serial(std::string_view text) {
  if (text == "stdio") return SerialConfig{SerialKind::kStdio, {}};
  if (text == "none") return SerialConfig{SerialKind::kNone, {}};
  if (text.starts_with("file:") && text.size() > 5) {
    return SerialConfig{SerialKind::kFile, std::filesystem::path(text.substr(5))};
  }
  return fail(ErrorCode::kInvalidArgument,
              fmt::format("--serial: '{}' is not one of stdio, none, file:PATH", text));
}

Result<ConsolePortConfig> parse_console_port(std::string_view text) {
  if (text == "none") return ConsolePortConfig{ConsolePortKind::kNone, {}};
  if (text == "stdio") return ConsolePortConfig{ConsolePortKind::kStdio, {}};
  if (text.starts_with("file:") && text.size() > 5) {
    return ConsolePortConfig{ConsolePortKind::kFile, std::filesystem::path(text.substr(5))};
  }
  if (text.starts_with("socket:") && text.size() > 7) {
    return ConsolePortConfig{ConsolePortKind::kSocket, std::filesystem::path(text.substr(7))};
  }
  return fail(ErrorCode::kInvalidArgument,
              fmt::format("--console-port: '{}' is not one of none, stdio, file:PATH, socket:PATH",
                          text));
}

Result<bool> parse_rng(std::string_view text) {
  if (text == "host") return true;
  if (text == "none") return false;
  return fail(ErrorCode::kInvalidArgument, fmt::format("--rng: '{}' is not one of host, none", text));
}

Result<net::NetworkOption> parse_network(std::string_view text) {
  auto network = net::parse_network_option(text);
  if (!network) return fail(network.error().with_context(fmt::format("--net {}", text)));
  return *network;
}

Result<AccelKind> parse_accel(std::string_view text) {
  if (text == "emu") return AccelKind::kEmu;
  if (text == "kvm") return AccelKind::kKvm;
  if (text == "auto") return AccelKind::kAuto;
  return fail(ErrorCode::kInvalidArgument,
              fmt::format("--accel: '{}' is not one of emu, kvm, auto", text));
}

Result<CpuEngine> parse_cpu_engine(std::string_view text) {
  if (text == "jit") return CpuEngine::kJit;
  if (text == "interp") return CpuEngine::kInterp;
  return fail(ErrorCode::kInvalidArgument,
              fmt::format("--cpu-engine: '{}' is not one of jit, interp", text));
}

Result<CpuModel> parse_cpu_model(std::string_view text) {
  if (text == "lamina") return CpuModel::kLamina;
  if (text == "lamina-kvm") return CpuModel::kLaminaKvm;
  if (text == "host") return CpuModel::kHost;
  return fail(ErrorCode::kInvalidArgument,
              fmt::format("--cpu-model: '{}' is not one of lamina, lamina-kvm, host", text));
}

Result<uint64_t> parse_code_cache(std::string_view text) {
  auto bytes = parse_size(text);
  if (!bytes || *bytes < kMinCodeCacheBytes || *bytes > kMaxCodeCacheBytes) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("--code-cache: '{}' is not a size from 1M to 1G", text));
  }
  return *bytes;
}

Result<RebootAction> parse_reboot_action(std::string_view text) {
  if (text == "exit") return RebootAction::kExit;
  if (text == "restart") return RebootAction::kRestart;
  return fail(ErrorCode::kInvalidArgument,
              fmt::format("--on-reboot: '{}' is not one of exit, restart", text));
}

Result<CpuCount> parse_cpus(std::string_view text) {
  auto number = [&](std::string_view digits) -> std::optional<uint32_t> {
    uint32_t value = 0;
    auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (error != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
    return value;
  };
  const size_t comma = text.find(',');
  CpuCount count;
  const auto cpus = number(text.substr(0, comma));
  std::optional<uint32_t> max = 0;
  if (comma != std::string_view::npos) {
    const std::string_view rest = text.substr(comma + 1);
    max = rest.starts_with("max=") ? number(rest.substr(4)) : std::nullopt;
  }
  if (!cpus || !max) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("--cpus: '{}' is not N or N,max=M (whole numbers)", text));
  }
  count.cpus = *cpus;
  count.max_cpus = *max;
  return count;
}

Result<FirmwareChoice> parse_firmware(std::string_view text) {
  if (text == "none") return FirmwareChoice{};
  if (text == "bios") return FirmwareChoice{FirmwareKind::kBios, kDefaultBiosPath};
  if (text.starts_with("bios:") && text.size() > 5) {
    return FirmwareChoice{FirmwareKind::kBios, std::filesystem::path(text.substr(5))};
  }
  return fail(ErrorCode::kInvalidArgument,
              fmt::format("--firmware: '{}' is not none, bios or bios:FILE", text));
}

void add_disk(VmConfig& config, virtio::DiskSpec disk) {
  if (disk.bus == virtio::DiskBus::kSata) {
    config.sata_disks.push_back(std::move(disk));
  } else {
    config.disks.push_back(std::move(disk));
  }
}

Result<std::vector<BootDevice>> parse_boot(std::string_view text) {
  auto kind = [](std::string_view name) -> std::optional<BootDevice> {
    if (name == "disk") return BootDevice::kDisk;
    if (name == "cdrom") return BootDevice::kCdrom;
    return std::nullopt;
  };
  auto bad = [&] {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("--boot: '{}' is not disk, cdrom or order=KIND,... (kinds disk and "
                            "cdrom, each at most once)",
                            text));
  };
  std::vector<BootDevice> order;
  if (auto single = kind(text)) {
    order.push_back(*single);
  } else if (text.starts_with("order=")) {
    std::string_view rest = text.substr(6);
    while (true) {
      const size_t comma = rest.find(',');
      auto next = kind(rest.substr(0, comma));
      if (!next || std::find(order.begin(), order.end(), *next) != order.end()) return bad();
      order.push_back(*next);
      if (comma == std::string_view::npos) break;
      rest = rest.substr(comma + 1);
    }
  } else {
    return bad();
  }
  // The kinds left out follow, so naming one only moves it to the front.
  for (BootDevice device : {BootDevice::kDisk, BootDevice::kCdrom}) {
    if (std::find(order.begin(), order.end(), device) == order.end()) order.push_back(device);
  }
  return order;
}

std::vector<BootDevice> effective_boot_order(const VmConfig& config) {
  if (!config.boot.empty()) return config.boot;
  if (config.cdrom) return {BootDevice::kCdrom, BootDevice::kDisk};
  return {};
}

FirmwareChoice effective_firmware(const VmConfig& config) {
  if (config.firmware) return *config.firmware;
  // A VM that names nothing of a direct kernel boot (kernel, initrd, command line) boots its
  // disks as a PC does; naming any of them keeps the default guest's direct boot.
  const bool has_drive = !config.disks.empty() || !config.sata_disks.empty() || config.cdrom;
  if (!config.kernel && !config.initrd && config.cmdline.empty() && has_drive) {
    return FirmwareChoice{FirmwareKind::kBios, kDefaultBiosPath};
  }
  return FirmwareChoice{};
}

Result<MemorySize> parse_memory(std::string_view text) {
  const size_t comma = text.find(',');
  MemorySize size;
  auto bytes = parse_size(text.substr(0, comma));
  if (!bytes) return fail(bytes.error().with_context("--memory"));
  size.bytes = *bytes;
  if (comma != std::string_view::npos) {
    const std::string_view rest = text.substr(comma + 1);
    if (!rest.starts_with("max=")) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("--memory: '{}' is not SIZE or SIZE,max=MAX", text));
    }
    auto max = parse_size(rest.substr(4));
    if (!max) return fail(max.error().with_context("--memory max"));
    size.max_bytes = *max;
  }
  return size;
}

Result<void> validate(const VmConfig& config, HostChecks checks) {
  if (config.display.kind != DisplayKind::kNone && config.vga == VgaKind::kNone) {
    return fail(ErrorCode::kInvalidArgument,
                "--display shows the VGA adapter's screen: it needs --vga std");
  }
  if (config.cpus < 1 || config.cpus > kMaxCpus) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("--cpus: {} is outside 1-{}", config.cpus, kMaxCpus));
  }
  if (config.max_cpus != 0 && (config.max_cpus < config.cpus || config.max_cpus > kMaxCpus)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("--cpus: max={} must be from the vCPU count ({}) to {}",
                            config.max_cpus, config.cpus, kMaxCpus));
  }
  if (config.memory_bytes < kMinMemoryBytes || config.memory_bytes > kMaxMemoryBytes) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("--memory: {} is outside {}-{}", format_size(config.memory_bytes),
                            format_size(kMinMemoryBytes), format_size(kMaxMemoryBytes)));
  }
  if (config.max_memory_bytes != 0 &&
      (config.max_memory_bytes < config.memory_bytes || config.max_memory_bytes > kMaxMemoryBytes ||
       config.max_memory_bytes % (uint64_t{2} << 20) != 0)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("--memory: max={} must be whole 2 MiB from the memory size ({}) to {}",
                            format_size(config.max_memory_bytes),
                            format_size(config.memory_bytes), format_size(kMaxMemoryBytes)));
  }
  if (config.memory_target_bytes != 0 &&
      (config.memory_target_bytes < config.memory_bytes ||
       config.memory_target_bytes > std::max(config.memory_bytes, config.max_memory_bytes) ||
       config.memory_target_bytes % (uint64_t{2} << 20) != 0)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("memory_target: {} must be whole 2 MiB from the memory size ({}) to "
                            "its max",
                            format_size(config.memory_target_bytes),
                            format_size(config.memory_bytes)));
  }
  if (config.memory_bytes % (uint64_t{1} << 20) != 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("--memory: {} bytes is not a whole number of MiB", config.memory_bytes));
  }
  if (!config.kernel && config.initrd) {
    return fail(ErrorCode::kInvalidArgument, "--initrd needs --kernel");
  }
  const FirmwareChoice firmware = effective_firmware(config);
  if (firmware.kind != FirmwareKind::kNone) {
    if (config.kernel || !config.cmdline.empty()) {
      return fail(ErrorCode::kInvalidArgument,
                  "--firmware bios boots the OS from a disk: --kernel, --initrd and --cmdline "
                  "belong to a direct kernel boot (--firmware none)");
    }
    if (config.accel == AccelKind::kKvm) {
      return fail(ErrorCode::kInvalidArgument,
                  "--firmware bios runs on the built-in CPU only (--accel emu) for now");
    }
  }
  if (config.cpu_model == CpuModel::kHost && config.accel == AccelKind::kEmu) {
    return fail(ErrorCode::kInvalidArgument,
                "--cpu-model host presents the host's CPU through KVM: it needs --accel kvm (or "
                "auto); the built-in CPU presents Lamina's model only");
  }
  if (!config.boot.empty() && firmware.kind == FirmwareKind::kNone) {
    return fail(ErrorCode::kInvalidArgument,
                "--boot orders what the BIOS boots; a direct kernel boot (--kernel, or "
                "--firmware none) has no boot order");
  }
  if (config.sata_disks.size() + (config.cdrom ? 1 : 0) > kSataPorts) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("the SATA controller has {} ports: at most {} disks with bus=sata "
                            "(one fewer with --cdrom)",
                            kSataPorts, kSataPorts));
  }
  const ConsolePortConfig& port = config.console_port;
  if (port.kind == ConsolePortKind::kStdio && config.serial.kind == SerialKind::kStdio) {
    return fail(ErrorCode::kInvalidArgument,
                "--console-port stdio: stdin and stdout already belong to --serial stdio (use "
                "--serial none or file:PATH, or --console-port socket:PATH)");
  }
  if (auto networks = virtio::validate_networks(config.networks); !networks) return networks;
  if (checks == HostChecks::kNone) return {};
  if (config.kernel) {
    if (auto checked = check_readable_file("--kernel", *config.kernel); !checked) return checked;
  }
  if (firmware.kind != FirmwareKind::kNone) {
    if (auto checked = check_readable_file("--firmware", firmware.file); !checked) {
      if (!config.firmware) {
        return fail(checked.error().with_context(
            "a VM with disks and no kernel boots through SeaBIOS (install Debian's seabios "
            "package, or give --kernel)"));
      }
      return checked;
    }
  }
  if (config.initrd) {
    if (auto checked = check_readable_file("--initrd", *config.initrd); !checked) return checked;
  }
  if (config.serial.kind == SerialKind::kFile) {
    auto parent = config.serial.file.parent_path();
    std::error_code error;
    if (!parent.empty() && !std::filesystem::is_directory(parent, error)) {
      return fail(ErrorCode::kNotFound, fmt::format("--serial: folder '{}' does not exist",
                                                    parent.string()));
    }
  }
  if (port.kind == ConsolePortKind::kFile || port.kind == ConsolePortKind::kSocket) {
    auto parent = port.path.parent_path();
    std::error_code error;
    if (!parent.empty() && !std::filesystem::is_directory(parent, error)) {
      return fail(ErrorCode::kNotFound, fmt::format("--console-port: folder '{}' does not exist",
                                                    parent.string()));
    }
  }
  // Across both buses, so one image is not attached twice for writing.
  std::vector<virtio::DiskSpec> all_disks = config.disks;
  all_disks.insert(all_disks.end(), config.sata_disks.begin(), config.sata_disks.end());
  if (auto disks = virtio::validate_disks(all_disks); !disks) return disks;
  if (config.cdrom) {
    if (auto checked = check_readable_file("--cdrom", *config.cdrom); !checked) return checked;
  }
  return {};
}

}  // namespace lamina::machine
