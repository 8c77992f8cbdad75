#include "storage/image_reference_policy.h"

#include <sys/stat.h>

#include <algorithm>
#include <fmt/format.h>

namespace lamina::storage {

namespace {

namespace fs = std::filesystem;

// True when `path` is `folder` or lies below it (both canonical).
bool inside(const fs::path& path, const fs::path& folder) {
  auto [folder_end, path_end] = std::mismatch(folder.begin(), folder.end(), path.begin(), path.end());
  return folder_end == folder.end();
}

fs::path canonical_or_empty(const fs::path& path) {
  std::error_code error;
  fs::path result = fs::canonical(path, error);
  return error ? fs::path() : result;
}

}  // namespace

namespace {

Result<fs::path> resolve_on_host(const fs::path& image, std::string_view name,
                                 std::string_view what, const ReferencePolicy& policy);

}  // namespace

Result<fs::path> resolve_reference(const fs::path& image, std::string_view name,
                                   std::string_view what, const ReferencePolicy& policy) {
  if (!policy.granted) return resolve_on_host(image, name, what, policy);
  // laminad resolved it under this policy while recording; a worker replays the answer.
  const std::string key = fmt::format("{} {}: {}", image.string(), what, name);
  auto answer = policy.granted->resolve(key, [&]() -> Result<std::string> {
    auto resolved = resolve_on_host(image, name, what, policy);
    if (!resolved) return fail(resolved.error());
    return resolved->string();
  });
  if (!answer) return fail(answer.error());
  return fs::path(*answer);
}

namespace {

Result<fs::path> resolve_on_host(const fs::path& image, std::string_view name,
                                 std::string_view what, const ReferencePolicy& policy) {
  const std::string image_name = image.filename().string();
  if (name.empty()) {
    return fail(ErrorCode::kCorrupt, fmt::format("{}: the {} name is empty", image_name, what));
  }
  fs::path folder = image.parent_path().empty() ? fs::path(".") : image.parent_path();
  fs::path named(name);
  fs::path candidate = named.is_absolute() ? named : folder / named;
  // Symlinks are followed here, once, so the policy judges the file that would be opened.
  std::error_code error;
  fs::path target = fs::canonical(candidate, error);
  if (error) {
    return fail(ErrorCode::kNotFound,
                fmt::format("{}: {} '{}' not found", image_name, what, std::string(name)));
  }
  fs::path own = canonical_or_empty(folder);
  std::vector<fs::path> allowed = {own};
  if (policy.allow_parent_folder && !own.empty()) allowed.push_back(own.parent_path());
  for (const fs::path& extra : policy.allowed_folders) {
    if (fs::path real = canonical_or_empty(extra); !real.empty()) allowed.push_back(real);
  }
  bool permitted = std::ranges::any_of(
      allowed, [&](const fs::path& root) { return !root.empty() && inside(target, root); });
  if (!permitted) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: {} '{}' lies outside the image's folder; refusing to open it "
                            "(allow it with --allow-parent-dir or --allow-reference-dir DIR; for run --disk, "
                            ",allow-parent-dir or ,allow-dir=DIR)",
                            image_name, what, std::string(name)));
  }
  // stat, not open: a FIFO must be refused without opening it (HostFile checks again by fd).
  struct stat info {};
  if (::stat(target.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: {} '{}' is not a regular file; refusing to open it", image_name,
                            what, std::string(name)));
  }
  return target;
}

}  // namespace

}  // namespace lamina::storage
