#include "machine/acpi/firmware_tables.h"

#include <algorithm>
#include <cstring>

#include "base/byte_order.h"
#include "machine/acpi/acpi_tables.h"
#include "machine/table_loader.h"

namespace lamina::machine::acpi {

namespace {
// The largest blob the tables may make (fw_cfg hands it over in one piece).
constexpr uint64_t kTablesLimit = 1 << 20;
// ACPI 6.5 section 5.2.6: the header's checksum byte; 5.2.9: FADT pointer fields;
// 5.2.5.3: the RSDP's fields.
constexpr uint32_t kHeaderChecksum = 9;
constexpr uint32_t kHeaderLength = 4;
constexpr uint32_t kFadtFirmwareControl = 36;
constexpr uint32_t kFadtDsdt = 40;
constexpr uint32_t kFadtXDsdt = 140;
constexpr uint32_t kRsdpChecksum = 8;
constexpr uint32_t kRsdpV1Length = 20;
constexpr uint32_t kRsdpRsdt = 16;
constexpr uint32_t kRsdpXsdt = 24;
constexpr uint32_t kRsdpExtendedChecksum = 32;
}  // namespace

Result<FirmwareTableFiles> build_firmware_table_files(const AcpiConfig& config,
                                                      const MemoryLayout& layout) {
  // Built at address 0, every pointer is an offset into the blob.
  auto built = build_acpi_tables(config, layout, 0, 0, kTablesLimit);
  if (!built) return fail(built.error());
  FirmwareTableFiles files;
  TableLoader loader;
  if (auto done = loader.allocate(kTablesFile, 64, table_loader::kZoneHigh); !done) {
    return fail(done.error());
  }
  if (auto done = loader.allocate(kRsdpFile, 16, table_loader::kZoneFseg); !done) {
    return fail(done.error());
  }
  struct Pointer {
    std::string_view file;
    uint32_t offset;
    uint8_t size;
  };
  std::vector<Pointer> pointers;
  std::vector<uint32_t> checksummed;  // table starts in the blob
  for (const PlacedTable& table : built->tables) {
    if (table.signature == "RSD PTR ") {
      files.rsdp = table.bytes;
      continue;
    }
    const auto at = static_cast<uint32_t>(table.address);
    if (files.tables.size() < at + table.bytes.size()) files.tables.resize(at + table.bytes.size());
    std::memcpy(files.tables.data() + at, table.bytes.data(), table.bytes.size());
    if (table.signature == "FACS") continue;  // no checksum, no pointers
    checksummed.push_back(at);
    if (table.signature == "FACP") {
      pointers.push_back({kTablesFile, at + kFadtFirmwareControl, 4});
      pointers.push_back({kTablesFile, at + kFadtDsdt, 4});
      pointers.push_back({kTablesFile, at + kFadtXDsdt, 8});
    } else if (table.signature == "RSDT" || table.signature == "XSDT") {
      const uint32_t entry = table.signature == "RSDT" ? 4 : 8;
      for (uint32_t field = kTableHeaderSize; field + entry <= table.bytes.size(); field += entry) {
        pointers.push_back({kTablesFile, at + field, static_cast<uint8_t>(entry)});
      }
    }
  }
  for (const Pointer& pointer : pointers) {
    if (auto done = loader.add_pointer(pointer.file, kTablesFile, pointer.offset, pointer.size);
        !done) {
      return fail(done.error());
    }
  }
  if (auto done = loader.add_pointer(kRsdpFile, kTablesFile, kRsdpRsdt, 4); !done) {
    return fail(done.error());
  }
  if (auto done = loader.add_pointer(kRsdpFile, kTablesFile, kRsdpXsdt, 8); !done) {
    return fail(done.error());
  }
  for (uint32_t at : checksummed) {
    const uint32_t length = load_le<uint32_t>(files.tables.data() + at + kHeaderLength);
    if (auto done = loader.add_checksum(kTablesFile, at + kHeaderChecksum, at, length); !done) {
      return fail(done.error());
    }
  }
  // The ACPI 1.0 checksum first: the extended one covers its byte.
  if (auto done = loader.add_checksum(kRsdpFile, kRsdpChecksum, 0, kRsdpV1Length); !done) {
    return fail(done.error());
  }
  if (auto done = loader.add_checksum(kRsdpFile, kRsdpExtendedChecksum, 0,
                                      static_cast<uint32_t>(files.rsdp.size()));
      !done) {
    return fail(done.error());
  }
  files.loader = loader.bytes();
  return files;
}

}  // namespace lamina::machine::acpi
