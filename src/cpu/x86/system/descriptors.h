#pragma once
// Decoding of x86 descriptors: 8-byte segment descriptors, system descriptors (LDT, TSS, 16-byte
// long-mode forms), gates (call, interrupt, trap, task; 16/32-bit and 64-bit with IST), TSS field
// offsets and the I/O permission bitmap lookup. Intel SDM Vol. 3A 3.4.5 (segment descriptors),
// 3.5 (system descriptor types), 5.8.3.1 and 6.14.1 (64-bit gates), 7.2 and 7.7 (TSS), Vol. 1
// 19.5.2 (I/O bitmap); AMD APM Vol. 2 4.7-4.8, 12.2.5.
//
// Everything here is a pure function of the raw bytes; reading them from the GDT/LDT/IDT (with
// limit checks and paging) is the core's job. Thread-safety: stateless.

#include <cstdint>
#include <optional>

namespace lamina::cpu::x86 {

// System descriptor types (S = 0), SDM Table 3-2. In IA-32e mode the 32-bit values mean the
// 64-bit forms and the 16-bit forms and task gates are invalid.
namespace system_type {
inline constexpr uint8_t kTss16Available = 0x1;
inline constexpr uint8_t kLdt = 0x2;
inline constexpr uint8_t kTss16Busy = 0x3;
inline constexpr uint8_t kCallGate16 = 0x4;
inline constexpr uint8_t kTaskGate = 0x5;
inline constexpr uint8_t kInterruptGate16 = 0x6;
inline constexpr uint8_t kTrapGate16 = 0x7;
inline constexpr uint8_t kTssAvailable = 0x9;  // 32-bit, or 64-bit in IA-32e mode
inline constexpr uint8_t kTssBusy = 0xb;
inline constexpr uint8_t kCallGate = 0xc;
inline constexpr uint8_t kInterruptGate = 0xe;
inline constexpr uint8_t kTrapGate = 0xf;
}  // namespace system_type

// Selectors: index in bits 15:3, table indicator in bit 2, RPL in bits 1:0.
inline constexpr uint16_t selector_index(uint16_t selector) { return selector >> 3; }
inline constexpr bool selector_is_local(uint16_t selector) { return (selector & 4) != 0; }
inline constexpr uint8_t selector_rpl(uint16_t selector) { return selector & 3; }
// A null selector is GDT index 0 with any RPL (LDT index 0 is not null).
inline constexpr bool selector_is_null(uint16_t selector) { return (selector & 0xfffc) == 0; }

// One segment or system descriptor's fields, decoded from its low 8 bytes.
struct SegmentDescriptor {
  uint64_t base = 0;    // bits 31:0; long-mode system descriptors add 63:32 (see below)
  uint32_t limit = 0;   // the last valid offset: the 20-bit limit scaled by G
  uint8_t type = 0;     // the 4-bit type field
  bool system = false;  // S = 0: a system descriptor or gate
  uint8_t dpl = 0;
  bool present = false;
  bool available = false;    // AVL
  bool long_mode = false;    // L: a 64-bit code segment
  bool default_big = false;  // D/B
  bool granularity = false;  // G

  bool is_code() const { return !system && (type & 0x8) != 0; }
  bool is_data() const { return !system && (type & 0x8) == 0; }
  bool conforming() const { return is_code() && (type & 0x4) != 0; }
  bool readable() const { return is_data() || (type & 0x2) != 0; }  // code: R; data: always
  bool writable() const { return is_data() && (type & 0x2) != 0; }
  bool expand_down() const { return is_data() && (type & 0x4) != 0; }
  bool accessed() const { return !system && (type & 0x1) != 0; }
  // The 64-bit code segment of IA-32e mode: L = 1 and D = 0 (L = D = 1 is reserved).
  bool is_64bit_code() const { return is_code() && long_mode && !default_big; }
};

SegmentDescriptor decode_segment_descriptor(uint64_t raw);
// The raw descriptor with the accessed bit set, for the core to write back after a load.
inline constexpr uint64_t with_accessed_bit(uint64_t raw) { return raw | (uint64_t{1} << 40); }
// The raw TSS descriptor with its busy bit set or cleared (type 1/9 <-> 3/11).
inline constexpr uint64_t with_busy_bit(uint64_t raw, bool busy) {
  return busy ? raw | (uint64_t{1} << 41) : raw & ~(uint64_t{1} << 41);
}

// Effective limit checks for a data or code segment (SDM 5.3): expand-down segments hold the
// offsets above the limit, up to 0xffff or 0xffffffff by D/B. `size` is at least 1.
bool offset_within_limit(const SegmentDescriptor& descriptor, uint64_t offset, uint64_t size);

// A 16-byte long-mode LDT or TSS descriptor (SDM Figure 7-4). nullopt when the upper half's
// type bits 12:8 are not zero.
std::optional<SegmentDescriptor> decode_system_descriptor_64(uint64_t low, uint64_t high);

enum class GateKind : uint8_t { kCall, kInterrupt, kTrap, kTask };

struct GateDescriptor {
  GateKind kind = GateKind::kCall;
  uint8_t bits = 32;      // 16, 32 or 64: the size of pushed values and of the offset
  uint16_t selector = 0;  // target code segment (or TSS for a task gate)
  uint64_t offset = 0;    // entry point (0 for a task gate)
  uint8_t dpl = 0;
  bool present = false;
  uint8_t parameter_count = 0;  // 32/16-bit call gates: dwords/words to copy
  uint8_t ist = 0;              // 64-bit interrupt/trap gates: 0 or IST index 1-7
};

// Decodes a gate. `long_mode` is EFER.LMA: gates are then 16 bytes (`high` is bytes 8-15;
// ignored otherwise) and only the 64-bit call/interrupt/trap types exist. nullopt when the
// type is not a gate valid in that mode, or a 64-bit call gate's upper type field is not zero.
std::optional<GateDescriptor> decode_gate(uint64_t low, uint64_t high, bool long_mode);

// Task-state segment layouts (SDM Figures 7-2, 7-11, 7-12).
namespace tss {
inline constexpr uint32_t kMinimumLimit16 = 0x2b;   // a 16-bit TSS is 44 bytes
inline constexpr uint32_t kMinimumLimit32 = 0x67;   // 32- and 64-bit TSS are 104 bytes
inline constexpr uint32_t kIoMapBaseOffset = 0x66;  // 32/64-bit: 16-bit I/O map base

// 16-bit TSS: SPn at 2 + 4n, SSn at 4 + 4n (n = 0..2).
inline constexpr uint32_t stack_pointer_offset_16(uint8_t level) { return 2 + 4u * level; }
inline constexpr uint32_t stack_selector_offset_16(uint8_t level) { return 4 + 4u * level; }
// 32-bit TSS: ESPn at 4 + 8n, SSn at 8 + 8n.
inline constexpr uint32_t stack_pointer_offset_32(uint8_t level) { return 4 + 8u * level; }
inline constexpr uint32_t stack_selector_offset_32(uint8_t level) { return 8 + 8u * level; }
// 64-bit TSS: RSPn at 4 + 8n; ISTn (n = 1..7) at 0x24 + 8(n - 1).
inline constexpr uint32_t stack_pointer_offset_64(uint8_t level) { return 4 + 8u * level; }
inline constexpr uint32_t ist_offset_64(uint8_t index) { return 0x24 + 8u * (index - 1u); }

// Where the 32-bit TSS keeps each register of the task state (SDM Figure 7-2).
namespace offset32 {
inline constexpr uint32_t kPreviousTaskLink = 0x00, kCr3 = 0x1c, kEip = 0x20, kEflags = 0x24;
inline constexpr uint32_t kEax = 0x28, kEcx = 0x2c, kEdx = 0x30, kEbx = 0x34;
inline constexpr uint32_t kEsp = 0x38, kEbp = 0x3c, kEsi = 0x40, kEdi = 0x44;
inline constexpr uint32_t kEs = 0x48, kCs = 0x4c, kSs = 0x50, kDs = 0x54, kFs = 0x58, kGs = 0x5c;
inline constexpr uint32_t kLdt = 0x60, kTrapFlag = 0x64;
}  // namespace offset32
// And the 16-bit TSS (SDM Figure 7-11).
namespace offset16 {
inline constexpr uint32_t kPreviousTaskLink = 0x00, kIp = 0x0e, kFlags = 0x10;
inline constexpr uint32_t kAx = 0x12, kCx = 0x14, kDx = 0x16, kBx = 0x18;
inline constexpr uint32_t kSp = 0x1a, kBp = 0x1c, kSi = 0x1e, kDi = 0x20;
inline constexpr uint32_t kEs = 0x22, kCs = 0x24, kSs = 0x26, kDs = 0x28, kLdt = 0x2a;
}  // namespace offset16

// Where an inter-privilege interrupt, exception or call-gate CALL finds its new stack in the
// current TSS (SDM Vol. 2 INT n pseudo code): `tss_type` is the TR descriptor's type, `long_mode`
// EFER.LMA, `ist` the 64-bit gate's IST field. nullopt: the slot lies beyond `tss_limit`, which
// is #TS(TSS selector).
struct StackSlot {
  uint32_t offset = 0;        // of the stack pointer (SS follows it outside IA-32e mode)
  uint8_t pointer_bytes = 0;  // 2, 4 or 8
  bool has_selector = false;  // an SS selector follows the pointer (16/32-bit TSS)
};
std::optional<StackSlot> inner_stack_slot(uint8_t tss_type, bool long_mode, uint8_t new_cpl,
                                          uint8_t ist, uint32_t tss_limit);

// The I/O permission check of IN/OUT/INS/OUTS when CPL > IOPL (or in virtual-8086 mode),
// SDM Vol. 1 19.5.2: the core reads the 16-bit I/O map base at kIoMapBaseOffset, calls
// io_bitmap_offset, reads the two bytes at that TSS offset (little-endian) and asks
// io_bitmap_permits. nullopt from io_bitmap_offset means the bytes lie beyond the TSS limit:
// the access is refused (#GP(0)).
std::optional<uint32_t> io_bitmap_offset(uint32_t tss_limit, uint16_t io_map_base, uint16_t port);
// `bytes` is the access width (1, 2 or 4); `bitmap_word` the two bytes read at the offset.
bool io_bitmap_permits(uint16_t bitmap_word, uint16_t port, uint8_t bytes);
}  // namespace tss

}  // namespace lamina::cpu::x86
