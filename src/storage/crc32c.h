#pragma once
// CRC-32C (Castagnoli), the checksum of VHDX headers, region tables and log entries
// (VHDX spec 2.2.2: "CRC-32C ... polynomial 0x1EDC6F41"). zlib only offers the IEEE CRC-32.

#include <cstddef>
#include <cstdint>
#include <span>

namespace lamina::storage {

// Checksum of data; pass a previous result as `previous` to continue over several pieces.
uint32_t crc32c(std::span<const std::byte> data, uint32_t previous = 0);

}  // namespace lamina::storage
