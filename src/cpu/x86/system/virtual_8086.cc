#include "cpu/x86/system/virtual_8086.h"

namespace lamina::cpu::x86 {

namespace {
// The core's segment order: ES, CS, SS, DS, FS, GS.
enum : uint8_t { kEsIndex, kCsIndex, kSsIndex, kDsIndex, kFsIndex, kGsIndex };
}  // namespace

Virtual8086InterruptFrame virtual_8086_interrupt_frame(const std::array<uint16_t, 6>& segments,
                                                       uint32_t esp, uint32_t eflags,
                                                       uint32_t eip, bool has_error_code,
                                                       uint32_t error_code) {
  Virtual8086InterruptFrame frame;
  frame.values = {segments[kGsIndex], segments[kFsIndex], segments[kDsIndex], segments[kEsIndex],
                  segments[kSsIndex], esp,  eflags, segments[kCsIndex], eip, error_code};
  frame.count = has_error_code ? 10 : 9;
  return frame;
}

std::expected<Virtual8086Return, Fault> decode_virtual_8086_return(
    std::span<const uint32_t, 9> popped) {
  Virtual8086Return result;
  result.eip = popped[0];
  result.eflags = popped[2];
  result.esp = popped[3];
  result.segments[kCsIndex] = static_cast<uint16_t>(popped[1]);
  result.segments[kSsIndex] = static_cast<uint16_t>(popped[4]);
  result.segments[kEsIndex] = static_cast<uint16_t>(popped[5]);
  result.segments[kDsIndex] = static_cast<uint16_t>(popped[6]);
  result.segments[kFsIndex] = static_cast<uint16_t>(popped[7]);
  result.segments[kGsIndex] = static_cast<uint16_t>(popped[8]);
  // SDM IRET: "IF EIP not within CS limit THEN #GP(0)" with CS's 64 KiB limit.
  if (result.eip > kVirtual8086SegmentLimit) return std::unexpected(general_protection_fault());
  return result;
}

}  // namespace lamina::cpu::x86
