// `lamina disk info` and `lamina disk check`, as text or JSON (--json).

#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "base/size.h"
#include "cli/disk_support.h"
#include "storage/image_format.h"
#include "storage/image_info_json.h"

namespace lamina::cli {

namespace {

void print_info(const storage::ImageInfo& info, const std::string& indent) {
  fmt::print("{}image: {}\n", indent, info.path);
  fmt::print("{}format: {}\n", indent, info.format);
  fmt::print("{}virtual size: {} ({} bytes)\n", indent, format_size(info.virtual_size),
             info.virtual_size);
  fmt::print("{}file size: {} bytes\n", indent, info.file_size);
  for (const auto& field : info.fields) {
    std::string value = std::visit(
        [](const auto& v) -> std::string {
          if constexpr (std::is_same_v<std::decay_t<decltype(v)>, bool>) {
            return v ? "yes" : "no";
          } else {
            return fmt::format("{}", v);
          }
        },
        field.value);
    std::string key = field.key;
    for (char& c : key) {
      if (c == '_') c = ' ';
    }
    fmt::print("{}{}: {}\n", indent, key, value);
  }
  for (const auto& warning : info.warnings) fmt::print("{}warning: {}\n", indent, warning);
  for (const auto& parent : info.backing_chain) {
    fmt::print("{}backing file:\n", indent);
    print_info(parent, indent + "  ");
  }
}

const storage::ImageFormat& detect(std::string_view command, const std::string& path,
                                   const storage::ImageAccess& access) {
  auto format = storage::detect_format(path, access);
  if (!format) fail_disk_command(command, format.error());
  return **format;
}

}  // namespace

void add_disk_info_and_check(CLI::App& disk) {
  struct Arguments {
    std::string path;
    bool json = false;
    bool repair = false;
    AccessArguments access;
  };
  auto info_arguments = std::make_shared<Arguments>();
  auto* info = disk.add_subcommand("info", "Show an image's format, sizes and layout");
  info->add_option("path", info_arguments->path, "Image file")->required();
  info->add_flag("--json", info_arguments->json, "Print JSON");
  add_access_options(*info, info_arguments->access, true);
  info->callback([info_arguments] {
    storage::ImageAccess access = info_arguments->access.access();
    const auto& format = detect("info", info_arguments->path, access);
    auto result = storage::inspect_image(format, info_arguments->path, access);
    if (!result) fail_disk_command("info", result.error());
    if (info_arguments->json) {
      fmt::print("{}\n", storage::image_info_json(*result).dump(2));
    } else {
      print_info(*result, "");
    }
  });

  auto check_arguments = std::make_shared<Arguments>();
  auto* check = disk.add_subcommand(
      "check", "Check an image's structure; exit status 2 when problems remain");
  check->add_option("path", check_arguments->path, "Image file")->required();
  check->add_flag("--json", check_arguments->json, "Print JSON");
  check->add_flag("--repair", check_arguments->repair,
                  "Fix what is safe: a missing or damaged footer copy, BAT entries past the end "
                  "of the file");
  add_access_options(*check, check_arguments->access, true);
  check->callback([check_arguments] {
    const std::string& path = check_arguments->path;
    storage::ImageAccess access = check_arguments->access.access();
    if (access.force_share && check_arguments->repair) {
      fail_disk_command("check", Error(ErrorCode::kInvalidArgument,
                                       "--force-share is for reading; --repair writes the image"));
    }
    const auto& format = detect("check", path, access);
    auto report = storage::check_image(format, path, check_arguments->repair, access);
    if (!report) fail_disk_command("check", report.error());
    if (check_arguments->json) {
      nlohmann::json json;
      json["path"] = path;
      json["format"] = format.name;
      json["clean"] = report->clean();
      json["problems"] = nlohmann::json::array();
      for (const auto& problem : report->problems) {
        json["problems"].push_back({{"message", problem.message},
                                    {"severity", problem.error ? "error" : "note"},
                                    {"repaired", problem.repaired}});
      }
      fmt::print("{}\n", json.dump(2));
    } else {
      for (const auto& problem : report->problems) {
        const char* label = !problem.error ? "note" : problem.repaired ? "repaired" : "error";
        fmt::print("{}: {}: {}\n", path, label, problem.message);
      }
      if (report->clean()) fmt::print("{}: no errors ({})\n", path, format.name);
    }
    if (!report->clean()) throw CLI::RuntimeError(kDiskCheckProblemsExitCode);
  });
}

}  // namespace lamina::cli
