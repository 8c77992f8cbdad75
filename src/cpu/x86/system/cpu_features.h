#pragma once
// The CPU model one VM advertises: identification and every optional feature, as one plain
// struct. CPUID (cpuid_model.h) reports exactly this, the MSR file (msr_file.h) accepts exactly
// the MSRs and bits it implies, and the page walker takes paging() from it, so a feature is
// turned on in one place: the core sets a flag here once it implements the instructions.
//
// The defaults are the set planned for Lamina's built-in CPU (project issue #3): the integer ISA
// with CMPXCHG8B/16B and POPCNT, x87, MMX, SSE to SSE4.2, FXSR, RDTSCP, NX, long mode, SYSCALL,
// APIC, PAT, MTRR, PGE, PSE/PSE-36, PAE, 1 GiB pages, CLFLUSH, CMOV, DE (debug extensions: CR4.DE,
// I/O breakpoints; the core's debug registers are SDM ch. 17). Off by default: XSAVE/AVX,
// PCID, LA57, SMEP/SMAP, x2APIC and TSC-deadline (the machine turns them on with its LAPIC),
// VME, PERFCTR_CORE. Machine checks (MCE/MCA) are on: banks that never report an error, as
// KVM and QEMU give guests, so a guest's machine-check setup succeeds.
//
// The vendor is AMD so Debian kernels keep page-table isolation (Meltdown mitigation) off; the
// family/model/stepping default to 15/107/1, the K8-class identity QEMU's "qemu64" model also
// uses, which keeps Linux away from family-specific errata code paths and MSRs.

#include <cstdint>
#include <string>

#include "cpu/x86/system/page_walker.h"

namespace lamina::cpu::x86 {

struct CpuFeatures {
  // Identification.
  std::string vendor = "AuthenticAMD";       // 12 characters
  std::string brand = "Lamina Virtual CPU";  // up to 47 characters
  uint16_t family = 0xf;                     // full family; >= 0xf uses the extended field
  uint8_t model = 0x6b;                      // full model (extended << 4 | base)
  uint8_t stepping = 1;
  std::string hypervisor_vendor = "LaminaLamina";  // 12 characters, leaf 0x40000000

  // Topology: the VM's vCPUs are the cores of one package, one thread each; the initial APIC ID
  // of a vCPU is its index.
  uint32_t vcpu_count = 1;

  // Address sizes (CPUID 0x80000008).
  uint8_t physical_address_bits = 40;
  uint8_t linear_address_bits = 48;

  // Timing, for the hypervisor timing leaf 0x40000010 (kHz).
  uint32_t tsc_khz = 2'000'000;
  uint32_t bus_khz = 1'000'000;  // the LAPIC timer's input clock

  // CPUID 1 EDX.
  bool fpu = true;
  bool vme = false;
  bool de = true;
  bool pse = true;
  bool tsc = true;
  bool msr = true;
  bool pae = true;
  bool mce = true;
  bool cx8 = true;
  bool apic = true;
  bool sep = false;  // SYSENTER/SYSEXIT
  bool mtrr = true;
  bool pge = true;
  bool mca = true;
  bool cmov = true;
  bool pat = true;
  bool pse36 = true;
  bool clflush = true;
  bool mmx = true;
  bool fxsr = true;
  bool sse = true;
  bool sse2 = true;
  // CPUID 1 ECX.
  bool sse3 = true;
  bool pclmulqdq = false;
  bool ssse3 = true;
  bool cx16 = true;
  bool sse4_1 = true;
  bool sse4_2 = true;
  bool x2apic = false;
  bool movbe = false;
  bool popcnt = true;
  bool tsc_deadline = false;
  bool aes = false;
  bool xsave = false;
  bool avx = false;
  bool rdrand = false;
  // CPUID 7.0 EBX/ECX.
  bool fsgsbase = false;
  bool bmi1 = false;
  bool smep = false;
  bool bmi2 = false;
  bool erms = false;
  bool smap = false;
  bool pcid = false;  // CPUID 1 ECX[17]
  bool la57 = false;  // CPUID 7.0 ECX[16]
  // CPUID 0x80000001 EDX/ECX.
  bool syscall = true;
  bool nx = true;
  bool mmxext = false;
  bool ffxsr = false;
  bool gigabyte_pages = true;
  bool rdtscp = true;
  bool long_mode = true;
  bool lahf_lm = true;  // LAHF/SAHF in 64-bit mode
  bool abm = false;     // LZCNT
  bool sse4a = false;
  bool prefetchw = false;
  bool perfctr_core = false;  // ECX[23]: six core counters at 0xC0010200 (the legacy four alias)
  // CPUID 0x80000007 EDX[8]: the TSC runs at a constant rate in every state.
  bool invariant_tsc = true;

  // Machine-check banks in MCG_CAP (with MCA); 10 as QEMU's and KVM's default.
  uint8_t machine_check_banks = 10;

  PagingFeatures paging() const {
    return PagingFeatures{physical_address_bits, gigabyte_pages, pse36};
  }
};

}  // namespace lamina::cpu::x86
