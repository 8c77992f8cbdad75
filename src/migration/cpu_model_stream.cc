#include "migration/cpu_model_stream.h"

#include <fmt/format.h>

#include <bit>

namespace lamina::migration {
namespace {

constexpr uint32_t kSectionVersion = 1;
constexpr cpu::x86::CpuidRegister kRegisters[] = {
    cpu::x86::CpuidRegister::kEax, cpu::x86::CpuidRegister::kEbx, cpu::x86::CpuidRegister::kEcx,
    cpu::x86::CpuidRegister::kEdx};

std::string bit_list(uint32_t bits) {
  std::string text;
  for (; bits != 0; bits &= bits - 1) {
    text += fmt::format("{}{}", text.empty() ? "" : ",", std::countr_zero(bits));
  }
  return text;
}

std::string leaf_name(const cpu::x86::CpuidEntry& entry, cpu::x86::CpuidRegister name) {
  return fmt::format("CPUID {:#x}.{} {}", entry.leaf, entry.subleaf,
                     cpu::x86::register_name(name));
}

}  // namespace

void save_cpu_model(StateWriter& writer, const accel::PresentedCpu& cpu) {
  writer.begin_section("cpu_model", kSectionVersion);
  writer.put(static_cast<uint8_t>(cpu.kind), static_cast<uint32_t>(cpu.leaves.size()));
  for (const cpu::x86::CpuidEntry& entry : cpu.leaves) {
    writer.put(entry.leaf, entry.subleaf, entry.indexed, entry.value.eax, entry.value.ebx,
               entry.value.ecx, entry.value.edx);
  }
  writer.end_section();
}

Result<accel::PresentedCpu> load_cpu_model(StateReader& reader) {
  auto version = reader.begin_section("cpu_model");
  if (!version) return fail(version.error().with_context("machine state"));
  if (*version != kSectionVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("machine state: cpu_model section version {} is not known", *version));
  }
  uint8_t kind = 0;
  uint32_t count = 0;
  if (auto got = reader.get(kind, count); !got) {
    return fail(got.error().with_context("machine state"));
  }
  if (kind > static_cast<uint8_t>(accel::CpuModelKind::kHost) || count > kMaxCpuidLeaves) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("machine state: CPU model kind {} with {} leaves", kind, count));
  }
  accel::PresentedCpu cpu;
  cpu.kind = static_cast<accel::CpuModelKind>(kind);
  for (uint32_t index = 0; index < count; ++index) {
    cpu::x86::CpuidEntry entry;
    if (auto got = reader.get(entry.leaf, entry.subleaf, entry.indexed, entry.value.eax,
                              entry.value.ebx, entry.value.ecx, entry.value.edx);
        !got) {
      return fail(got.error().with_context("machine state"));
    }
    cpu.leaves.push_back(entry);
  }
  if (auto left = reader.end_section(); !left) {
    return fail(left.error().with_context("machine state"));
  }
  return cpu;
}

Result<void> check_cpu_model(const accel::PresentedCpu& saved, const accel::PresentedCpu& here) {
  using cpu::x86::CpuidRegister;
  if (saved.kind != here.kind) {
    const bool host = saved.kind == accel::CpuModelKind::kHost;
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("the guest was started with {} CPU model (--cpu-model {}) and this "
                            "machine presents {}: {}",
                            host ? "the host's" : "Lamina's", accel::cpu_model_name(saved.kind),
                            host ? "Lamina's" : "the host's",
                            host ? "it can only run on KVM with --cpu-model host (the built-in "
                                   "CPU presents Lamina's model only)"
                                 : "run it with --cpu-model lamina"));
  }
  // Both ways: a leaf only one side has reads as zeros on the other.
  auto compare = [&](const cpu::x86::CpuidEntry& entry, const cpu::x86::CpuidResult& other,
                     bool entry_is_saved) -> Result<void> {
    for (CpuidRegister name : kRegisters) {
      if (entry.leaf == cpu::x86::cpuid_leaf::kHypervisorTiming && name == CpuidRegister::kEax) {
        continue;  // the TSC rate: the host's on KVM
      }
      const uint32_t seen = cpu::x86::register_value(entry_is_saved ? entry.value : other, name);
      const uint32_t present = cpu::x86::register_value(entry_is_saved ? other : entry.value, name);
      if (cpu::x86::is_feature_word(entry.leaf, entry.subleaf, name)) {
        if (const uint32_t missing = seen & ~present; missing != 0) {
          return fail(ErrorCode::kInvalidArgument,
                      fmt::format("this machine cannot present the CPU the guest was started "
                                  "with: {} bits {} are missing here (the guest may use them)",
                                  leaf_name(entry, name), bit_list(missing)));
        }
      } else if (seen != present) {
        return fail(ErrorCode::kInvalidArgument,
                    fmt::format("this machine cannot present the CPU the guest was started with: "
                                "{} is {:#010x} here, the guest saw {:#010x}",
                                leaf_name(entry, name), present, seen));
      }
    }
    return {};
  };
  for (const cpu::x86::CpuidEntry& entry : saved.leaves) {
    const cpu::x86::CpuidEntry* other = cpu::x86::find_leaf(here.leaves, entry.leaf, entry.subleaf);
    if (auto same = compare(entry, other ? other->value : cpu::x86::CpuidResult{}, true); !same) {
      return same;
    }
  }
  for (const cpu::x86::CpuidEntry& entry : here.leaves) {
    if (cpu::x86::find_leaf(saved.leaves, entry.leaf, entry.subleaf) != nullptr) continue;
    if (auto same = compare(entry, cpu::x86::CpuidResult{}, false); !same) return same;
  }
  return {};
}

}  // namespace lamina::migration
