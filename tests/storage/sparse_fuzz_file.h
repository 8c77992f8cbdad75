#pragma once
// How a fuzz input becomes an image file, sparse files included. Written byte for byte, an
// input cannot reach the bugs of sparse images (a header claiming a table that lies in a hole,
// issue 16), so an input may start with the magic "SPRS" and then hold records
//   [u32 LE hole length in 512-byte sectors][u16 LE data length][data]
// each leaving a hole and then writing its data; a final record's hole extends the file. Holes
// add up to at most kMaxSparseFileSize, so a run never needs real disk space. Any other input
// is written as it is. Shared by the VHD and format fuzzers and their robustness tests.

#include <cstdint>
#include <span>
#include <vector>

namespace lamina::storage::test {

inline constexpr uint64_t kMaxSparseFileSize = uint64_t{64} << 30;

// Writes the input's file through `fd` (open, empty, writable). False when a write failed.
bool write_fuzz_file(int fd, std::span<const uint8_t> data);

// The "SPRS" encoding of a file that is `holes[i].first` sectors of hole, then the bytes in
// `holes[i].second`, for each i (for seeds and tests).
std::vector<uint8_t> encode_sparse(
    const std::vector<std::pair<uint32_t, std::vector<uint8_t>>>& records);

}  // namespace lamina::storage::test
