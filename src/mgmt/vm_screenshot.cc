// The running VM's screen: VmService::screenshot (PNG, from its worker) and vnc_display (where
// its VNC server listens, for the API's relay).
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "base/unique_fd.h"
#include "machine/vm_definition.h"
#include "mgmt/vm_service.h"

namespace lamina::mgmt {
namespace {

constexpr auto kScreenshotTimeout = std::chrono::seconds(10);
// A 2560x1600 screen of noise compresses to about 12 MiB; anything larger is not our PNG.
constexpr off_t kMaxScreenshotBytes = off_t{64} << 20;

}  // namespace

ServiceResult<std::string> VmService::screenshot(const std::string& name) {
  auto running = running_worker(name);
  if (!running) return std::unexpected(running.error());
  WorkerProcess* worker = *running;
  // The worker writes the PNG into an anonymous file of ours (it opens no files itself).
  UniqueFd file(::memfd_create("lamina-screenshot", MFD_CLOEXEC));
  if (!file)
    return std::unexpected(ServiceError::internal(fmt::format("memfd: {}", std::strerror(errno))));
  const int fds[] = {file.get()};
  nlohmann::json refusal;
  auto reply =
      worker->request(nlohmann::json{{"op", "screenshot"}}, kScreenshotTimeout, fds, &refusal);
  if (!reply) {
    // No VGA adapter, or nothing renderable on it: the VM's state, not the request, is why.
    if (reply.error().code() == ErrorCode::kInvalidArgument) {
      return std::unexpected(ServiceError::conflict(
          fmt::format("{}: {}", name, refusal.value("error", std::string("no screenshot")))));
    }
    return std::unexpected(ServiceError{502, "", reply.error().message()});
  }
  struct stat status {};
  if (::fstat(file.get(), &status) != 0 || status.st_size <= 0 ||
      status.st_size > kMaxScreenshotBytes) {
    return std::unexpected(
        ServiceError{502, "", fmt::format("{}: the worker wrote no screenshot", name)});
  }
  std::string png(static_cast<size_t>(status.st_size), '\0');
  for (size_t done = 0; done < png.size();) {
    const ssize_t got =
        ::pread(file.get(), png.data() + done, png.size() - done, static_cast<off_t>(done));
    if (got <= 0)
      return std::unexpected(ServiceError::internal("reading the screenshot back failed"));
    done += static_cast<size_t>(got);
  }
  return png;
}

ServiceResult<machine::DisplayOption> VmService::vnc_display(const std::string& name) {
  if (auto running = running_worker(name); !running) return std::unexpected(running.error());
  auto found = inventory_->find(name);
  if (!found) return std::unexpected(ServiceError::internal(found.error().message()));
  if (!*found) return std::unexpected(ServiceError::no_vm(name));
  auto config =
      machine::vm_config_from_definition((*found)->definition, machine::HostChecks::kNone);
  if (!config) return std::unexpected(ServiceError::internal(config.error().message()));
  if (config->display.kind == machine::DisplayKind::kNone) {
    return std::unexpected(ServiceError::conflict(fmt::format(
        "{} has no VNC display (its definition's display is none; create it with --display "
        "vnc:unix:PATH or vnc:HOST:PORT)",
        name)));
  }
  return config->display;
}

}  // namespace lamina::mgmt
