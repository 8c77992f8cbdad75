#include "cpu/x86/simd/x87_host.h"

#include <cstring>

namespace lamina::cpu::x86::simd {
namespace {

// Loads the guest's precision and rounding control with every exception masked, so the host
// computes the masked response; the guest's masks are applied by the caller. The x87 stack of
// the host is empty between these calls (the x86-64 ABI keeps it empty across calls and this
// code has no long double arithmetic of its own).
class HostControl {
 public:
  // Also starts the host with the guest's condition codes: which codes an instruction leaves
  // unchanged (the SDM's "undefined" ones, FPREM's quotient bits on special operands) is then
  // the hardware's own answer.
  HostControl(uint16_t guest_control, uint16_t codes) {
    asm volatile("fnstcw %0" : "=m"(saved_) : : "memory");
    // A fresh 32-bit environment: control, status (TOP=0, the codes), all registers empty.
    const uint32_t environment[7] = {0xffff0000u | static_cast<uint16_t>(guest_control | 0x3f),
                                     0xffff0000u | (codes & 0x4700u),
                                     0xffffffffu,
                                     0,
                                     0,
                                     0,
                                     0xffff0000u};
    asm volatile("fldenv %0" : : "m"(environment) : "memory");
  }
  ~HostControl() { asm volatile("fninit\n\tfldcw %0" : : "m"(saved_) : "memory"); }
  HostControl(const HostControl&) = delete;
  HostControl& operator=(const HostControl&) = delete;

 private:
  uint16_t saved_ = 0;
};

}  // namespace

HostX87Result host_binary(X87Binary operation, uint16_t control, uint16_t codes,
                          const X87Register& a, const X87Register& b) {
  HostX87Result result;
  HostControl host(control, codes);
  // Every block loads b then a (ST(0)=a, ST(1)=b), operates, reads the status word at once
  // (later stores change C1) and stores ST(0) and ST(1).
  switch (operation) {
    case X87Binary::kAdd:
      asm volatile("fldt %3\n\tfldt %2\n\tfadd %%st(1), %%st\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   : "m"(a), "m"(b)
                   : "memory");
      break;
    case X87Binary::kSubtract:
      asm volatile("fldt %3\n\tfldt %2\n\tfsub %%st(1), %%st\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   : "m"(a), "m"(b)
                   : "memory");
      break;
    case X87Binary::kMultiply:
      asm volatile("fldt %3\n\tfldt %2\n\tfmul %%st(1), %%st\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   : "m"(a), "m"(b)
                   : "memory");
      break;
    case X87Binary::kDivide:
      asm volatile("fldt %3\n\tfldt %2\n\tfdiv %%st(1), %%st\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   : "m"(a), "m"(b)
                   : "memory");
      break;
    case X87Binary::kScale:
      asm volatile("fldt %3\n\tfldt %2\n\tfscale\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   : "m"(a), "m"(b)
                   : "memory");
      break;
    case X87Binary::kRemainder:
      asm volatile("fldt %3\n\tfldt %2\n\tfprem\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   : "m"(a), "m"(b)
                   : "memory");
      break;
    case X87Binary::kRemainderIeee:
      asm volatile("fldt %3\n\tfldt %2\n\tfprem1\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   : "m"(a), "m"(b)
                   : "memory");
      break;
    case X87Binary::kArcTangent:
      asm volatile("fldt %3\n\tfldt %2\n\tfpatan\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   : "m"(a), "m"(b)
                   : "memory");
      break;
    case X87Binary::kLogarithm:
      asm volatile("fldt %3\n\tfldt %2\n\tfyl2x\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   : "m"(a), "m"(b)
                   : "memory");
      break;
    case X87Binary::kLogarithmPlusOne:
      asm volatile("fldt %3\n\tfldt %2\n\tfyl2xp1\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   : "m"(a), "m"(b)
                   : "memory");
      break;
    case X87Binary::kCompare:
      asm volatile("fldt %2\n\tfldt %1\n\tfcom %%st(1)\n\tfnstsw %0"
                   : "=m"(result.status)
                   : "m"(a), "m"(b)
                   : "memory");
      break;
    case X87Binary::kCompareUnordered:
      asm volatile("fldt %2\n\tfldt %1\n\tfucom %%st(1)\n\tfnstsw %0"
                   : "=m"(result.status)
                   : "m"(a), "m"(b)
                   : "memory");
      break;
  }
  return result;
}

HostX87Result host_unary(X87Unary operation, uint16_t control, uint16_t codes,
                         const X87Register& a) {
  HostX87Result result;
  HostControl host(control, codes);
  switch (operation) {
    case X87Unary::kSquareRoot:
      asm volatile("fldt %2\n\tfsqrt\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   : "m"(a)
                   : "memory");
      break;
    case X87Unary::kRound:
      asm volatile("fldt %2\n\tfrndint\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   : "m"(a)
                   : "memory");
      break;
    case X87Unary::kSine:
      asm volatile("fldt %2\n\tfsin\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   : "m"(a)
                   : "memory");
      break;
    case X87Unary::kCosine:
      asm volatile("fldt %2\n\tfcos\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   : "m"(a)
                   : "memory");
      break;
    case X87Unary::kTwoToXMinusOne:
      asm volatile("fldt %2\n\tf2xm1\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   : "m"(a)
                   : "memory");
      break;
    // The two-result forms leave one value when C2 reports an out-of-range operand; the
    // second store then reads an empty register, harmlessly, after the status was taken.
    case X87Unary::kTangent:
      asm volatile("fldt %3\n\tfptan\n\tfnstsw %0\n\tfstpt %1\n\tfstpt %2"
                   : "=m"(result.status), "=m"(result.value), "=m"(result.second)
                   : "m"(a)
                   : "memory");
      break;
    case X87Unary::kSineCosine:
      asm volatile("fldt %3\n\tfsincos\n\tfnstsw %0\n\tfstpt %1\n\tfstpt %2"
                   : "=m"(result.status), "=m"(result.value), "=m"(result.second)
                   : "m"(a)
                   : "memory");
      break;
    case X87Unary::kExtract:
      asm volatile("fldt %3\n\tfxtract\n\tfnstsw %0\n\tfstpt %1\n\tfstpt %2"
                   : "=m"(result.status), "=m"(result.value), "=m"(result.second)
                   : "m"(a)
                   : "memory");
      break;
  }
  return result;
}

HostX87Result host_memory_operation(unsigned reg, bool double_precision, uint16_t control,
                                    uint16_t codes, const X87Register& a, uint64_t memory) {
  HostX87Result result;
  HostControl host(control, codes);
  uint64_t m64 = memory;
  uint32_t m32 = static_cast<uint32_t>(memory);
  switch (reg & 7) {
    case 0:
      if (double_precision) {
        asm volatile("fldt %2\n\tfaddl %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m64)
                     : "memory");
      } else {
        asm volatile("fldt %2\n\tfadds %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m32)
                     : "memory");
      }
      break;
    case 1:
      if (double_precision) {
        asm volatile("fldt %2\n\tfmull %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m64)
                     : "memory");
      } else {
        asm volatile("fldt %2\n\tfmuls %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m32)
                     : "memory");
      }
      break;
    case 2:
      if (double_precision) {
        asm volatile("fldt %2\n\tfcoml %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m64)
                     : "memory");
      } else {
        asm volatile("fldt %2\n\tfcoms %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m32)
                     : "memory");
      }
      break;
    case 3:
      if (double_precision) {
        asm volatile("fldt %2\n\tfcoml %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m64)
                     : "memory");
      } else {
        asm volatile("fldt %2\n\tfcoms %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m32)
                     : "memory");
      }
      break;
    case 4:
      if (double_precision) {
        asm volatile("fldt %2\n\tfsubl %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m64)
                     : "memory");
      } else {
        asm volatile("fldt %2\n\tfsubs %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m32)
                     : "memory");
      }
      break;
    case 5:
      if (double_precision) {
        asm volatile("fldt %2\n\tfsubrl %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m64)
                     : "memory");
      } else {
        asm volatile("fldt %2\n\tfsubrs %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m32)
                     : "memory");
      }
      break;
    case 6:
      if (double_precision) {
        asm volatile("fldt %2\n\tfdivl %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m64)
                     : "memory");
      } else {
        asm volatile("fldt %2\n\tfdivs %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m32)
                     : "memory");
      }
      break;
    case 7:
      if (double_precision) {
        asm volatile("fldt %2\n\tfdivrl %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m64)
                     : "memory");
      } else {
        asm volatile("fldt %2\n\tfdivrs %3\n\tfnstsw %0\n\tfstpt %1"
                     : "=m"(result.status), "=m"(result.value)
                     : "m"(a), "m"(m32)
                     : "memory");
      }
      break;
  }
  return result;
}

HostX87Result host_constant(uint8_t which, uint16_t control, uint16_t codes) {
  HostX87Result result;
  HostControl host(control, codes);
  switch (which) {
    case 0:
      asm volatile("fld1\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   :
                   : "memory");
      break;
    case 1:
      asm volatile("fldl2t\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   :
                   : "memory");
      break;
    case 2:
      asm volatile("fldl2e\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   :
                   : "memory");
      break;
    case 3:
      asm volatile("fldpi\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   :
                   : "memory");
      break;
    case 4:
      asm volatile("fldlg2\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   :
                   : "memory");
      break;
    case 5:
      asm volatile("fldln2\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   :
                   : "memory");
      break;
    case 6:
      asm volatile("fldz\n\tfnstsw %0\n\tfstpt %1"
                   : "=m"(result.status), "=m"(result.value)
                   :
                   : "memory");
      break;
    default: break;
  }
  return result;
}

HostX87Result host_load_float32(uint16_t control, uint16_t codes, uint32_t bits) {
  HostX87Result result;
  HostControl host(control, codes);
  asm volatile("flds %2\n\tfnstsw %0\n\tfstpt %1"
               : "=m"(result.status), "=m"(result.value)
               : "m"(bits)
               : "memory");
  return result;
}

HostX87Result host_load_float64(uint16_t control, uint16_t codes, uint64_t bits) {
  HostX87Result result;
  HostControl host(control, codes);
  asm volatile("fldl %2\n\tfnstsw %0\n\tfstpt %1"
               : "=m"(result.status), "=m"(result.value)
               : "m"(bits)
               : "memory");
  return result;
}

HostX87Result host_load_bcd(uint16_t control, uint16_t codes, const uint8_t (&bcd)[10]) {
  HostX87Result result;
  HostControl host(control, codes);
  asm volatile("fbld %2\n\tfnstsw %0\n\tfstpt %1"
               : "=m"(result.status), "=m"(result.value)
               : "m"(bcd)
               : "memory");
  return result;
}

HostStoreResult host_store(X87StoreFormat format, uint16_t control, uint16_t codes,
                           const X87Register& value) {
  HostStoreResult result;
  HostControl host(control, codes);
  uint16_t out16 = 0;
  uint32_t out32 = 0;
  uint64_t out64 = 0;
  switch (format) {
    case X87StoreFormat::kFloat32:
      asm volatile("fldt %2\n\tfstps %1\n\tfnstsw %0"
                   : "=m"(result.status), "=m"(out32)
                   : "m"(value)
                   : "memory");
      result.bits = out32;
      break;
    case X87StoreFormat::kFloat64:
      asm volatile("fldt %2\n\tfstpl %1\n\tfnstsw %0"
                   : "=m"(result.status), "=m"(out64)
                   : "m"(value)
                   : "memory");
      result.bits = out64;
      break;
    case X87StoreFormat::kInt16:
      asm volatile("fldt %2\n\tfistps %1\n\tfnstsw %0"
                   : "=m"(result.status), "=m"(out16)
                   : "m"(value)
                   : "memory");
      result.bits = out16;
      break;
    case X87StoreFormat::kInt32:
      asm volatile("fldt %2\n\tfistpl %1\n\tfnstsw %0"
                   : "=m"(result.status), "=m"(out32)
                   : "m"(value)
                   : "memory");
      result.bits = out32;
      break;
    case X87StoreFormat::kInt64:
      asm volatile("fldt %2\n\tfistpll %1\n\tfnstsw %0"
                   : "=m"(result.status), "=m"(out64)
                   : "m"(value)
                   : "memory");
      result.bits = out64;
      break;
    case X87StoreFormat::kTruncInt16:
      asm volatile("fldt %2\n\tfisttps %1\n\tfnstsw %0"
                   : "=m"(result.status), "=m"(out16)
                   : "m"(value)
                   : "memory");
      result.bits = out16;
      break;
    case X87StoreFormat::kTruncInt32:
      asm volatile("fldt %2\n\tfisttpl %1\n\tfnstsw %0"
                   : "=m"(result.status), "=m"(out32)
                   : "m"(value)
                   : "memory");
      result.bits = out32;
      break;
    case X87StoreFormat::kTruncInt64:
      asm volatile("fldt %2\n\tfisttpll %1\n\tfnstsw %0"
                   : "=m"(result.status), "=m"(out64)
                   : "m"(value)
                   : "memory");
      result.bits = out64;
      break;
    case X87StoreFormat::kBcd:
      asm volatile("fldt %2\n\tfbstp %1\n\tfnstsw %0"
                   : "=m"(result.status), "=m"(result.bcd)
                   : "m"(value)
                   : "memory");
      break;
  }
  return result;
}

X87Register x87_from_integer(int64_t value) {
  X87Register result;
  if (value == 0) return result;
  uint64_t magnitude = value < 0 ? 0 - static_cast<uint64_t>(value) : static_cast<uint64_t>(value);
  int shift = __builtin_clzll(magnitude);
  result.significand = magnitude << shift;
  // Biased exponent 16383 + (63 - shift) places the top set bit at the integer bit.
  result.sign_exponent = static_cast<uint16_t>((value < 0 ? 0x8000 : 0) | (16383 + 63 - shift));
  return result;
}

}  // namespace lamina::cpu::x86::simd
