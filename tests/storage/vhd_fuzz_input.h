#pragma once
// One fuzz input through everything that parses a VHD file: open (with parent lookup), a few
// reads, map_extent, inspect, check, check --repair and open again. Shared by the libFuzzer
// target (clang, LAMINA_FUZZ) and the GCC-built robustness test so both exercise the same paths.

#include <cstdint>
#include <span>
#include <string>

namespace lamina::storage::test {

// Writes data to folder/input.vhd (sparse when it starts with "SPRS", sparse_fuzz_file.h) and
// runs it through the parser. Never throws; a crash, hang
// or sanitizer report is the failure.
void run_vhd_input(std::span<const uint8_t> data, const std::string& folder);

}  // namespace lamina::storage::test
