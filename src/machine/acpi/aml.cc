#include "machine/acpi/aml.h"

#include <cassert>
#include <string>

#include "base/byte_order.h"

namespace lamina::machine::acpi::aml {

namespace {

// Opcodes (ACPI 6.5, section 20.2).
constexpr uint8_t kZeroOp = 0x00;
constexpr uint8_t kOneOp = 0x01;
constexpr uint8_t kNameOp = 0x08;
constexpr uint8_t kBytePrefix = 0x0A;
constexpr uint8_t kWordPrefix = 0x0B;
constexpr uint8_t kDWordPrefix = 0x0C;
constexpr uint8_t kStringPrefix = 0x0D;
constexpr uint8_t kQWordPrefix = 0x0E;
constexpr uint8_t kScopeOp = 0x10;
constexpr uint8_t kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kMethodOp = 0x14;
constexpr uint8_t kDualNamePrefix = 0x2E;
constexpr uint8_t kMultiNamePrefix = 0x2F;
constexpr uint8_t kExtOpPrefix = 0x5B;
constexpr uint8_t kDeviceOp = 0x82;  // after kExtOpPrefix
constexpr uint8_t kReturnOp = 0xA4;
constexpr uint8_t kLocal0Op = 0x60;
constexpr uint8_t kArg0Op = 0x68;
constexpr uint8_t kStoreOp = 0x70;
constexpr uint8_t kAndOp = 0x7B;
constexpr uint8_t kOrOp = 0x7D;
constexpr uint8_t kCreateDWordFieldOp = 0x8A;
constexpr uint8_t kLNotOp = 0x92;
constexpr uint8_t kLEqualOp = 0x93;
constexpr uint8_t kIfOp = 0xA0;
constexpr uint8_t kElseOp = 0xA1;
constexpr uint8_t kOnesOp = 0xFF;
constexpr uint8_t kNotifyOp = 0x86;
constexpr uint8_t kOpRegionOp = 0x80;  // after kExtOpPrefix
constexpr uint8_t kFieldOp = 0x81;     // after kExtOpPrefix
constexpr uint8_t kSystemIoSpace = 0x01;
// MethodFlags bit 3 (20.2.5.2).
constexpr uint8_t kSerializeFlag = 0x08;
// FieldFlags (20.2.5.2): AccessType DWordAcc (3), LockRule NoLock (0), UpdateRule WriteAsZeros
// (2 << 5).
constexpr uint8_t kDWordAccWriteAsZeros = 0x03 | (2 << 5);

void append(Bytes& out, const Bytes& more) {
  out.reserve(out.size() + more.size());
  for (std::byte byte : more) out.push_back(byte);
}
void append_byte(Bytes& out, uint8_t value) { out.push_back(std::byte{value}); }
template <typename T>
void append_le(Bytes& out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) append_byte(out, static_cast<uint8_t>(value >> (8 * i)));
}

Bytes concatenate(const std::vector<Bytes>& parts) {
  Bytes out;
  for (const Bytes& part : parts) append(out, part);
  return out;
}

// Opcode(s), PkgLength, then the body.
Bytes with_pkg_length(std::initializer_list<uint8_t> opcodes, const Bytes& body) {
  Bytes out;
  for (uint8_t opcode : opcodes) append_byte(out, opcode);
  append(out, pkg_length(body.size()));
  append(out, body);
  return out;
}

// Small (6.4.2) and large (6.4.3) resource descriptor headers.
Bytes large_descriptor(uint8_t type, const Bytes& body) {
  Bytes out;
  append_byte(out, type);
  append_le<uint16_t>(out, static_cast<uint16_t>(body.size()));
  append(out, body);
  return out;
}

// Address space descriptor common part (6.4.3.5): type, general flags, type-specific flags.
// General flags: bit 3 MaxFixed, bit 2 MinFixed, bit 0 consumer(1)/producer(0).
constexpr uint8_t kMinMaxFixed = 0x0C;

}  // namespace

Bytes pkg_length(size_t payload) {
  Bytes out;
  // The encoded length includes the PkgLength bytes themselves.
  if (payload + 1 < 0x40) {
    append_byte(out, static_cast<uint8_t>(payload + 1));
    return out;
  }
  for (size_t extra = 1; extra <= 3; ++extra) {
    const size_t total = payload + 1 + extra;
    if (total < (size_t{1} << (4 + 8 * extra))) {
      append_byte(out, static_cast<uint8_t>((extra << 6) | (total & 0x0F)));
      for (size_t i = 0; i < extra; ++i) append_byte(out, static_cast<uint8_t>(total >> (4 + 8 * i)));
      return out;
    }
  }
  assert(false && "AML package longer than 2^28 bytes");
  return out;
}

Bytes name_string(std::string_view path) {
  Bytes out;
  if (!path.empty() && path.front() == '\\') {
    append_byte(out, '\\');
    path.remove_prefix(1);
  }
  while (!path.empty() && path.front() == '^') {
    append_byte(out, '^');
    path.remove_prefix(1);
  }
  std::vector<std::string> segments;
  while (!path.empty()) {
    const size_t dot = path.find('.');
    std::string segment(path.substr(0, dot));
    segment.resize(4, '_');
    segments.push_back(segment);
    path = dot == std::string_view::npos ? std::string_view{} : path.substr(dot + 1);
  }
  if (segments.empty()) {
    append_byte(out, 0x00);  // NullName
    return out;
  }
  if (segments.size() == 2) append_byte(out, kDualNamePrefix);
  if (segments.size() > 2) {
    append_byte(out, kMultiNamePrefix);
    append_byte(out, static_cast<uint8_t>(segments.size()));
  }
  for (const std::string& segment : segments) {
    for (char c : segment) append_byte(out, static_cast<uint8_t>(c));
  }
  return out;
}

Bytes integer(uint64_t value) {
  Bytes out;
  if (value == 0) {
    append_byte(out, kZeroOp);
  } else if (value == 1) {
    append_byte(out, kOneOp);
  } else if (value == UINT64_MAX) {
    append_byte(out, kOnesOp);
  } else if (value <= 0xFF) {
    append_byte(out, kBytePrefix);
    append_le<uint8_t>(out, static_cast<uint8_t>(value));
  } else if (value <= 0xFFFF) {
    append_byte(out, kWordPrefix);
    append_le<uint16_t>(out, static_cast<uint16_t>(value));
  } else if (value <= 0xFFFFFFFF) {
    append_byte(out, kDWordPrefix);
    append_le<uint32_t>(out, static_cast<uint32_t>(value));
  } else {
    append_byte(out, kQWordPrefix);
    append_le<uint64_t>(out, value);
  }
  return out;
}

Bytes dword(uint32_t value) {
  Bytes out;
  append_byte(out, kDWordPrefix);
  append_le<uint32_t>(out, value);
  return out;
}

Bytes string(std::string_view text) {
  Bytes out;
  append_byte(out, kStringPrefix);
  for (char c : text) append_byte(out, static_cast<uint8_t>(c));
  append_byte(out, 0);
  return out;
}

Bytes eisa_id(std::string_view id) {
  assert(id.size() == 7);
  auto hex = [](char c) -> uint32_t {
    return c <= '9' ? static_cast<uint32_t>(c - '0') : static_cast<uint32_t>((c | 0x20) - 'a' + 10);
  };
  // Three 5-bit letters ('A' = 1), then four hex digits; stored big-endian in the DWord.
  const uint32_t letters = ((static_cast<uint32_t>(id[0]) - 0x40) << 10) |
                           ((static_cast<uint32_t>(id[1]) - 0x40) << 5) |
                           (static_cast<uint32_t>(id[2]) - 0x40);
  const uint32_t product = (hex(id[3]) << 12) | (hex(id[4]) << 8) | (hex(id[5]) << 4) | hex(id[6]);
  const uint32_t big_endian = (letters << 16) | product;
  return dword(std::byteswap(big_endian));
}

Bytes name(std::string_view path, const Bytes& value) {
  Bytes out;
  append_byte(out, kNameOp);
  append(out, name_string(path));
  append(out, value);
  return out;
}

Bytes package(const std::vector<Bytes>& elements) {
  Bytes body;
  append_byte(body, static_cast<uint8_t>(elements.size()));
  append(body, concatenate(elements));
  return with_pkg_length({kPackageOp}, body);
}

Bytes scope(std::string_view path, const std::vector<Bytes>& terms) {
  Bytes body = name_string(path);
  append(body, concatenate(terms));
  return with_pkg_length({kScopeOp}, body);
}

Bytes device(std::string_view path, const std::vector<Bytes>& terms) {
  Bytes body = name_string(path);
  append(body, concatenate(terms));
  return with_pkg_length({kExtOpPrefix, kDeviceOp}, body);
}

Bytes method(std::string_view path, uint8_t argument_count, const std::vector<Bytes>& terms) {
  Bytes body = name_string(path);
  append_byte(body, argument_count & 0x07);  // MethodFlags: NotSerialized, SyncLevel 0
  append(body, concatenate(terms));
  return with_pkg_length({kMethodOp}, body);
}

Bytes return_value(const Bytes& value) {
  Bytes out;
  append_byte(out, kReturnOp);
  append(out, value);
  return out;
}

Bytes buffer(const Bytes& data) {
  Bytes body = integer(data.size());
  append(body, data);
  return with_pkg_length({kBufferOp}, body);
}

Bytes uuid(std::string_view text) {
  assert(text.size() == 36);
  auto nibble = [](char c) -> uint8_t {
    return static_cast<uint8_t>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
  };
  auto byte_at = [&](size_t position) -> uint8_t {
    return static_cast<uint8_t>((nibble(text[position]) << 4) | nibble(text[position + 1]));
  };
  // Text positions of each output byte: groups 1-3 reversed (little-endian), then as written.
  constexpr size_t kOrder[16] = {6, 4, 2, 0, 11, 9, 16, 14, 19, 21, 24, 26, 28, 30, 32, 34};
  Bytes data;
  for (size_t position : kOrder) append_byte(data, byte_at(position));
  return buffer(data);
}

Bytes arg(uint8_t index) { return Bytes{std::byte{static_cast<uint8_t>(kArg0Op + (index & 7))}}; }
Bytes local(uint8_t index) {
  return Bytes{std::byte{static_cast<uint8_t>(kLocal0Op + (index & 7))}};
}

Bytes create_dword_field(const Bytes& source, const Bytes& byte_index, std::string_view name) {
  Bytes out;
  append_byte(out, kCreateDWordFieldOp);
  append(out, source);
  append(out, byte_index);
  append(out, name_string(name));
  return out;
}

Bytes if_then(const Bytes& predicate, const std::vector<Bytes>& terms) {
  Bytes body = predicate;
  append(body, concatenate(terms));
  return with_pkg_length({kIfOp}, body);
}

Bytes else_then(const std::vector<Bytes>& terms) {
  return with_pkg_length({kElseOp}, concatenate(terms));
}

Bytes logical_equal(const Bytes& a, const Bytes& b) {
  Bytes out;
  append_byte(out, kLEqualOp);
  append(out, a);
  append(out, b);
  return out;
}

Bytes logical_not(const Bytes& a) {
  Bytes out;
  append_byte(out, kLNotOp);
  append(out, a);
  return out;
}

Bytes store(const Bytes& value, const Bytes& target) {
  Bytes out;
  append_byte(out, kStoreOp);
  append(out, value);
  append(out, target);
  return out;
}

Bytes bitwise_and(const Bytes& a, const Bytes& b, const Bytes& target) {
  Bytes out;
  append_byte(out, kAndOp);
  append(out, a);
  append(out, b);
  append(out, target);
  return out;
}

Bytes bitwise_or(const Bytes& a, const Bytes& b, const Bytes& target) {
  Bytes out;
  append_byte(out, kOrOp);
  append(out, a);
  append(out, b);
  append(out, target);
  return out;
}

Bytes no_target() { return Bytes{std::byte{0x00}}; }

Bytes call(std::string_view path, const std::vector<Bytes>& arguments) {
  Bytes out = name_string(path);
  append(out, concatenate(arguments));
  return out;
}

Bytes notify(std::string_view object, const Bytes& value) {
  Bytes out;
  append_byte(out, kNotifyOp);
  append(out, name_string(object));
  append(out, value);
  return out;
}

Bytes serialized_method(std::string_view path, uint8_t argument_count,
                        const std::vector<Bytes>& terms) {
  Bytes body = name_string(path);
  append_byte(body, static_cast<uint8_t>((argument_count & 0x07) | kSerializeFlag));
  append(body, concatenate(terms));
  return with_pkg_length({kMethodOp}, body);
}

Bytes system_io_region(std::string_view name, uint16_t offset, uint16_t length) {
  Bytes out;
  append_byte(out, kExtOpPrefix);
  append_byte(out, kOpRegionOp);
  append(out, name_string(name));
  append_byte(out, kSystemIoSpace);
  append(out, integer(offset));
  append(out, integer(length));
  return out;
}

Bytes dword_field(std::string_view region, const std::vector<FieldUnit>& units) {
  Bytes body = name_string(region);
  append_byte(body, kDWordAccWriteAsZeros);
  for (const FieldUnit& unit : units) {
    // NamedField: NameSeg then the width as a PkgLength; ReservedField: 0x00 then the width.
    if (unit.name.empty()) {
      append_byte(body, 0x00);
    } else {
      assert(unit.name.size() == 4);
      for (char c : unit.name) append_byte(body, static_cast<uint8_t>(c));
    }
    // The width is a PkgLength-style value that does not count itself; one byte holds up to 63
    // bits, all these fields need.
    assert(unit.bits > 0 && unit.bits < 0x40);
    append_byte(body, static_cast<uint8_t>(unit.bits));
  }
  return with_pkg_length({kExtOpPrefix, kFieldOp}, body);
}

namespace resource {

Bytes io(uint16_t minimum, uint16_t maximum, uint8_t alignment, uint8_t length) {
  // 6.4.2.5 I/O Port Descriptor: tag 0x47, decode 16-bit (bit 0).
  Bytes out;
  append_byte(out, 0x47);
  append_byte(out, 0x01);
  append_le<uint16_t>(out, minimum);
  append_le<uint16_t>(out, maximum);
  append_byte(out, alignment);
  append_byte(out, length);
  return out;
}

Bytes irq_no_flags(uint8_t irq) {
  // 6.4.2.1 IRQ Descriptor, 2-byte form (tag 0x22): edge-triggered, active high.
  Bytes out;
  append_byte(out, 0x22);
  append_le<uint16_t>(out, static_cast<uint16_t>(1u << (irq & 15)));
  return out;
}

Bytes memory32_fixed(uint32_t base, uint32_t length, bool writable) {
  // 6.4.3.4 32-Bit Fixed Memory Range Descriptor (type 0x86).
  Bytes body;
  append_byte(body, writable ? 1 : 0);
  append_le<uint32_t>(body, base);
  append_le<uint32_t>(body, length);
  return large_descriptor(0x86, body);
}

Bytes word_bus_number(uint16_t minimum, uint16_t maximum) {
  // 6.4.3.5.3 Word Address Space Descriptor (type 0x88), resource type 2: bus numbers.
  Bytes body;
  append_byte(body, 2);
  append_byte(body, kMinMaxFixed);
  append_byte(body, 0);
  append_le<uint16_t>(body, 0);  // granularity
  append_le<uint16_t>(body, minimum);
  append_le<uint16_t>(body, maximum);
  append_le<uint16_t>(body, 0);  // translation
  append_le<uint16_t>(body, static_cast<uint16_t>(maximum - minimum + 1));
  return large_descriptor(0x88, body);
}

Bytes word_io(uint16_t minimum, uint16_t maximum) {
  // Word Address Space Descriptor, resource type 1: I/O; type flags 3 = entire ISA range.
  Bytes body;
  append_byte(body, 1);
  append_byte(body, kMinMaxFixed);
  append_byte(body, 3);
  append_le<uint16_t>(body, 0);
  append_le<uint16_t>(body, minimum);
  append_le<uint16_t>(body, maximum);
  append_le<uint16_t>(body, 0);
  append_le<uint16_t>(body, static_cast<uint16_t>(maximum - minimum + 1));
  return large_descriptor(0x88, body);
}

Bytes dword_memory(uint32_t minimum, uint32_t maximum, bool cacheable) {
  // 6.4.3.5.2 DWord Address Space Descriptor (type 0x87), resource type 0: memory. Type flags:
  // bit 0 read/write, bits 1-2 memory attributes (1 = cacheable, 0 = non-cacheable).
  Bytes body;
  append_byte(body, 0);
  append_byte(body, kMinMaxFixed);
  append_byte(body, static_cast<uint8_t>(0x01 | (cacheable ? 0x02 : 0x00)));
  append_le<uint32_t>(body, 0);
  append_le<uint32_t>(body, minimum);
  append_le<uint32_t>(body, maximum);
  append_le<uint32_t>(body, 0);
  append_le<uint32_t>(body, maximum - minimum + 1);
  return large_descriptor(0x87, body);
}

Bytes qword_memory(uint64_t minimum, uint64_t maximum, bool cacheable) {
  // 6.4.3.5.1 QWord Address Space Descriptor (type 0x8A).
  Bytes body;
  append_byte(body, 0);
  append_byte(body, kMinMaxFixed);
  append_byte(body, static_cast<uint8_t>(0x01 | (cacheable ? 0x02 : 0x00)));
  append_le<uint64_t>(body, 0);
  append_le<uint64_t>(body, minimum);
  append_le<uint64_t>(body, maximum);
  append_le<uint64_t>(body, 0);
  append_le<uint64_t>(body, maximum - minimum + 1);
  return large_descriptor(0x8A, body);
}

}  // namespace resource

Bytes resource_template(const std::vector<Bytes>& descriptors) {
  Bytes data = concatenate(descriptors);
  // 6.4.2.9 End Tag: 0x79 and a checksum byte; 0 means "checksum not computed".
  append_byte(data, 0x79);
  append_byte(data, 0x00);
  return buffer(data);
}

}  // namespace lamina::machine::acpi::aml
