// `lamina disk convert`, `merge`, `resize` and `compact`: the commands that rewrite images.

#include <fmt/format.h>

#include <memory>

#include "base/size.h"
#include "cli/disk_support.h"
#include "storage/image_operations.h"

namespace lamina::cli {

void add_disk_transforms(CLI::App& disk) {
  struct ConvertArguments {
    std::string source;
    std::string destination;
    std::string format = "vhd";
    std::string type;
    std::string block_size;
    bool azure = false;
    bool force = false;
    AccessArguments access;
  };
  auto convert_arguments = std::make_shared<ConvertArguments>();
  auto* convert = disk.add_subcommand(
      "convert", "Copy an image of any readable format into a new image; all-zero blocks stay "
                 "unallocated in dynamic output");
  convert->add_option("source", convert_arguments->source, "Image to read (format detected)")
      ->required();
  convert->add_option("destination", convert_arguments->destination, "Image to write")->required();
  convert->add_option("--format", convert_arguments->format, "vhd (default), vhdx or raw")
      ->check(CLI::IsMember({"vhd", "vhdx", "raw"}));
  convert->add_option("--type", convert_arguments->type, "dynamic (default) or fixed")
      ->check(CLI::IsMember({"dynamic", "fixed"}));
  convert->add_option("--block-size", convert_arguments->block_size,
                      "VHD dynamic block size (default 2M)");
  convert->add_flag("--azure", convert_arguments->azure,
                    "Fixed VHD with a virtual size of whole MiB, as Azure requires");
  convert->add_flag("--force", convert_arguments->force, "Replace the destination if it exists");
  add_access_options(*convert, convert_arguments->access, true);
  convert->callback([convert_arguments] {
    const ConvertArguments& arguments = *convert_arguments;
    storage::ConvertOptions options;
    options.source_access = arguments.access.access();
    options.format = arguments.format;
    options.overwrite = arguments.force;
    options.create.type = arguments.type;
    options.create.azure = arguments.azure;
    if (!arguments.block_size.empty()) {
      uint64_t block_size = parse_size_option("convert", "--block-size", arguments.block_size);
      if (block_size > UINT32_MAX) {
        fail_disk_command("convert", Error(ErrorCode::kInvalidArgument, "--block-size is too large"));
      }
      options.create.block_size = static_cast<uint32_t>(block_size);
    }
    ProgressBar progress("converting");
    auto converted = storage::guard_allocations(arguments.source, [&] {
      return storage::convert_image(arguments.source, arguments.destination, options,
                                    progress.callback());
    });
    if (!converted) fail_disk_command("convert", converted.error());
  });

  struct PathArguments {
    std::string path;
    AccessArguments access;
  };
  auto merge_arguments = std::make_shared<PathArguments>();
  auto* merge = disk.add_subcommand(
      "merge", "Commit a differencing disk into its parent; the differencing disk is left "
               "empty over the updated parent (other children of that parent become stale)");
  merge->add_option("child", merge_arguments->path, "Differencing VHD or VHDX")->required();
  add_access_options(*merge, merge_arguments->access, false);
  merge->callback([merge_arguments] {
    const std::string& path = merge_arguments->path;
    storage::ImageAccess access = merge_arguments->access.access();
    ProgressBar progress("merging");
    auto merged = storage::guard_allocations(
        path, [&] { return storage::merge_image(path, progress.callback(), access); });
    if (!merged) fail_disk_command("merge", merged.error());
    fmt::print("merged {} bytes of {} into its parent\n", *merged, path);
  });

  struct ResizeArguments {
    std::string path;
    std::string size;
    bool shrink = false;
    AccessArguments access;
  };
  auto resize_arguments = std::make_shared<ResizeArguments>();
  auto* resize = disk.add_subcommand("resize", "Change an image's virtual size");
  resize->add_option("path", resize_arguments->path, "Image file")->required();
  resize->add_option("size", resize_arguments->size, "New virtual size, e.g. 40G")->required();
  resize->add_flag("--shrink", resize_arguments->shrink,
                   "Allow making the disk smaller (drops the data past the new end)");
  add_access_options(*resize, resize_arguments->access, false);
  resize->callback([resize_arguments] {
    uint64_t size = parse_size_option("resize", "size", resize_arguments->size);
    storage::ImageAccess access = resize_arguments->access.access();
    ProgressBar progress("resizing");
    auto resized = storage::guard_allocations(resize_arguments->path, [&] {
      return storage::resize_image(resize_arguments->path, size, resize_arguments->shrink,
                                   progress.callback(), access);
    });
    if (!resized) fail_disk_command("resize", resized.error());
  });

  auto compact_arguments = std::make_shared<PathArguments>();
  auto* compact = disk.add_subcommand(
      "compact",
      "Rewrite a dynamic or differencing VHD or VHDX without unused space and zero blocks");
  compact->add_option("path", compact_arguments->path, "Image file")->required();
  add_access_options(*compact, compact_arguments->access, false);
  compact->callback([compact_arguments] {
    const std::string& path = compact_arguments->path;
    storage::ImageAccess access = compact_arguments->access.access();
    ProgressBar progress("compacting");
    auto sizes = storage::guard_allocations(
        path, [&] { return storage::compact_image(path, progress.callback(), access); });
    if (!sizes) fail_disk_command("compact", sizes.error());
    fmt::print("{}: {} -> {} bytes\n", path, sizes->first, sizes->second);
  });
}

}  // namespace lamina::cli
