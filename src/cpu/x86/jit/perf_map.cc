#include "cpu/x86/jit/perf_map.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "cpu/x86/jit/profile.h"

namespace lamina::cpu::x86::jit {
namespace {

UniqueFd open_for_append(const std::string& path) {
  return UniqueFd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
}

// One write(2), so lines of several vCPUs never interleave (O_APPEND).
void append(const UniqueFd& fd, const std::string& text) {
  const ssize_t written = ::write(fd.get(), text.data(), text.size());
  (void)written;  // best effort: a profiling aid
}

}  // namespace

std::unique_ptr<PerfMap> PerfMap::from_environment() {
  const char* wanted = std::getenv("LAMINA_JIT_PERF_MAP");
  if (wanted == nullptr || *wanted == '\0' || std::strcmp(wanted, "0") == 0) return nullptr;
  const auto pid = static_cast<long>(::getpid());
  UniqueFd map = open_for_append(fmt::format("/tmp/perf-{}.map", pid));
  UniqueFd blocks = open_for_append(fmt::format("/tmp/lamina-jit-{}.blocks", pid));
  if (!map.valid() || !blocks.valid()) return nullptr;
  return std::make_unique<PerfMap>(std::move(map), std::move(blocks));
}

void PerfMap::note(const std::byte* installed, std::span<const std::byte> code, uint64_t rip, const Block& block) {
  const auto host = reinterpret_cast<uintptr_t>(installed);
  append(map_, fmt::format("{:x} {:x} guest:{:x}\n", host, code.size(), rip));
  std::string text = fmt::format("block guest:{:x} physical {:x} host {:x} size {:x}\n", rip, block.physical, host,
                                 code.size());
  uint64_t at = rip;
  for (const Instruction& in : block.instructions) {
    text += fmt::format("  {:x} {}\n", at, JitProfile::describe(in));
    at += in.length;
  }
  // By hand: a format call per byte made the map writer a third of the profile it was for.
  static constexpr char kDigits[] = "0123456789abcdef";
  text += "  code ";
  for (const std::byte byte : code) {
    const auto value = static_cast<unsigned>(byte);
    text += kDigits[value >> 4];
    text += kDigits[value & 0xf];
  }
  text += "\n";
  append(blocks_, text);
}

}  // namespace lamina::cpu::x86::jit
