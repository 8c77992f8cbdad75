// The `emu` accelerator: each Vcpu is a cpu::x86::Cpu.
#include <atomic>

#include "accel/accelerator.h"
#include "cpu/x86/cpu.h"

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

class EmuVcpu : public Vcpu {
 public:
  EmuVcpu(GuestMemory& memory, cpu::x86::CpuEnvironment& environment, bool bootstrap)
      : cpu_(memory, environment) {
    // Application processors wait for INIT-SIPI-SIPI (MP spec B.4).
    if (!bootstrap) cpu_.post(cpu::x86::request::kInit);
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
  void invalidate_code(uint64_t physical, uint64_t length) override { cpu_.invalidate_code(physical, length); }

 private:
  Cpu cpu_;
};

class EmuAccelerator : public Accelerator {
 public:
  explicit EmuAccelerator(GuestMemory& memory) : memory_(memory) {}
  std::string_view name() const override { return "emu"; }
  Result<std::unique_ptr<Vcpu>> create_vcpu(uint32_t index, cpu::x86::CpuEnvironment& environment) override {
    return std::unique_ptr<Vcpu>(std::make_unique<EmuVcpu>(memory_, environment, index == 0));
  }

 private:
  GuestMemory& memory_;
};

}  // namespace

std::unique_ptr<Accelerator> create_emu_accelerator(GuestMemory& memory) {
  return std::make_unique<EmuAccelerator>(memory);
}

}  // namespace lamina::accel
