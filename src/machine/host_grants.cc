#include "machine/host_grants.h"

#include "base/output_file.h"
#include "machine/boot_file.h"
#include "machine/default_guest.h"
#include "machine/virtio_devices.h"
#include "machine/vm_definition.h"
#include "virtio/host_console_port.h"

namespace lamina::machine {

namespace {

// The default guest's files stand in for the ones the definition leaves out (as VmRunner's
// boot_options does for `lamina run`).
Result<nlohmann::json> with_boot_files(const nlohmann::json& definition) {
  nlohmann::json named = definition;
  if (named.contains("kernel")) return named;
  // A VM that boots through firmware loads no kernel.
  auto parsed = vm_config_from_definition(definition, HostChecks::kNone);
  if (parsed && effective_firmware(*parsed).kind != FirmwareKind::kNone) return named;
  auto guest = find_default_guest();
  if (!guest) return fail(guest.error());
  named["kernel"] = guest->kernel.string();
  if (!named.contains("initrd")) named["initrd"] = guest->initrd.string();
  if (named.value("cmdline", std::string()).empty()) named["cmdline"] = guest->cmdline;
  return named;
}

}  // namespace

Result<WorkerGrants> grant_host_ends(const nlohmann::json& definition, std::string_view label,
                                     const net::SwitchConnectOptions& switch_options) {
  auto named = with_boot_files(definition);
  if (!named) return fail(named.error());
  auto parsed = vm_config_from_definition(*named);
  if (!parsed) return fail(parsed.error());
  WorkerGrants grants{std::move(*named), std::move(*parsed), GrantedFiles::recording()};
  const VmConfig* config = &grants.config;
  GrantedFiles* files = &grants.files;
  // What is opened here is dropped at once: the grants keep a duplicate of each descriptor
  // (and with it the image locks) for the worker.
  if (config->kernel) {
    if (auto opened = open_boot_file(config->kernel->string(), "kernel", files); !opened) {
      return fail(opened.error());
    }
  }
  if (config->initrd) {
    if (auto opened = open_boot_file(config->initrd->string(), "initrd", files); !opened) {
      return fail(opened.error());
    }
  }
  if (const FirmwareChoice firmware = effective_firmware(*config);
      firmware.kind != FirmwareKind::kNone) {
    if (auto opened = open_boot_file(firmware.file.string(), "firmware", files); !opened) {
      return fail(opened.error());
    }
    if (effective_vga(config->vga, firmware.kind, config->display) == VgaKind::kStd) {
      if (auto opened = open_boot_file(kDefaultVgaRomPath, "VGA option ROM", files); !opened) {
        return fail(opened.error());
      }
    }
  }
  if (config->display.kind != DisplayKind::kNone) {
    if (auto opened = open_display_listener(config->display, files); !opened) {
      return fail(opened.error());
    }
    // The password file is granted like a boot file (and checked now, before the start).
    if (auto password = read_display_password(config->display, files); !password) {
      return fail(password.error());
    }
  }
  if (config->serial.kind == SerialKind::kFile) {
    if (auto opened = open_output_file(config->serial.file, "--serial", files); !opened) {
      return fail(opened.error());
    }
  }
  const ConsolePortConfig& port = config->console_port;
  if (port.kind == ConsolePortKind::kFile) {
    if (auto opened = open_output_file(port.path, "--console-port", files); !opened) {
      return fail(opened.error());
    }
  } else if (port.kind == ConsolePortKind::kSocket) {
    if (auto opened = virtio::HostConsolePort::listen_socket(port.path, files); !opened) {
      return fail(opened.error());
    }
  }
  if (auto opened = open_disks(*config, files); !opened) return fail(opened.error());
  if (auto opened = open_sata_drives(*config, files); !opened) return fail(opened.error());
  net::SwitchConnectOptions connect = switch_options;
  connect.label = std::string(label);
  if (auto opened = open_network_ports(*config, connect, files); !opened) {
    return fail(opened.error());
  }
  return grants;
}

Result<GrantedFiles> grant_device(const VmConfig& device, std::string_view label,
                                  const net::SwitchConnectOptions& switch_options) {
  GrantedFiles files = GrantedFiles::recording();
  if (auto opened = open_disks(device, &files); !opened) return fail(opened.error());
  net::SwitchConnectOptions connect = switch_options;
  connect.label = std::string(label);
  if (auto opened = open_network_ports(device, connect, &files); !opened) {
    return fail(opened.error());
  }
  return files;
}

}  // namespace lamina::machine
