#pragma once
// The "cpu_model" section of a machine state (format 1.2): the CPU model the guest was started
// with, as vCPU 0's CPUID at reset (accel::PresentedCpu: Lamina's or the host's model, then each
// leaf), and the check a restoring machine makes against it. A guest reads CPUID once and then
// uses what it found, so the destination of a migration or a checkpoint must present the same
// model:
//   - the same kind (a `host`-model guest runs only on KVM with `--cpu-model host`);
//   - every feature bit the guest saw (kFeatureWords): a missing one is an instruction that
//     would fault. The destination may have more (a KVM host that lacked a feature started the
//     guest without it; the built-in CPU then still has it, and the guest does not look);
//   - every other register equal (vendor, signature, brand, topology, address sizes, caches),
//     except the timing leaf's TSC rate, which is the host's on KVM (no TSC scaling).
//
// Stateless functions; thread-safety: the values'.

#include "accel/accelerator.h"
#include "base/error.h"
#include "base/state_stream.h"

namespace lamina::migration {

void save_cpu_model(StateWriter& writer, const accel::PresentedCpu& cpu);
// Reads what save_cpu_model wrote (at most kMaxCpuidLeaves leaves).
inline constexpr uint32_t kMaxCpuidLeaves = 256;
[[nodiscard]] Result<accel::PresentedCpu> load_cpu_model(StateReader& reader);

// kInvalidArgument naming the first difference and what to do about it when `here` cannot run
// the guest that saw `saved`.
[[nodiscard]] Result<void> check_cpu_model(const accel::PresentedCpu& saved,
                                           const accel::PresentedCpu& here);

}  // namespace lamina::migration
