#include "machine/table_loader.h"

#include <cstring>

#include <fmt/format.h>

#include "base/byte_order.h"

namespace lamina::machine {

namespace {
Result<void> check_name(std::string_view name) {
  if (name.empty() || name.size() >= table_loader::kFileNameSize) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("table loader: file name '{}' does not fit {} bytes", name,
                            table_loader::kFileNameSize - 1));
  }
  return {};
}

void put_name(std::byte* field, std::string_view name) {
  std::memcpy(field, name.data(), name.size());
}
}  // namespace

std::byte* TableLoader::append_command(uint32_t command) {
  const size_t at = bytes_.size();
  bytes_.resize(at + table_loader::kCommandSize);
  store_le<uint32_t>(bytes_.data() + at, command);
  return bytes_.data() + at + 4;
}

Result<void> TableLoader::allocate(std::string_view file, uint32_t alignment, uint8_t zone) {
  if (auto checked = check_name(file); !checked) return checked;
  // { char file[56]; u32 align; u8 zone; }
  std::byte* body = append_command(table_loader::kAllocate);
  put_name(body, file);
  store_le<uint32_t>(body + 56, alignment);
  body[60] = std::byte{zone};
  return {};
}

Result<void> TableLoader::add_pointer(std::string_view destination_file,
                                      std::string_view source_file, uint32_t offset,
                                      uint8_t size) {
  if (auto checked = check_name(destination_file); !checked) return checked;
  if (auto checked = check_name(source_file); !checked) return checked;
  if (size != 1 && size != 2 && size != 4 && size != 8) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("table loader: pointer size {} is not 1, 2, 4 or 8", size));
  }
  // { char dest_file[56]; char src_file[56]; u32 offset; u8 size; }
  std::byte* body = append_command(table_loader::kAddPointer);
  put_name(body, destination_file);
  put_name(body + 56, source_file);
  store_le<uint32_t>(body + 112, offset);
  body[116] = std::byte{size};
  return {};
}

Result<void> TableLoader::add_checksum(std::string_view file, uint32_t checksum_offset,
                                       uint32_t start, uint32_t length) {
  if (auto checked = check_name(file); !checked) return checked;
  // { char file[56]; u32 offset; u32 start; u32 length; }
  std::byte* body = append_command(table_loader::kAddChecksum);
  put_name(body, file);
  store_le<uint32_t>(body + 56, checksum_offset);
  store_le<uint32_t>(body + 60, start);
  store_le<uint32_t>(body + 64, length);
  return {};
}

}  // namespace lamina::machine
