#include "image_builders.h"

#include <zlib.h>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>

#include "base/byte_order.h"

namespace lamina::storage::testing {

namespace {

std::vector<std::byte> random_bytes(size_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<std::byte> bytes(count);
  for (auto& value : bytes) value = static_cast<std::byte>(generator() & 0xff);
  return bytes;
}

// Compressible but not constant: a short random alphabet.
std::vector<std::byte> text_bytes(size_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<std::byte> bytes(count);
  for (auto& value : bytes) value = static_cast<std::byte>('a' + generator() % 4);
  return bytes;
}

std::vector<std::byte> deflate(const std::vector<std::byte>& input, bool zlib_header) {
  z_stream stream{};
  if (deflateInit2(&stream, 9, Z_DEFLATED, zlib_header ? 15 : -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
    throw std::runtime_error("deflateInit2");
  }
  std::vector<std::byte> output(input.size() * 2 + 64);
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(input.data()));
  stream.avail_in = static_cast<uInt>(input.size());
  stream.next_out = reinterpret_cast<Bytef*>(output.data());
  stream.avail_out = static_cast<uInt>(output.size());
  if (::deflate(&stream, Z_FINISH) != Z_STREAM_END) throw std::runtime_error("deflate");
  output.resize(stream.total_out);
  deflateEnd(&stream);
  return output;
}

void put(std::vector<std::byte>& file, size_t offset, const std::vector<std::byte>& bytes) {
  if (file.size() < offset + bytes.size()) file.resize(offset + bytes.size());
  std::memcpy(file.data() + offset, bytes.data(), bytes.size());
}

}  // namespace

BuiltImage build_qcow2(int version) {
  constexpr uint64_t kCluster = 512;
  constexpr uint64_t kVirtual = 64 * 1024;
  constexpr uint64_t kL2Entries = kCluster / 8;  // 64 clusters per L2 table
  BuiltImage image;
  image.expected.assign(kVirtual, std::byte{0});
  // Clusters: 0 header, 1 L1, 2-3 L2 tables, 4 refcount table, 5-6 refcount blocks, then data.
  image.file.assign(7 * kCluster, std::byte{0});
  std::byte* header = image.file.data();
  store_be<uint32_t>(header + 0, 0x514649fb);
  store_be<uint32_t>(header + 4, static_cast<uint32_t>(version));
  store_be<uint32_t>(header + 20, 9);  // cluster_bits
  store_be<uint64_t>(header + 24, kVirtual);
  store_be<uint32_t>(header + 36, 2);             // l1_size
  store_be<uint64_t>(header + 40, 1 * kCluster);  // l1_table_offset
  if (version == 3) {
    store_be<uint32_t>(header + 96, 4);     // refcount_order
    store_be<uint32_t>(header + 100, 104);  // header_length
  }
  store_be<uint64_t>(&image.file[kCluster], (2 * kCluster) | (1ull << 63));
  store_be<uint64_t>(&image.file[kCluster + 8], (3 * kCluster) | (1ull << 63));
  auto set_l2 = [&](uint64_t guest_cluster, uint64_t entry) {
    uint64_t table = 2 + guest_cluster / kL2Entries;
    store_be<uint64_t>(&image.file[table * kCluster + (guest_cluster % kL2Entries) * 8], entry);
  };
  auto add_cluster = [&](uint64_t guest_cluster, const std::vector<std::byte>& data) {
    uint64_t host = image.file.size();
    put(image.file, host, data);
    set_l2(guest_cluster, host | (1ull << 63));
    std::memcpy(&image.expected[guest_cluster * kCluster], data.data(), kCluster);
  };
  add_cluster(0, random_bytes(kCluster, 1));
  add_cluster(1, random_bytes(kCluster, 2));
  add_cluster(70, random_bytes(kCluster, 3));
  add_cluster(127, random_bytes(kCluster, 4));
  // A compressed cluster at a non-sector-aligned host offset (qcow2 spec: bits 0..x-1 are the
  // host offset, the next bits the additional 512-byte sectors).
  auto plain = text_bytes(kCluster, 5);
  auto packed = deflate(plain, false);
  uint64_t host = image.file.size() + 100;
  put(image.file, host, packed);
  uint64_t sectors = (host % 512 + packed.size() + 511) / 512 - 1;
  uint32_t shift = 62 - (9 - 8);
  set_l2(10, (1ull << 62) | (sectors << shift) | host);
  std::memcpy(&image.expected[10 * kCluster], plain.data(), kCluster);
  if (version == 3) set_l2(20, 1);  // zero flag on an unallocated cluster
  image.file.resize((image.file.size() + 511) / 512 * 512);
  // Refcounts (not read by Lamina, but qemu-img needs them to accept the image): 16-bit
  // entries, 256 per 512-byte block; every cluster of the file is used once.
  store_be<uint64_t>(&image.file[48], 4 * kCluster);  // refcount_table_offset
  store_be<uint32_t>(&image.file[56], 1);             // refcount_table_clusters
  store_be<uint64_t>(&image.file[4 * kCluster], 5 * kCluster);
  store_be<uint64_t>(&image.file[4 * kCluster + 8], 6 * kCluster);
  uint64_t clusters = image.file.size() / kCluster;
  for (uint64_t cluster = 0; cluster < clusters && cluster < 512; ++cluster) {
    store_be<uint16_t>(&image.file[(5 + cluster / 256) * kCluster + (cluster % 256) * 2], 1);
  }
  return image;
}

BuiltImage build_vmdk_sparse(bool stream_optimized) {
  constexpr uint64_t kSector = 512;
  constexpr uint64_t kGrainSectors = 8;
  constexpr uint64_t kCapacity = 128;  // sectors: 64 KiB, 16 grains
  constexpr uint32_t kEntries = 512;
  BuiltImage image;
  image.expected.assign(kCapacity * kSector, std::byte{0});
  std::vector<std::byte> header(kSector);
  store_le<uint32_t>(&header[0], 0x564d444b);
  store_le<uint32_t>(&header[4], stream_optimized ? 3 : 1);
  // Flags: valid newline test (bit 0), zeroed-grain GTEs (bit 2), compressed + markers.
  store_le<uint32_t>(&header[8],
                     stream_optimized ? (1u | 4u | (1u << 16) | (1u << 17)) : (1u | 4u));
  store_le<uint64_t>(&header[12], kCapacity);
  store_le<uint64_t>(&header[20], kGrainSectors);
  store_le<uint64_t>(&header[28], 1);  // descriptor at sector 1
  store_le<uint64_t>(&header[36], 1);
  store_le<uint32_t>(&header[44], kEntries);
  store_le<uint64_t>(&header[64], 8);  // overhead: grains start at sector 8
  header[73] = std::byte{'\n'};
  header[74] = std::byte{' '};
  header[75] = std::byte{'\r'};
  header[76] = std::byte{'\n'};
  store_le<uint16_t>(&header[77], stream_optimized ? 1 : 0);
  std::string descriptor =
      std::string(
          "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"") +
      (stream_optimized ? "streamOptimized" : "monolithicSparse") +
      "\"\nRW 128 SPARSE \"self.vmdk\"\n";
  std::vector<std::byte> descriptor_bytes(kSector);
  std::memcpy(descriptor_bytes.data(), descriptor.data(), descriptor.size());

  std::vector<uint32_t> table(kEntries, 0);
  std::vector<std::byte> file(8 * kSector);
  put(file, kSector, descriptor_bytes);
  auto add_grain = [&](uint64_t grain, const std::vector<std::byte>& data) {
    uint64_t sector = file.size() / kSector;
    if (stream_optimized) {
      auto packed = deflate(data, true);
      std::vector<std::byte> marker(12 + packed.size());
      store_le<uint64_t>(&marker[0], grain * kGrainSectors);
      store_le<uint32_t>(&marker[8], static_cast<uint32_t>(packed.size()));
      std::memcpy(&marker[12], packed.data(), packed.size());
      marker.resize((marker.size() + kSector - 1) / kSector * kSector);
      put(file, file.size(), marker);
    } else {
      put(file, file.size(), data);
    }
    table[grain] = static_cast<uint32_t>(sector);
    std::memcpy(&image.expected[grain * kGrainSectors * kSector], data.data(), data.size());
  };
  add_grain(0, text_bytes(kGrainSectors * kSector, 11));
  add_grain(3, random_bytes(kGrainSectors * kSector, 12));
  add_grain(15, text_bytes(kGrainSectors * kSector, 13));
  table[5] = 1;  // a zeroed grain

  std::vector<std::byte> table_bytes(kEntries * 4);
  for (uint32_t index = 0; index < kEntries; ++index)
    store_le<uint32_t>(&table_bytes[index * 4], table[index]);
  auto add_marker = [&](uint64_t value, uint32_t type) {
    std::vector<std::byte> marker(kSector);
    store_le<uint64_t>(&marker[0], value);
    store_le<uint32_t>(&marker[12], type);
    put(file, file.size(), marker);
  };
  // Stream-optimized: GT marker (type 1) and table, GD marker (type 2) and directory.
  if (stream_optimized) add_marker(table_bytes.size() / kSector, 1);
  uint64_t table_sector = file.size() / kSector;
  put(file, file.size(), table_bytes);
  if (stream_optimized) add_marker(1, 2);
  uint64_t directory_sector = file.size() / kSector;
  std::vector<std::byte> directory(kSector);
  store_le<uint32_t>(&directory[0], static_cast<uint32_t>(table_sector));
  put(file, file.size(), directory);
  if (stream_optimized) {
    store_le<uint64_t>(&header[56], ~0ull);  // GD_AT_END
    add_marker(1, 3);                        // footer marker
    std::vector<std::byte> footer = header;
    store_le<uint64_t>(&footer[56], directory_sector);
    put(file, file.size(), footer);
    add_marker(0, 0);  // end of stream
  } else {
    store_le<uint64_t>(&header[56], directory_sector);
  }
  put(file, 0, header);
  image.file = std::move(file);
  return image;
}

}  // namespace lamina::storage::testing
