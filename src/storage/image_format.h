#pragma once
// The image formats Lamina knows, as one table of {name, probe, open, create, inspect, check}.
// Formats are detected from content, never from the file name: each probe looks at the first
// and last bytes of the file. Adding a format is one line in image_formats() (image_format.cc)
// naming a function that returns its ImageFormat entry.
//
// Thread-safety: the table is immutable; the functions are as thread-safe as the files they
// touch (one command at a time per file).

#include <cstdint>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "storage/block_device.h"
#include "storage/image_reference_policy.h"

namespace lamina::storage {

// What probes see: up to kProbeHeadBytes from the start and kProbeTailBytes from the end.
inline constexpr size_t kProbeHeadBytes = 65536;
inline constexpr size_t kProbeTailBytes = 1024;
struct ProbeBytes {
  std::span<const std::byte> head;
  std::span<const std::byte> tail;
  uint64_t file_size = 0;
};

struct CreateOptions {
  uint64_t size = 0;
  std::string type;          // format-specific ("fixed", "dynamic"); empty: the default
  uint32_t block_size = 0;   // 0: the format's default
  bool azure = false;        // VHD: fixed, virtual size a whole number of MiB
  bool durable = true;       // false: the file is staged under a temporary name (no ordering)
};

struct InfoField {
  std::string key;
  std::variant<std::string, uint64_t, bool> value;
};

struct ImageInfo {
  std::string path;
  std::string format;
  uint64_t virtual_size = 0;
  uint64_t file_size = 0;
  std::vector<InfoField> fields;       // format details, in display order
  std::vector<std::string> warnings;   // what opening tolerated
  std::vector<ImageInfo> backing_chain;  // parent, grandparent, ...
};

struct CheckProblem {
  std::string message;
  bool error = true;      // false: a note (e.g. unused space that compact reclaims)
  bool repaired = false;  // fixed by --repair
};

struct CheckReport {
  std::vector<CheckProblem> problems;
  // True when no error remains unrepaired.
  bool clean() const {
    for (const auto& problem : problems) {
      if (problem.error && !problem.repaired) return false;
    }
    return true;
  }
};

struct ImageFormat {
  std::string_view name;
  std::string_view description;
  bool (*probe)(const ProbeBytes& bytes);
  // `access`: locking (force_share) and the reference policy for parents, backing files and
  // extents (storage/image_reference_policy.h).
  Result<std::unique_ptr<BlockDevice>> (*open)(const std::string& path, bool writable,
                                               const ImageAccess& access);
  // nullptr for formats Lamina only reads. The file at path must not exist.
  Result<std::unique_ptr<BlockDevice>> (*create)(const std::string& path,
                                                 const CreateOptions& options);
  // May be nullptr: inspect_image() then reports the generic fields, check_image() says the
  // format has no checker.
  Result<ImageInfo> (*inspect)(const std::string& path, const ImageAccess& access);
  Result<CheckReport> (*check)(const std::string& path, bool repair, const ImageAccess& access);
};

// Runs an operation on the image at `path` whose allocations its headers drive. Every such
// allocation is bounded by the file's size and caps; should one still fail, std::bad_alloc
// becomes a clear error instead of aborting the process (a VM's worker, `lamina disk`).
template <typename Operation>
auto guard_allocations(const std::string& path, Operation&& operation) -> decltype(operation()) {
  try {
    return operation();
  } catch (const std::bad_alloc&) {
    return fail(ErrorCode::kUnsupported,
                path + ": not enough memory for what the image's headers describe; refusing it");
  }
}

// Entries of the formats in this folder.
ImageFormat vhd_image_format();
ImageFormat raw_image_format();

// Every known format, most specific probe first; raw (which matches anything) is last.
std::span<const ImageFormat> image_formats();
const ImageFormat* find_format(std::string_view name);
// The format of the file at path, from its content. Only for files the user names: files an
// image references are never probed (image_reference_policy.h).
Result<const ImageFormat*> detect_format(const std::string& path, const ImageAccess& access = {});
// Detects the format and opens the image (and, for differencing disks, its parents).
Result<std::unique_ptr<BlockDevice>> open_image(const std::string& path, bool writable,
                                                const ImageAccess& access = {});
// The format's inspect or check, with generic answers for formats that have none.
Result<ImageInfo> inspect_image(const ImageFormat& format, const std::string& path,
                                const ImageAccess& access = {});
Result<CheckReport> check_image(const ImageFormat& format, const std::string& path, bool repair,
                                const ImageAccess& access = {});

}  // namespace lamina::storage
