#include "mgmt/default_paths.h"

#include <unistd.h>

#include <cstdlib>
#include <string>

namespace lamina::mgmt {
namespace {

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

}  // namespace

std::filesystem::path default_state_dir() {
  if (::geteuid() == 0) return "/var/lib/lamina";
  if (auto state = environment("XDG_STATE_HOME"); !state.empty()) {
    return std::filesystem::path(state) / "lamina";
  }
  return std::filesystem::path(environment("HOME")) / ".local/state/lamina";
}

std::filesystem::path default_socket() {
  if (::geteuid() == 0) return "/run/lamina/laminad.sock";
  if (auto runtime = environment("XDG_RUNTIME_DIR"); !runtime.empty()) {
    return std::filesystem::path(runtime) / "lamina/laminad.sock";
  }
  return default_state_dir() / "laminad.sock";
}

}  // namespace lamina::mgmt
