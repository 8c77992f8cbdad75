#pragma once
// VmConfig: what one VM is made of, as `lamina run` (and later laminad) describes it.
// validate() checks everything a user can get wrong before anything starts.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "machine/display_option.h"
#include "machine/firmware_kind.h"
#include "net/network_option.h"
#include "virtio/virtio_block_setup.h"

namespace lamina::machine {

// kAuto: KVM when /dev/kvm is usable, else the built-in CPU (decided when the VM starts).
enum class AccelKind { kEmu, kKvm, kAuto };
enum class SerialKind { kStdio, kFile, kNone };
enum class RebootAction { kExit, kRestart };
// How the built-in CPU runs guest code: translated to host code (kJit) or interpreted
// (kInterp, the oracle and fallback). KVM ignores it.
enum class CpuEngine { kJit, kInterp };
// The CPU model the guest sees (accel::CpuModelKind): kLamina, Lamina's on every backend (on KVM
// without what the host lacks); kLaminaKvm, that model reduced to this host's KVM on the
// built-in CPU too, so a VM started there can move to KVM here; kHost, the host's instruction
// set (KVM only).
enum class CpuModel { kLamina, kLaminaKvm, kHost };

// The translated-code cache of one VM (all its vCPUs together): a bound on host memory a guest
// can make the JIT use, whatever code it runs (resident: up to twice this, as the cache's pages
// are mapped twice, writable and executable). 64 MiB: booting the default guest translates
// about 63 MiB of code; with 16 MiB the cache was flushed 12 times and retranslation took a
// quarter of the boot + shell loop's CPU time (bench/boot_bench.sh, ARCHITECTURE "The JIT").
inline constexpr uint64_t kDefaultCodeCacheBytes = uint64_t{64} << 20;
inline constexpr uint64_t kMinCodeCacheBytes = uint64_t{1} << 20;
inline constexpr uint64_t kMaxCodeCacheBytes = uint64_t{1} << 30;

// The extra console port (virtio-console, /dev/hvc0 in a Linux guest).
enum class ConsolePortKind { kNone, kStdio, kFile, kSocket };
struct ConsolePortConfig {
  ConsolePortKind kind = ConsolePortKind::kNone;
  std::filesystem::path path;  // for kFile and kSocket
};

// What --boot puts first in the firmware's boot order.
enum class BootDevice { kDisk, kCdrom };

// Ports of the AHCI controller (ahci::AhciController::kPorts): SATA disks and the CD-ROM.
inline constexpr size_t kSataPorts = 6;

struct SerialConfig {
  SerialKind kind = SerialKind::kStdio;
  std::filesystem::path file;  // for kFile
};

struct VmConfig {
  // --firmware; unset: a BIOS when the VM has disks and names no kernel, initrd or command
  // line (it boots from its disk as a PC does), else none. See effective_firmware().
  std::optional<FirmwareChoice> firmware;
  std::optional<std::filesystem::path> kernel;  // none: the default guest (without firmware)
  std::optional<std::filesystem::path> initrd;
  std::string cmdline;
  uint32_t cpus = 1;
  // vCPUs the VM may grow to while it runs (ACPI CPU hotplug); 0: cpus, no headroom.
  uint32_t max_cpus = 0;
  uint64_t memory_bytes = uint64_t{512} << 20;
  // RAM the VM may grow to while it runs (virtio-mem); 0: memory_bytes, no headroom.
  uint64_t max_memory_bytes = 0;
  // RAM the guest is asked to use after it boots (virtio-mem plugs the difference): what a
  // live `lamina vm set --memory` left; 0: memory_bytes. The machine's shape stays that of
  // memory_bytes and max_memory_bytes, so a checkpoint restores.
  uint64_t memory_target_bytes = 0;
  AccelKind accel = AccelKind::kEmu;
  CpuEngine cpu_engine = CpuEngine::kJit;
  CpuModel cpu_model = CpuModel::kLamina;
  uint64_t code_cache_bytes = kDefaultCodeCacheBytes;
  SerialConfig serial;
  RebootAction on_reboot = RebootAction::kExit;
  bool rng = true;  // virtio-rng fed from the host's getrandom
  ConsolePortConfig console_port;
  std::vector<virtio::DiskSpec> disks;       // --disk, in order (vda, vdb, ...)
  std::vector<net::NetworkOption> networks;  // one virtio-net card per --net, in order
  // Disks on the AHCI SATA controller (--disk PATH,bus=sata), on ports 0, 1, ... in order;
  // the CD-ROM (--cdrom, an ISO image, read-only) on the port after them.
  std::vector<virtio::DiskSpec> sata_disks;
  std::optional<std::filesystem::path> cdrom;
  // --boot: the firmware's boot order by kind (empty: see effective_boot_order()).
  std::vector<BootDevice> boot;
  std::optional<VgaKind> vga;  // --vga; unset: see effective_vga()
  DisplayOption display;       // --display
  std::optional<bool> tablet;  // --tablet; unset: see effective_tablet()
  bool debug_exit = false;  // --debug-exit: the guest may end the run with a status (port 0xf4)
};

inline constexpr uint32_t kMaxCpus = 64;
inline constexpr uint64_t kMinMemoryBytes = uint64_t{16} << 20;
inline constexpr uint64_t kMaxMemoryBytes = uint64_t{1} << 40;

// Parses --cpus "N" or "N,max=M" (M >= N: vCPUs that may be added while the VM runs).
struct CpuCount {
  uint32_t cpus = 1;
  uint32_t max_cpus = 0;  // 0: none given
};
Result<CpuCount> parse_cpus(std::string_view text);

// Parses --memory "SIZE" or "SIZE,max=MAX" (MAX >= SIZE: RAM that may be added while the VM
// runs).
struct MemorySize {
  uint64_t bytes = 0;
  uint64_t max_bytes = 0;  // 0: none given
};
Result<MemorySize> parse_memory(std::string_view text);

// Parses "stdio", "none" or "file:PATH".
Result<SerialConfig> parse_serial(std::string_view text);
// Parses "none", "stdio", "file:PATH" or "socket:PATH".
Result<ConsolePortConfig> parse_console_port(std::string_view text);
// Parses "host" (true) or "none" (false).
Result<bool> parse_rng(std::string_view text);
// Parses one --net value: "switch:NAME[,mac=M]" or "tap:IFNAME[,mac=M]" (errors name --net).
Result<net::NetworkOption> parse_network(std::string_view text);
// Parses --firmware "none", "bios" (kDefaultBiosPath) or "bios:FILE".
Result<FirmwareChoice> parse_firmware(std::string_view text);
// The firmware a config boots through, its default applied.
FirmwareChoice effective_firmware(const VmConfig& config);
// Adds a parsed --disk to the list of its bus (disks or sata_disks).
void add_disk(VmConfig& config, virtio::DiskSpec disk);
// Parses --boot "disk", "cdrom" or "order=KIND,KIND..." (kinds disk and cdrom, each once).
Result<std::vector<BootDevice>> parse_boot(std::string_view text);
// The boot order a config asks of the firmware: --boot's, else the CD-ROM first when there is
// one (then the disks), else none (the firmware's own order).
std::vector<BootDevice> effective_boot_order(const VmConfig& config);
// Parses "emu", "kvm" or "auto".
Result<AccelKind> parse_accel(std::string_view text);
// Parses "jit" or "interp".
Result<CpuEngine> parse_cpu_engine(std::string_view text);
// Parses "lamina", "lamina-kvm" or "host".
Result<CpuModel> parse_cpu_model(std::string_view text);
// Parses a code cache size ("64M"), kMinCodeCacheBytes to kMaxCodeCacheBytes.
Result<uint64_t> parse_code_cache(std::string_view text);
// Parses "exit" or "restart".
Result<RebootAction> parse_reboot_action(std::string_view text);

// Whether validate() also looks at the host: files exist and are readable, folders exist, disk
// images open. kNone is for a sandboxed worker, whose host ends laminad opened and checked.
enum class HostChecks { kHost, kNone };

// Checks ranges, that no two --net cards share a MAC address or a tap and (kHost) that the
// named files exist and are readable; the error names the option.
Result<void> validate(const VmConfig& config, HostChecks checks = HostChecks::kHost);

}  // namespace lamina::machine
