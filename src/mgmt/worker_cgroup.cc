#include "mgmt/worker_cgroup.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include <fmt/format.h>

namespace lamina::mgmt {

namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(text);
  while (std::getline(in, part, separator)) parts.push_back(part);
  return parts;
}

bool has_word(const std::string& list, const std::string& word, char separator) {
  for (const std::string& item : split(list, separator)) {
    if (item == word) return true;
  }
  return false;
}

// Writes `value` to a cgroup control file (one write(2), as the kernel wants).
Result<void> write_control(const fs::path& file, const std::string& value) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    return fail(ErrorCode::kIo, fmt::format("{}: {}", file.string(), std::strerror(errno)));
  }
  const ssize_t written = ::write(fd, value.data(), value.size());
  const int error = errno;
  ::close(fd);
  if (written != static_cast<ssize_t>(value.size())) {
    return fail(ErrorCode::kIo, fmt::format("{}: writing '{}': {}", file.string(), value,
                                            std::strerror(error)));
  }
  return {};
}

// v2: the parent must pass the memory controller down. Its own processes forbid that unless it
// is the root ("no internal processes"), so laminad moves itself into a leaf first.
Result<void> enable_v2_memory(const fs::path& own, const fs::path& lamina) {
  auto enabled = write_control(own / "cgroup.subtree_control", "+memory");
  if (!enabled) {
    const fs::path leaf = own / "laminad";
    std::error_code error;
    fs::create_directories(leaf, error);
    if (error) return fail(ErrorCode::kIo, fmt::format("{}: {}", leaf.string(), error.message()));
    if (auto moved = write_control(leaf / "cgroup.procs", std::to_string(::getpid())); !moved) {
      return fail(moved.error());
    }
    enabled = write_control(own / "cgroup.subtree_control", "+memory");
    if (!enabled) return fail(enabled.error());
  }
  return write_control(lamina / "cgroup.subtree_control", "+memory");
}

}  // namespace

Result<CgroupParent> find_cgroup_parent(const std::string& proc_self_cgroup,
                                        const std::string& proc_mounts) {
  // /proc/self/cgroup: "0::/path" for v2, "N:memory[,...]:/path" for v1's memory hierarchy.
  std::string v2_path;
  std::string v1_path;
  bool have_v2 = false;
  bool have_v1 = false;
  for (const std::string& line : split(proc_self_cgroup, '\n')) {
    const auto first = line.find(':');
    const auto second = first == std::string::npos ? first : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string hierarchy = line.substr(0, first);
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const std::string path = line.substr(second + 1);
    if (hierarchy == "0" && controllers.empty()) {
      v2_path = path;
      have_v2 = true;
    } else if (has_word(controllers, "memory", ',')) {
      v1_path = path;
      have_v1 = true;
    }
  }
  // /proc/mounts: "dev mountpoint type options dump pass".
  std::string v2_mount;
  std::string v1_mount;
  for (const std::string& line : split(proc_mounts, '\n')) {
    const std::vector<std::string> fields = split(line, ' ');
    if (fields.size() < 4) continue;
    if (fields[2] == "cgroup2" && v2_mount.empty()) v2_mount = fields[1];
    if (fields[2] == "cgroup" && has_word(fields[3], "memory", ',')) v1_mount = fields[1];
  }
  const auto relative = [](const std::string& path) {
    return fs::path(path).relative_path();
  };
  if (have_v2 && !v2_mount.empty()) {
    fs::path own = fs::path(v2_mount) / relative(v2_path);
    // laminad itself may sit in the leaf it moved into (enable_v2_memory).
    if (own.filename() == "laminad") own = own.parent_path();
    if (has_word(read_text(fs::path(v2_mount) / "cgroup.controllers"), "memory", ' ') ||
        has_word(read_text(own / "cgroup.controllers"), "memory", ' ')) {
      return CgroupParent{own / "lamina", WorkerCgroup::Version::kV2};
    }
  }
  if (have_v1 && !v1_mount.empty()) {
    return CgroupParent{fs::path(v1_mount) / relative(v1_path) / "lamina",
                        WorkerCgroup::Version::kV1};
  }
  return fail(ErrorCode::kUnsupported, "the host has no memory cgroup (v2 or v1) mounted");
}

Result<WorkerCgroup> WorkerCgroup::create(const std::string& vm_name, uint64_t memory_limit) {
  auto parent = find_cgroup_parent(read_text("/proc/self/cgroup"), read_text("/proc/mounts"));
  if (!parent) return fail(parent.error());
  std::error_code error;
  const bool fresh = !fs::exists(parent->folder, error);
  fs::create_directories(parent->folder, error);
  if (error) {
    return fail(ErrorCode::kUnsupported, fmt::format("cannot make the cgroup {}: {}",
                                                     parent->folder.string(), error.message()));
  }
  if (parent->version == Version::kV2 && fresh) {
    if (auto enabled = enable_v2_memory(parent->folder.parent_path(), parent->folder); !enabled) {
      return fail(ErrorCode::kUnsupported,
                  enabled.error().with_context("enabling the memory controller").message());
    }
  }
  const fs::path path = parent->folder / vm_name;
  fs::create_directories(path, error);
  if (error) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("cannot make the cgroup {}: {}", path.string(), error.message()));
  }
  const std::string limit = std::to_string(memory_limit);
  if (parent->version == Version::kV2) {
    if (auto set = write_control(path / "memory.max", limit); !set) return fail(set.error());
    // Swap would let the worker exceed the limit; absent without swap accounting.
    if (fs::exists(path / "memory.swap.max", error)) {
      (void)write_control(path / "memory.swap.max", "0");
    }
  } else {
    if (auto set = write_control(path / "memory.limit_in_bytes", limit); !set) {
      return fail(set.error());
    }
    // memory+swap, never below the memory limit; absent without swap accounting.
    if (fs::exists(path / "memory.memsw.limit_in_bytes", error)) {
      (void)write_control(path / "memory.memsw.limit_in_bytes", limit);
    }
  }
  return WorkerCgroup(path, parent->version);
}

std::optional<uint64_t> parse_oom_kills(const std::string& text) {
  for (const std::string& line : split(text, '\n')) {
    if (!line.starts_with("oom_kill ")) continue;
    uint64_t count = 0;
    const char* first = line.data() + 9;
    const char* last = line.data() + line.size();
    if (auto [end, error] = std::from_chars(first, last, count);
        error == std::errc() && end == last) {
      return count;
    }
  }
  return std::nullopt;
}

std::optional<uint64_t> WorkerCgroup::remove(const std::string& vm_name) {
  auto parent = find_cgroup_parent(read_text("/proc/self/cgroup"), read_text("/proc/mounts"));
  if (!parent) return std::nullopt;
  const fs::path path = parent->folder / vm_name;
  const auto oom_kills = parse_oom_kills(read_text(
      path / (parent->version == Version::kV2 ? "memory.events" : "memory.oom_control")));
  // rmdir, not a recursive delete: a cgroup's control files are not files to delete, and a
  // cgroup that still has a process stays (EBUSY).
  ::rmdir(path.c_str());
  return oom_kills;
}

Result<void> WorkerCgroup::add(pid_t pid) const {
  return write_control(path_ / "cgroup.procs", std::to_string(pid));
}

}  // namespace lamina::mgmt
