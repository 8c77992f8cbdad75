#pragma once
// The debug registers' rules as pure functions (Intel SDM vol. 3B, 17.2; AMD APM vol. 2, 13.1):
// which DR6/DR7 bits a MOV to DRn keeps, the checks of MOV to/from DRn in their priority order,
// and the four breakpoints DR7 enables, decoded once and matched against an instruction's
// address, a data access or an I/O port access.
//
// The core keeps DR0-DR7 in CpuState::dr, decodes a BreakpointSet after every write to DR0-DR3,
// DR7 or CR4 (CR4.DE gives R/W = 10b its meaning), and reports the B0-B3 bits a match returns
// in DR6 when it raises #DB.
//
// Thread-safety: stateless.

#include <array>
#include <cstdint>
#include <expected>

#include "cpu/x86/system/fault.h"

namespace lamina::cpu::x86 {

namespace dr6 {
inline constexpr uint64_t kB0 = 1u << 0, kBreakpointHits = 0xf;  // B0-B3
inline constexpr uint64_t kBd = 1u << 13;  // general detect: a MOV DR with DR7.GD set
inline constexpr uint64_t kBs = 1u << 14;  // single step (EFLAGS.TF)
inline constexpr uint64_t kBt = 1u << 15;  // task switch to a TSS with its T flag
// SDM 17.2.3: bits 4-11 and 16-31 read as 1 (no RTM, no bus-lock detection), bit 12 as 0.
inline constexpr uint64_t kFixed1 = 0xffff0ff0;
inline constexpr uint64_t kWritable = kBreakpointHits | kBd | kBs | kBt;
inline constexpr uint64_t kInitial = kFixed1;  // after RESET and INIT
}  // namespace dr6

namespace dr7 {
inline constexpr uint64_t kEnables = 0xff;  // L0 G0 L1 G1 L2 G2 L3 G3
inline constexpr uint64_t kGd = 1u << 13;   // general detect enable
// SDM 17.2.4: bit 10 reads as 1; bits 11 (RTM), 12, 14, 15 as 0. Kept: L0-G3, LE, GE, GD and
// the R/W and LEN fields.
inline constexpr uint64_t kFixed1 = 1u << 10;
inline constexpr uint64_t kWritable = 0xffff23ff;
inline constexpr uint64_t kInitial = kFixed1;
}  // namespace dr7

// R/Wn (SDM table 17-1 in 17.2.4): 00 instruction, 01 data write, 10 I/O (with CR4.DE; without
// it the encoding is undefined and Lamina matches nothing), 11 data read or write.
enum class BreakpointType : uint8_t { kNone, kInstruction, kWrite, kIo, kReadWrite };

struct Breakpoint {
  BreakpointType type = BreakpointType::kNone;
  uint64_t address = 0;  // aligned down to `length` for data and I/O breakpoints
  uint8_t length = 1;    // LENn: 00 = 1, 01 = 2, 10 = 8, 11 = 4 bytes
};

// DR7's enabled breakpoints. The masks hold the DR6 B0-B3 bit of each enabled breakpoint of a
// kind; zero masks mean nothing needs checking.
struct BreakpointSet {
  std::array<Breakpoint, 4> entries{};
  uint8_t instruction_mask = 0;
  uint8_t data_mask = 0;  // write and read/write breakpoints
  uint8_t io_mask = 0;
  bool any() const { return (instruction_mask | data_mask | io_mask) != 0; }
};

// `dr` is DR0-DR7; `debug_extensions` is CR4.DE.
BreakpointSet decode_breakpoints(const std::array<uint64_t, 8>& dr, bool debug_extensions);

// The B0-B3 bits of the enabled instruction breakpoints at the linear address of an
// instruction's first byte (its first prefix).
uint8_t match_instruction(const BreakpointSet& set, uint64_t linear);
// The B0-B3 bits of the enabled data breakpoints that any byte of the access touches (SDM
// 17.2.5); a write matches write and read/write breakpoints, a read only read/write ones.
uint8_t match_data(const BreakpointSet& set, uint64_t linear, uint64_t size, bool write);
// True when some byte of [linear page, +4 KiB) lies in an enabled data breakpoint: accesses
// to that page must take the checked path (the core does not cache it in its TLB).
bool data_breakpoint_in_page(const BreakpointSet& set, uint64_t page);
// The B0-B3 bits of the enabled I/O breakpoints that any byte of the port access touches.
uint8_t match_io(const BreakpointSet& set, uint16_t port, uint8_t size);

// MOV to or from DRn (SDM vol. 2, "MOV—Move to/from Debug Registers"): #GP(0) above CPL 0, #UD
// for DR8-DR15 (REX.R) and for DR4/DR5 with CR4.DE, #DB (general detect; the caller sets
// DR6.BD) while DR7.GD is set.
// On success, the register actually accessed: DR4/DR5 alias DR6/DR7 without CR4.DE.
std::expected<uint8_t, Fault> check_debug_register_access(uint8_t index, uint8_t cpl,
                                                          bool debug_extensions, uint64_t dr7);
// The value a MOV to DRn (already resolved by check_debug_register_access) stores: #GP(0) for
// bits 63:32 set in DR6 or DR7 (only a 64-bit mode MOV can supply them); DR6 and DR7 keep
// their writable bits and read their fixed ones.
std::expected<uint64_t, Fault> debug_register_value(uint8_t index, uint64_t value);

}  // namespace lamina::cpu::x86
