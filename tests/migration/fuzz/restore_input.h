#pragma once
// The restore fuzz harness: one input is a whole machine state file, restored into a small
// machine (1 vCPU, 32 MiB, a virtio-rng) with RAM copied. Shared by restore_fuzz (libFuzzer)
// and the GCC-built robustness test, which feeds it mutated real state files. Returns whether
// the restore succeeded; anything else (a crash, a hang, a sanitizer report) is the bug.

#include <cstddef>
#include <cstdint>
#include <span>

namespace lamina::migration {

bool restore_fuzz_input(std::span<const std::byte> input);

}  // namespace lamina::migration
