#pragma once
// Live migration's wire protocol: messages between the source worker, the two laminads and
// the destination (ARCHITECTURE.md, "Live migration"). Between the laminads each message is
// one binary WebSocket message on laminad's TLS endpoint (GET /v1/migrations/incoming, mutual
// TLS); between the source worker and its laminad each is a frame on a stream socket: a u32
// little-endian length, then the message. A message's first byte is its MessageType.
//
//   source laminad → destination   kOffer    JSON {"name", "definition", "autostart",
//                                             "on_crash", "vcpus", "memory_bytes",
//                                             "storage": "shared"|"copy", with copy
//                                             "disk_copies": [{"format", "size"}] one per
//                                             entry of the definition's "disks", whose paths
//                                             are the destination's,
//                                             "connections": how many it would like, 1-8}
//   destination → source laminad   kAccept   JSON {"connections": granted, "join": id} or
//                                            kRefuse JSON {"error"}
//   source laminad → destination   kJoin     JSON {"join", "lane": 1..granted-1}: the first
//                                            message of each further connection (a lane),
//                                            answered kAccept {} or kRefuse; a lane then
//                                            carries kPages only and ends with kLaneEnd (the
//                                            switchover waits for every lane's end)
//   source worker → destination    kDiskChunk*  with --storage copy: disk content
//                                            (encode_disk_chunk), first all of it, then
//                                            what the guest rewrote, alongside the pages
//                                  kPages*   RAM pages (encode_pages), any number of rounds
//                                  kState    the machine stream (machine_state.h) of the
//                                            quiesced VM, after its last pages
//                                  kSwitchover  the source has stopped for good unless told
//                                            otherwise, flushed its disks and released their
//                                            locks: the destination may take them and start
//   destination → source worker    kStarted  JSON {"phases": [...]} (the VM runs there: its
//                                            machine is built and restored; the source ends
//                                            it; "phases": the destination's share of the
//                                            downtime, migration/phase_times.h, optional)
//                                  kFailed   JSON {"error"} (the source runs on)
//
// Everything received is checked (bounded sizes, page addresses inside RAM), so a corrupt or
// hostile stream is an Error, never a crash or an unbounded allocation.
//
// Thread-safety: free functions on values and descriptors.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace lamina::migration {

enum class MessageType : uint8_t {
  kOffer = 1,
  kAccept = 2,
  kRefuse = 3,
  kPages = 4,
  kState = 5,
  kSwitchover = 6,
  kStarted = 7,
  kFailed = 8,
  kDiskChunk = 9,
  kJoin = 10,
  kLaneEnd = 11,
};

// Connections per migration: the main one (offer, disks, state, switchover) and up to
// kMaxConnections - 1 lanes that carry only pages.
inline constexpr uint32_t kMaxConnections = 8;

// The largest message: a kState of kMaxStateStream plus its type byte.
inline constexpr uint32_t kMaxMessage = (uint32_t{64} << 20) + 16;
// Pages per kPages message (1 MiB of RAM before compression).
inline constexpr uint32_t kMaxPagesPerMessage = 256;
inline constexpr uint64_t kPageBytes = 4096;

// A message of `type` carrying `payload` (JSON or bytes).
std::vector<std::byte> make_message(MessageType type, std::span<const std::byte> payload = {});
std::vector<std::byte> make_json_message(MessageType type, const nlohmann::json& body);
// The type of a message (kCorrupt when empty or unknown) and its JSON body.
Result<MessageType> message_type(std::span<const std::byte> message);
Result<nlohmann::json> message_json(std::span<const std::byte> message);

// One page in a kPages message: its guest-physical address, and its bytes (empty: the page is
// all zeros).
struct Page {
  uint64_t guest_physical = 0;
  std::span<const std::byte> data;
};
// kPages: u8 type, u16 round, 1 byte zero, u32 count, u32 compressed length, count x u64
// (address | 1 for a zero page), then one zstd frame of the non-zero pages back to back. The
// round orders copies of a page that travel on different connections: the destination keeps
// a page's copy from the latest round (PageRounds).
std::vector<std::byte> encode_pages(std::span<const Page> pages, uint16_t round = 0,
                                    int compression_level = 1);
// Decodes into `out` (the non-zero pages' bytes, kPageBytes each, in order) and the addresses
// with their zero flags; sizes are checked before anything is allocated.
struct DecodedPages {
  uint16_t round = 0;
  std::vector<uint64_t> addresses;
  std::vector<bool> zero;
  std::vector<std::byte> data;  // the non-zero pages, in order
};
Result<DecodedPages> decode_pages(std::span<const std::byte> message);

// The image formats --storage copy moves (the destination creates an empty one of the same
// format): the ones Lamina writes with dirty tracking and can create.
inline bool copyable_disk_format(std::string_view format) {
  return format == "raw" || format == "vhd" || format == "vhdx";
}

// kDiskChunk: u8 type, u8 flags (1: the range reads as zeros, no data), 2 bytes zero, u32 disk
// (index in the definition's "disks"), u64 offset, u32 length, u32 compressed length, then one
// zstd frame of the range's bytes. Offsets and lengths are whole 512-byte sectors; a chunk
// holds at most kMaxDiskChunk bytes.
inline constexpr uint32_t kMaxDiskChunk = 1 << 20;
struct DiskChunk {
  uint32_t disk = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool zero = false;
  std::vector<std::byte> data;  // `length` bytes unless zero
};
std::vector<std::byte> encode_disk_chunk(uint32_t disk, uint64_t offset,
                                         std::span<const std::byte> data, bool zero,
                                         int compression_level = 1);
Result<DiskChunk> decode_disk_chunk(std::span<const std::byte> message);

// Frames on a stream socket (blocking). read_frame: kNotFound at a clean end of stream
// before a frame starts, kIo on errors or after `timeout_ms` (-1: none) without data,
// kCorrupt for a frame over kMaxMessage.
Result<void> write_frame(int fd, std::span<const std::byte> message);
Result<std::vector<std::byte>> read_frame(int fd, int timeout_ms = -1);

}  // namespace lamina::migration
