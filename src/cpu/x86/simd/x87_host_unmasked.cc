// The x87 operations again, this time with the guest's exception masks in force on the host:
// used for the results the hardware produces only when an exception is unmasked (the
// bias-adjusted results of unmasked overflow and underflow, SDM Vol. 1 8.5.4-8.5.5). The host
// registers are read back with FNSAVE, which does not wait, so the pending exception never
// reaches this process; FNSAVE also leaves the host x87 initialized.

#include "cpu/x86/simd/x87_host.h"

#include <cstring>

namespace lamina::cpu::x86::simd {
namespace {

class UnmaskedControl {
 public:
  UnmaskedControl(uint16_t guest_control, uint16_t codes) {
    asm volatile("fnstcw %0" : "=m"(saved_) : : "memory");
    // A fresh 32-bit environment: control, status (TOP=0, the codes), all registers empty.
    const uint32_t environment[7] = {0xffff0000u | guest_control,
                                     0xffff0000u | (codes & 0x4700u),
                                     0xffffffffu,
                                     0,
                                     0,
                                     0,
                                     0xffff0000u};
    asm volatile("fldenv %0" : : "m"(environment) : "memory");
  }
  ~UnmaskedControl() { asm volatile("fninit\n\tfldcw %0" : : "m"(saved_) : "memory"); }
  UnmaskedControl(const UnmaskedControl&) = delete;
  UnmaskedControl& operator=(const UnmaskedControl&) = delete;

 private:
  uint16_t saved_ = 0;
};

// FNSAVE image in the 32-bit layout: status word at 4, ST(0) at 28, ST(1) at 38.
HostX87Result from_image(const uint8_t (&image)[108]) {
  HostX87Result result;
  std::memcpy(&result.status, image + 4, 2);
  std::memcpy(&result.value.significand, image + 28, 8);
  std::memcpy(&result.value.sign_exponent, image + 36, 2);
  std::memcpy(&result.second.significand, image + 38, 8);
  std::memcpy(&result.second.sign_exponent, image + 46, 2);
  return result;
}

}  // namespace

HostX87Result host_binary_unmasked(X87Binary operation, uint16_t control, uint16_t codes,
                                   const X87Register& a, const X87Register& b) {
  uint8_t image[108] = {};
  {
    UnmaskedControl host(control, codes);
    switch (operation) {
      case X87Binary::kAdd:
        asm volatile("fldt %2\n\tfldt %1\n\tfadd %%st(1), %%st\n\tfnsave %0"
                     : "=m"(image)
                     : "m"(a), "m"(b)
                     : "memory");
        break;
      case X87Binary::kSubtract:
        asm volatile("fldt %2\n\tfldt %1\n\tfsub %%st(1), %%st\n\tfnsave %0"
                     : "=m"(image)
                     : "m"(a), "m"(b)
                     : "memory");
        break;
      case X87Binary::kMultiply:
        asm volatile("fldt %2\n\tfldt %1\n\tfmul %%st(1), %%st\n\tfnsave %0"
                     : "=m"(image)
                     : "m"(a), "m"(b)
                     : "memory");
        break;
      case X87Binary::kDivide:
        asm volatile("fldt %2\n\tfldt %1\n\tfdiv %%st(1), %%st\n\tfnsave %0"
                     : "=m"(image)
                     : "m"(a), "m"(b)
                     : "memory");
        break;
      case X87Binary::kScale:
        asm volatile("fldt %2\n\tfldt %1\n\tfscale\n\tfnsave %0"
                     : "=m"(image)
                     : "m"(a), "m"(b)
                     : "memory");
        break;
      case X87Binary::kRemainder:
        asm volatile("fldt %2\n\tfldt %1\n\tfprem\n\tfnsave %0"
                     : "=m"(image)
                     : "m"(a), "m"(b)
                     : "memory");
        break;
      case X87Binary::kRemainderIeee:
        asm volatile("fldt %2\n\tfldt %1\n\tfprem1\n\tfnsave %0"
                     : "=m"(image)
                     : "m"(a), "m"(b)
                     : "memory");
        break;
      case X87Binary::kArcTangent:
        asm volatile("fldt %2\n\tfldt %1\n\tfpatan\n\tfnsave %0"
                     : "=m"(image)
                     : "m"(a), "m"(b)
                     : "memory");
        break;
      case X87Binary::kLogarithm:
        asm volatile("fldt %2\n\tfldt %1\n\tfyl2x\n\tfnsave %0"
                     : "=m"(image)
                     : "m"(a), "m"(b)
                     : "memory");
        break;
      case X87Binary::kLogarithmPlusOne:
        asm volatile("fldt %2\n\tfldt %1\n\tfyl2xp1\n\tfnsave %0"
                     : "=m"(image)
                     : "m"(a), "m"(b)
                     : "memory");
        break;
      default: break;
    }
  }
  return from_image(image);
}

HostX87Result host_unary_unmasked(X87Unary operation, uint16_t control, uint16_t codes,
                                  const X87Register& a) {
  uint8_t image[108] = {};
  {
    UnmaskedControl host(control, codes);
    switch (operation) {
      case X87Unary::kSquareRoot:
        asm volatile("fldt %1\n\tfsqrt\n\tfnsave %0" : "=m"(image) : "m"(a) : "memory");
        break;
      case X87Unary::kRound:
        asm volatile("fldt %1\n\tfrndint\n\tfnsave %0" : "=m"(image) : "m"(a) : "memory");
        break;
      case X87Unary::kSine:
        asm volatile("fldt %1\n\tfsin\n\tfnsave %0" : "=m"(image) : "m"(a) : "memory");
        break;
      case X87Unary::kCosine:
        asm volatile("fldt %1\n\tfcos\n\tfnsave %0" : "=m"(image) : "m"(a) : "memory");
        break;
      case X87Unary::kTwoToXMinusOne:
        asm volatile("fldt %1\n\tf2xm1\n\tfnsave %0" : "=m"(image) : "m"(a) : "memory");
        break;
      case X87Unary::kTangent:
        asm volatile("fldt %1\n\tfptan\n\tfnsave %0" : "=m"(image) : "m"(a) : "memory");
        break;
      case X87Unary::kSineCosine:
        asm volatile("fldt %1\n\tfsincos\n\tfnsave %0" : "=m"(image) : "m"(a) : "memory");
        break;
      case X87Unary::kExtract:
        asm volatile("fldt %1\n\tfxtract\n\tfnsave %0" : "=m"(image) : "m"(a) : "memory");
        break;
    }
  }
  return from_image(image);
}

HostX87Result host_memory_operation_unmasked(unsigned reg, bool double_precision, uint16_t control,
                                             uint16_t codes, const X87Register& a,
                                             uint64_t memory) {
  uint8_t image[108] = {};
  uint64_t m64 = memory;
  uint32_t m32 = static_cast<uint32_t>(memory);
  {
    UnmaskedControl host(control, codes);
    switch (reg & 7) {
      case 0:
        if (double_precision) {
          asm volatile("fldt %1\n\tfaddl %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m64)
                       : "memory");
        } else {
          asm volatile("fldt %1\n\tfadds %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m32)
                       : "memory");
        }
        break;
      case 1:
        if (double_precision) {
          asm volatile("fldt %1\n\tfmull %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m64)
                       : "memory");
        } else {
          asm volatile("fldt %1\n\tfmuls %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m32)
                       : "memory");
        }
        break;
      case 2:
        if (double_precision) {
          asm volatile("fldt %1\n\tfcoml %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m64)
                       : "memory");
        } else {
          asm volatile("fldt %1\n\tfcoms %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m32)
                       : "memory");
        }
        break;
      case 3:
        if (double_precision) {
          asm volatile("fldt %1\n\tfcoml %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m64)
                       : "memory");
        } else {
          asm volatile("fldt %1\n\tfcoms %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m32)
                       : "memory");
        }
        break;
      case 4:
        if (double_precision) {
          asm volatile("fldt %1\n\tfsubl %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m64)
                       : "memory");
        } else {
          asm volatile("fldt %1\n\tfsubs %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m32)
                       : "memory");
        }
        break;
      case 5:
        if (double_precision) {
          asm volatile("fldt %1\n\tfsubrl %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m64)
                       : "memory");
        } else {
          asm volatile("fldt %1\n\tfsubrs %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m32)
                       : "memory");
        }
        break;
      case 6:
        if (double_precision) {
          asm volatile("fldt %1\n\tfdivl %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m64)
                       : "memory");
        } else {
          asm volatile("fldt %1\n\tfdivs %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m32)
                       : "memory");
        }
        break;
      case 7:
        if (double_precision) {
          asm volatile("fldt %1\n\tfdivrl %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m64)
                       : "memory");
        } else {
          asm volatile("fldt %1\n\tfdivrs %2\n\tfnsave %0"
                       : "=m"(image)
                       : "m"(a), "m"(m32)
                       : "memory");
        }
        break;
    }
  }
  return from_image(image);
}

}  // namespace lamina::cpu::x86::simd
