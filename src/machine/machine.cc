#include "machine/machine.h"

#include <bit>
#include <chrono>

#include <fmt/format.h>

namespace lamina::machine {
namespace {

// The longest the timer thread sleeps with no timer armed; only bounds how late it notices a
// stop request it somehow missed.
constexpr uint64_t kIdleTimerSleepNs = 100'000'000;

}  // namespace

Machine::Machine(MemoryLayout layout, GuestMemory memory)
    : layout_(layout), memory_(std::move(memory)) {}

Machine::~Machine() { stop_threads(); }

uint64_t Machine::instructions() const {
  uint64_t total = 0;
  for (const auto& thread : vcpu_threads_) total += thread->instructions();
  return total;
}

accel::CodeCacheStats Machine::code_cache_stats() const {
  accel::CodeCacheStats total;
  for (const auto& thread : vcpu_threads_) total += thread->code_cache_stats();
  return total;
}

void Machine::pause() {
  std::lock_guard lock(timer_mutex_);
  paused_ = true;
  for (auto& thread : vcpu_threads_) thread->set_paused(true);
}

void Machine::resume() {
  std::lock_guard lock(timer_mutex_);
  paused_ = false;
  if (quiesced_ || holding_) return;
  for (auto& thread : vcpu_threads_) thread->set_paused(false);
}

void Machine::hold_vcpus() {
  for (auto& thread : vcpu_threads_) thread->set_paused(true);
  for (auto& thread : vcpu_threads_) thread->wait_parked();
}

void Machine::unhold_vcpus() {
  std::lock_guard lock(timer_mutex_);
  if (paused_ || quiesced_) return;
  for (auto& thread : vcpu_threads_) thread->set_paused(false);
}

virtio::VirtioPciFunction* Machine::virtio_function_at(uint8_t slot) const {
  for (size_t index = 0; index < virtio_slots_.size(); ++index) {
    if (virtio_slots_[index] == slot) return virtio_functions_[index].get();
  }
  return nullptr;
}

Result<std::unique_ptr<virtio::VirtioPciFunction>> Machine::make_virtio_function(
    uint8_t slot, std::unique_ptr<virtio::VirtioDevice> device) {
  if (!dma_) {
    return fail(ErrorCode::kInternal, "virtio functions need the machine's DMA memory");
  }
  if (slot == 0 || slot >= 32 || virtio_function_at(slot) != nullptr) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("PCI slot {:02x} is not free for a virtio device", slot));
  }
  auto function =
      std::make_unique<virtio::VirtioPciFunction>(std::move(device), *dma_, apic_bus_);
  // _PRT (acpi/dsdt.cc): INTA of slot S is GSI base + S % 4. The Interrupt Line register
  // says so too, for guests that read it.
  function->set_intx_line(&pci_intx_[slot % 4]->add_source());
  function->config_write(0x3c, 1, pci_gsi_base_ + slot % 4);
  return function;
}

void Machine::insert_virtio_function(uint8_t slot,
                                     std::unique_ptr<virtio::VirtioPciFunction> function) {
  // Slot order, so state names and traffic follow the bus.
  size_t position = 0;
  while (position < virtio_slots_.size() && virtio_slots_[position] < slot) ++position;
  virtio_functions_.insert(virtio_functions_.begin() + static_cast<ptrdiff_t>(position),
                           std::move(function));
  virtio_slots_.insert(virtio_slots_.begin() + static_cast<ptrdiff_t>(position), slot);
}

Result<void> Machine::hot_add_virtio(uint8_t slot, std::unique_ptr<virtio::VirtioDevice> device) {
  if (!(pci_hotplug_->hotplug_units() & (uint64_t{1} << (slot & 31))) || slot >= 32) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("PCI slot {:02x} does not take hotplug", slot));
  }
  auto function = make_virtio_function(slot, std::move(device));
  if (!function) return fail(function.error());
  hw::HotplugController& hotplug = *pci_hotplug_;
  {
    // The bus and the function list change only while no vCPU is inside a device.
    hold_vcpus();
    auto attached = pci_host_->attach(slot, 0, **function);
    if (attached) insert_virtio_function(slot, std::move(*function));
    unhold_vcpus();
    if (!attached) return fail(attached.error());
  }
  hotplug.announce_insert(slot);
  return {};
}

Result<void> Machine::hot_remove_virtio(uint8_t slot, std::chrono::milliseconds timeout) {
  if (auto released = wait_for_virtio_release(slot, timeout); !released) return released;
  remove_virtio_function(slot);
  return {};
}

Result<void> Machine::wait_for_virtio_release(uint8_t slot, std::chrono::milliseconds timeout) {
  if (virtio_function_at(slot) == nullptr) {
    return fail(ErrorCode::kNotFound, fmt::format("PCI slot {:02x} holds no virtio device", slot));
  }
  hw::HotplugController& hotplug = *pci_hotplug_;
  hotplug.request_removal(slot);
  if (!hotplug.wait_for_eject(slot, timeout) && hotplug.cancel_removal(slot)) {
    return fail(ErrorCode::kIo,
                fmt::format("the guest did not release PCI slot {:02x} within {} ms (no ACPI "
                            "PCI hotplug support, or the device is in use); it stays attached",
                            slot, timeout.count()));
  }
  return {};
}

void Machine::remove_virtio_function(uint8_t slot) {
  std::unique_ptr<virtio::VirtioPciFunction> removed;
  hold_vcpus();
  for (size_t index = 0; index < virtio_slots_.size(); ++index) {
    if (virtio_slots_[index] != slot) continue;
    removed = std::move(virtio_functions_[index]);
    if (&removed->device() == tablet_) tablet_ = nullptr;
    virtio_functions_.erase(virtio_functions_.begin() + static_cast<ptrdiff_t>(index));
    virtio_slots_.erase(virtio_slots_.begin() + static_cast<ptrdiff_t>(index));
    break;
  }
  (void)pci_host_->detach(slot, 0);
  if (removed) {
    // Its requests finish and its threads stop before its interrupt line and BARs go.
    removed->reset();
    hw::IrqLine* line = removed->intx_line();
    removed->set_intx_line(nullptr);
    if (line != nullptr) pci_intx_[slot % 4]->release_source(*line);
    removed.reset();
  }
  unhold_vcpus();
}

uint32_t Machine::present_vcpus() const {
  if (!cpu_hotplug_) return vcpu_count();
  return static_cast<uint32_t>(std::popcount(cpu_hotplug_->present()));
}

Result<void> Machine::hot_add_vcpu(uint32_t index) {
  if (!cpu_hotplug_) {
    return fail(ErrorCode::kInvalidArgument,
                "the VM was created without vCPU headroom: give it --cpus N,max=M");
  }
  if (index >= vcpu_count()) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("vCPU {} is past the VM's maximum of {}", index, vcpu_count()));
  }
  if (cpu_hotplug_->present() & (uint64_t{1} << index)) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("vCPU {} is present already", index));
  }
  cpu_hotplug_->announce_insert(index);
  return {};
}

Result<void> Machine::hot_remove_vcpu(uint32_t index, std::chrono::milliseconds timeout) {
  if (!cpu_hotplug_) {
    return fail(ErrorCode::kInvalidArgument,
                "the VM was created without vCPU headroom: give it --cpus N,max=M");
  }
  if (index == 0 || index >= vcpu_count() || !(cpu_hotplug_->present() & (uint64_t{1} << index))) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("vCPU {} is not a present vCPU that can be removed", index));
  }
  cpu_hotplug_->request_removal(index);
  if (!cpu_hotplug_->wait_for_eject(index, timeout) && cpu_hotplug_->cancel_removal(index)) {
    return fail(ErrorCode::kIo,
                fmt::format("the guest did not offline and eject vCPU {} within {} ms (no ACPI "
                            "CPU hotplug support, or it refused); it stays",
                            index, timeout.count()));
  }
  return {};
}

Result<void> Machine::set_memory_size(uint64_t bytes) {
  if (virtio_mem_ == nullptr) {
    return fail(ErrorCode::kInvalidArgument,
                "the VM was created without memory headroom: give it --memory SIZE,max=MAX");
  }
  if (bytes < layout_.ram_size() || bytes - layout_.ram_size() > virtio_mem_->region_size()) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} MiB is outside the VM's {} MiB to {} MiB", bytes >> 20,
                            layout_.ram_size() >> 20,
                            (layout_.ram_size() + virtio_mem_->region_size()) >> 20));
  }
  return virtio_mem_->set_requested_size(bytes - layout_.ram_size());
}

uint64_t Machine::memory_size() const {
  return layout_.ram_size() + (virtio_mem_ ? virtio_mem_->plugged_size() : 0);
}

void Machine::quiesce() {
  {
    std::lock_guard lock(timer_mutex_);
    if (quiesced_) return;
    quiesced_ = true;
  }
  // vCPUs first: with none running, no new request reaches a device and no timer is armed by
  // the guest; then timers, whose callbacks raise interrupts; then the devices' own threads.
  for (auto& thread : vcpu_threads_) thread->set_paused(true);
  for (auto& thread : vcpu_threads_) thread->wait_parked();
  {
    std::unique_lock lock(timer_mutex_);
    timers_frozen_ = true;
    timer_idle_.wait(lock, [this] { return !timers_servicing_; });
  }
  for (auto& function : virtio_functions_) function->device().pause_io();
  // The SATA commands the guest issued before its vCPUs stopped complete now (the AHCI
  // controller saves its registers between commands).
  if (ahci_) ahci_->wait_idle();
}

void Machine::release() {
  {
    std::lock_guard lock(timer_mutex_);
    if (!quiesced_) return;
  }
  for (auto& function : virtio_functions_) function->device().resume_io();
  std::lock_guard lock(timer_mutex_);
  quiesced_ = false;
  timers_frozen_ = false;
  timer_rearmed_ = true;
  timer_wakeup_.notify_all();
  if (!paused_ && !holding_) {
    for (auto& thread : vcpu_threads_) thread->set_paused(false);
  }
}

bool Machine::start_dirty_logging() {
  // A backend whose vCPUs store unseen (KVM) logs in the accelerator, from before the log is
  // on, so no store between the two goes unmarked.
  if (auto started = accelerator_->start_dirty_logging(); !started) {
    log_warn("live migration: {}", started.error().message());
    return false;
  }
  for (auto& vcpu : vcpus_) {
    // Asking each vCPU now also drops write translations made before the log started.
    if (!vcpu->restart_write_logging()) {
      accelerator_->stop_dirty_logging();
      return false;
    }
  }
  memory_.dirty_log().start();
  // Translations made between the request above and start() did not mark their pages: take
  // once more so that every vCPU restarts after the log was on.
  (void)take_dirty_pages();
  return true;
}

void Machine::stop_dirty_logging() {
  memory_.dirty_log().stop();
  accelerator_->stop_dirty_logging();
}

std::vector<uint64_t> Machine::take_dirty_pages() {
  {
    std::lock_guard lock(timer_mutex_);
    holding_ = true;
    for (auto& thread : vcpu_threads_) thread->set_paused(true);
  }
  for (auto& thread : vcpu_threads_) thread->wait_parked();
  // No vCPU stores now. A page written through a translation made since the last take was
  // marked when the translation was made, so it is in this bitmap and is read after this;
  // the translations go before the vCPUs run again, so later stores mark the next bitmap.
  // What the accelerator logged (KVM's slots) joins the log first; a failure there cannot be
  // told apart from "nothing written", so every page counts as dirty then.
  if (auto collected = accelerator_->collect_dirty_pages(); !collected) {
    log_warn("live migration: {}; sending all of RAM again", collected.error().message());
    for (const RamRegion& region : memory_.regions()) {
      memory_.dirty_log().mark(region.guest_physical, region.size);
    }
  }
  std::vector<uint64_t> dirty = memory_.dirty_log().take();
  for (auto& vcpu : vcpus_) (void)vcpu->restart_write_logging();
  std::lock_guard lock(timer_mutex_);
  holding_ = false;
  if (!paused_ && !quiesced_) {
    for (auto& thread : vcpu_threads_) thread->set_paused(false);
  }
  return dirty;
}

void Machine::set_vcpu_throttle(unsigned percent) {
  for (auto& thread : vcpu_threads_) thread->set_throttle(percent);
}

std::vector<Machine::NamedState> Machine::stateful_devices() {
  std::vector<NamedState> devices;
  for (size_t index = 0; index < apics_.size(); ++index) {
    devices.push_back({fmt::format("lapic{}", index), apics_[index].get()});
  }
  devices.push_back({"ioapic", ioapic_.get()});
  devices.push_back({"pic", pic_.get()});
  devices.push_back({"pit", pit_.get()});
  devices.push_back({"port61", port61_.get()});
  devices.push_back({"rtc", rtc_.get()});
  devices.push_back({"com1", com1_.get()});
  devices.push_back({"com2", com2_.get()});
  devices.push_back({"i8042", i8042_.get()});
  devices.push_back({"port92", port92_.get()});
  devices.push_back({"post-code", post_code_.get()});
  devices.push_back({"debug-exit", debug_exit_.get()});
  devices.push_back({"acpi-pm", acpi_pm_.get()});
  devices.push_back({"reset-control", reset_control_.get()});
  devices.push_back({"hpet", hpet_.get()});
  devices.push_back({"pci-host", pci_host_.get()});
  devices.push_back({"pci-hotplug", pci_hotplug_.get()});
  if (cpu_hotplug_) devices.push_back({"cpu-hotplug", cpu_hotplug_.get()});
  if (shadow_ram_) devices.push_back({"shadow-ram", shadow_ram_.get()});
  if (fw_cfg_) devices.push_back({"fw-cfg", fw_cfg_.get()});
  if (vga_) devices.push_back({"std-vga", vga_.get()});
  if (ahci_) devices.push_back({"ahci", ahci_.get()});
  for (size_t index = 0; index < virtio_functions_.size(); ++index) {
    devices.push_back({fmt::format("pci-00:{:02x}.0-{}", virtio_slots_[index],
                                   virtio_functions_[index]->device().name()),
                       virtio_functions_[index].get()});
  }
  return devices;
}

void Machine::set_a20_enabled(bool enabled) {
  a20_enabled_.store(enabled, std::memory_order_relaxed);
  for (const auto& vcpu : vcpus_) vcpu->set_a20_enabled(enabled);
}

void Machine::kick_vcpus() {
  for (auto& thread : vcpu_threads_) thread->wake();
}

void Machine::service_timers(std::stop_token stop) {
  while (!stop.stop_requested()) {
    {
      std::unique_lock lock(timer_mutex_);
      timer_wakeup_.wait(lock, [&] { return !timers_frozen_ || stop.stop_requested(); });
      if (stop.stop_requested()) return;
      timers_servicing_ = true;
    }
    timers_.run_expired();
    {
      std::lock_guard lock(timer_mutex_);
      timers_servicing_ = false;
    }
    timer_idle_.notify_all();
    const std::optional<uint64_t> next = timers_.next_deadline();
    const uint64_t now = clock_.now_ns();
    uint64_t sleep_ns = kIdleTimerSleepNs;
    if (next) sleep_ns = *next > now ? std::min(*next - now, kIdleTimerSleepNs) : 0;
    std::unique_lock lock(timer_mutex_);
    if (sleep_ns > 0) {
      timer_wakeup_.wait_for(lock, std::chrono::nanoseconds(sleep_ns),
                             [&] { return timer_rearmed_ || stop.stop_requested(); });
    }
    timer_rearmed_ = false;
  }
}

void Machine::stop_threads() {
  // vCPUs first: they are the ones calling into devices and arming timers.
  for (auto& thread : vcpu_threads_) thread->stop();
  if (timer_thread_.joinable()) {
    timer_thread_.request_stop();
    {
      std::lock_guard lock(timer_mutex_);
      timer_rearmed_ = true;
    }
    timer_wakeup_.notify_all();
    timer_thread_.join();
  }
}

MachineStop Machine::run() {
  timers_.set_wakeup([this] {
    {
      std::lock_guard lock(timer_mutex_);
      timer_rearmed_ = true;
    }
    timer_wakeup_.notify_all();
  });
  timer_thread_ = std::jthread([this](std::stop_token stop) { service_timers(std::move(stop)); });
  for (auto& thread : vcpu_threads_) thread->start();
  std::optional<MachineStop> stop;
  while (!stop) stop = stops_.wait_for(std::chrono::seconds(1));
  stop_threads();
  // No guest will eject anything now.
  pci_hotplug_->abort_waits();
  if (cpu_hotplug_) cpu_hotplug_->abort_waits();
  return *stop;
}

}  // namespace lamina::machine
