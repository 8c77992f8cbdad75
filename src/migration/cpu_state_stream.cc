#include "migration/cpu_state_stream.h"

#include <fmt/format.h>

namespace lamina::migration {
namespace {

using cpu::x86::CpuState;
using cpu::x86::DescriptorTableRegister;
using cpu::x86::SegmentCache;

constexpr uint32_t kVersion = 1;
// Descriptor bits 40-47 and 52-55 as cpu_state.h packs them; bits 8-11 are never set.
constexpr uint16_t kSegmentAttributeBits = 0xf0ff;
// RFLAGS bits that exist (SDM vol. 1, 3.4.3), the arithmetic six included.
constexpr uint64_t kRflagsDefined = 0x3f7fd7;

void put_segment(StateWriter& writer, const SegmentCache& segment) {
  writer.put(segment.selector, segment.base, segment.limit, segment.attributes);
}

Result<void> get_segment(StateReader& reader, SegmentCache& segment, std::string_view name) {
  if (auto got = reader.get(segment.selector, segment.base, segment.limit, segment.attributes);
      !got) {
    return got;
  }
  if ((segment.attributes & ~kSegmentAttributeBits) != 0) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("saved vCPU state: segment {} has undefined attribute bits {:#x}", name,
                            segment.attributes));
  }
  return {};
}

void put_table(StateWriter& writer, const DescriptorTableRegister& table) {
  writer.put(table.base, table.limit);
}

template <size_t N>
void put_array(StateWriter& writer, const std::array<uint64_t, N>& values) {
  writer.put_u32(static_cast<uint32_t>(N));
  for (uint64_t value : values) writer.put_u64(value);
}

// Arrays carry their length so a model with more MTRRs or banks is refused, not misread.
template <size_t N>
Result<void> get_array(StateReader& reader, std::array<uint64_t, N>& values,
                       std::string_view name) {
  auto count = reader.get_u32();
  if (!count) return fail(count.error());
  if (*count != N) {
    return fail(
        ErrorCode::kUnsupported,
        fmt::format("saved vCPU state has {} {} registers, this CPU model {}", *count, name, N));
  }
  for (uint64_t& value : values) {
    if (auto got = reader.get(value); !got) return got;
  }
  return {};
}

void put_msrs(StateWriter& writer, const cpu::x86::MsrState& msr) {
  writer.put(msr.efer, msr.star, msr.lstar, msr.cstar, msr.sfmask, msr.kernel_gs_base,
             msr.tsc_offset, msr.tsc_aux, msr.apic_base, msr.pat, msr.sysenter_cs, msr.sysenter_esp,
             msr.sysenter_eip, msr.misc_enable, msr.mtrr_default_type);
  put_array(writer, msr.mtrr_fixed);
  put_array(writer, msr.mtrr_variable);
  writer.put(msr.amd_syscfg, msr.amd_hwcr);
  put_array(writer, msr.perf_event_select);
  put_array(writer, msr.perf_counter);
  writer.put(msr.mcg_status, msr.mcg_ctl);
  put_array(writer, msr.machine_check_banks);
}

Result<void> get_msrs(StateReader& reader, cpu::x86::MsrState& msr) {
  if (auto got =
          reader.get(msr.efer, msr.star, msr.lstar, msr.cstar, msr.sfmask, msr.kernel_gs_base,
                     msr.tsc_offset, msr.tsc_aux, msr.apic_base, msr.pat, msr.sysenter_cs,
                     msr.sysenter_esp, msr.sysenter_eip, msr.misc_enable, msr.mtrr_default_type);
      !got) {
    return got;
  }
  if (auto got = get_array(reader, msr.mtrr_fixed, "fixed MTRR"); !got) return got;
  if (auto got = get_array(reader, msr.mtrr_variable, "variable MTRR"); !got) return got;
  if (auto got = reader.get(msr.amd_syscfg, msr.amd_hwcr); !got) return got;
  if (auto got = get_array(reader, msr.perf_event_select, "PerfEvtSel"); !got) return got;
  if (auto got = get_array(reader, msr.perf_counter, "PerfCtr"); !got) return got;
  if (auto got = reader.get(msr.mcg_status, msr.mcg_ctl); !got) return got;
  return get_array(reader, msr.machine_check_banks, "machine-check bank");
}

void put_simd(StateWriter& writer, const cpu::x86::SimdState& simd) {
  for (const auto& reg : simd.x87) writer.put(reg.significand, reg.sign_exponent);
  writer.put(simd.control, simd.status, simd.tag_valid, simd.last_opcode, simd.last_instruction,
             simd.last_data);
  for (const auto& xmm : simd.xmm) writer.put_bytes(std::as_bytes(std::span(xmm.bytes)));
  writer.put(simd.mxcsr);
}

Result<void> get_simd(StateReader& reader, cpu::x86::SimdState& simd) {
  for (auto& reg : simd.x87) {
    if (auto got = reader.get(reg.significand, reg.sign_exponent); !got) return got;
  }
  if (auto got = reader.get(simd.control, simd.status, simd.tag_valid, simd.last_opcode,
                            simd.last_instruction, simd.last_data);
      !got) {
    return got;
  }
  for (auto& xmm : simd.xmm) {
    if (auto got = reader.get_bytes(std::as_writable_bytes(std::span(xmm.bytes))); !got) return got;
  }
  if (auto got = reader.get(simd.mxcsr); !got) return got;
  if ((simd.mxcsr & ~cpu::x86::kMxcsrWritable) != 0 || simd.last_opcode > 0x7ff) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("saved vCPU state: MXCSR {:#x} or FOP {:#x} has reserved bits",
                            simd.mxcsr, simd.last_opcode));
  }
  return {};
}

}  // namespace

void save_cpu_state(StateWriter& writer, const CpuState& state) {
  writer.begin_section("vcpu", kVersion);
  for (uint64_t value : state.gpr) writer.put_u64(value);
  // RFLAGS whole: the lazy flags are an implementation detail of this CPU.
  writer.put(state.rip, state.read_rflags());
  for (const SegmentCache& segment : state.segment) put_segment(writer, segment);
  put_segment(writer, state.ldtr);
  put_segment(writer, state.tr);
  put_table(writer, state.gdtr);
  put_table(writer, state.idtr);
  writer.put(state.cr0, state.cr2, state.cr3, state.cr4, state.cr8);
  for (uint64_t value : state.dr) writer.put_u64(value);
  put_msrs(writer, state.msr);
  writer.put(state.cpl, state.interrupt_shadow, state.halted, state.nmi_blocked,
             state.waiting_for_startup);
  put_simd(writer, state.simd);
  for (uint64_t value : state.pae_pdptes) writer.put_u64(value);
  writer.put(state.pae_pdptes_loaded);
  // Appended: the #DB a MOV SS/POP SS holds (a stream without them holds none).
  writer.put(state.debug_shadow, state.pending_debug);
  // Appended (state format 1.1): the events a KVM vCPU held, XCR0 and AVX's upper halves.
  const cpu::x86::PendingEvents& events = state.pending_events;
  writer.put(events.exception, events.exception_vector, events.exception_has_error_code,
             events.exception_error_code, events.interrupt, events.interrupt_vector, events.nmi);
  writer.put(state.extended_simd.xcr0);
  for (const auto& half : state.extended_simd.ymm_high) {
    writer.put_bytes(std::as_bytes(std::span(half)));
  }
  writer.end_section();
}

Result<CpuState> load_cpu_state(StateReader& reader) {
  auto version = reader.begin_section("vcpu");
  if (!version) return fail(version.error());
  if (*version != kVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("saved vCPU state version {} is not known (this Lamina reads {})",
                            *version, kVersion));
  }
  CpuState state;
  for (uint64_t& value : state.gpr) {
    if (auto got = reader.get(value); !got) return fail(got.error());
  }
  uint64_t rflags = 0;
  if (auto got = reader.get(state.rip, rflags); !got) return fail(got.error());
  if ((rflags & ~kRflagsDefined) != 0) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("saved vCPU state: RFLAGS {:#x} has reserved bits", rflags));
  }
  state.write_rflags(rflags);
  static constexpr std::string_view kNames[] = {"ES", "CS", "SS", "DS", "FS", "GS"};
  for (size_t index = 0; index < state.segment.size(); ++index) {
    if (auto got = get_segment(reader, state.segment[index], kNames[index]); !got) {
      return fail(got.error());
    }
  }
  if (auto got = get_segment(reader, state.ldtr, "LDTR"); !got) return fail(got.error());
  if (auto got = get_segment(reader, state.tr, "TR"); !got) return fail(got.error());
  if (auto got = reader.get(state.gdtr.base, state.gdtr.limit, state.idtr.base, state.idtr.limit);
      !got) {
    return fail(got.error());
  }
  if (auto got = reader.get(state.cr0, state.cr2, state.cr3, state.cr4, state.cr8); !got) {
    return fail(got.error());
  }
  for (uint64_t& value : state.dr) {
    if (auto got = reader.get(value); !got) return fail(got.error());
  }
  if (auto got = get_msrs(reader, state.msr); !got) return fail(got.error());
  if (auto got = reader.get(state.cpl, state.interrupt_shadow, state.halted, state.nmi_blocked,
                            state.waiting_for_startup);
      !got) {
    return fail(got.error());
  }
  if (auto got = get_simd(reader, state.simd); !got) return fail(got.error());
  for (uint64_t& value : state.pae_pdptes) {
    if (auto got = reader.get(value); !got) return fail(got.error());
  }
  if (auto got = reader.get(state.pae_pdptes_loaded); !got) return fail(got.error());
  if (reader.remaining() > 0) {
    if (auto got = reader.get(state.debug_shadow, state.pending_debug); !got) {
      return fail(got.error());
    }
  }
  if (reader.remaining() > 0) {
    cpu::x86::PendingEvents& events = state.pending_events;
    if (auto got = reader.get(events.exception, events.exception_vector,
                              events.exception_has_error_code, events.exception_error_code,
                              events.interrupt, events.interrupt_vector, events.nmi);
        !got) {
      return fail(got.error());
    }
    if (auto got = reader.get(state.extended_simd.xcr0); !got) return fail(got.error());
    for (auto& half : state.extended_simd.ymm_high) {
      if (auto got = reader.get_bytes(std::as_writable_bytes(std::span(half))); !got) {
        return fail(got.error());
      }
    }
    // Exception vectors are 0-31 (SDM 6.3.1); XCR0 always has x87 and only AVX may follow SSE
    // here (SDM Vol. 1 13.3).
    if ((events.exception && events.exception_vector > 31) ||
        (events.exception_has_error_code && !events.exception) ||
        (state.extended_simd.xcr0 & 1) == 0 || (state.extended_simd.xcr0 & ~uint64_t{7}) != 0 ||
        ((state.extended_simd.xcr0 & 4) != 0 && (state.extended_simd.xcr0 & 2) == 0)) {
      return fail(ErrorCode::kCorrupt,
                  fmt::format("saved vCPU state: a pending exception {} or XCR0 {:#x} no vCPU "
                              "can hold",
                              events.exception_vector, state.extended_simd.xcr0));
    }
  }
  if (auto left = reader.end_section(); !left) return fail(left.error());
  // The held #DB: only under a MOV SS shadow, and only DR6's B0-B3 and BS bits.
  constexpr uint16_t kHeldDebugBits = 0x400f;
  if ((state.debug_shadow && !state.interrupt_shadow) ||
      (state.pending_debug & ~kHeldDebugBits) != 0) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("saved vCPU state: a held #DB ({:#x}) without its MOV SS shadow or "
                            "with bits DR6 does not hold there",
                            state.pending_debug));
  }

  using namespace cpu::x86;
  // States no vCPU reaches (SDM vol. 3, 2.5 and 9.8.5): the core relies on these never
  // happening, so a damaged stream must not bring them in.
  const bool paging = (state.cr0 & cr0::kPg) != 0;
  if (state.cpl > 3 || (paging && !(state.cr0 & cr0::kPe)) ||
      ((state.msr.efer & efer::kLma) &&
       (!paging || !(state.cr4 & cr4::kPae) || !(state.msr.efer & efer::kLme))) ||
      state.cr8 > 15) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("saved vCPU state: CPL {}, CR0 {:#x}, CR4 {:#x}, CR8 {:#x} and EFER "
                            "{:#x} are not a state a vCPU can be in",
                            state.cpl, state.cr0, state.cr4, state.cr8, state.msr.efer));
  }
  return state;
}

}  // namespace lamina::migration
