#pragma once
// The image reference policy: which host files an image may pull in by naming them (a qcow2
// backing file, a VHD or VHDX parent locator, a VMDK extent), and how they are opened. An image
// file is untrusted input, so the names it holds are too:
// - a name (relative or absolute) must resolve, symlinks followed, to a file inside the
//   referring image's own folder, unless the user allowed more: `--allow-parent-dir` (the
//   folder above it) or `--allow-reference-dir DIR` (DIR and below);
// - only regular files are opened, non-blocking and checked with fstat before the first read
//   (FIFOs, devices, sockets and folders are refused);
// - the referenced file's format is never probed: the reference names or implies it;
// - referenced files are opened read-only with a shared lock (see HostFile).
//
// Thread-safety: plain values and pure functions (they read the file system).

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/granted_files.h"

namespace lamina::storage {

struct ReferencePolicy {
  // Folders (and everything below them) references may reach besides the image's own.
  std::vector<std::filesystem::path> allowed_folders;
  // The folder above each image's own folder is allowed too (`../base.vhd`).
  bool allow_parent_folder = false;
  // Not owned. When set, references are resolved (and their files opened) through it: laminad
  // records what the policy allowed, a sandboxed worker replays exactly that
  // (base/granted_files.h). A name not resolved while recording is kNotFound when replayed.
  GrantedFiles* granted = nullptr;
};

// How an image and the files it references are opened, beyond read-only or read-write.
struct ImageAccess {
  // Open read-only without taking the shared lock (`--force-share`, like qemu-img -U).
  bool force_share = false;
  ReferencePolicy references;
};

// Resolves `name`, found in `image` as its `what` ("backing file", "parent", "extent"), to the
// real path of an existing file the policy allows. kNotFound when nothing is there,
// kInvalidArgument (naming the flag that would allow it) when the policy refuses it.
Result<std::filesystem::path> resolve_reference(const std::filesystem::path& image,
                                                std::string_view name, std::string_view what,
                                                const ReferencePolicy& policy);

}  // namespace lamina::storage
