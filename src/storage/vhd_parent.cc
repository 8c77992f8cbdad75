// Finding a differencing disk's parent from the locators Hyper-V writes (VHD spec, "Parent
// Locator Entry"): W2ru holds a path relative to the child, W2ku an absolute Windows path, both
// UTF-16LE. On a POSIX host a Windows path's backslashes become slashes and a drive letter is
// dropped; the unique id check in VhdImage::load rejects any wrong file this finds.

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>

#include "storage/vhd_image.h"

namespace lamina::storage {

namespace {

// Longest locator Lamina reads; a Windows path is at most 32767 UTF-16 units.
constexpr uint32_t kMaxLocatorBytes = 65536;

std::string to_posix(std::string path) {
  std::replace(path.begin(), path.end(), '\\', '/');
  if (path.rfind("//?/", 0) == 0) path = path.substr(4);
  if (path.size() >= 2 && path[1] == ':' &&
      ((path[0] >= 'A' && path[0] <= 'Z') || (path[0] >= 'a' && path[0] <= 'z'))) {
    path = path.substr(2);
  }
  return path;
}

bool exists(const std::string& path) {
  struct stat info {};
  // Only regular files: a locator naming a FIFO or a device must not block or feed endless data.
  return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

}  // namespace

std::vector<std::string> parent_candidates(const HostFile& child,
                                           const vhd::DynamicHeader& header) {
  std::filesystem::path folder = std::filesystem::path(child.path()).parent_path();
  auto beside_child = [&](const std::string& relative) {
    return folder.empty() ? relative : (folder / relative).lexically_normal().string();
  };
  std::vector<std::string> candidates;
  auto add = [&](const std::string& path) {
    if (!path.empty() && exists(path) &&
        std::find(candidates.begin(), candidates.end(), path) == candidates.end()) {
      candidates.push_back(path);
    }
  };
  for (uint32_t code : {vhd::kPlatformW2ru, vhd::kPlatformW2ku}) {
    for (const vhd::ParentLocator& locator : header.parent_locators) {
      if (locator.platform_code != code || locator.data_length == 0 ||
          locator.data_length > kMaxLocatorBytes) {
        continue;
      }
      std::vector<std::byte> bytes(locator.data_length);
      if (!child.read_exact(locator.data_offset, bytes)) continue;
      std::string path = to_posix(vhd::utf16_to_utf8(vhd::decode_utf16le(bytes)));
      if (path.empty()) continue;
      add(path.front() == '/' ? path : beside_child(path));
    }
  }
  // Spec: the parent's file name is also in the header, as UTF-16BE.
  std::string name = to_posix(vhd::utf16_to_utf8(header.parent_unicode_name));
  if (auto slash = name.rfind('/'); slash != std::string::npos) name = name.substr(slash + 1);
  if (!name.empty()) add(beside_child(name));
  return candidates;
}

}  // namespace lamina::storage
