#include "base/granted_files.h"

#include <fcntl.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

namespace lamina {

namespace {

constexpr std::array<std::string_view, 5> kAccessNames = {"read", "read_write", "output",
                                                          "listen", "connected"};

// Whether a descriptor opened with `granted` serves a request for `wanted`: a read-write image
// serves a read of the same file; every other access only itself.
bool covers(FileAccess granted, FileAccess wanted) {
  return granted == wanted || (granted == FileAccess::kReadWrite && wanted == FileAccess::kRead);
}

Result<UniqueFd> duplicate(int fd, const std::string& path) {
  UniqueFd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!copy) {
    return fail(ErrorCode::kIo, fmt::format("{}: duplicating its descriptor failed: {}", path,
                                            std::strerror(errno)));
  }
  return copy;
}

}  // namespace

std::string_view to_string(FileAccess access) {
  return kAccessNames.at(static_cast<size_t>(access));
}

GrantedFiles GrantedFiles::recording() { return GrantedFiles(true); }

Result<GrantedFiles> GrantedFiles::from_wire(const nlohmann::json& grants,
                                            std::vector<UniqueFd> fds) {
  const auto bad = [](std::string what) {
    return fail(ErrorCode::kInvalidArgument, "grants: " + std::move(what));
  };
  if (!grants.is_object() || !grants.contains("files") || !grants["files"].is_array()) {
    return bad("expected {\"files\": [...], \"answers\": {...}}");
  }
  const nlohmann::json& files = grants["files"];
  if (files.size() != fds.size()) {
    return bad(fmt::format("{} files but {} descriptors", files.size(), fds.size()));
  }
  GrantedFiles replaying(false);
  for (size_t i = 0; i < files.size(); ++i) {
    const nlohmann::json& file = files[i];
    if (!file.is_object() || !file.contains("path") || !file["path"].is_string() ||
        !file.contains("access") || !file["access"].is_string()) {
      return bad(fmt::format("file {} needs a path and an access", i));
    }
    const std::string access = file["access"].get<std::string>();
    size_t kind = 0;
    while (kind < kAccessNames.size() && kAccessNames[kind] != access) ++kind;
    if (kind == kAccessNames.size()) return bad(fmt::format("unknown access '{}'", access));
    replaying.grants_.push_back(
        {file["path"].get<std::string>(), static_cast<FileAccess>(kind), std::move(fds[i])});
  }
  if (grants.contains("answers")) {
    if (!grants["answers"].is_object()) return bad("answers must be an object");
    for (const auto& [key, value] : grants["answers"].items()) {
      if (!value.is_string()) return bad("answers must be strings");
      replaying.answers_[key] = value.get<std::string>();
    }
  }
  return replaying;
}

Result<GrantedFiles::Obtained> GrantedFiles::obtain(const std::string& path, FileAccess access,
                                                    const Opener& open) {
  for (auto grant = grants_.begin(); grant != grants_.end(); ++grant) {
    if (grant->path != path) continue;
    if (covers(grant->access, access)) {
      auto copy = duplicate(grant->fd.get(), path);
      if (!copy) return fail(copy.error());
      return Obtained{std::move(*copy), false};
    }
    if (recording_) {
      // Opened before with a weaker access (probed read-only, now opened to write): its lock
      // would refuse the stronger one, so this grant gives way to the new open.
      grants_.erase(grant);
      break;
    }
  }
  if (!recording_) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: not granted to this VM for {} (laminad opens every file a VM "
                            "uses)",
                            path, to_string(access)));
  }
  auto opened = open();
  if (!opened) return fail(opened.error());
  auto kept = duplicate(opened->get(), path);
  if (!kept) return fail(kept.error());
  grants_.push_back({path, access, std::move(*kept)});
  return Obtained{std::move(*opened), true};
}

Result<std::string> GrantedFiles::resolve(const std::string& key, const Resolver& resolver) {
  if (auto found = answers_.find(key); found != answers_.end()) return found->second;
  if (!recording_) {
    return fail(ErrorCode::kNotFound,
                fmt::format("{}: not resolved for this VM by laminad", key));
  }
  auto answer = resolver();
  if (!answer) return fail(answer.error());
  answers_[key] = *answer;
  return answer;
}

nlohmann::json GrantedFiles::to_json() const {
  nlohmann::json files = nlohmann::json::array();
  for (const Grant& grant : grants_) {
    files.push_back({{"path", grant.path}, {"access", to_string(grant.access)}});
  }
  nlohmann::json answers = nlohmann::json::object();
  for (const auto& [key, value] : answers_) answers[key] = value;
  return {{"files", std::move(files)}, {"answers", std::move(answers)}};
}

std::vector<int> GrantedFiles::descriptors() const {
  std::vector<int> fds;
  for (const Grant& grant : grants_) fds.push_back(grant.fd.get());
  return fds;
}

}  // namespace lamina
