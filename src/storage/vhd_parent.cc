// Finding a differencing disk's parent from the locators Hyper-V writes (VHD spec, "Parent
// Locator Entry"): W2ru holds a path relative to the child, W2ku an absolute Windows path, both
// UTF-16LE. On a POSIX host a Windows path's backslashes become slashes and a drive letter is
// dropped; the unique id check in VhdImage::load rejects any wrong file this finds, and the
// reference policy (image_reference_policy.h) any file outside the folders the user allowed.

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

}  // namespace

std::vector<std::string> parent_candidates(const HostFile& child, const vhd::DynamicHeader& header,
                                           const ReferencePolicy& policy,
                                           std::vector<std::string>& refused) {
  std::vector<std::string> candidates;
  // Each name goes through the reference policy: inside the child's folder unless allowed,
  // symlinks resolved, regular files only. A name that is simply absent is not a refusal.
  auto add = [&](const std::string& name) {
    if (name.empty()) return;
    auto resolved = resolve_reference(child.path(), name, "parent", policy);
    if (!resolved) {
      if (resolved.error().code() != ErrorCode::kNotFound) refused.push_back(resolved.error().message());
      return;
    }
    if (std::find(candidates.begin(), candidates.end(), resolved->string()) == candidates.end()) {
      candidates.push_back(resolved->string());
    }
  };
  for (uint32_t code : {vhd::kPlatformW2ru, vhd::kPlatformW2ku}) {
    for (const vhd::ParentLocator& locator : header.parent_locators) {
      if (locator.platform_code != code || locator.data_length == 0 ||
          locator.data_length > kMaxLocatorBytes) {
        continue;
      }
      std::vector<std::byte> bytes(locator.data_length);
      if (!child.read_at(locator.data_offset, bytes, "parent locator")) continue;
      add(to_posix(vhd::utf16_to_utf8(vhd::decode_utf16le(bytes))));
    }
  }
  // Spec: the parent's file name is also in the header, as UTF-16BE.
  std::string name = to_posix(vhd::utf16_to_utf8(header.parent_unicode_name));
  if (auto slash = name.rfind('/'); slash != std::string::npos) name = name.substr(slash + 1);
  add(name);
  return candidates;
}

}  // namespace lamina::storage
