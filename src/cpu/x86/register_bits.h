#pragma once
// Architectural bit positions of CR0, CR4 and EFER used by the core (SDM vol. 3A, 2.5 and
// 2.2.1). Same names and values as cpu/x86/system/control_bits.h so that one can replace the
// other when the two branches meet; do not include both in one file until then.

#include <cstdint>

namespace lamina::cpu::x86 {

namespace cr0 {
inline constexpr uint64_t kPe = uint64_t{1} << 0, kMp = uint64_t{1} << 1, kEm = uint64_t{1} << 2,
                          kTs = uint64_t{1} << 3, kEt = uint64_t{1} << 4, kNe = uint64_t{1} << 5,
                          kWp = uint64_t{1} << 16, kAm = uint64_t{1} << 18,
                          kNw = uint64_t{1} << 29, kCd = uint64_t{1} << 30, kPg = uint64_t{1} << 31;
}  // namespace cr0
namespace cr4 {
inline constexpr uint64_t kVme = uint64_t{1} << 0, kPvi = uint64_t{1} << 1,
                          kTsd = uint64_t{1} << 2, kDe = uint64_t{1} << 3,
                          kPse = uint64_t{1} << 4, kPae = uint64_t{1} << 5,
                          kMce = uint64_t{1} << 6, kPge = uint64_t{1} << 7,
                          kPce = uint64_t{1} << 8, kOsfxsr = uint64_t{1} << 9,
                          kOsxmmexcpt = uint64_t{1} << 10, kUmip = uint64_t{1} << 11,
                          kFsgsbase = uint64_t{1} << 16, kPcide = uint64_t{1} << 17,
                          kSmep = uint64_t{1} << 20, kSmap = uint64_t{1} << 21;
}  // namespace cr4
namespace efer {
inline constexpr uint64_t kSce = uint64_t{1} << 0, kLme = uint64_t{1} << 8,
                          kLma = uint64_t{1} << 10, kNxe = uint64_t{1} << 11;
}  // namespace efer

}  // namespace lamina::cpu::x86
