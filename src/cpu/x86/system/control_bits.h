#pragma once
// Architectural bit positions of CR0, CR4 and EFER that the system components test. Each group is
// its own namespace so the names stay short and cannot collide with the core's own constants.
// Intel SDM Vol. 3A 2.5 (control registers), 2.2.1 (EFER); AMD APM Vol. 2 3.1.

#include <cstdint>

namespace lamina::cpu::x86 {

namespace cr0 {
inline constexpr uint64_t kPe = uint64_t{1} << 0;   // protection enable
inline constexpr uint64_t kMp = uint64_t{1} << 1;   // monitor coprocessor
inline constexpr uint64_t kEm = uint64_t{1} << 2;   // x87 emulation
inline constexpr uint64_t kTs = uint64_t{1} << 3;   // task switched
inline constexpr uint64_t kEt = uint64_t{1} << 4;   // extension type (always 1)
inline constexpr uint64_t kNe = uint64_t{1} << 5;   // numeric error
inline constexpr uint64_t kWp = uint64_t{1} << 16;  // supervisor writes honour R/W
inline constexpr uint64_t kAm = uint64_t{1} << 18;  // alignment mask
inline constexpr uint64_t kNw = uint64_t{1} << 29;  // not write-through
inline constexpr uint64_t kCd = uint64_t{1} << 30;  // cache disable
inline constexpr uint64_t kPg = uint64_t{1} << 31;  // paging
}  // namespace cr0

namespace cr4 {
inline constexpr uint64_t kVme = uint64_t{1} << 0;
inline constexpr uint64_t kPvi = uint64_t{1} << 1;
inline constexpr uint64_t kTsd = uint64_t{1} << 2;
inline constexpr uint64_t kDe = uint64_t{1} << 3;
inline constexpr uint64_t kPse = uint64_t{1} << 4;  // 4 MiB pages in 32-bit paging
inline constexpr uint64_t kPae = uint64_t{1} << 5;  // PAE / 4-level paging
inline constexpr uint64_t kMce = uint64_t{1} << 6;
inline constexpr uint64_t kPge = uint64_t{1} << 7;  // global pages survive CR3 loads
inline constexpr uint64_t kPce = uint64_t{1} << 8;
inline constexpr uint64_t kOsfxsr = uint64_t{1} << 9;
inline constexpr uint64_t kOsxmmexcpt = uint64_t{1} << 10;
inline constexpr uint64_t kUmip = uint64_t{1} << 11;
inline constexpr uint64_t kLa57 = uint64_t{1} << 12;
inline constexpr uint64_t kFsgsbase = uint64_t{1} << 16;
inline constexpr uint64_t kPcide = uint64_t{1} << 17;
inline constexpr uint64_t kOsxsave = uint64_t{1} << 18;
inline constexpr uint64_t kSmep = uint64_t{1} << 20;  // no supervisor fetch from user pages
inline constexpr uint64_t kSmap = uint64_t{1} << 21;  // no supervisor data access to user pages
inline constexpr uint64_t kPke = uint64_t{1} << 22;
}  // namespace cr4

namespace efer {
inline constexpr uint64_t kSce = uint64_t{1} << 0;   // SYSCALL/SYSRET enable
inline constexpr uint64_t kLme = uint64_t{1} << 8;   // long mode enable
inline constexpr uint64_t kLma = uint64_t{1} << 10;  // long mode active (set by the CPU)
inline constexpr uint64_t kNxe = uint64_t{1} << 11;  // execute-disable bit in PAE/4-level
inline constexpr uint64_t kSvme = uint64_t{1} << 12;
inline constexpr uint64_t kLmsle = uint64_t{1} << 13;
inline constexpr uint64_t kFfxsr = uint64_t{1} << 14;
inline constexpr uint64_t kTce = uint64_t{1} << 15;
}  // namespace efer

}  // namespace lamina::cpu::x86
