// `lamina vm import FILE.vmx`: brings a VMware VM over. Each of its disks is converted (VMDK of
// any kind `lamina disk` reads, to VHDX by default, with a progress bar), then laminad gets a
// VM with the same vCPUs, memory, disks and network cards (MACs kept, each card on a virtual
// switch named after its VMware network); what has no Lamina equivalent is listed. A failure
// removes the disks this import wrote.

#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "cli/disk_support.h"
#include "cli/vm_support.h"
#include "mgmt/vmx_import.h"
#include "storage/image_operations.h"

namespace lamina::cli {
namespace {

namespace fs = std::filesystem;

struct ImportArguments {
  std::string vmx;
  std::string name;
  std::string disk_format = "vhdx";
  std::string disk_dir;
};

// Removes the files it holds unless released: nothing half-imported stays behind.
class WrittenFiles {
 public:
  ~WrittenFiles() {
    for (const fs::path& path : paths_) {
      std::error_code ignored;
      fs::remove(path, ignored);
    }
  }
  void add(const fs::path& path) { paths_.push_back(path); }
  void release() { paths_.clear(); }

 private:
  std::vector<fs::path> paths_;
};

void run_import(const VmOptions& options, const ImportArguments& arguments) {
  if (arguments.disk_format != "vhdx" && arguments.disk_format != "vhd") {
    fail_verb("import", "--disk-format: use vhdx or vhd", 2);
  }
  std::ifstream file(arguments.vmx, std::ios::binary);
  if (!file) fail_verb("import", fmt::format("{}: cannot read it", arguments.vmx));
  std::string text(mgmt::kMaxVmxBytes + 1, '\0');
  file.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(file.gcount()));
  auto machine = mgmt::parse_vmx(text, fs::absolute(arguments.vmx));
  if (!machine) fail_verb("import", fmt::format("{}: {}", arguments.vmx, machine.error().message()));

  const std::string name = arguments.name.empty()
                               ? mgmt::vm_name_from(machine->display_name.empty()
                                                        ? fs::path(arguments.vmx).stem().string()
                                                        : machine->display_name)
                               : arguments.name;
  // Refuse a taken name before converting anything.
  {
    auto client_check = call(options, "import", "GET", "/v1/vms");
    for (const auto& vm : client_check.value("vms", nlohmann::json::array())) {
      if (vm.value("name", "") == name) {
        fail_verb("import", fmt::format("a VM named {} exists; choose another with --name", name));
      }
    }
  }
  const fs::path disk_dir =
      fs::absolute(arguments.disk_dir.empty() ? fs::path(arguments.vmx).parent_path()
                                              : fs::path(arguments.disk_dir));
  WrittenFiles written;
  nlohmann::json definition{{"cpus", machine->cpus},
                            {"memory", fmt::format("{}M", machine->memory_mib)}};
  size_t index = 0;
  for (const mgmt::VmxDisk& disk : machine->disks) {
    ++index;
    const fs::path destination =
        disk_dir / fmt::format("{}-disk{}.{}", name, index, arguments.disk_format);
    storage::ConvertOptions convert;
    convert.format = arguments.disk_format;
    {
      ProgressBar progress(fmt::format("disk {}/{} ({})", index, machine->disks.size(), disk.slot));
      auto converted = storage::convert_image(disk.file.string(), destination.string(), convert,
                                              progress.callback());
      if (!converted) {
        fail_verb("import", fmt::format("{} ({}): {}", disk.slot, disk.file.filename().string(),
                                        converted.error().message()));
      }
    }
    written.add(destination);
    definition["disks"].push_back(destination.string());
  }
  for (const mgmt::VmxNic& nic : machine->nics) {
    definition["nets"].push_back(fmt::format("switch:{}{}", nic.network,
                                             nic.mac.empty() ? "" : ",mac=" + nic.mac));
  }
  auto created = call(options, "import", "POST", "/v1/vms",
                      {{"name", name}, {"definition", definition}});
  written.release();
  if (options.json) {
    created["not_carried"] = machine->not_carried;
    fmt::print("{}\n", created.dump(2));
    return;
  }
  fmt::print("imported {} as {}: {} vCPU, {} MiB\n", arguments.vmx, name, machine->cpus,
             machine->memory_mib);
  index = 0;
  for (const mgmt::VmxDisk& disk : machine->disks) {
    fmt::print("  disk {} -> {}\n", disk.slot, definition["disks"][index++].get<std::string>());
  }
  for (const mgmt::VmxNic& nic : machine->nics) {
    fmt::print("  {} -> switch {}{}\n", nic.origin, nic.network,
               nic.mac.empty() ? " (new MAC)" : ", MAC " + nic.mac);
  }
  if (!machine->guest_os.empty()) fmt::print("  guest OS (VMware's name): {}\n", machine->guest_os);
  for (const std::string& line : machine->not_carried) fmt::print("  not carried: {}\n", line);
  if (!machine->disks.empty()) {
    fmt::print("  note: the disks are virtio disks; the guest needs virtio drivers\n");
  }
}

}  // namespace

void add_vm_import_command(CLI::App& vm, const std::shared_ptr<VmOptions>& options) {
  auto arguments = std::make_shared<ImportArguments>();
  auto* import = vm.add_subcommand(
      "import", "Bring a VMware VM over: convert its disks and create it in laminad");
  import->add_option("vmx", arguments->vmx, "The VMware VM's .vmx file")->required();
  import->add_option("--name", arguments->name, "Name in Lamina (default: its display name)");
  import->add_option("--disk-format", arguments->disk_format, "vhdx or vhd")
      ->capture_default_str();
  import->add_option("--disk-dir", arguments->disk_dir,
                     "Folder for the converted disks (default: the .vmx's folder)");
  import->callback([options, arguments] { run_import(*options, *arguments); });
}

}  // namespace lamina::cli
