#pragma once
// The machine state file: one consistent image of a quiesced Machine (every vCPU, every
// device, guest RAM and the time base), written for checkpoints and read back into a fresh
// Machine of the same shape. Format (all integers little-endian; ARCHITECTURE.md, "Machine
// state format"):
//
//   header, 64 bytes at offset 0:
//     magic "LAMINAMS", major u16, minor u16, header_size u32 (64),
//     state_offset u64 (64), state_length u64, ram_offset u64 (4 KiB-aligned), ram_length u64,
//     state_crc32c u32, flags u32 (0), reserved u32 (0), header_crc32c u32 (bytes 0-59)
//   state stream (StateWriter) at state_offset:
//     section "machine" v1: vcpus u32, memory_bytes u64, clock_ns u64, a20 bool,
//       RAM regions (count u32, then guest_physical u64 + size u64 each),
//       devices (count u32, then each name as a blob) -- the machine's shape
//     section "cpu_model" v1 (format 1.2): the CPU model the guest was started with
//       (cpu_model_stream.h); a restore refuses a machine that cannot present it
//     section "vcpu" v1, once per vCPU (cpu_state_stream.h)
//     section "devices" v1: per device, a section named after it holding its own save()
//   guest RAM at ram_offset: the regions back to back, each 4 KiB-aligned; pages that were all
//     zero are holes (the file is sparse), so RAM can be mapped straight from the file.
//
// A reader refuses another major version and a newer minor one; checksums guard the header and
// the stream (RAM is not checksummed, so that it can be mapped lazily). Every value is checked
// before it reaches a register (hw/stateful.h), so an unknown, truncated or corrupt file is an
// Error that names what is wrong, never a crash.
//
// Thread-safety: save on a quiesced machine (Machine::quiesce) from one thread; restore into a
// machine built with MachineOptions::for_restore before its run(). A failed restore leaves the
// machine half-loaded: discard it.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "machine/machine.h"

namespace lamina::migration {

inline constexpr uint16_t kStateMajor = 1;
// Minor 1: the vcpu section carries XCR0/AVX state and the events a KVM vCPU held.
// Minor 2: a "cpu_model" section after "machine" (cpu_model_stream.h): the CPUID the guest
// was started with, which a restore checks against the machine's.
inline constexpr uint16_t kStateMinor = 2;
inline constexpr size_t kHeaderSize = 64;
// The stream holds registers and device state only (RAM is separate); anything larger is not a
// state file this Lamina wrote.
inline constexpr uint64_t kMaxStateStream = uint64_t{64} << 20;

struct SaveStatistics {
  uint64_t state_bytes = 0;  // the stream
  uint64_t ram_bytes = 0;    // guest RAM in the machine
  uint64_t ram_written = 0;  // RAM bytes actually written (zero pages are holes)
  uint64_t file_bytes = 0;   // the file's length
};

// Writes the state of a quiesced machine to `fd` (a regular file, replaced from offset 0) and
// flushes it to stable storage (fdatasync). kIo names the failed step.
[[nodiscard]] Result<SaveStatistics> save_machine_state(machine::Machine& machine, int fd);

// The parts of save_machine_state, for live migration's receiving side, which assembles a
// state file from pages as they arrive (RAM at a fixed kIncomingRamOffset, each region after
// the previous one, holes for pages never sent) and then the stream and the header.
// encode_machine_stream: the stream of a quiesced machine (every section but RAM).
// write_stream_and_header: writes `stream` after the header, then the header (flushed), for
// RAM already at ram_offset (the file must already be ram_offset + ram_length long).
inline constexpr uint64_t kIncomingRamOffset = kMaxStateStream + 4096;  // past any stream
[[nodiscard]] std::vector<std::byte> encode_machine_stream(machine::Machine& machine);
[[nodiscard]] Result<void> write_stream_and_header(int fd, std::span<const std::byte> stream,
                                                   uint64_t ram_offset, uint64_t ram_length);
// Writes RAM bytes at `file_offset` of a state file being assembled (whole, or kIo).
[[nodiscard]] Result<void> write_state_ram(int fd, uint64_t file_offset,
                                           std::span<const std::byte> data);

enum class RamLoad {
  kMap,   // map RAM from the file (MAP_PRIVATE): pages load when the guest touches them
  kCopy,  // read all of RAM now (any file, including ones later changed or removed)
};

// The shape a state file was saved from (its "machine" section), without loading anything.
struct StateShape {
  uint16_t major = 0;
  uint16_t minor = 0;
  uint32_t vcpus = 0;
  uint64_t memory_bytes = 0;
  std::vector<std::string> devices;
  // The CPU model the guest was started with (format 1.2; absent in older states).
  std::optional<accel::PresentedCpu> cpu;
};
[[nodiscard]] Result<StateShape> read_state_shape(int fd);

// Restores a state file into `machine` (built for_restore, same vCPU count, memory size and
// devices, not yet running): RAM, the clock (continuing from the saved time), the A20 gate,
// each vCPU, then each device. A shape that differs is kInvalidArgument naming the difference.
[[nodiscard]] Result<void> restore_machine_state(machine::Machine& machine, int fd,
                                                 RamLoad ram = RamLoad::kMap);

}  // namespace lamina::migration
