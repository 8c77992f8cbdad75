// MUL, IMUL (one-, two- and three-operand), DIV and IDIV with #DE on a zero divisor or a
// quotient that does not fit (SDM vol. 2). SF/ZF/AF/PF after multiplies and every flag after
// divides are undefined; multiplies set SF/ZF/PF from the low half, divides leave flags alone.
#include "cpu/x86/handlers.h"
#include "cpu/x86/operands.h"

namespace lamina::cpu::x86 {
namespace {

template <typename T>
struct Wider;
template <> struct Wider<uint8_t> { using Type = uint16_t; };
template <> struct Wider<uint16_t> { using Type = uint32_t; };
template <> struct Wider<uint32_t> { using Type = uint64_t; };
template <> struct Wider<uint64_t> { using Type = Uint128; };

template <typename T>
constexpr unsigned kBits = sizeof(T) * 8;

// The double-width accumulator: AX for bytes, DX:AX, EDX:EAX, RDX:RAX.
template <typename T>
typename Wider<T>::Type read_accumulator(CpuCore& core) {
  using W = typename Wider<T>::Type;
  if constexpr (sizeof(T) == 1) return core.read_register<uint16_t>(kRax, false);
  return (W{core.read_register<T>(kRdx, false)} << kBits<T>) | core.read_register<T>(kRax, false);
}

template <typename T>
void write_halves(CpuCore& core, T low, T high) {
  if constexpr (sizeof(T) == 1) {
    core.write_register<uint16_t>(kRax, false, static_cast<uint16_t>(low | (uint16_t{high} << 8)));
  } else {
    core.write_register<T>(kRax, false, low);
    core.write_register<T>(kRdx, false, high);
  }
}

template <typename T>
void multiply(CpuCore& core, const Instruction& in) {
  using W = typename Wider<T>::Type;
  const W product = W{core.read_register<T>(kRax, false)} * W{read_rm<T>(core, in)};
  const T low = static_cast<T>(product);
  const T high = static_cast<T>(product >> kBits<T>);
  write_halves<T>(core, low, high);
  set_logic_flags<T>(core, low, high != 0, high != 0);
}

template <typename T>
void signed_multiply_accumulator(CpuCore& core, const Instruction& in) {
  using W = typename Wider<T>::Type;
  using S = std::make_signed_t<T>;
  using SW = typename SignedOf<W>::Type;
  const SW product = SW{static_cast<S>(core.read_register<T>(kRax, false))} *
                     SW{static_cast<S>(read_rm<T>(core, in))};
  const T low = static_cast<T>(product);
  const T high = static_cast<T>(static_cast<W>(product) >> kBits<T>);
  const bool overflow = product != SW{static_cast<S>(low)};
  write_halves<T>(core, low, high);
  set_logic_flags<T>(core, low, overflow, overflow);
}

// IMUL r, r/m (0F AF) and IMUL r, r/m, imm (69, 6B).
template <typename T, bool kImmediate>
void signed_multiply(CpuCore& core, const Instruction& in) {
  using W = typename Wider<T>::Type;
  using S = std::make_signed_t<T>;
  using SW = typename SignedOf<W>::Type;
  const S first = static_cast<S>(read_rm<T>(core, in));
  const S second = static_cast<S>(kImmediate ? static_cast<T>(in.immediate) : read_reg<T>(core, in));
  const SW product = SW{first} * SW{second};
  const T low = static_cast<T>(product);
  const bool overflow = product != SW{static_cast<S>(low)};
  write_reg<T>(core, in, low);
  set_logic_flags<T>(core, low, overflow, overflow);
}

template <typename T>
void divide(CpuCore& core, const Instruction& in) {
  using W = typename Wider<T>::Type;
  const T divisor = read_rm<T>(core, in);
  if (divisor == 0) raise_fault(vector::kDivideError);
  const W dividend = read_accumulator<T>(core);
  const W quotient = dividend / divisor;
  if (quotient > W{static_cast<T>(~T{0})}) raise_fault(vector::kDivideError);
  write_halves<T>(core, static_cast<T>(quotient), static_cast<T>(dividend % divisor));
}

template <typename T>
void signed_divide(CpuCore& core, const Instruction& in) {
  using W = typename Wider<T>::Type;
  using S = std::make_signed_t<T>;
  using SW = typename SignedOf<W>::Type;
  const S divisor = static_cast<S>(read_rm<T>(core, in));
  if (divisor == 0) raise_fault(vector::kDivideError);
  const SW dividend = static_cast<SW>(read_accumulator<T>(core));
  // The one overflowing division of the wide type itself: its minimum by -1.
  constexpr SW kMinimum = static_cast<SW>(W{1} << (2 * kBits<T> - 1));
  if (dividend == kMinimum && divisor == -1) raise_fault(vector::kDivideError);
  const SW quotient = dividend / divisor;
  const SW remainder = dividend % divisor;
  if (quotient != SW{static_cast<S>(quotient)}) raise_fault(vector::kDivideError);
  write_halves<T>(core, static_cast<T>(quotient), static_cast<T>(remainder));
}

}  // namespace

Handler select_muldiv_handler(const Instruction& in) {
  const uint8_t size = in.operand_size;
  switch (in.opcode) {
    case 0xf6: case 0xf7: {
      const uint8_t width = in.opcode == 0xf6 ? 1 : size;
      switch (in.group_index()) {
        case 4: return pick_by_size(width, []<typename T>() -> Handler { return &multiply<T>; });
        case 5: return pick_by_size(width, []<typename T>() -> Handler { return &signed_multiply_accumulator<T>; });
        case 6: return pick_by_size(width, []<typename T>() -> Handler { return &divide<T>; });
        case 7: return pick_by_size(width, []<typename T>() -> Handler { return &signed_divide<T>; });
        default: return nullptr;
      }
    }
    case 0x1af: return pick_by_size(size, []<typename T>() -> Handler { return &signed_multiply<T, false>; });
    case 0x69: case 0x6b:
      return pick_by_size(size, []<typename T>() -> Handler { return &signed_multiply<T, true>; });
    default: return nullptr;
  }
}

}  // namespace lamina::cpu::x86
