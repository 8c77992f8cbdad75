#pragma once
// PerfMap: makes translated code profilable. Off unless LAMINA_JIT_PERF_MAP is set (to
// anything but "" or "0"): then each translation is appended to /tmp/perf-PID.map, the file
// `perf report` reads for code without symbols (one "host-address size name" line; the name
// is "guest:<RIP>"), and its guest instructions and host bytes to /tmp/lamina-jit-PID.blocks,
// so that a hot symbol can be read back as guest forms and disassembled (bench/jit_perf.sh).
//
// Ownership: owns its two file descriptors. Thread-safety: one per vCPU; the vCPUs of a
// process append to the same files, each line one write(2) on an O_APPEND descriptor.

#include <cstddef>
#include <memory>
#include <span>

#include "base/unique_fd.h"
#include "cpu/x86/block_cache.h"

namespace lamina::cpu::x86::jit {

class PerfMap {
 public:
  // A map when LAMINA_JIT_PERF_MAP asks for one and its files open, else null.
  static std::unique_ptr<PerfMap> from_environment();
  PerfMap(UniqueFd map, UniqueFd blocks) : map_(std::move(map)), blocks_(std::move(blocks)) {}

  // `code` was installed for `block`, which starts at guest `rip`.
  void note(const std::byte* installed, std::span<const std::byte> code, uint64_t rip, const Block& block);

 private:
  UniqueFd map_;
  UniqueFd blocks_;
};

}  // namespace lamina::cpu::x86::jit
