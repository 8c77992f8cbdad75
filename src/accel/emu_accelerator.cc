// The `emu` accelerator: each Vcpu is a cpu::x86::Cpu.
#include <algorithm>
#include <atomic>

#include "accel/accelerator.h"
#include "cpu/x86/cpu.h"
#include "cpu/x86/jit/jit_engine.h"

namespace lamina::accel {
namespace {

using cpu::x86::Cpu;
using cpu::x86::CpuExit;

VcpuExit::Kind to_vcpu_exit(CpuExit::Kind kind) {
  switch (kind) {
    case CpuExit::Kind::kBudgetExhausted: return VcpuExit::Kind::kYield;
    case CpuExit::Kind::kHalted: return VcpuExit::Kind::kHalted;
    case CpuExit::Kind::kKicked: return VcpuExit::Kind::kKicked;
    case CpuExit::Kind::kTripleFault: return VcpuExit::Kind::kShutdown;
    case CpuExit::Kind::kWaitForStartup: return VcpuExit::Kind::kWaitForStartup;
  }
  return VcpuExit::Kind::kShutdown;
}

// The VM's code cache bound, shared evenly by every vCPU it may ever have.
uint64_t per_vcpu_cache(const EmuOptions& options, const cpu::x86::CpuidModel& model) {
  const uint64_t vcpus = std::max<uint64_t>(1, model.features().vcpu_count);
  return options.code_cache_bytes / vcpus;
}

class EmuVcpu : public Vcpu {
 public:
  EmuVcpu(GuestMemory& memory, cpu::x86::CpuEnvironment& environment, const cpu::x86::CpuidModel& model,
          uint32_t index, cpu::x86::SharedCodePages& shared_code, const EmuOptions& options)
      : cpu_(memory, environment,
             cpu::x86::CpuConfiguration{&model, index, {}, &shared_code,
                                        options.jit ? cpu::x86::CpuEngine::kJit
                                                    : cpu::x86::CpuEngine::kInterpreter,
                                        per_vcpu_cache(options, model)}) {
    // Application processors wait for INIT-SIPI-SIPI (MP spec B.4): they start in the state
    // an INIT leaves (RESET's registers, waiting for a SIPI), held in CpuState rather than as
    // a pending request, so a machine saved before an AP ever ran records it waiting.
    if (index != 0) cpu_.state().waiting_for_startup = true;
  }

  VcpuExit run(uint64_t budget) override {
    const CpuExit exit = cpu_.run(budget);
    VcpuExit result;
    result.kind = to_vcpu_exit(exit.kind);
    result.reason = exit.reason;
    result.instructions = exit.instructions;
    return result;
  }
  void kick() override { cpu_.post(cpu::x86::request::kKick); }
  void request_interrupt() override {
    cpu_.post(cpu::x86::request::kInterrupt);
  }
  void request_nmi() override { cpu_.post(cpu::x86::request::kNmi); }
  void request_init() override { cpu_.post(cpu::x86::request::kInit); }
  void startup(uint8_t vector) override { cpu_.post_startup(vector); }
  cpu::x86::CpuState state() const override { return cpu_.state(); }
  void set_state(const cpu::x86::CpuState& state) override {
    cpu_.state() = state;
    cpu_.state_changed();
  }
  void restore_state(const cpu::x86::CpuState& state) override {
    cpu_.discard_startup_requests();
    set_state(state);
  }
  void invalidate_code(uint64_t physical, uint64_t length) override { cpu_.invalidate_code(physical, length); }
  void set_a20_enabled(bool enabled) override { cpu_.set_a20_enabled(enabled); }
  CodeCacheStats code_cache_stats() const override {
    const cpu::x86::jit::JitEngine* jit = cpu_.jit();
    if (jit == nullptr) return {};
    return {jit->translations(), jit->cache().flushes(), jit->cache().used(), jit->cache().capacity()};
  }
  // Applied at the next block boundary, before any further store (a parked vCPU: before its
  // first instruction).
  bool restart_write_logging() override {
    cpu_.post(cpu::x86::request::kFlushWrites);
    return true;
  }

 private:
  Cpu cpu_;
};

class EmuAccelerator : public Accelerator {
 public:
  EmuAccelerator(GuestMemory& memory, cpu::x86::CpuidModel model, EmuOptions options)
      : memory_(memory),
        model_(std::move(model)),
        presented_{CpuModelKind::kLamina, cpu::x86::cpuid_table(model_, 0)},
        options_(options),
        shared_code_(end_of_ram(memory)) {}
  std::string_view name() const override { return "emu"; }
  Result<std::unique_ptr<Vcpu>> create_vcpu(uint32_t index, cpu::x86::CpuEnvironment& environment) override {
    if (index >= model_.features().vcpu_count)
      return fail(ErrorCode::kInvalidArgument, "vCPU index beyond the CPU model's vcpu_count");
    return std::unique_ptr<Vcpu>(std::make_unique<EmuVcpu>(memory_, environment, model_, index, shared_code_, options_));
  }
  void guest_memory_written(uint64_t physical, uint64_t length) override {
    if (length == 0) return;
    const uint64_t last = (physical + length - 1) & ~uint64_t{0xfff};
    for (uint64_t page = physical & ~uint64_t{0xfff}; shared_code_.tracked(page); page += 0x1000) {
      shared_code_.note_write(page);
      if (page == last) break;
    }
  }
  const PresentedCpu& presented_cpu() const override { return presented_; }

 private:
  static uint64_t end_of_ram(const GuestMemory& memory) {
    uint64_t end = 0;
    for (const RamRegion& region : memory.regions()) end = std::max(end, region.guest_physical + region.size);
    return end;
  }

  GuestMemory& memory_;
  cpu::x86::CpuidModel model_;
  PresentedCpu presented_;
  EmuOptions options_;
  // Declared after the model and before any vCPU can exist: vCPUs detach from it on destruction,
  // so they must not outlive the accelerator.
  cpu::x86::SharedCodePages shared_code_;
};

}  // namespace

std::string_view cpu_model_name(CpuModelKind kind) {
  return kind == CpuModelKind::kHost ? "host" : "lamina";
}

Result<std::unique_ptr<Accelerator>> create_emu_accelerator(GuestMemory& memory,
                                                            const cpu::x86::CpuFeatures& features,
                                                            EmuOptions options) {
  auto model = cpu::x86::CpuidModel::create(features);
  if (!model) return fail(model.error().with_context("emu accelerator"));
  return std::unique_ptr<Accelerator>(std::make_unique<EmuAccelerator>(memory, std::move(*model), options));
}

}  // namespace lamina::accel
