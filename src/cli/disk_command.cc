// `lamina disk`: the disk image tool. This file registers the subcommands and runs `create`;
// disk_inspect.cc has info and check, disk_transform.cc convert, merge, resize and compact.

#include <fmt/format.h>

#include <memory>

#include "base/size.h"
#include "cli/commands.h"
#include "cli/disk_support.h"
#include "storage/image_operations.h"

namespace lamina::cli {

namespace {

struct CreateArguments {
  std::string path;
  std::string size;
  std::string format = "vhd";
  std::string type;
  std::string block_size;
  std::string parent;
  bool azure = false;
  bool force = false;
};

void run_create(const CreateArguments& arguments, const CLI::App& command) {
  if (!arguments.parent.empty()) {
    for (const char* option : {"--size", "--type", "--block-size", "--azure"}) {
      if (command.count(option) > 0) {
        fail_disk_command("create", Error(ErrorCode::kInvalidArgument,
                                          fmt::format("{} does not go with --parent: a "
                                                      "differencing disk takes them from its "
                                                      "parent", option)));
      }
    }
    // The child takes its parent's format; --format, when given, must agree with it.
    auto parent_format = storage::detect_format(arguments.parent);
    if (!parent_format) fail_disk_command("create", parent_format.error());
    std::string_view format = (*parent_format)->name;
    if (command.count("--format") > 0 && arguments.format != format) {
      fail_disk_command("create", Error(ErrorCode::kInvalidArgument,
                                        fmt::format("{} is a {} image; a differencing {} needs a "
                                                    "{} parent (chains do not mix formats)",
                                                    arguments.parent, format, arguments.format,
                                                    arguments.format)));
    }
    auto created = storage::create_differencing(arguments.path, arguments.parent, arguments.force);
    if (!created) fail_disk_command("create", created.error());
    fmt::print("created {} ({} differencing, parent {})\n", arguments.path, format,
               arguments.parent);
    return;
  }
  if (arguments.size.empty()) {
    fail_disk_command("create", Error(ErrorCode::kInvalidArgument,
                                      "--size is required (or --parent for a differencing disk)"));
  }
  storage::CreateOptions options;
  options.size = parse_size_option("create", "--size", arguments.size);
  options.type = arguments.type;
  options.azure = arguments.azure;
  if (!arguments.block_size.empty()) {
    uint64_t block_size = parse_size_option("create", "--block-size", arguments.block_size);
    if (block_size > UINT32_MAX) {
      fail_disk_command("create", Error(ErrorCode::kInvalidArgument, "--block-size is too large"));
    }
    options.block_size = static_cast<uint32_t>(block_size);
  }
  if (arguments.azure && options.size % (1 << 20) != 0) {
    fmt::print(stderr, "lamina disk create: --azure: rounding the size up to a whole MiB\n");
  }
  auto created = storage::create_image(arguments.path, arguments.format, options, arguments.force);
  if (!created) fail_disk_command("create", created.error());
  std::string type = arguments.azure ? "fixed" : arguments.type.empty() && arguments.format != "raw"
                                                     ? "dynamic" : arguments.type;
  fmt::print("created {} ({}{}{}, {})\n", arguments.path, arguments.format, type.empty() ? "" : " ",
             type, format_size(options.size));
}

void add_disk_create(CLI::App& disk) {
  auto arguments = std::make_shared<CreateArguments>();
  auto* create = disk.add_subcommand("create", "Create an empty disk image, or a differencing "
                                               "disk over a parent VHD or VHDX");
  create->add_option("path", arguments->path, "Image file to create")->required();
  create->add_option("--size", arguments->size, "Virtual size, e.g. 512M, 20G (at most 2040G "
                                                "for VHD)");
  create->add_option("--format", arguments->format, "vhd (default), vhdx or raw")
      ->check(CLI::IsMember({"vhd", "vhdx", "raw"}));
  create->add_option("--type", arguments->type, "dynamic (default) or fixed")
      ->check(CLI::IsMember({"dynamic", "fixed"}));
  create->add_option("--block-size", arguments->block_size,
                     "Block size, a power of two (VHD default 2M, VHDX default 32M)");
  create->add_flag("--azure", arguments->azure,
                   "Fixed VHD with a virtual size of whole MiB, as Azure requires");
  create->add_option("--parent", arguments->parent,
                     "Make a differencing disk over this parent VHD or VHDX (same format)");
  create->add_flag("--force", arguments->force, "Replace PATH if it exists");
  create->callback([arguments, create] { run_create(*arguments, *create); });
}

}  // namespace

void add_disk_command(CLI::App& app) {
  auto* disk = app.add_subcommand(
      "disk", "Create, inspect, check and convert virtual disk images (VHD, VHDX, raw; reads VMDK and qcow2 too)");
  disk->require_subcommand(1);
  disk->footer("Formats are detected from content. Commands that write a new file stage it "
               "under a temporary name and rename it when complete.");
  add_disk_create(*disk);
  add_disk_info_and_check(*disk);
  add_disk_transforms(*disk);
}

}  // namespace lamina::cli
