#pragma once
// GrantedFiles: the host files one process opens on behalf of another that may not open paths
// at all (laminad for a sandboxed lamina-vm, whose root is an empty folder). The code that
// opens a VM's host ends (disk images and their chains, kernel, initrd, output files, console
// sockets) is the same in both processes; only where descriptors come from differs:
//   - recording (laminad): obtain() opens for real through the caller's opener, keeps a
//     duplicate descriptor and remembers the path and the access; resolve() runs the caller's
//     resolver (an image's reference to its parent, under the reference policy) and remembers
//     the answer;
//   - replaying (the worker): obtain() hands out a duplicate of the descriptor granted for
//     that path and access, and resolve() the recorded answer; a file not granted is refused
//     with kInvalidArgument naming it (an answer not recorded is kNotFound: nothing there),
//     so a worker can never reach a file laminad did not open for it.
// A duplicate shares the open file description, so a flock taken at the real open (an image's
// writer or reader lock) travels with the descriptors and is held until the last one closes.
//
// On the wire (control protocol "start"): to_json() lists the grants in descriptor order and
// descriptors() gives the descriptors to pass with SCM_RIGHTS; from_wire() rebuilds the
// replaying side and checks the shapes, since the sender is another process.
//
// Ownership: owns the kept descriptors. Thread-safety: none; used while a VM's host ends open.

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/unique_fd.h"

namespace lamina {

// How a file is opened; a grant covers an access it is at least as strong as.
enum class FileAccess {
  kRead,       // read-only, shared lock (an image, a parent, a kernel)
  kReadWrite,  // read-write, exclusive lock (a writable image)
  kOutput,     // an output file (open_output_file's rules)
  kListen,     // a listening Unix socket bound at the path
  kConnected,  // a connected socket or device: a switch port, a tap (the "path" names it)
};
std::string_view to_string(FileAccess access);

class GrantedFiles {
 public:
  // A descriptor from obtain(): `opened` is true when it was opened for real just now (the
  // caller applies its checks and takes its lock), false when it duplicates a granted one
  // (checked and locked when it was first opened).
  struct Obtained {
    UniqueFd fd;
    bool opened = false;
  };
  using Opener = std::function<Result<UniqueFd>()>;
  using Resolver = std::function<Result<std::string>()>;

  static GrantedFiles recording();
  // The replaying side from a start request: `grants` as to_json() wrote it, `fds` in the same
  // order. kInvalidArgument when they do not match.
  static Result<GrantedFiles> from_wire(const nlohmann::json& grants, std::vector<UniqueFd> fds);

  GrantedFiles(GrantedFiles&&) noexcept = default;
  GrantedFiles& operator=(GrantedFiles&&) noexcept = default;

  bool is_recording() const { return recording_; }

  // A descriptor for `path` with `access`. Recording: a grant of the same path that covers
  // `access` is duplicated; a weaker one (read, now read-write) is dropped first so its lock
  // does not stand in the way, then `open` runs and its descriptor is kept. Replaying: the
  // granted descriptor, duplicated.
  [[nodiscard]] Result<Obtained> obtain(const std::string& path, FileAccess access,
                                        const Opener& open);
  // The answer to a question about the host's files, keyed by `key` (e.g. an image, the name it
  // refers to and the role): resolved for real and recorded, or the recorded answer replayed.
  [[nodiscard]] Result<std::string> resolve(const std::string& key, const Resolver& resolver);

  nlohmann::json to_json() const;
  std::vector<int> descriptors() const;
  size_t size() const { return grants_.size(); }

 private:
  struct Grant {
    std::string path;
    FileAccess access;
    UniqueFd fd;
  };
  explicit GrantedFiles(bool recording) : recording_(recording) {}

  bool recording_;
  std::vector<Grant> grants_;
  std::map<std::string, std::string> answers_;
};

}  // namespace lamina
