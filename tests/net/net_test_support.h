#pragma once
// Helpers for the src/net tests: Ethernet frames, waiting for frames on a FramePort, a private
// XDG_RUNTIME_DIR per test.

#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "net/frame_port.h"
#include "net/mac_address.h"

namespace lamina::net::testing {

inline MacAddress mac(uint8_t last) { return MacAddress({0x02, 0x00, 0x00, 0x00, 0x00, last}); }

// dst, src, EtherType 0x88b5 (IEEE 802 local experimental), then `tag` and padding to 60 bytes.
inline std::vector<std::byte> frame(const MacAddress& destination, const MacAddress& source,
                                    uint32_t tag, size_t size = 60) {
  std::vector<std::byte> bytes(size);
  std::memcpy(bytes.data(), destination.bytes().data(), 6);
  std::memcpy(bytes.data() + 6, source.bytes().data(), 6);
  bytes[12] = std::byte{0x88};
  bytes[13] = std::byte{0xb5};
  if (size >= 18) std::memcpy(bytes.data() + 14, &tag, 4);
  return bytes;
}

inline uint32_t tag_of(const std::vector<std::byte>& bytes) {
  uint32_t tag = 0;
  if (bytes.size() >= 18) std::memcpy(&tag, bytes.data() + 14, 4);
  return tag;
}

// The next frame on `port` within `timeout`, or std::nullopt.
inline std::optional<std::vector<std::byte>> receive_within(
    FramePort& port, std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) {
  std::vector<std::byte> buffer(kMaxFrameSize);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto got = port.receive(buffer);
    EXPECT_TRUE(got.has_value()) << (got ? "" : got.error().message());
    if (!got) return std::nullopt;
    if (*got) {
      buffer.resize(**got);
      return buffer;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd polled{port.poll_fd(), POLLIN, 0};
    ::poll(&polled, 1, static_cast<int>(left.count()));
  }
}

// Sends, waiting for room when the port says kBusy.
inline void send_frame(FramePort& port, const std::vector<std::byte>& bytes) {
  for (int attempt = 0; attempt < 1000; ++attempt) {
    auto sent = port.send(bytes);
    ASSERT_TRUE(sent.has_value()) << sent.error().message();
    if (*sent == SendStatus::kSent) return;
    pollfd polled{port.poll_fd(), POLLOUT, 0};
    ::poll(&polled, 1, 100);
  }
  FAIL() << "the port stayed busy";
}

// Points XDG_RUNTIME_DIR at a fresh private folder for the test's lifetime (set it before any
// thread starts: setenv is not thread-safe).
class PrivateRuntimeDirectory {
 public:
  PrivateRuntimeDirectory() {
    std::string pattern = (std::filesystem::temp_directory_path() / "lamina-net-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
    ::setenv("XDG_RUNTIME_DIR", path_.c_str(), 1);
  }
  ~PrivateRuntimeDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace lamina::net::testing
