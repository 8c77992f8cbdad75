#include "cpu/x86/system/control_registers.h"

#include "cpu/x86/system/control_bits.h"

namespace lamina::cpu::x86 {

namespace {

using Failure = std::unexpected<Fault>;
Failure general_protection() { return Failure(general_protection_fault(0)); }

// CR0 bits with a meaning (SDM Figure 2-7); writes to the other low bits are ignored.
constexpr uint64_t kCr0Defined = cr0::kPe | cr0::kMp | cr0::kEm | cr0::kTs | cr0::kEt | cr0::kNe |
                                 cr0::kWp | cr0::kAm | cr0::kNw | cr0::kCd | cr0::kPg;

bool pae_paging(const PagingRegisters& registers) {
  return paging_mode(registers) == PagingMode::kPae;
}

// Enters PAE paging's PDPTE registers from memory when the new state is PAE paging.
std::expected<void, Fault> load_pdptes_if_pae(PagingRegisters& registers,
                                              const CpuFeatures& features,
                                              const GuestMemory& memory) {
  if (!pae_paging(registers)) {
    registers.pae_pdptes_loaded = false;
    return {};
  }
  auto pdptes = load_pae_pdptes(registers, memory, features.paging());
  if (!pdptes) return general_protection();
  registers.pae_pdptes = *pdptes;
  registers.pae_pdptes_loaded = true;
  return {};
}

}  // namespace

uint64_t cr4_writable_bits(const CpuFeatures& f) {
  uint64_t bits = cr4::kPce;  // RDPMC at any CPL; RDPMC itself is the core's
  if (f.vme) bits |= cr4::kVme | cr4::kPvi;
  if (f.tsc) bits |= cr4::kTsd;
  if (f.de) bits |= cr4::kDe;
  if (f.pse) bits |= cr4::kPse;
  if (f.pae) bits |= cr4::kPae;
  if (f.mce) bits |= cr4::kMce;
  if (f.pge) bits |= cr4::kPge;
  if (f.fxsr) bits |= cr4::kOsfxsr;
  if (f.sse) bits |= cr4::kOsxmmexcpt;
  if (f.fsgsbase) bits |= cr4::kFsgsbase;
  if (f.pcid) bits |= cr4::kPcide;
  if (f.xsave) bits |= cr4::kOsxsave;
  if (f.smep) bits |= cr4::kSmep;
  if (f.smap) bits |= cr4::kSmap;
  if (f.la57) bits |= cr4::kLa57;
  return bits;
}

std::expected<ControlRegisterWrite, Fault> write_cr0(const PagingRegisters& current, uint64_t value,
                                                     bool mode_64, const CpuFeatures& features,
                                                     const GuestMemory& memory) {
  // Bits 63:32 are reserved (#GP); reserved low bits are ignored and ET reads as 1.
  if ((value >> 32) != 0) return general_protection();
  uint64_t cr0 = (value & kCr0Defined) | cr0::kEt;
  if ((cr0 & cr0::kPg) != 0 && (cr0 & cr0::kPe) == 0) return general_protection();
  if ((cr0 & cr0::kNw) != 0 && (cr0 & cr0::kCd) == 0) return general_protection();
  bool paging_before = (current.cr0 & cr0::kPg) != 0;
  bool paging_after = (cr0 & cr0::kPg) != 0;
  ControlRegisterWrite result{current, TlbFlush::kNone};
  result.registers.cr0 = cr0;
  if (!paging_before && paging_after && (current.efer & efer::kLme) != 0) {
    // Activating IA-32e mode needs PAE (SDM 4.1.2 and Figure 4-1).
    if ((current.cr4 & cr4::kPae) == 0) return general_protection();
    result.registers.efer |= efer::kLma;
  }
  if (paging_before && !paging_after) {
    // 64-bit mode cannot turn paging off (leave through compatibility mode), nor can PCIDE = 1.
    if (mode_64 || (current.cr4 & cr4::kPcide) != 0) return general_protection();
    result.registers.efer &= ~efer::kLma;
  }
  // SDM 4.4.1: setting PG, or changing CD/NW, in PAE paging loads the PDPTEs.
  uint64_t reload_bits = cr0::kPg | cr0::kCd | cr0::kNw;
  if (((cr0 ^ current.cr0) & reload_bits) != 0 || !pae_paging(result.registers)) {
    if (auto loaded = load_pdptes_if_pae(result.registers, features, memory); !loaded) {
      return std::unexpected(loaded.error());
    }
  }
  // SDM 4.10.4.1: changing PG or WP invalidates every TLB entry, global ones included.
  if (((cr0 ^ current.cr0) & (cr0::kPg | cr0::kWp)) != 0) result.flush = TlbFlush::kAll;
  return result;
}

std::expected<ControlRegisterWrite, Fault> write_cr3(const PagingRegisters& current, uint64_t value,
                                                     const CpuFeatures& features,
                                                     const GuestMemory& memory) {
  ControlRegisterWrite result{current, TlbFlush::kNonGlobal};
  if ((current.efer & efer::kLma) != 0) {
    // Bits 63:MAXPHYADDR are reserved (no PCID, so bit 63 is not the no-flush hint).
    if (features.physical_address_bits < 64 && (value >> features.physical_address_bits) != 0) {
      return general_protection();
    }
  } else {
    value &= 0xffffffffu;
  }
  result.registers.cr3 = value;
  if (auto loaded = load_pdptes_if_pae(result.registers, features, memory); !loaded) {
    return std::unexpected(loaded.error());
  }
  return result;
}

std::expected<ControlRegisterWrite, Fault> write_cr4(const PagingRegisters& current, uint64_t value,
                                                     const CpuFeatures& features,
                                                     const GuestMemory& memory) {
  if ((value & ~cr4_writable_bits(features)) != 0) return general_protection();
  bool long_mode = (current.efer & efer::kLma) != 0;
  uint64_t changed = value ^ current.cr4;
  // IA-32e mode cannot be left by clearing PAE, nor LA57 toggled inside it.
  if (long_mode && (value & cr4::kPae) == 0) return general_protection();
  if (long_mode && (changed & cr4::kLa57) != 0) return general_protection();
  // PCIDE can be set only in IA-32e mode with CR3[11:0] = 0 (SDM 4.10.1).
  if ((changed & value & cr4::kPcide) != 0 && (!long_mode || (current.cr3 & 0xfff) != 0)) {
    return general_protection();
  }
  ControlRegisterWrite result{current, TlbFlush::kNone};
  result.registers.cr4 = value;
  // SDM 4.4.1: in PAE paging a change of PAE, PSE, PGE or SMEP reloads the PDPTEs.
  uint64_t reload_bits = cr4::kPae | cr4::kPse | cr4::kPge | cr4::kSmep;
  if ((changed & reload_bits) != 0 || !pae_paging(result.registers)) {
    if (auto loaded = load_pdptes_if_pae(result.registers, features, memory); !loaded) {
      return std::unexpected(loaded.error());
    }
  }
  // SDM 4.10.4.1 flushes everything for PGE, PAE, PSE, SMEP, PCIDE 1->0 and LA57 changes; the
  // soft TLB also caches SMAP's verdict, so SMAP changes flush too.
  uint64_t flush_bits =
      cr4::kPge | cr4::kPae | cr4::kPse | cr4::kSmep | cr4::kSmap | cr4::kPcide | cr4::kLa57;
  if ((changed & flush_bits) != 0) result.flush = TlbFlush::kAll;
  return result;
}

TlbFlush flush_after_efer_write(uint64_t old_efer, uint64_t new_efer) {
  return ((old_efer ^ new_efer) & efer::kNxe) != 0 ? TlbFlush::kAll : TlbFlush::kNone;
}

}  // namespace lamina::cpu::x86
