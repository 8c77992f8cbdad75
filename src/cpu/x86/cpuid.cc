#include "cpu/x86/cpuid.h"

#include <cstring>

namespace lamina::cpu::x86 {
namespace {

// Vendor string in EBX, EDX, ECX order (AMD64 APM vol. 3, CPUID Fn0000_0000).
constexpr char kVendor[] = "AuthenticAMD";
constexpr char kBrand[48] = "Lamina built-in x86-64 CPU";

uint32_t four_chars(const char* text) {
  uint32_t value = 0;
  std::memcpy(&value, text, 4);
  return value;
}

// Leaf 1 EDX: FPU PSE TSC MSR PAE CX8 APIC SEP PGE CMOV PAT PSE36 CLFSH MMX FXSR SSE SSE2.
constexpr uint32_t kLeaf1Edx = (1u << 0) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 6) |
                               (1u << 8) | (1u << 9) | (1u << 11) | (1u << 13) | (1u << 15) |
                               (1u << 16) | (1u << 17) | (1u << 19) | (1u << 23) | (1u << 24) |
                               (1u << 25) | (1u << 26);
// Leaf 1 ECX: CMPXCHG16B, POPCNT, and "running under a hypervisor".
constexpr uint32_t kLeaf1Ecx = (1u << 13) | (1u << 23) | (1u << 31);
// 0x80000001 EDX: SYSCALL, NX, 1 GiB pages, RDTSCP, LM; ECX: LAHF/SAHF in 64-bit mode.
constexpr uint32_t kExtendedEdx = (1u << 11) | (1u << 20) | (1u << 26) | (1u << 27) | (1u << 29);
constexpr uint32_t kExtendedEcx = 1u << 0;

}  // namespace

CpuidResult cpuid(uint32_t leaf, uint32_t subleaf) {
  (void)subleaf;
  CpuidResult result;
  switch (leaf) {
    case 0:
      result.eax = 1;
      result.ebx = four_chars(kVendor);
      result.edx = four_chars(kVendor + 4);
      result.ecx = four_chars(kVendor + 8);
      break;
    case 1:
      // Family 15, model 107, stepping 1 (a generic K8-class part); CLFLUSH line 64 bytes.
      result.eax = (0x6u << 16) | (0xfu << 8) | (0xbu << 4) | 1u;
      result.ebx = (8u << 8) | (1u << 16);
      result.ecx = kLeaf1Ecx;
      result.edx = kLeaf1Edx;
      break;
    case 0x80000000:
      result.eax = 0x80000008;
      result.ebx = four_chars(kVendor);
      result.edx = four_chars(kVendor + 4);
      result.ecx = four_chars(kVendor + 8);
      break;
    case 0x80000001:
      result.eax = (0x6u << 16) | (0xfu << 8) | (0xbu << 4) | 1u;
      result.ecx = kExtendedEcx;
      result.edx = kExtendedEdx;
      break;
    case 0x80000002: case 0x80000003: case 0x80000004: {
      const char* part = kBrand + (leaf - 0x80000002) * 16;
      result.eax = four_chars(part);
      result.ebx = four_chars(part + 4);
      result.ecx = four_chars(part + 8);
      result.edx = four_chars(part + 12);
      break;
    }
    case 0x80000008:
      result.eax = 0x3028;  // 40 physical, 48 linear address bits
      break;
    default:
      break;
  }
  return result;
}

}  // namespace lamina::cpu::x86
