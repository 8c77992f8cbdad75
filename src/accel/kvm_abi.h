#pragma once
// The KVM ioctl structures that end in a flexible array (kvm_cpuid2, kvm_msrs, kvm_xsave) in their
// C layout. Linux's uapi headers declare the array with __DECLARE_FLEX_ARRAY, which in C++ adds an
// empty struct member: sizeof and the offset of the entries grow (12/16 instead of 8), and since
// the ioctl number encodes the size, KVM answers EINVAL. Here the header is 8 bytes, as in C, and
// the request numbers are computed from it (linux/kvm.h: KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO,
// 0x05, struct kvm_cpuid2), KVM_SET_CPUID2 = _IOW(KVMIO, 0x90, ...), KVM_GET_MSRS =
// _IOWR(KVMIO, 0x88, struct kvm_msrs), KVM_SET_MSRS = _IOW(KVMIO, 0x89, ...)).
//
// Thread-safety: plain values.

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace lamina::accel::kvm {

// kvm_xsave's fixed part: 4096 bytes in C; the C++ reading of its trailing flexible array makes it
// 4100 and the request numbers wrong in the same way (KVM_GET_XSAVE = _IOR(KVMIO, 0xa4, ...),
// KVM_SET_XSAVE = _IOW(KVMIO, 0xa5, ...), KVM_GET_XSAVE2 = _IOR(KVMIO, 0xcf, ...)).
struct XsaveRegion {
  uint32_t region[1024];
};
static_assert(sizeof(XsaveRegion) == 4096);
inline constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, XsaveRegion);
inline constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, XsaveRegion);
inline constexpr unsigned long kGetXsave2 = _IOR(KVMIO, 0xcf, XsaveRegion);

// nent/nmsrs and the padding that follows it.
struct FlexibleHeader {
  uint32_t count;
  uint32_t padding;
};
static_assert(sizeof(FlexibleHeader) == 8);
static_assert(offsetof(kvm_fpu, mxcsr) == 408 && sizeof(kvm_fpu) == 416, "kvm_fpu: the C layout");

inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, FlexibleHeader);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, FlexibleHeader);
inline constexpr unsigned long kGetCpuid2 = _IOWR(KVMIO, 0x91, FlexibleHeader);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, FlexibleHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, FlexibleHeader);

// A header followed by `count` entries of T, in one buffer.
template <typename T>
class FlexibleList {
 public:
  explicit FlexibleList(size_t count) : buffer_(sizeof(FlexibleHeader) + count * sizeof(T)) {
    const FlexibleHeader header{static_cast<uint32_t>(count), 0};
    std::memcpy(buffer_.data(), &header, sizeof(header));
  }
  explicit FlexibleList(std::span<const T> entries) : FlexibleList(entries.size()) {
    std::memcpy(buffer_.data() + sizeof(FlexibleHeader), entries.data(), entries.size_bytes());
  }

  void* data() { return buffer_.data(); }
  uint32_t count() const {
    FlexibleHeader header;
    std::memcpy(&header, buffer_.data(), sizeof(header));
    return header.count;
  }
  // Entry `index` (below the allocated count), copied out and in: the buffer is bytes.
  T get(size_t index) const {
    T entry;
    std::memcpy(&entry, buffer_.data() + sizeof(FlexibleHeader) + index * sizeof(T), sizeof(T));
    return entry;
  }
  void set(size_t index, const T& entry) {
    std::memcpy(buffer_.data() + sizeof(FlexibleHeader) + index * sizeof(T), &entry, sizeof(T));
  }
  size_t capacity() const { return (buffer_.size() - sizeof(FlexibleHeader)) / sizeof(T); }

 private:
  std::vector<std::byte> buffer_;
};

}  // namespace lamina::accel::kvm
