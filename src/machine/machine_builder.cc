#include "machine/machine_builder.h"

#include <sys/mman.h>

#include <bit>
#include <ctime>
#include <vector>

#include <fmt/format.h>

#include "base/byte_order.h"
#include "cpu/x86/system/cpu_features.h"
#include "machine/acpi/acpi_tables.h"
#include "machine/acpi/config.h"
#include "machine/boot_file.h"
#include "machine/firmware_config.h"
#include "machine/multiboot_loader.h"
#include "machine/pci_resources.h"
#include "ahci/ata_disk.h"
#include "ahci/atapi_cdrom.h"
#include "virtio/virtio_mem.h"

namespace lamina::machine {
namespace {

// The TSC rate the vCPUs and their LAPICs agree on (CpuFeatures' tsc_khz).
constexpr uint64_t kTscHz = 2'000'000'000;
constexpr unsigned kIsaIrqs = 16;
// PCI bus 0 slots for plugged functions: 0 is the host bridge.
constexpr unsigned kFirstPciSlot = 1;
constexpr unsigned kPciSlots = 32;
// The VGA adapter's slot: below virtio-mem's (31), above those virtio devices fill from 1.
constexpr unsigned kDisplaySlot = 29;  // 30 is the AHCI controller's, 31 virtio-mem's
// SeaBIOS loads a PCI device's option ROM from the fw_cfg file "pciVVVV,DDDD.rom" before
// looking at its ROM BAR (SeaBIOS src/optionroms.c, init_pcirom).
constexpr char kVgaRomFile[] = "pci1234,1111.rom";
// I/O ports firmware hands to PCI BARs (above the legacy and ACPI ports).
constexpr uint32_t kPciIoStart = 0xc000;
constexpr uint32_t kPciIoEnd = 0x10000;

// ACPI PCI hotplug's register block (QEMU's PIIX4 uses the same port for its own) and
// GPE0 (QEMU's PIIX4 GPE0 block is there too).
constexpr uint16_t kPciHotplugPort = 0xae00;
constexpr uint16_t kGpe0Port = 0xafe0;
// ACPI CPU hotplug's register block (where QEMU's legacy CPU hotplug bitmap is).
constexpr uint16_t kCpuHotplugPort = 0xaf00;

cpu::x86::SegmentCache to_cache(const SegmentState& segment) {
  return cpu::x86::SegmentCache{segment.selector, segment.base, segment.limit, segment.attributes};
}

Result<void> map(hw::Bus& bus, uint64_t base, uint64_t size, hw::Device& device) {
  return bus.map(base, size, device);
}

}  // namespace

void apply_boot_state(const BootState& boot, cpu::x86::CpuState& state) {
  using namespace cpu::x86;
  state.gpr[kRax] = boot.rax;
  state.gpr[kRbx] = boot.rbx;
  state.gpr[kRsi] = boot.rsi;
  state.gpr[kRsp] = boot.rsp;
  state.rip = boot.rip;
  state.write_rflags(boot.rflags);
  state.cr0 = boot.cr0;
  state.cr3 = boot.cr3;
  state.cr4 = boot.cr4;
  state.msr.efer = boot.efer;
  state.segment[kCs] = to_cache(boot.cs);
  state.segment[kDs] = to_cache(boot.ds);
  state.segment[kEs] = to_cache(boot.es);
  state.segment[kSs] = to_cache(boot.ss);
  state.segment[kFs] = to_cache(boot.fs);
  state.segment[kGs] = to_cache(boot.gs);
  state.gdtr = {boot.gdt.base, boot.gdt.limit};
  state.idtr = {boot.idt.base, boot.idt.limit};
  state.cpl = state.segment[kCs].dpl();
  state.halted = false;
}

Result<void> check_firmware_image(std::span<const std::byte> image,
                                  const std::filesystem::path& path) {
  // The flash decodes a power-of-two window ending at 4 GiB, inside the layout's ROM window.
  if (image.size() < 64 * kKiB || image.size() > kMaxFirmwareSize ||
      !std::has_single_bit(image.size())) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("firmware {}: {} bytes is not a BIOS image (a power of two from 64 "
                            "to {} KiB, like SeaBIOS's bios-256k.bin)",
                            path.string(), image.size(), kMaxFirmwareSize / kKiB));
  }
  return {};
}

Result<MemoryLayout> machine_memory_layout(uint64_t memory_bytes, uint64_t max_memory_bytes) {
  uint64_t hotplug_size = 0;
  if (max_memory_bytes > memory_bytes) {
    constexpr uint64_t kMemoryBlock = 128 * kMiB;
    hotplug_size = (max_memory_bytes - memory_bytes + kMemoryBlock - 1) & ~(kMemoryBlock - 1);
  }
  return MemoryLayout::create({.ram_size = memory_bytes, .hotplug_size = hotplug_size});
}

Result<std::unique_ptr<Machine>> MachineBuilder::build(const MachineOptions& options) {
  if (options.cpus == 0 || options.cpus > 255) {
    return fail(ErrorCode::kInvalidArgument, "the vCPU count must be between 1 and 255");
  }
  if (options.max_cpus != 0 && (options.max_cpus < options.cpus || options.max_cpus > 64)) {
    return fail(ErrorCode::kInvalidArgument,
                "the vCPU maximum must be between the vCPU count and 64 (CPU hotplug's bitmap)");
  }
  auto layout = machine_memory_layout(options.memory_bytes, options.max_memory_bytes);
  if (!layout) return fail(layout.error().with_context("memory"));
  auto memory = GuestMemory::create(layout->ram_regions());
  if (!memory) return fail(memory.error().with_context("guest RAM"));
  std::unique_ptr<Machine> machine(new Machine(*layout, std::move(*memory)));
  Machine& m = *machine;
  // Every possible vCPU is built; those past options.cpus wait, absent, for CPU hotplug.
  const uint32_t cpus = std::max(options.cpus, options.max_cpus);
  const bool cpu_hotplug = cpus > options.cpus;

  // Interrupt controllers: one LAPIC per vCPU on the APIC bus, the IOAPIC sending to it, and
  // the 8259 pair whose INTR drives the BSP's LINT0 (virtual wire mode, MP spec 3.6.2.2).
  for (uint32_t index = 0; index < cpus; ++index) {
    m.apics_.push_back(
        std::make_unique<hw::LocalApic>(index, index == 0, m.apic_bus_, m.timers_, kTscHz));
    m.apic_bus_.attach(*m.apics_.back());
  }
  acpi::AcpiConfig acpi_config;
  acpi_config.cpu_count = cpus;
  if (cpu_hotplug) {
    acpi_config.present_cpus = options.cpus;
    acpi_config.cpu_hotplug_port = kCpuHotplugPort;
  }
  acpi_config.has_i8042 = true;
  acpi_config.gpe0_port = kGpe0Port;
  acpi_config.gpe0_length = hw::AcpiPm::kGpe0Length;
  acpi_config.pci_hotplug_port = kPciHotplugPort;
  // Every slot but the host bridge's takes hotplug, the boot-time devices' included.
  for (unsigned slot = kFirstPciSlot; slot < kPciSlots; ++slot) {
    if (slot == kAhciSlot && !options.sata_drives.empty()) continue;
    if (options.vga && slot == kDisplaySlot) continue;
    acpi_config.pci_hotplug_slots |= uint32_t{1} << slot;
  }
  m.ioapic_ = std::make_unique<hw::IoApic>(acpi_config.io_apic_id, m.apic_bus_);
  m.apic_bus_.add_eoi_listener(*m.ioapic_);
  m.pic_ = std::make_unique<hw::Pic8259Pair>(m.apics_[0]->lint0());
  // The SCI is level-triggered (MADT override); PCI INTx would be too, but they use GSI 16+.
  m.pic_->set_elcr(uint16_t{1} << acpi_config.sci_irq);
  for (auto& apic : m.apics_) {
    apic->set_ext_int_acknowledge([pic = m.pic_.get()] { return pic->acknowledge(); });
  }
  // ISA IRQ n is 8259 input n and IOAPIC pin n, except IRQ0 on pin 2 (the MADT's override).
  for (unsigned irq = 0; irq < kIsaIrqs; ++irq) {
    const unsigned pin = irq == 0 ? 2 : irq;
    m.isa_irqs_.push_back(std::make_unique<hw::IrqFanout>(
        std::initializer_list<hw::IrqLine*>{&m.pic_->input(irq), &m.ioapic_->input(pin)}));
  }
  auto isa = [&m](unsigned irq) -> hw::IrqLine& { return *m.isa_irqs_[irq]; };

  // Every device write into guest RAM drops the vCPUs' translations of the pages it touched
  // (the accelerator comes later; nothing writes before the guest runs).
  m.dma_ = std::make_unique<virtio::DmaMemory>(m.memory_, [&m](uint64_t address, uint64_t length) {
    if (m.accelerator_) m.accelerator_->guest_memory_written(address, length);
  });
  if (options.firmware != FirmwareKind::kNone) {
    if (options.kvm) {
      return fail(ErrorCode::kUnsupported,
                  "--firmware bios needs the built-in CPU (--accel emu): the BIOS flash and its "
                  "write-protected shadow are not wired to KVM yet");
    }
    if (auto added = add_firmware(m, options); !added) return fail(added.error());
  }

  // Legacy devices.
  m.pit_irq0_ = std::make_unique<hw::GatedIrqLine>(isa(0));
  m.pit_ = std::make_unique<hw::Pit8254>(m.timers_, *m.pit_irq0_);
  m.port61_ = std::make_unique<hw::SystemControlPort>(*m.pit_, m.clock_);
  m.rtc_ = std::make_unique<hw::Rtc>(m.timers_, isa(8), static_cast<int64_t>(std::time(nullptr)));
  m.rtc_->set_memory_size(m.layout_.below_4g_ram_end(), m.layout_.above_4g_ram_size());
  m.rtc_->set_cpu_count(options.cpus);
  m.com1_ = std::make_unique<hw::Uart16550>("uart16550@0x3f8", isa(4), options.com1_backend);
  m.com2_ = std::make_unique<hw::Uart16550>("uart16550@0x2f8", isa(3), nullptr);
  StopQueue& stops = m.stops_;
  // The A20 gate: port 0x92 and the i8042 output port both drive it, the last change wins (as
  // in QEMU); the vCPUs mask physical address bit 20 while it is off. On after reset.
  auto a20_changed = [&m](bool enabled) { m.set_a20_enabled(enabled); };
  m.i8042_ = std::make_unique<hw::I8042>(
      isa(1), isa(12),
      [&stops] {
        stops.post({MachineExit::kReset, "reset through the i8042 controller", 0});
      },
      a20_changed);
  m.port92_ = std::make_unique<hw::Port92>(
      [&stops] {
        stops.post({MachineExit::kReset, "reset through port 0x92", 0});
      },
      a20_changed);
  m.post_code_ = std::make_unique<hw::PostCodePort>();
  m.debug_exit_ = std::make_unique<hw::DebugExit>([&stops](uint32_t status) {
    stops.post({MachineExit::kDebugExit, fmt::format("debug-exit with status {}", status), status});
  });
  m.acpi_pm_ = std::make_unique<hw::AcpiPm>(
      m.clock_, isa(acpi_config.sci_irq),
      [&stops] {
        stops.post({MachineExit::kPowerOff, "the guest powered off", 0});
      },
      true, acpi_config.s5_sleep_type);
  if (cpu_hotplug) {
    const uint64_t all = cpus >= 64 ? ~0ull : (uint64_t{1} << cpus) - 1;
    m.cpu_hotplug_ = std::make_unique<hw::HotplugController>(
        "cpu-hotplug", all, (uint64_t{1} << options.cpus) - 1,
        [pm = m.acpi_pm_.get(), gpe = acpi_config.cpu_hotplug_gpe] { pm->raise_gpe(gpe); });
  }
  m.pci_hotplug_ = std::make_unique<hw::HotplugController>(
      "pci-hotplug", acpi_config.pci_hotplug_slots, 0,
      [pm = m.acpi_pm_.get(), gpe = acpi_config.pci_hotplug_gpe] { pm->raise_gpe(gpe); });
  m.reset_control_ = std::make_unique<hw::ResetControl>([&stops] {
    stops.post({MachineExit::kReset, "reset through port 0xcf9", 0});
  });
  hw::Hpet::Routing hpet_routing;
  // HPET timers may use IOAPIC pins 20-23 (free, as on ICH boards) and pin 0, which no ISA
  // device drives here (IRQ0 is on pin 2) and which Linux leaves in INT_ROUTE_CNF (it uses
  // legacy replacement), so its configuration writes are not refused.
  hpet_routing.ioapic[0] = &m.ioapic_->input(0);
  for (unsigned pin = 20; pin < 24; ++pin) hpet_routing.ioapic[pin] = &m.ioapic_->input(pin);
  hpet_routing.legacy_timer0 = &isa(0);
  hpet_routing.legacy_timer1 = &isa(8);
  hpet_routing.legacy_route_changed = [gate = m.pit_irq0_.get()](bool enabled) {
    gate->set_open(!enabled);
  };
  m.hpet_ = std::make_unique<hw::Hpet>(m.timers_, std::move(hpet_routing));
  m.pci_host_ = std::make_unique<hw::PciHost>(
      m.io_, m.mmio_,
      hw::PciHost::Options{.ecam_buses = static_cast<unsigned>(kEcamSize / kMiB),
                           .reset_control = m.reset_control_.get(),
                           .bridge = m.host_bridge_.get()});

  if (options.vga) {
    if (auto added = add_display(m); !added) return fail(added.error());
  }

  // Port I/O map (PC/AT ports; ACPI blocks where the FADT says).
  struct Mapping {
    hw::Bus& bus;
    uint64_t base;
    uint64_t size;
    hw::Device& device;
  };
  const Mapping mappings[] = {
      {m.io_, 0x20, 2, m.pic_->master_ports()},
      {m.io_, 0xa0, 2, m.pic_->slave_ports()},
      {m.io_, 0x4d0, 2, m.pic_->elcr_ports()},
      {m.io_, 0x40, 4, *m.pit_},
      {m.io_, 0x61, 1, *m.port61_},
      {m.io_, 0x70, 2, *m.rtc_},
      {m.io_, 0x3f8, 8, *m.com1_},
      {m.io_, 0x2f8, 8, *m.com2_},
      {m.io_, 0x60, 1, m.i8042_->data_port()},
      {m.io_, 0x64, 1, m.i8042_->command_port()},
      {m.io_, 0x92, 1, *m.port92_},
      {m.io_, 0x80, 1, *m.post_code_},
      {m.io_, acpi_config.pm1a_event_port, 4, m.acpi_pm_->event_block()},
      {m.io_, acpi_config.pm1a_control_port, 2, m.acpi_pm_->control_block()},
      {m.io_, acpi_config.pm_timer_port, 4, m.acpi_pm_->timer_block()},
      {m.io_, acpi_config.gpe0_port, acpi_config.gpe0_length, m.acpi_pm_->gpe0_block()},
      {m.io_, acpi_config.pci_hotplug_port, hw::HotplugController::kSize, *m.pci_hotplug_},
      {m.io_, hw::PciHost::kConfigAddressPort, 4, m.pci_host_->config_address_port()},
      {m.io_, hw::PciHost::kConfigDataPort, 4, m.pci_host_->config_data_port()},
      {m.mmio_, kEcamBase, m.pci_host_->ecam_size(), m.pci_host_->ecam()},
      {m.mmio_, kIoApicBase, hw::IoApic::kSize, *m.ioapic_},
      {m.mmio_, kHpetBase, hw::Hpet::kSize, *m.hpet_},
  };
  for (const Mapping& mapping : mappings) {
    if (auto mapped = map(mapping.bus, mapping.base, mapping.size, mapping.device); !mapped) {
      return fail(mapped.error().with_context("machine wiring"));
    }
  }
  if (cpu_hotplug) {
    if (auto mapped = map(m.io_, kCpuHotplugPort, hw::HotplugController::kSize, *m.cpu_hotplug_);
        !mapped) {
      return fail(mapped.error().with_context("machine wiring"));
    }
  }
  if (m.fw_cfg_) {
    const Mapping firmware_mappings[] = {
        {m.io_, hw::FwCfg::kPortBase, hw::FwCfg::kPortSize, *m.fw_cfg_},
        {m.mmio_, kFourGiB - m.firmware_rom_->size(), m.firmware_rom_->size(), *m.firmware_rom_},
        // Reached only by writes to the pages PAM made read-only (the area is RAM).
        {m.mmio_, hw::ShadowRam::kBase, hw::ShadowRam::kSize, *m.shadow_ram_},
    };
    for (const Mapping& mapping : firmware_mappings) {
      if (auto mapped = map(mapping.bus, mapping.base, mapping.size, mapping.device); !mapped) {
        return fail(mapped.error().with_context("firmware wiring"));
      }
    }
  }
  // Without it, writes to 0xf4 are unmapped port writes: dropped and counted.
  if (options.debug_exit) {
    if (auto mapped = map(m.io_, hw::DebugExit::kPort, hw::DebugExit::kSize, *m.debug_exit_);
        !mapped) {
      return fail(mapped.error().with_context("machine wiring"));
    }
  }

  // Firmware tables, then the kernel (which is told where the RSDP is); a machine made to be
  // restored gets its RAM and vCPU state from the saved state instead.
  // With firmware, fw_cfg carries the tables (also when restoring: a guest may read it again)
  // and vCPU 0 starts at the reset vector, the state the CPU is built in.
  BootState boot;
  if (m.fw_cfg_) {
    FirmwareConfigOptions firmware{.cpus = options.cpus,
                                   .max_cpus = cpus,
                                   .boot_order = options.boot_order};
    if (auto filled = populate_firmware_config(*m.fw_cfg_, m.layout_, acpi_config, firmware);
        !filled) {
      return fail(filled.error().with_context("firmware configuration"));
    }
    if (m.vga_ && options.vga_rom_image) {
      if (auto added = m.fw_cfg_->add_file(kVgaRomFile, *options.vga_rom_image); !added) {
        return fail(added.error().with_context("VGA option ROM"));
      }
    }
  } else if (!options.for_restore) {
    auto booted = load_boot_images(m, options, acpi_config);
    if (!booted) return fail(booted.error());
    boot = *booted;
  }

  // vCPUs: vCPU 0 starts where the loader says; the others wait for INIT-SIPI-SIPI.
  auto accelerator = make_accelerator(m.memory_, options);
  if (!accelerator) return fail(accelerator.error());
  m.accelerator_ = std::move(*accelerator);
  if (auto added = add_virtio_functions(m, options, acpi_config.pci_gsi_base); !added) {
    return fail(added.error());
  }

  for (uint32_t index = 0; index < cpus; ++index) {
    m.environments_.push_back(
        std::make_unique<VcpuEnvironment>(m.io_, m.mmio_, *m.apics_[index], m.clock_));
    auto vcpu = m.accelerator_->create_vcpu(index, *m.environments_.back());
    if (!vcpu) return fail(vcpu.error().with_context(fmt::format("vCPU {}", index)));
    m.vcpus_.push_back(std::move(*vcpu));
    m.vcpu_threads_.push_back(
        std::make_unique<VcpuThread>(index, *m.vcpus_.back(), *m.apics_[index], m.stops_,
                                     options.guest_thread_setup));
    m.apics_[index]->set_kick([thread = m.vcpu_threads_.back().get()] { thread->wake(); });
  }
  if (!options.for_restore && !m.fw_cfg_) {
    cpu::x86::CpuState state = m.vcpus_[0]->state();
    apply_boot_state(boot, state);
    m.vcpus_[0]->set_state(state);
  }
  return machine;
}

Result<std::unique_ptr<accel::Accelerator>> MachineBuilder::make_accelerator(
    GuestMemory& memory, const MachineOptions& options, bool quiet) {
  cpu::x86::CpuFeatures features;
  features.vcpu_count = std::max(options.cpus, options.max_cpus);
  features.tsc_khz = static_cast<uint32_t>(kTscHz / 1000);
  features.bus_khz = static_cast<uint32_t>(hw::LocalApic::kBusFrequencyHz / 1000);
  // The LAPIC implements x2APIC mode (and the environment routes its MSRs). Its TSC-deadline
  // mode stays out of the model: one model serves both backends, and on KVM the guest's TSC is
  // the host's, which the deadline timer does not count (kvm_cpuid.h).
  features.x2apic = true;
  if (options.cpu_model == accel::CpuModelKind::kHost && !options.kvm) {
    return fail(ErrorCode::kInvalidArgument,
                "--cpu-model host needs --accel kvm: the built-in CPU presents Lamina's CPU model "
                "only");
  }
  if (options.cpu_support_limit && options.cpu_model == accel::CpuModelKind::kLamina) {
    auto reduced = cpu::x86::reduce_to_support(features, *options.cpu_support_limit);
    if (!reduced) return fail(reduced.error().with_context("CPU model"));
    features = reduced->features;
  }
  auto accelerator =
      options.kvm
          ? accel::create_kvm_accelerator(memory, features, options.kvm_device, options.cpu_model,
                                          !quiet)
          : accel::create_emu_accelerator(memory, features,
                                          accel::EmuOptions{options.jit, options.code_cache_bytes});
  if (!accelerator)
    return fail(accelerator.error().with_context(options.kvm ? "--accel kvm" : "CPU model"));
  return std::move(*accelerator);
}

Result<accel::PresentedCpu> MachineBuilder::presented_cpu(const MachineOptions& options) {
  auto memory = GuestMemory::create({RamRegion{0, 4096}});
  if (!memory) return fail(memory.error());
  auto accelerator = make_accelerator(*memory, options, true);
  if (!accelerator) return fail(accelerator.error());
  return (*accelerator)->presented_cpu();
}

Result<void> MachineBuilder::add_firmware(Machine& m, const MachineOptions& options) {
  std::vector<std::byte> read;
  if (!options.firmware_image) {
    auto bytes = read_boot_file(options.firmware_path.string(), "firmware", kMaxFirmwareSize);
    if (!bytes) return fail(bytes.error());
    read = std::move(*bytes);
  }
  std::span<const std::byte> image =
      options.firmware_image ? std::span<const std::byte>(*options.firmware_image) : read;
  if (auto checked = check_firmware_image(image, options.firmware_path); !checked) {
    return fail(checked.error());
  }
  m.firmware_rom_ = std::make_unique<hw::FirmwareRom>(image);
  // A PAM change flushes every vCPU's cached write translations before its next block.
  m.shadow_ram_ = std::make_unique<hw::ShadowRam>(*m.dma_, image, [&m] {
    for (const auto& vcpu : m.vcpus_) vcpu->restart_write_logging();
  });
  m.host_bridge_ = std::make_unique<hw::I440fxHostBridge>(*m.shadow_ram_);
  m.fw_cfg_ = std::make_unique<hw::FwCfg>(*m.dma_);
  return {};
}

Result<void> MachineBuilder::add_display(Machine& m) {
  m.vga_ = std::make_unique<hw::StdVgaPci>();
  hw::StdVga& vga = m.vga_->vga();
  // The legacy VGA ranges decode whatever the PCI Command register says (the primary adapter).
  const struct {
    hw::Bus& bus;
    uint64_t base;
    uint64_t size;
    hw::Device& device;
  } mappings[] = {
      {m.io_, hw::StdVga::kLegacyPortBase, hw::StdVga::kLegacyPortSize, vga.legacy_ports()},
      {m.io_, hw::StdVga::kDispiPortBase, hw::StdVga::kDispiPortSize, vga.dispi_ports()},
      {m.mmio_, hw::StdVga::kLegacyMemoryBase, hw::StdVga::kLegacyMemorySize, vga.legacy_memory()},
  };
  for (const auto& mapping : mappings) {
    if (auto mapped = map(mapping.bus, mapping.base, mapping.size, mapping.device); !mapped) {
      return fail(mapped.error().with_context("VGA wiring"));
    }
  }
  if (auto attached = m.pci_host_->attach(kDisplaySlot, 0, *m.vga_); !attached) {
    return fail(attached.error().with_context("VGA"));
  }
  return {};
}

Result<BootState> MachineBuilder::load_boot_images(Machine& m, const MachineOptions& options,
                                                   const acpi::AcpiConfig& acpi_config) {
  auto tables = acpi::install_acpi_tables(m.memory_, m.layout_, acpi_config);
  if (!tables) return fail(tables.error().with_context("ACPI tables"));
  // Preloaded images (a sandboxed worker can no longer open paths) or the files named.
  std::vector<std::byte> kernel_read;
  std::vector<std::byte> initrd_read;
  if (!options.kernel_image) {
    auto bytes = read_boot_file(options.kernel.string(), "kernel", kMaxBootFileSize);
    if (!bytes) return fail(bytes.error());
    kernel_read = std::move(*bytes);
  }
  if (options.initrd && !options.initrd_image) {
    auto bytes = read_boot_file(options.initrd->string(), "initrd", kMaxBootFileSize);
    if (!bytes) return fail(bytes.error());
    initrd_read = std::move(*bytes);
  }
  const std::vector<std::byte>* kernel = options.kernel_image ? options.kernel_image.get()
                                                               : &kernel_read;
  std::span<const std::byte> initrd =
      options.initrd_image ? std::span<const std::byte>(*options.initrd_image) : initrd_read;
  BootState boot;
  if (find_multiboot_header(*kernel)) {
    MultibootLoadOptions load{.kernel = *kernel, .command_line = options.cmdline, .modules = {}};
    if (options.initrd) load.modules.push_back({initrd, options.initrd->filename().native()});
    auto loaded = load_multiboot(m.memory_, m.layout_, load);
    if (!loaded) return fail(loaded.error().with_context(options.kernel.string()));
    boot = loaded->state;
  } else {
    std::optional<KernelCache> cache;
    if (options.kernel_cache) cache.emplace(*options.kernel_cache);
    LinuxLoadOptions load{.kernel = *kernel,
                          .initrd = initrd,
                          .command_line = options.cmdline,
                          .entry = options.linux_entry,
                          .acpi_rsdp_address = tables->rsdp_address,
                          .kernel_cache = cache ? &*cache : nullptr};
    auto loaded = load_linux(m.memory_, m.layout_, load);
    if (!loaded) return fail(loaded.error().with_context(options.kernel.string()));
    boot = loaded->state;
  }

  return boot;
}

std::string sata_boot_path(unsigned port) {
  return fmt::format("/pci@i0cf8/sata@{:x}/drive@{:x}/disk@0", kAhciSlot, port);
}

Result<void> MachineBuilder::add_ahci(Machine& m, const MachineOptions& options,
                                      PciResourceAllocator* resources) {
  if (options.sata_drives.empty()) return {};
  if (options.sata_drives.size() > ahci::AhciController::kPorts) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} SATA drives do not fit the AHCI controller's {} ports",
                            options.sata_drives.size(), ahci::AhciController::kPorts));
  }
  std::vector<std::unique_ptr<ahci::SataDrive>> drives;
  for (const SataDriveOption& drive : options.sata_drives) {
    if (drive.cdrom) {
      drives.push_back(std::make_unique<ahci::AtapiCdrom>(drive.image, drive.serial));
    } else {
      drives.push_back(std::make_unique<ahci::AtaDisk>(drive.image, drive.serial));
    }
  }
  m.ahci_ = std::make_unique<ahci::AhciController>(*m.dma_, std::move(drives));
  // INTA routed as a virtio function's in the same slot (_PRT: GSI base + slot % 4).
  m.ahci_->set_intx_line(&m.pci_intx_[kAhciSlot % 4]->add_source());
  m.ahci_->config_write(0x3c, 1, m.pci_gsi_base_ + kAhciSlot % 4);
  if (auto attached = m.pci_host_->attach(kAhciSlot, 0, *m.ahci_); !attached) {
    return fail(attached.error().with_context("the AHCI controller"));
  }
  if (resources) {
    if (auto assigned = resources->assign(*m.ahci_); !assigned) return fail(assigned.error());
  }
  return {};
}

Result<void> MachineBuilder::add_virtio_functions(Machine& m, const MachineOptions& options,
                                                  uint32_t pci_gsi_base) {
  // Slot 31 is virtio-mem's when the machine has memory headroom.
  // Slot 30 is the AHCI controller's when the machine has SATA drives, 29 the VGA adapter's.
  const unsigned free_slots = kPciSlots - kFirstPciSlot - (m.layout_.hotplug_size() > 0 ? 1 : 0) -
                              (options.sata_drives.empty() ? 0 : 1) - (m.vga_ ? 1 : 0);
  if (options.virtio_devices.size() > free_slots) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} virtio devices do not fit the {} free PCI slots",
                            options.virtio_devices.size(), free_slots));
  }
  m.pci_gsi_base_ = pci_gsi_base;
  for (unsigned link = 0; link < 4; ++link) {
    m.pci_intx_.push_back(std::make_unique<SharedIrqLine>(m.ioapic_->input(pci_gsi_base + link)));
  }
  PciResourceAllocator resources(kPciMmio32Start, kPciMmio32End, kPciIoStart, kPciIoEnd);
  // Firmware sizes and places the BARs itself, as on a PC (BARs left decoding would map over
  // its flash while it sizes them).
  const bool assign_resources = !m.fw_cfg_;
  // The virtio-mem device takes the last slot, outside the factories' range.
  if (m.layout_.hotplug_size() > 0) {
    auto memory_device = std::make_unique<virtio::VirtioMem>(
        m.layout_.hotplug_base(), m.layout_.hotplug_size(),
        [&memory = m.memory_](uint64_t address, uint64_t size) {
          // Unplugged memory goes back to the host; the guest reads zeros there if it looks.
          if (std::byte* host = memory.host_pointer(address, size)) {
            (void)::madvise(host, size, MADV_DONTNEED);
          }
        });
    m.virtio_mem_ = memory_device.get();
    const auto slot = static_cast<uint8_t>(kPciSlots - 1);
    auto function = m.make_virtio_function(slot, std::move(memory_device));
    if (!function) return fail(function.error());
    if (auto attached = m.pci_host_->attach(slot, 0, **function); !attached) {
      return fail(attached.error());
    }
    if (assign_resources) {
      if (auto assigned = resources.assign(**function); !assigned) return fail(assigned.error());
    }
    m.insert_virtio_function(slot, std::move(*function));
  }
  // Without firmware to place them, the VGA adapter's BARs are assigned here too.
  if (m.vga_ && assign_resources) {
    if (auto assigned = resources.assign(*m.vga_); !assigned) return fail(assigned.error());
  }
  for (size_t index = 0; index < options.virtio_devices.size(); ++index) {
    // An empty factory is an empty slot (a device hot-unplugged before this boot).
    if (!options.virtio_devices[index]) continue;
    auto device = options.virtio_devices[index]();
    if (!device) return fail(device.error());
    // The tablet is never hot-plugged: the machine keeps it for the display's pointer.
    if ((*device)->type() == virtio::DeviceType::kInput) {
      m.tablet_ = static_cast<virtio::VirtioTablet*>(device->get());
    }
    const auto slot = static_cast<uint8_t>(kFirstPciSlot + index);
    auto function = m.make_virtio_function(slot, std::move(*device));
    if (!function) return fail(function.error());
    if (auto attached = m.pci_host_->attach(slot, 0, **function); !attached) {
      return fail(attached.error());
    }
    if (assign_resources) {
      if (auto assigned = resources.assign(**function); !assigned) return fail(assigned.error());
    }
    m.insert_virtio_function(slot, std::move(*function));
  }
  return add_ahci(m, options, assign_resources ? &resources : nullptr);
}

}  // namespace lamina::machine
