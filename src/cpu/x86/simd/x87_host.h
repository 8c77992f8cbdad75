#pragma once
// The x87 arithmetic of the host: the unit computes guest x87 results with the host's own x87
// (whose registers are the same 80-bit format), loaded with the guest's rounding and precision
// control and all exceptions masked, and reads the host's status word back for the exception
// flags and condition codes. The caller applies the guest's exception masks (SDM Vol. 1 8.5).
//
// Thread-safety: each call saves and restores the calling thread's x87 control word and leaves
// the host x87 stack empty and its status clear.

#include <cstdint>

#include "cpu/x86/simd/simd_state.h"

namespace lamina::cpu::x86::simd {

struct HostX87Result {
  X87Register value;    // ST(0) after the operation
  X87Register second;   // ST(1) after the operation (two-result operations)
  uint16_t status = 0;  // host status word: exception flags and C0-C3
};

enum class X87Binary : uint8_t {
  kAdd,               // a + b
  kSubtract,          // a - b
  kMultiply,          // a * b
  kDivide,            // a / b
  kScale,             // FSCALE with ST(0)=a, ST(1)=b
  kRemainder,         // FPREM with ST(0)=a, ST(1)=b
  kRemainderIeee,     // FPREM1
  kArcTangent,        // FPATAN with ST(0)=a, ST(1)=b: atan(b / a)
  kLogarithm,         // FYL2X with ST(0)=a, ST(1)=b: b * log2(a)
  kLogarithmPlusOne,  // FYL2XP1: b * log2(a + 1)
  kCompare,           // FCOM: a against b, C0/C2/C3
  kCompareUnordered,  // FUCOM
};

enum class X87Unary : uint8_t {
  kSquareRoot,
  kRound,
  kSine,
  kCosine,
  kTangent,     // FPTAN: value=1.0 (pushed) and second=tan when in range; C2 set otherwise
  kSineCosine,  // FSINCOS: value=cos, second=sin when in range
  kExtract,     // FXTRACT: value=significand, second=exponent
  kTwoToXMinusOne,
};

// Every function takes the guest's control word and its status word, whose condition codes
// the host starts with (some instructions leave some codes unchanged).
HostX87Result host_binary(X87Binary operation, uint16_t control, uint16_t codes,
                          const X87Register& a, const X87Register& b);
HostX87Result host_unary(X87Unary operation, uint16_t control, uint16_t codes,
                         const X87Register& a);

// D8/DC memory forms executed as such, so that conversion and operation signal together
// (an SNaN or denormal m32/m64 meets the other operand's class): `reg` is ModRM.reg (0 add,
// 1 mul, 2/3 compare, 4 sub, 5 subr, 6 div, 7 divr), `memory` the m32 or m64 bits.
HostX87Result host_memory_operation(unsigned reg, bool double_precision, uint16_t control,
                                    uint16_t codes, const X87Register& a, uint64_t memory);

// FLD1, FLDL2T, FLDL2E, FLDPI, FLDLG2, FLDLN2, FLDZ by the low 3 bits of D9 E8..EE; the host
// rounds the internal constant by the guest's rounding control, as the instruction does.
HostX87Result host_constant(uint8_t which, uint16_t control, uint16_t codes);

// Memory format conversions. Loads return the value; stores return the bits in `bits`.
HostX87Result host_load_float32(uint16_t control, uint16_t codes, uint32_t bits);
HostX87Result host_load_float64(uint16_t control, uint16_t codes, uint64_t bits);
HostX87Result host_load_bcd(uint16_t control, uint16_t codes, const uint8_t (&bcd)[10]);

struct HostStoreResult {
  uint64_t bits = 0;
  uint8_t bcd[10] = {};
  uint16_t status = 0;
};
enum class X87StoreFormat : uint8_t {
  kFloat32,
  kFloat64,
  kInt16,
  kInt32,
  kInt64,
  kTruncInt16,
  kTruncInt32,
  kTruncInt64,
  kBcd,
};
HostStoreResult host_store(X87StoreFormat format, uint16_t control, uint16_t codes,
                           const X87Register& value);

// The same operations with the guest's exception masks in force on the host (the results of
// unmasked overflow/underflow); defined in x87_host_unmasked.cc.
HostX87Result host_binary_unmasked(X87Binary operation, uint16_t control, uint16_t codes,
                                   const X87Register& a, const X87Register& b);
HostX87Result host_unary_unmasked(X87Unary operation, uint16_t control, uint16_t codes,
                                  const X87Register& a);
HostX87Result host_memory_operation_unmasked(unsigned reg, bool double_precision, uint16_t control,
                                             uint16_t codes, const X87Register& a, uint64_t memory);

// Exact conversion of an integer to double-extended (FILD and the integer-operand forms).
X87Register x87_from_integer(int64_t value);

}  // namespace lamina::cpu::x86::simd
