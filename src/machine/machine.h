#pragma once
// Machine: one assembled PC (guest RAM, buses, the platform devices, vCPUs) and its run loop.
// MachineBuilder (machine_builder.h) makes one, in the order its members are declared here;
// run() starts a timer thread and one VcpuThread per vCPU, waits for the first MachineStop any
// of them (or a device, or the console) posts, and stops and joins every thread before it
// returns, so devices are never destroyed under a running vCPU.
//
// Ownership: owns everything it is made of; borrows the COM1 backend (the caller's console),
// which must outlive it. Thread-safety: run() once, from one thread; stops() may be posted to
// from any thread.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "accel/accelerator.h"
#include "ahci/ahci_controller.h"
#include "base/guest_memory.h"
#include "hw/acpi_pm.h"
#include "hw/apic_bus.h"
#include "hw/bus.h"
#include "hw/clock.h"
#include "hw/debug_exit.h"
#include "hw/display/std_vga_pci.h"
#include "hw/firmware_rom.h"
#include "hw/fw_cfg.h"
#include "hw/hpet.h"
#include "hw/i440fx_host_bridge.h"
#include "hw/i8042.h"
#include "hw/ioapic.h"
#include "hw/irq_fanout.h"
#include "hw/local_apic.h"
#include "hw/pci_host.h"
#include "hw/hotplug_controller.h"
#include "hw/pic8259.h"
#include "hw/pit8254.h"
#include "hw/port92.h"
#include "hw/post_code_port.h"
#include "hw/reset_control.h"
#include "hw/shadow_ram.h"
#include "hw/rtc.h"
#include "hw/system_control_port.h"
#include "hw/timer_queue.h"
#include "hw/uart16550.h"
#include "machine/machine_exit.h"
#include "machine/memory_layout.h"
#include "machine/shared_irq_line.h"
#include "machine/vcpu_environment.h"
#include "machine/vcpu_thread.h"
#include "virtio/dma_memory.h"
#include "virtio/virtio_mem.h"
#include "virtio/virtio_pci.h"
#include "virtio/virtio_tablet.h"

namespace lamina::machine {

class MachineBuilder;

class Machine {
 public:
  ~Machine();
  Machine(const Machine&) = delete;
  Machine& operator=(const Machine&) = delete;

  // Runs the guest until something posts a stop; returns that stop.
  MachineStop run();

  StopQueue& stops() { return stops_; }
  hw::Uart16550& com1() { return *com1_; }
  // The VGA adapter (null without one) and the PS/2 controller, for a display's screen and input.
  hw::StdVga* vga() { return vga_ ? &vga_->vga() : nullptr; }
  hw::I8042& i8042() { return *i8042_; }
  // The virtio tablet (null without one), for the display's absolute pointer.
  virtio::VirtioTablet* tablet() { return tablet_; }
  GuestMemory& memory() { return memory_; }
  uint32_t vcpu_count() const { return static_cast<uint32_t>(vcpus_.size()); }
  // The CPU model the guest sees (vCPU 0's CPUID at reset), for the machine state.
  const accel::PresentedCpu& presented_cpu() const { return accelerator_->presented_cpu(); }
  hw::PciHost& pci_host() { return *pci_host_; }
  // The virtio PCI functions in slot order; virtio_slot(i) is function i's slot (00:SS.0).
  const std::vector<std::unique_ptr<virtio::VirtioPciFunction>>& virtio_functions() const {
    return virtio_functions_;
  }
  uint8_t virtio_slot(size_t index) const { return virtio_slots_.at(index); }
  // The function in `slot`, or null.
  virtio::VirtioPciFunction* virtio_function_at(uint8_t slot) const;

  // ACPI PCI hotplug (hw/hotplug_controller.h), from a host thread while run() runs (one hotplug
  // operation at a time). hot_add_virtio plugs `device` into the free `slot` with the vCPUs
  // held at an instruction boundary, then tells the guest, which finds it by rescanning the
  // slot and assigns its BARs itself. hot_remove_virtio asks the guest to release the slot
  // and waits up to `timeout` for its _EJ0; then, with the vCPUs held, the function leaves
  // the bus and is destroyed (device reset: its I/O is complete and its threads joined).
  // A guest that does not eject in time keeps the device: kTimedOut, and the request is
  // withdrawn. Errors name the slot.
  [[nodiscard]] Result<void> hot_add_virtio(uint8_t slot,
                                            std::unique_ptr<virtio::VirtioDevice> device);
  [[nodiscard]] Result<void> hot_remove_virtio(uint8_t slot, std::chrono::milliseconds timeout);
  // hot_remove_virtio's two halves, for a caller that must hold its own lock over the second
  // (the function list changes there) but not over the wait.
  [[nodiscard]] Result<void> wait_for_virtio_release(uint8_t slot,
                                                     std::chrono::milliseconds timeout);
  void remove_virtio_function(uint8_t slot);
  hw::HotplugController& pci_hotplug() { return *pci_hotplug_; }

  // ACPI CPU hotplug, from a host thread while run() runs, on a machine built with
  // MachineOptions::max_cpus above cpus (kInvalidArgument otherwise, naming what to change).
  // hot_add_vcpu marks vCPU `index` present and tells the guest, which starts it with
  // INIT/SIPI like a physical one (its thread already waits for them). hot_remove_vcpu asks the
  // guest to offline and eject it and waits up to `timeout` (kIo naming the timeout when it
  // does not; the request is withdrawn); the ejected vCPU stays parked where the guest left it
  // (halted, offline) until it is added again. vCPU 0 stays.
  [[nodiscard]] Result<void> hot_add_vcpu(uint32_t index);
  [[nodiscard]] Result<void> hot_remove_vcpu(uint32_t index, std::chrono::milliseconds timeout);
  // The vCPUs present now (all of them without CPU hotplug).
  uint32_t present_vcpus() const;

  // Memory (virtio-mem, MachineOptions::max_memory_bytes): the guest is asked to use `bytes`
  // of RAM in all (boot RAM + plugged), from any thread; its driver plugs or unplugs blocks
  // by itself, and unplugged memory goes back to the host. kInvalidArgument past the maximum,
  // below the boot RAM, or on a machine without the device (naming what to change).
  [[nodiscard]] Result<void> set_memory_size(uint64_t bytes);
  // Boot RAM + what the guest has plugged now.
  uint64_t memory_size() const;
  // Guest instructions retired by all vCPUs so far (exact after run() returned).
  uint64_t instructions() const;
  // The vCPUs' code caches together (built-in CPU with the JIT; else zero), from any thread.
  accel::CodeCacheStats code_cache_stats() const;
  // Host requests while run() runs, from any thread: the ACPI power button (an orderly
  // shutdown request), and holding every vCPU at an instruction boundary (devices and timers
  // keep running, so interrupts wait in the LAPICs).
  void press_power_button() { acpi_pm_->press_power_button(); }
  void pause();
  void resume();

  // Machine-wide quiesce for checkpoints and migration, from a host thread while run() runs
  // (or before it): every vCPU held at an instruction boundary, the timer thread stopped
  // between timers (guest timers frozen: none fires, and the clock is read once by save), and
  // every virtio device's I/O threads drained (virtio_device.h's pause_io). Guest RAM and every
  // device's state then stay still until release(), which undoes it (vCPUs stay held when
  // pause() had held them).
  void quiesce();
  void release();

  // Live migration's pre-copy (migration/live_migration.h), while run() runs. start: the
  // memory's dirty log on, false (and nothing changed) when the accelerator cannot log its
  // writes. take_dirty_pages: holds every vCPU at an instruction boundary for the moment it
  // takes the log (DirtyLog::take's bitmap) and has each restart its write logging, so a store
  // after that marks its page again. set_vcpu_throttle: auto-converge, each vCPU sleeps
  // `percent` of its time (0 to 99).
  bool start_dirty_logging();
  void stop_dirty_logging();
  std::vector<uint64_t> take_dirty_pages();
  void set_vcpu_throttle(unsigned percent);

  // What a machine state is made of (migration/machine_state.h), valid while quiesced or
  // before run(): the vCPUs, the platform devices and virtio functions by a stable name, in
  // wiring order, the time base and the A20 gate.
  struct NamedState {
    std::string name;  // "lapic0", "ioapic", ..., "pci-00:01.0"
    hw::Stateful* state;
  };
  std::vector<NamedState> stateful_devices();
  accel::Vcpu& vcpu(uint32_t index) { return *vcpus_.at(index); }
  hw::HostClock& clock() { return clock_; }
  const MemoryLayout& layout() const { return layout_; }
  bool a20_enabled() const { return a20_enabled_.load(std::memory_order_relaxed); }
  void set_a20_enabled(bool enabled);
  // After a restore: each vCPU looks at its LAPIC again (interrupts, NMI pending there).
  void kick_vcpus();

 private:
  friend class MachineBuilder;
  Machine(MemoryLayout layout, GuestMemory memory);
  void service_timers(std::stop_token stop);
  // Holds every vCPU at an instruction boundary for a change of the machine's wiring, and
  // gives them back as pause()/quiesce() left them.
  void hold_vcpus();
  void unhold_vcpus();
  // A function made for `slot`: BARs unassigned unless `resources` (the build) assigns them.
  Result<std::unique_ptr<virtio::VirtioPciFunction>> make_virtio_function(
      uint8_t slot, std::unique_ptr<virtio::VirtioDevice> device);
  void insert_virtio_function(uint8_t slot, std::unique_ptr<virtio::VirtioPciFunction> function);
  void stop_threads();

  // Declaration order is construction order; destruction runs backwards, vCPUs first.
  MemoryLayout layout_;
  GuestMemory memory_;
  hw::HostClock clock_;
  hw::TimerQueue timers_{clock_};
  StopQueue stops_;
  hw::Bus io_{"io", 0xffff};
  hw::Bus mmio_{"mmio"};
  hw::ApicBus apic_bus_;
  std::vector<std::unique_ptr<hw::LocalApic>> apics_;
  std::unique_ptr<hw::IoApic> ioapic_;
  std::unique_ptr<hw::Pic8259Pair> pic_;
  std::vector<std::unique_ptr<hw::IrqFanout>> isa_irqs_;  // ISA IRQ n -> 8259 input n + IOAPIC
  std::unique_ptr<hw::GatedIrqLine> pit_irq0_;            // closed while HPET legacy routing
  std::unique_ptr<hw::Pit8254> pit_;
  std::unique_ptr<hw::SystemControlPort> port61_;
  std::unique_ptr<hw::Rtc> rtc_;
  std::unique_ptr<hw::Uart16550> com1_;
  std::unique_ptr<hw::Uart16550> com2_;
  std::unique_ptr<hw::I8042> i8042_;
  std::unique_ptr<hw::Port92> port92_;
  std::unique_ptr<hw::PostCodePort> post_code_;
  std::unique_ptr<hw::DebugExit> debug_exit_;
  std::unique_ptr<hw::AcpiPm> acpi_pm_;
  std::unique_ptr<hw::ResetControl> reset_control_;
  std::unique_ptr<hw::Hpet> hpet_;
  // Device DMA into guest RAM (virtio, fw_cfg, shadow RAM); made first, so it outlives them.
  std::unique_ptr<virtio::DmaMemory> dma_;
  // Firmware boots only (null for a direct kernel boot): the BIOS flash below 4 GiB, its
  // shadow at 0xC0000-0xFFFFF under the i440FX's PAM registers, and fw_cfg.
  std::unique_ptr<hw::FirmwareRom> firmware_rom_;
  std::unique_ptr<hw::ShadowRam> shadow_ram_;
  std::unique_ptr<hw::I440fxHostBridge> host_bridge_;
  std::unique_ptr<hw::FwCfg> fw_cfg_;
  std::unique_ptr<hw::PciHost> pci_host_;
  std::unique_ptr<hw::StdVgaPci> vga_;  // null without a display adapter
  std::unique_ptr<hw::HotplugController> pci_hotplug_;
  std::unique_ptr<hw::HotplugController> cpu_hotplug_;  // null without CPU hotplug
  std::unique_ptr<accel::Accelerator> accelerator_;
  // Virtio PCI functions and what they use: device DMA reports to the accelerator, so these
  // come after it (and are destroyed, devices quiesced, before it); INTx of slot S goes to the
  // wired-OR line of GSI 16 + S % 4, as the DSDT's _PRT says.
  std::vector<std::unique_ptr<SharedIrqLine>> pci_intx_;
  std::vector<std::unique_ptr<virtio::VirtioPciFunction>> virtio_functions_;
  std::vector<uint8_t> virtio_slots_;  // virtio_functions_[i] sits in slot virtio_slots_[i]
  // The AHCI SATA controller in slot kAhciSlot (null without SATA drives); its INTx line is
  // one of pci_intx_'s, so it comes after them.
  std::unique_ptr<ahci::AhciController> ahci_;
  virtio::VirtioMem* virtio_mem_ = nullptr;  // owned by its function; null without one
  virtio::VirtioTablet* tablet_ = nullptr;   // owned by its function; null without one
  uint32_t pci_gsi_base_ = 16;
  std::vector<std::unique_ptr<VcpuEnvironment>> environments_;
  std::vector<std::unique_ptr<accel::Vcpu>> vcpus_;
  std::vector<std::unique_ptr<VcpuThread>> vcpu_threads_;

  std::mutex timer_mutex_;
  std::condition_variable timer_wakeup_;
  std::condition_variable timer_idle_;
  bool timer_rearmed_ = false;
  bool timers_frozen_ = false;     // quiesce(): the timer thread services nothing
  bool timers_servicing_ = false;  // the timer thread is inside run_expired()
  bool quiesced_ = false;
  bool paused_ = false;  // pause() holds the vCPUs (release() keeps them held)
  bool holding_ = false;  // take_dirty_pages() holds them for a moment
  std::atomic<bool> a20_enabled_{true};
  std::jthread timer_thread_;
};

}  // namespace lamina::machine
