#pragma once
// A small emitter for the ACPI Machine Language (ACPI 6.5, chapter 20 "ACPI Machine Language
// Specification") and the resource descriptors of section 6.4: each function returns the
// encoded bytes of one term, and terms nest by passing their bytes to their parent. Enough for
// Lamina's DSDT: names, integers, strings, packages, scopes, devices, methods, buffers.
//
// Pure functions on byte vectors; no state.

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace lamina::machine::acpi::aml {

using Bytes = std::vector<std::byte>;

// PkgLength (20.2.4) for a payload of `payload` bytes; the encoded length counts itself.
Bytes pkg_length(size_t payload);

// NameString (20.2.2): "\\_SB.PCI0", "PCI0", "_S5" (segments are padded with '_').
Bytes name_string(std::string_view path);

// ComputationalData (20.2.3): the shortest of Zero, One, Ones, Byte/Word/DWord/QWordConst.
Bytes integer(uint64_t value);
Bytes dword(uint32_t value);  // always DWordConst, as ASL's EisaId() compiles
Bytes string(std::string_view text);

// EisaId("PNP0A03"): three letters and four hex digits compressed into a DWordConst (6.1.5).
Bytes eisa_id(std::string_view id);

// Name(name, value)
Bytes name(std::string_view path, const Bytes& value);
// Package(){elements...}
Bytes package(const std::vector<Bytes>& elements);
// Scope(path){terms...}, Device(path){terms...}
Bytes scope(std::string_view path, const std::vector<Bytes>& terms);
Bytes device(std::string_view path, const std::vector<Bytes>& terms);
// Method(path, argument_count, NotSerialized){terms...}
Bytes method(std::string_view path, uint8_t argument_count, const std::vector<Bytes>& terms);
// Return(value)
Bytes return_value(const Bytes& value);
// Buffer(){bytes}
Bytes buffer(const Bytes& data);
// ToUUID("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"): a 16-byte Buffer in the GUID byte order of
// ACPI 6.5 section 19.6.142 (first three groups little-endian).
Bytes uuid(std::string_view text);

// Method arguments and locals (20.2.6.1-2): Arg0-Arg6, Local0-Local7.
Bytes arg(uint8_t index);
Bytes local(uint8_t index);
// CreateDWordField(source, byte_index, name)
Bytes create_dword_field(const Bytes& source, const Bytes& byte_index, std::string_view name);
// If(predicate){terms}, Else{terms}
Bytes if_then(const Bytes& predicate, const std::vector<Bytes>& terms);
Bytes else_then(const std::vector<Bytes>& terms);
// LEqual(a, b), LNot(a); Store(value, target); And/Or(a, b, target)
Bytes logical_equal(const Bytes& a, const Bytes& b);
Bytes logical_not(const Bytes& a);
Bytes store(const Bytes& value, const Bytes& target);
Bytes bitwise_and(const Bytes& a, const Bytes& b, const Bytes& target);
Bytes bitwise_or(const Bytes& a, const Bytes& b, const Bytes& target);

// NullName (20.2.2) as a Target: the result is not stored.
Bytes no_target();
// A method call (20.2.5.4 MethodInvocation): the name, then each argument.
Bytes call(std::string_view path, const std::vector<Bytes>& arguments = {});
// Notify(object, value) (19.6.92)
Bytes notify(std::string_view object, const Bytes& value);
// Method(path, argument_count, Serialized){terms...}: one thread at a time runs it.
Bytes serialized_method(std::string_view path, uint8_t argument_count,
                        const std::vector<Bytes>& terms);

// OperationRegion(name, SystemIO, offset, length) (19.6.100)
Bytes system_io_region(std::string_view name, uint16_t offset, uint16_t length);
// Field(region, DWordAcc, NoLock, WriteAsZeros){name, bits; ...} (19.6.48): the fields are
// laid out in order from offset 0, each `bits` wide.
struct FieldUnit {
  std::string_view name;  // four characters, or empty for a reserved gap
  uint32_t bits;          // 1..63
};
Bytes dword_field(std::string_view region, const std::vector<FieldUnit>& units);

// Resource descriptors (6.4); resource_template() appends the End Tag and wraps a Buffer.
namespace resource {
Bytes io(uint16_t minimum, uint16_t maximum, uint8_t alignment, uint8_t length);  // Decode16
Bytes irq_no_flags(uint8_t irq);  // edge, active high, exclusive
Bytes memory32_fixed(uint32_t base, uint32_t length, bool writable);
Bytes word_bus_number(uint16_t minimum, uint16_t maximum);
Bytes word_io(uint16_t minimum, uint16_t maximum);  // producer, entire ISA range
Bytes dword_memory(uint32_t minimum, uint32_t maximum, bool cacheable);  // producer, read/write
Bytes qword_memory(uint64_t minimum, uint64_t maximum, bool cacheable);  // producer, read/write
}  // namespace resource
Bytes resource_template(const std::vector<Bytes>& descriptors);

}  // namespace lamina::machine::acpi::aml
