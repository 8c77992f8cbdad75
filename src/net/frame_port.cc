#include "net/frame_port.h"

#include <fmt/format.h>

namespace lamina::net {

Result<void> check_frame_size(std::span<const std::byte> frame) {
  if (frame.size() < kMinFrameSize || frame.size() > kMaxFrameSize) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("an Ethernet frame of {} bytes is outside {}-{} bytes", frame.size(),
                            kMinFrameSize, kMaxFrameSize));
  }
  return {};
}

}  // namespace lamina::net
