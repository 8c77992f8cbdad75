// String instructions MOVS CMPS STOS LODS SCAS INS OUTS with REP/REPE/REPNE, segment override
// on the source, every address size and DF (SDM vol. 2; vol. 1, 7.3.9). A long REP yields
// after a bounded number of iterations with RIP on the instruction so interrupts get in; it
// resumes from the updated registers, exactly like an interrupted REP on hardware.
#include <algorithm>
#include <cstring>

#include "cpu/x86/handlers.h"
#include "cpu/x86/operands.h"

namespace lamina::cpu::x86 {
namespace {

enum StringOperation : int { kMovs, kCmps, kStos, kLods, kScas, kIns, kOuts };

// Iterations of one REP before yielding to the block boundary.
constexpr uint64_t kIterationsPerStep = 4096;

uint64_t address_mask(uint8_t address_size) {
  return address_size == 8 ? ~uint64_t{0} : address_size == 4 ? 0xffffffffu : 0xffffu;
}

void set_index(CpuCore& core, uint8_t index, uint8_t address_size, uint64_t value) {
  core.write_register_sized(index, address_size, false, value);
}

template <typename T, int kOperation>
void iterate(CpuCore& core, const Instruction& in, uint64_t mask, int64_t delta) {
  uint64_t& rsi = core.state.gpr[kRsi];
  uint64_t& rdi = core.state.gpr[kRdi];
  const uint64_t source = rsi & mask;
  const uint64_t destination = rdi & mask;
  switch (kOperation) {
    case kMovs:
      core.write<T>(kEs, destination, core.read<T>(in.segment, source));
      break;
    case kCmps: {
      const T first = core.read<T>(in.segment, source);
      const T second = core.read<T>(kEs, destination);
      core.state.flags.set(FlagOp::kSub, sizeof(T), static_cast<T>(first - second), first, second);
      break;
    }
    case kStos: core.write<T>(kEs, destination, core.read_register<T>(kRax, false)); break;
    case kLods: core.write_register<T>(kRax, false, core.read<T>(in.segment, source)); break;
    case kScas: {
      const T first = core.read_register<T>(kRax, false);
      const T second = core.read<T>(kEs, destination);
      core.state.flags.set(FlagOp::kSub, sizeof(T), static_cast<T>(first - second), first, second);
      break;
    }
    case kIns: {
      const uint16_t port = static_cast<uint16_t>(core.state.gpr[kRdx]);
      check_io_permission(core, port, sizeof(T));
      core.check_io_breakpoints(port, sizeof(T));
      // The destination is checked before the port is read (a fault must not lose data).
      (void)core.linear_address(kEs, destination, sizeof(T), Access::kWrite);
      core.write<T>(kEs, destination, static_cast<T>(core.environment.io_read(port, sizeof(T))));
      break;
    }
    case kOuts: {
      const uint16_t port = static_cast<uint16_t>(core.state.gpr[kRdx]);
      check_io_permission(core, port, sizeof(T));
      core.check_io_breakpoints(port, sizeof(T));
      core.environment.io_write(port, sizeof(T), core.read<T>(in.segment, source));
      break;
    }
  }
  if (kOperation == kMovs || kOperation == kCmps || kOperation == kLods || kOperation == kOuts)
    set_index(core, kRsi, in.address_size, source + delta);
  if (kOperation != kLods && kOperation != kOuts)
    set_index(core, kRdi, in.address_size, destination + delta);
}

// REP MOVS/STOS forwards over RAM: whole runs inside one page at a time with memmove/fill.
// Returns false (having done nothing) when the next element needs the exact path: MMIO, a
// page-crossing element, backwards direction, or an overlap that copies forward onto itself.
template <typename T, int kOperation>
bool fast_repeat(CpuCore& core, const Instruction& in, uint64_t mask, uint64_t count) {
  if (kOperation != kMovs && kOperation != kStos) return false;
  if (core.state.rflags & rflags::kDf) return false;
  const uint64_t destination = core.state.gpr[kRdi] & mask;
  const uint64_t source = core.state.gpr[kRsi] & mask;
  uint64_t elements = count;
  // Stay inside the address-size wrap and one page on each side.
  elements = std::min<uint64_t>(elements, (mask - destination) / sizeof(T) + 1);
  const uint64_t destination_linear = core.linear_address(kEs, destination, sizeof(T), Access::kWrite);
  elements = std::min<uint64_t>(elements, (4096 - (destination_linear & 0xfff)) / sizeof(T));
  uint64_t source_linear = 0;
  if (kOperation == kMovs) {
    elements = std::min<uint64_t>(elements, (mask - source) / sizeof(T) + 1);
    source_linear = core.linear_address(in.segment, source, sizeof(T), Access::kRead);
    elements = std::min<uint64_t>(elements, (4096 - (source_linear & 0xfff)) / sizeof(T));
  }
  if (elements < 2) return false;
  // Segment limits for the last element too (legacy modes).
  (void)core.linear_address(kEs, destination + (elements - 1) * sizeof(T), sizeof(T), Access::kWrite);
  const std::byte* from = nullptr;
  if (kOperation == kMovs) {
    (void)core.linear_address(in.segment, source + (elements - 1) * sizeof(T), sizeof(T), Access::kRead);
    const uint64_t physical = core.translate(source_linear, Access::kRead, core.user_access());
    from = core.memory.host_pointer(physical, elements * sizeof(T));
    if (from == nullptr) return false;
  }
  std::byte* to = core.writable_host_pointer(destination_linear, 1);
  if (to == nullptr) return false;
  const uint64_t bytes = elements * sizeof(T);
  if (kOperation == kMovs) {
    if (to > from && to < from + bytes) return false;  // forward self-overlap replicates data
    std::memmove(to, from, bytes);
    core.write_register_sized(kRsi, in.address_size, false, source + bytes);
  } else {
    const T value = core.read_register<T>(kRax, false);
    if constexpr (sizeof(T) == 1) {
      std::memset(to, value, bytes);
    } else {
      for (uint64_t i = 0; i < elements; ++i) std::memcpy(to + i * sizeof(T), &value, sizeof(T));
    }
  }
  core.write_register_sized(kRdi, in.address_size, false, destination + bytes);
  core.write_register_sized(kRcx, in.address_size, false, count - elements);
  return true;
}

template <typename T, int kOperation>
void string_instruction(CpuCore& core, const Instruction& in) {
  const uint64_t mask = address_mask(in.address_size);
  const int64_t delta = (core.state.rflags & rflags::kDf) ? -static_cast<int64_t>(sizeof(T))
                                                          : static_cast<int64_t>(sizeof(T));
  if (in.rep == 0) {
    iterate<T, kOperation>(core, in, mask, delta);
    return;
  }
  constexpr bool kConditional = kOperation == kCmps || kOperation == kScas;
  // Single step and data or I/O breakpoints trap after each iteration (SDM 17.3.1.2, 17.3.1.4);
  // they and alignment checks need each element's own access.
  const bool per_iteration = (core.state.rflags & rflags::kTf) || core.breakpoints.data_mask != 0 ||
                             core.breakpoints.io_mask != 0;
  const bool exact = per_iteration || core.alignment_check;
  const uint64_t iterations = per_iteration ? 1 : kIterationsPerStep;
  for (uint64_t step = 0;; ++step) {
    const uint64_t count = core.state.gpr[kRcx] & mask;
    if (count == 0) return;
    if (step == iterations) {
      core.state.rip = core.instruction_rip;  // resume here after the block boundary
      // An event after an iteration but the last pushes RF = 1, so the instruction resumes
      // without its instruction breakpoint firing again (SDM 17.3.1.1).
      core.state.rflags |= rflags::kRf;
      core.stop_block = true;
      return;
    }
    if (!exact && fast_repeat<T, kOperation>(core, in, mask, count)) continue;
    iterate<T, kOperation>(core, in, mask, delta);
    set_index(core, kRcx, in.address_size, count - 1);
    if (kConditional) {
      const bool zero = core.state.flags.zf();
      if (in.rep == 0xf3 && !zero) return;  // REPE
      if (in.rep == 0xf2 && zero) return;   // REPNE
    }
  }
}

template <int kOperation>
Handler for_size(uint8_t size) {
  switch (size) {
    case 1: return &string_instruction<uint8_t, kOperation>;
    case 2: return &string_instruction<uint16_t, kOperation>;
    case 4: return &string_instruction<uint32_t, kOperation>;
    default: return &string_instruction<uint64_t, kOperation>;
  }
}

}  // namespace

Handler select_string_handler(const Instruction& in) {
  const uint8_t size = in.operand_size;
  const uint8_t io_size = size == 2 ? 2 : 4;
  switch (in.opcode) {
    case 0xa4: return for_size<kMovs>(1);
    case 0xa5: return for_size<kMovs>(size);
    case 0xa6: return for_size<kCmps>(1);
    case 0xa7: return for_size<kCmps>(size);
    case 0xaa: return for_size<kStos>(1);
    case 0xab: return for_size<kStos>(size);
    case 0xac: return for_size<kLods>(1);
    case 0xad: return for_size<kLods>(size);
    case 0xae: return for_size<kScas>(1);
    case 0xaf: return for_size<kScas>(size);
    case 0x6c: return for_size<kIns>(1);
    case 0x6d: return for_size<kIns>(io_size);
    case 0x6e: return for_size<kOuts>(1);
    case 0x6f: return for_size<kOuts>(io_size);
    default: return nullptr;
  }
}

}  // namespace lamina::cpu::x86
