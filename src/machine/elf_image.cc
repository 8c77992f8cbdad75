#include "machine/elf_image.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "base/byte_order.h"

namespace lamina::machine {

namespace {

constexpr uint32_t kPtLoad = 1;
constexpr uint16_t kEtExec = 2;
constexpr uint8_t kClass32 = 1;
constexpr uint8_t kClass64 = 2;
constexpr uint8_t kDataLittleEndian = 1;

template <typename T>
T field(std::span<const std::byte> bytes, uint64_t offset) {
  return load_le<T>(bytes.data() + offset);
}

}  // namespace

bool is_elf(std::span<const std::byte> file) {
  return file.size() >= 4 && file[0] == std::byte{0x7F} && file[1] == std::byte{'E'} &&
         file[2] == std::byte{'L'} && file[3] == std::byte{'F'};
}

uint64_t ElfImage::physical_start() const {
  uint64_t start = UINT64_MAX;
  for (const ElfSegment& segment : load_segments) start = std::min(start, segment.physical_address);
  return load_segments.empty() ? 0 : start;
}

uint64_t ElfImage::physical_end() const {
  uint64_t end = 0;
  for (const ElfSegment& segment : load_segments) {
    end = std::max(end, segment.physical_address + segment.memory_size);
  }
  return end;
}

Result<uint64_t> ElfImage::physical_entry() const {
  for (const ElfSegment& segment : load_segments) {
    if (entry >= segment.physical_address && entry - segment.physical_address < segment.file_size) {
      return entry;
    }
  }
  for (const ElfSegment& segment : load_segments) {
    if (entry >= segment.virtual_address && entry - segment.virtual_address < segment.file_size) {
      return segment.physical_address + (entry - segment.virtual_address);
    }
  }
  return fail(ErrorCode::kCorrupt,
              fmt::format("ELF entry point {:#x} is in none of its segments", entry));
}

Result<ElfImage> parse_elf(std::span<const std::byte> file) {
  if (!is_elf(file) || file.size() < 52) {
    return fail(ErrorCode::kCorrupt, "not an ELF file (no ELF magic or shorter than its header)");
  }
  const auto elf_class = static_cast<uint8_t>(file[4]);
  if (elf_class != kClass32 && elf_class != kClass64) {
    return fail(ErrorCode::kCorrupt, fmt::format("ELF class {} is neither 32- nor 64-bit",
                                                 elf_class));
  }
  if (static_cast<uint8_t>(file[5]) != kDataLittleEndian) {
    return fail(ErrorCode::kUnsupported, "big-endian ELF files cannot run on x86");
  }
  ElfImage image;
  image.is_64_bit = elf_class == kClass64;
  if (image.is_64_bit && file.size() < 64) {
    return fail(ErrorCode::kCorrupt, "ELF64 file is shorter than its header");
  }
  if (field<uint16_t>(file, 16) != kEtExec) {
    return fail(ErrorCode::kUnsupported, "ELF file is not an executable (e_type is not ET_EXEC)");
  }
  image.machine = field<uint16_t>(file, 18);
  uint64_t program_headers;
  uint16_t entry_size;
  uint16_t count;
  if (image.is_64_bit) {
    image.entry = field<uint64_t>(file, 24);
    program_headers = field<uint64_t>(file, 32);
    entry_size = field<uint16_t>(file, 54);
    count = field<uint16_t>(file, 56);
  } else {
    image.entry = field<uint32_t>(file, 24);
    program_headers = field<uint32_t>(file, 28);
    entry_size = field<uint16_t>(file, 42);
    count = field<uint16_t>(file, 44);
  }
  const uint16_t minimum_entry = image.is_64_bit ? 56 : 32;
  if (count > 0 && entry_size < minimum_entry) {
    return fail(ErrorCode::kCorrupt, fmt::format("ELF program header size {} is too small",
                                                 entry_size));
  }
  const uint64_t table_size = uint64_t{count} * entry_size;
  if (program_headers > file.size() || table_size > file.size() - program_headers) {
    return fail(ErrorCode::kCorrupt, "ELF program header table lies outside the file");
  }
  for (uint16_t i = 0; i < count; ++i) {
    const uint64_t at = program_headers + uint64_t{i} * entry_size;
    if (field<uint32_t>(file, at) != kPtLoad) continue;
    ElfSegment segment;
    if (image.is_64_bit) {
      segment.file_offset = field<uint64_t>(file, at + 8);
      segment.virtual_address = field<uint64_t>(file, at + 16);
      segment.physical_address = field<uint64_t>(file, at + 24);
      segment.file_size = field<uint64_t>(file, at + 32);
      segment.memory_size = field<uint64_t>(file, at + 40);
    } else {
      segment.file_offset = field<uint32_t>(file, at + 4);
      segment.virtual_address = field<uint32_t>(file, at + 8);
      segment.physical_address = field<uint32_t>(file, at + 12);
      segment.file_size = field<uint32_t>(file, at + 16);
      segment.memory_size = field<uint32_t>(file, at + 20);
    }
    if (segment.file_offset > file.size() || segment.file_size > file.size() - segment.file_offset) {
      return fail(ErrorCode::kCorrupt,
                  fmt::format("ELF segment {} ({:#x} bytes at file offset {:#x}) lies outside "
                              "the {}-byte file",
                              i, segment.file_size, segment.file_offset, file.size()));
    }
    if (segment.memory_size < segment.file_size) {
      return fail(ErrorCode::kCorrupt,
                  fmt::format("ELF segment {} has a memory size below its file size", i));
    }
    if (segment.physical_address + segment.memory_size < segment.physical_address) {
      return fail(ErrorCode::kCorrupt,
                  fmt::format("ELF segment {} runs past the end of the address space", i));
    }
    if (segment.memory_size > 0) image.load_segments.push_back(segment);
  }
  if (image.load_segments.empty()) {
    return fail(ErrorCode::kCorrupt, "ELF file has no loadable (PT_LOAD) segment");
  }
  return image;
}

Result<void> load_elf_segments(GuestMemory& memory, std::span<const std::byte> file,
                               const ElfImage& image) {
  for (const ElfSegment& segment : image.load_segments) {
    std::byte* host = memory.host_pointer(segment.physical_address, segment.memory_size);
    if (host == nullptr) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("ELF segment at physical {:#x}-{:#x} is not in guest RAM; give the "
                              "VM more memory",
                              segment.physical_address,
                              segment.physical_address + segment.memory_size));
    }
    std::memcpy(host, file.data() + segment.file_offset, segment.file_size);
    std::memset(host + segment.file_size, 0, segment.memory_size - segment.file_size);
  }
  return {};
}

}  // namespace lamina::machine
