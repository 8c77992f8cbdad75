#include "migration/machine_state.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/byte_order.h"
#include "migration/cpu_model_stream.h"
#include "migration/cpu_state_stream.h"
#include "storage/crc32c.h"
#include "storage/host_file.h"

namespace lamina::migration {
namespace {

constexpr char kMagic[8] = {'L', 'A', 'M', 'I', 'N', 'A', 'M', 'S'};
constexpr uint64_t kPageSize = 4096;
constexpr uint32_t kSectionVersion = 1;
// Header field offsets (machine_state.h).
constexpr size_t kMajorAt = 8, kMinorAt = 10, kHeaderSizeAt = 12, kStateOffsetAt = 16,
                 kStateLengthAt = 24, kRamOffsetAt = 32, kRamLengthAt = 40, kStateCrcAt = 48,
                 kFlagsAt = 52, kReservedAt = 56, kHeaderCrcAt = 60;
// Bounds that keep a hostile "machine" section from asking for absurd allocations.
constexpr uint32_t kMaxRegions = 16;
constexpr uint32_t kMaxDevices = 1024;
constexpr uint64_t kMaxDeviceName = 64;

Error io_error(std::string_view what) {
  return Error(ErrorCode::kIo, fmt::format("machine state: {}: {}", what, std::strerror(errno)));
}

Error corrupt(std::string what) { return Error(ErrorCode::kCorrupt, "machine state: " + what); }

Result<void> write_all(int fd, std::span<const std::byte> data, uint64_t offset) {
  while (!data.empty()) {
    const ssize_t written = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (written < 0) {
      if (errno == EINTR) continue;
      return fail(io_error("write"));
    }
    data = data.subspan(static_cast<size_t>(written));
    offset += static_cast<uint64_t>(written);
  }
  return {};
}

Result<void> read_exact(int fd, std::span<std::byte> data, uint64_t offset, std::string_view what) {
  while (!data.empty()) {
    const ssize_t got = ::pread(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return fail(io_error(fmt::format("read {}", what)));
    }
    if (got == 0) return fail(corrupt(fmt::format("the file ends inside the {}", what)));
    data = data.subspan(static_cast<size_t>(got));
    offset += static_cast<uint64_t>(got);
  }
  return {};
}

// Writes one RAM region from `host` at `offset`, leaving holes for all-zero pages.
Result<uint64_t> write_ram(int fd, const std::byte* host, uint64_t size, uint64_t offset) {
  uint64_t written = 0;
  uint64_t run_start = 0;
  bool in_run = false;
  for (uint64_t page = 0; page <= size; page += kPageSize) {
    const bool data = page < size && !storage::is_all_zero({host + page, kPageSize});
    if (data && !in_run) {
      run_start = page;
      in_run = true;
    } else if (!data && in_run) {
      if (auto done = write_all(fd, {host + run_start, page - run_start}, offset + run_start);
          !done) {
        return fail(done.error());
      }
      written += page - run_start;
      in_run = false;
    }
  }
  return written;
}

struct Header {
  uint16_t major = 0;
  uint16_t minor = 0;
  uint64_t state_offset = 0;
  uint64_t state_length = 0;
  uint64_t ram_offset = 0;
  uint64_t ram_length = 0;
  uint32_t state_crc = 0;
};

std::array<std::byte, kHeaderSize> encode_header(const Header& header) {
  std::array<std::byte, kHeaderSize> bytes{};
  std::memcpy(bytes.data(), kMagic, sizeof(kMagic));
  store_le<uint16_t>(bytes.data() + kMajorAt, header.major);
  store_le<uint16_t>(bytes.data() + kMinorAt, header.minor);
  store_le<uint32_t>(bytes.data() + kHeaderSizeAt, kHeaderSize);
  store_le<uint64_t>(bytes.data() + kStateOffsetAt, header.state_offset);
  store_le<uint64_t>(bytes.data() + kStateLengthAt, header.state_length);
  store_le<uint64_t>(bytes.data() + kRamOffsetAt, header.ram_offset);
  store_le<uint64_t>(bytes.data() + kRamLengthAt, header.ram_length);
  store_le<uint32_t>(bytes.data() + kStateCrcAt, header.state_crc);
  store_le<uint32_t>(bytes.data() + kHeaderCrcAt,
                     storage::crc32c(std::span(bytes).first(kHeaderCrcAt)));
  return bytes;
}

Result<Header> read_header(int fd) {
  std::array<std::byte, kHeaderSize> bytes{};
  if (auto got = read_exact(fd, bytes, 0, "header"); !got) return fail(got.error());
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return fail(ErrorCode::kInvalidArgument,
                "not a Lamina machine state file (no LAMINAMS magic at its start)");
  }
  Header header;
  header.major = load_le<uint16_t>(bytes.data() + kMajorAt);
  header.minor = load_le<uint16_t>(bytes.data() + kMinorAt);
  if (header.major != kStateMajor || header.minor > kStateMinor) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("machine state format {}.{} is not readable by this Lamina, which "
                            "reads {}.0 to {}.{}",
                            header.major, header.minor, kStateMajor, kStateMajor, kStateMinor));
  }
  if (load_le<uint32_t>(bytes.data() + kHeaderCrcAt) !=
      storage::crc32c(std::span(bytes).first(kHeaderCrcAt))) {
    return fail(corrupt("the header checksum does not match (the file is damaged)"));
  }
  header.state_offset = load_le<uint64_t>(bytes.data() + kStateOffsetAt);
  header.state_length = load_le<uint64_t>(bytes.data() + kStateLengthAt);
  header.ram_offset = load_le<uint64_t>(bytes.data() + kRamOffsetAt);
  header.ram_length = load_le<uint64_t>(bytes.data() + kRamLengthAt);
  header.state_crc = load_le<uint32_t>(bytes.data() + kStateCrcAt);
  if (load_le<uint32_t>(bytes.data() + kHeaderSizeAt) != kHeaderSize ||
      load_le<uint32_t>(bytes.data() + kFlagsAt) != 0 ||
      load_le<uint32_t>(bytes.data() + kReservedAt) != 0 || header.state_offset != kHeaderSize ||
      header.state_length > kMaxStateStream || header.ram_offset % kPageSize != 0 ||
      header.ram_offset < header.state_offset + header.state_length ||
      header.ram_length > UINT64_MAX - header.ram_offset) {
    return fail(corrupt("the header's layout fields are inconsistent"));
  }
  struct stat status {};
  if (::fstat(fd, &status) != 0) return fail(io_error("fstat"));
  if (static_cast<uint64_t>(status.st_size) < header.ram_offset + header.ram_length) {
    return fail(
        corrupt(fmt::format("the file is {} bytes long, its header describes {} (a "
                            "truncated copy?)",
                            status.st_size, header.ram_offset + header.ram_length)));
  }
  return header;
}

Result<std::vector<std::byte>> read_stream(int fd, const Header& header) {
  std::vector<std::byte> stream(header.state_length);
  if (auto got = read_exact(fd, stream, header.state_offset, "state stream"); !got) {
    return fail(got.error());
  }
  if (storage::crc32c(stream) != header.state_crc) {
    return fail(corrupt("the state checksum does not match (the file is damaged)"));
  }
  return stream;
}

struct SavedMachine {
  StateShape shape;
  uint64_t clock_ns = 0;
  bool a20 = true;
  std::vector<RamRegion> regions;
};

Result<SavedMachine> read_machine_section(StateReader& reader, const Header& header) {
  auto version = reader.begin_section("machine");
  if (!version) return fail(version.error().with_context("machine state"));
  if (*version != kSectionVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("machine state: machine section version {} is not known", *version));
  }
  SavedMachine saved;
  saved.shape.major = header.major;
  saved.shape.minor = header.minor;
  uint32_t region_count = 0;
  if (auto got = reader.get(saved.shape.vcpus, saved.shape.memory_bytes, saved.clock_ns, saved.a20,
                            region_count);
      !got) {
    return fail(got.error().with_context("machine state"));
  }
  if (region_count == 0 || region_count > kMaxRegions) {
    return fail(corrupt(fmt::format("{} RAM regions", region_count)));
  }
  uint64_t total = 0;
  for (uint32_t index = 0; index < region_count; ++index) {
    RamRegion region{};
    if (auto got = reader.get(region.guest_physical, region.size); !got) {
      return fail(got.error().with_context("machine state"));
    }
    if (region.size == 0 || region.size % kPageSize != 0 || region.size > header.ram_length ||
        total > header.ram_length - region.size) {
      return fail(corrupt("the RAM regions do not add up to the RAM in the file"));
    }
    total += region.size;
    saved.regions.push_back(region);
  }
  if (total != header.ram_length) {
    return fail(corrupt("the RAM regions do not add up to the RAM in the file"));
  }
  uint32_t device_count = 0;
  if (auto got = reader.get(device_count); !got)
    return fail(got.error().with_context("machine state"));
  if (device_count > kMaxDevices) return fail(corrupt(fmt::format("{} devices", device_count)));
  for (uint32_t index = 0; index < device_count; ++index) {
    auto name = reader.get_blob(kMaxDeviceName);
    if (!name) return fail(name.error().with_context("machine state"));
    saved.shape.devices.emplace_back(reinterpret_cast<const char*>(name->data()), name->size());
  }
  if (auto left = reader.end_section(); !left)
    return fail(left.error().with_context("machine state"));
  return saved;
}

std::string join(const std::vector<std::string>& names) {
  std::string joined;
  for (const std::string& name : names) joined += (joined.empty() ? "" : ", ") + name;
  return joined;
}

}  // namespace

std::vector<std::byte> encode_machine_stream(machine::Machine& machine) {
  const auto devices = machine.stateful_devices();
  const std::vector<RamRegion>& regions = machine.memory().regions();
  // The vCPUs first, then the clock: a KVM vCPU's TSC keeps running on the host while it is
  // held, and its saved offset from the clock must not let the restored TSC start below
  // what the guest read (a clock read later only moves it on).
  std::vector<cpu::x86::CpuState> vcpus;
  for (uint32_t index = 0; index < machine.vcpu_count(); ++index) {
    vcpus.push_back(machine.vcpu(index).state());
  }
  StateWriter writer;
  writer.begin_section("machine", kSectionVersion);
  writer.put(machine.vcpu_count(), machine.layout().ram_size(), machine.clock().now_ns(),
             machine.a20_enabled(), static_cast<uint32_t>(regions.size()));
  for (const RamRegion& region : regions) writer.put(region.guest_physical, region.size);
  writer.put(static_cast<uint32_t>(devices.size()));
  for (const auto& device : devices) writer.put_bytes(std::as_bytes(std::span(device.name)));
  writer.end_section();
  save_cpu_model(writer, machine.presented_cpu());
  for (const cpu::x86::CpuState& state : vcpus) save_cpu_state(writer, state);
  writer.begin_section("devices", kSectionVersion);
  for (const auto& device : devices) {
    writer.begin_section(device.name, kSectionVersion);
    device.state->save(writer);
    writer.end_section();
  }
  writer.end_section();
  return writer.data();
}

Result<void> write_stream_and_header(int fd, std::span<const std::byte> stream,
                                     uint64_t ram_offset, uint64_t ram_length) {
  if (stream.size() > kMaxStateStream || ram_offset % kPageSize != 0 ||
      ram_offset < kHeaderSize + stream.size()) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("machine state: a {}-byte stream does not fit before RAM at {:#x}",
                            stream.size(), ram_offset));
  }
  Header header;
  header.major = kStateMajor;
  header.minor = kStateMinor;
  header.state_offset = kHeaderSize;
  header.state_length = stream.size();
  header.ram_offset = ram_offset;
  header.ram_length = ram_length;
  header.state_crc = storage::crc32c(stream);
  if (auto done = write_all(fd, stream, header.state_offset); !done) return fail(done.error());
  // The header last: a file cut short anywhere before this has no valid header.
  if (::fdatasync(fd) != 0) return fail(io_error("flush the state file"));
  if (auto done = write_all(fd, encode_header(header), 0); !done) return fail(done.error());
  if (::fdatasync(fd) != 0) return fail(io_error("flush the state file"));
  return {};
}

Result<void> write_state_ram(int fd, uint64_t file_offset, std::span<const std::byte> data) {
  return write_all(fd, data, file_offset);
}

Result<SaveStatistics> save_machine_state(machine::Machine& machine, int fd) {
  SaveStatistics statistics;
  const std::vector<std::byte> stream = encode_machine_stream(machine);
  const std::vector<RamRegion>& regions = machine.memory().regions();
  const uint64_t ram_offset = (kHeaderSize + stream.size() + kPageSize - 1) / kPageSize * kPageSize;
  // From an empty file: RAM pages left as holes must read as zeros, not as older bytes.
  if (::ftruncate(fd, 0) != 0) return fail(io_error("truncate the state file"));
  uint64_t offset = ram_offset;
  for (const RamRegion& region : regions) {
    const std::byte* host = machine.memory().host_pointer(region.guest_physical, region.size);
    auto written = write_ram(fd, host, region.size, offset);
    if (!written) return fail(written.error());
    statistics.ram_written += *written;
    offset += region.size;
  }
  if (::ftruncate(fd, static_cast<off_t>(offset)) != 0)
    return fail(io_error("size the state file"));
  const uint64_t ram_length = machine.memory().total_size();
  if (auto done = write_stream_and_header(fd, stream, ram_offset, ram_length); !done) {
    return fail(done.error());
  }
  statistics.state_bytes = stream.size();
  statistics.ram_bytes = ram_length;
  statistics.file_bytes = offset;
  return statistics;
}

Result<StateShape> read_state_shape(int fd) {
  auto header = read_header(fd);
  if (!header) return fail(header.error());
  auto stream = read_stream(fd, *header);
  if (!stream) return fail(stream.error());
  StateReader reader(*stream);
  auto saved = read_machine_section(reader, *header);
  if (!saved) return fail(saved.error());
  if (StateReader probe = reader; probe.begin_section("cpu_model").has_value()) {
    auto cpu = load_cpu_model(reader);
    if (!cpu) return fail(cpu.error());
    saved->shape.cpu = std::move(*cpu);
  }
  return saved->shape;
}

Result<void> restore_machine_state(machine::Machine& machine, int fd, RamLoad ram) {
  auto header = read_header(fd);
  if (!header) return fail(header.error());
  auto stream = read_stream(fd, *header);
  if (!stream) return fail(stream.error());
  StateReader reader(*stream);
  auto saved = read_machine_section(reader, *header);
  if (!saved) return fail(saved.error());

  // The shape: what the state was saved from must be what it is restored into.
  const auto devices = machine.stateful_devices();
  std::vector<std::string> names;
  for (const auto& device : devices) names.push_back(device.name);
  const std::vector<RamRegion>& regions = machine.memory().regions();
  const bool same_regions =
      std::equal(regions.begin(), regions.end(), saved->regions.begin(), saved->regions.end(),
                 [](const RamRegion& a, const RamRegion& b) {
                   return a.guest_physical == b.guest_physical && a.size == b.size;
                 });
  if (saved->shape.vcpus != machine.vcpu_count() ||
      saved->shape.memory_bytes != machine.layout().ram_size() || !same_regions) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("the saved machine had {} vCPUs and {} MiB of RAM, this VM has {} "
                            "and {} MiB",
                            saved->shape.vcpus, saved->shape.memory_bytes >> 20,
                            machine.vcpu_count(), machine.layout().ram_size() >> 20));
  }
  if (saved->shape.devices != names) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("the saved machine's devices ({}) are not this VM's ({})",
                            join(saved->shape.devices), join(names)));
  }
  // The CPU the guest was started with (format 1.2). An older state, or the stream of an older
  // migration source (whose destination writes the header), has none and is restored unchecked.
  if (StateReader probe = reader; probe.begin_section("cpu_model").has_value()) {
    auto cpu = load_cpu_model(reader);
    if (!cpu) return fail(cpu.error());
    if (auto same = check_cpu_model(*cpu, machine.presented_cpu()); !same) {
      return fail(same.error());
    }
  }

  // RAM first: devices re-activated by their load() may read their rings right away.
  uint64_t offset = header->ram_offset;
  for (size_t index = 0; index < regions.size(); ++index) {
    const RamRegion& region = regions[index];
    if (ram == RamLoad::kMap) {
      if (auto mapped = machine.memory().map_file(index, fd, offset); !mapped) {
        return fail(mapped.error());
      }
    } else {
      std::byte* host = machine.memory().host_pointer(region.guest_physical, region.size);
      if (auto got = read_exact(fd, {host, region.size}, offset, "guest RAM"); !got) {
        return fail(got.error());
      }
    }
    offset += region.size;
  }
  // Time goes on from the saved moment: the TSC (clock + the vCPU's TSC offset), the LAPIC
  // timers, the HPET, the PM timer and the PIT all read this one clock.
  machine.clock().continue_from(saved->clock_ns);
  machine.set_a20_enabled(saved->a20);
  for (uint32_t index = 0; index < machine.vcpu_count(); ++index) {
    auto state = load_cpu_state(reader);
    if (!state) return fail(state.error().with_context(fmt::format("vCPU {}", index)));
    machine.vcpu(index).restore_state(*state);
  }
  auto version = reader.begin_section("devices");
  if (!version) return fail(version.error().with_context("machine state"));
  if (*version != kSectionVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("machine state: devices section version {} is not known", *version));
  }
  for (const auto& device : devices) {
    auto device_version = reader.begin_section(device.name);
    if (!device_version) return fail(device_version.error().with_context("machine state"));
    if (auto loaded = device.state->load(reader); !loaded) {
      return fail(loaded.error().with_context(device.name));
    }
    if (auto left = reader.end_section(); !left)
      return fail(left.error().with_context(device.name));
  }
  if (auto left = reader.end_section(); !left)
    return fail(left.error().with_context("machine state"));
  if (!reader.at_end()) return fail(corrupt("bytes follow the last section"));
  machine.kick_vcpus();
  return {};
}

}  // namespace lamina::migration
