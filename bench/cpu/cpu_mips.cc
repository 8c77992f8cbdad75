// Measures guest MIPS of the built-in CPU on integer loops in 64-bit mode: a register-only
// ALU loop, a load/store loop over a 64 KiB array, a call/return loop, a call of a function
// with a prologue and an epilogue, a loop with one handler
// call and its inlined twin; plus the real-mode
// ALU loop that compare_qemu.sh also runs under QEMU TCG. Prints one line per workload and
// engine (interp: the interpreter, jit: translated code), so one run compares them.
// Usage: lamina_cpu_bench [million-instructions-per-workload] [interp|jit|both]
//        lamina_cpu_bench --write-bios FILE ITERATIONS   (the firmware image for QEMU)
#include <fmt/format.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <cstring>
#include <vector>

#include "base/guest_memory.h"
#include "cpu/x86/cpu.h"

namespace {

using namespace lamina;
using namespace lamina::cpu::x86;

class QuietEnvironment : public CpuEnvironment {
 public:
  uint32_t io_read(uint16_t, uint8_t) override { return ~0u; }
  void io_write(uint16_t, uint8_t, uint32_t) override {}
  uint64_t mmio_read(uint64_t, uint8_t) override { return ~uint64_t{0}; }
  void mmio_write(uint64_t, uint8_t, uint64_t) override {}
  bool interrupt_pending() override { return false; }
  uint8_t acknowledge_interrupt() override { return 0; }
  uint64_t read_tsc() override { return 0; }
};

constexpr uint64_t kPml4 = 0x1000, kPdpt = 0x2000, kPd = 0x3000, kCode = 0x100000, kData = 0x200000;

void store64(GuestMemory& memory, uint64_t address, uint64_t value) {
  std::memcpy(memory.host_pointer(address, 8), &value, 8);
}

// 64-bit mode, CPL 0, the first 1 GiB identity mapped with 2 MiB pages.
void enter_long_mode(GuestMemory& memory, Cpu& cpu) {
  store64(memory, kPml4, kPdpt | 3);
  store64(memory, kPdpt, kPd | 3);
  for (uint64_t i = 0; i < 512; ++i) store64(memory, kPd + i * 8, (i << 21) | 0x83);
  CpuState& s = cpu.state();
  s.cr0 = cr0::kPe | cr0::kPg | cr0::kEt | cr0::kNe | cr0::kWp;
  s.cr4 = cr4::kPae;
  s.cr3 = kPml4;
  s.msr.efer = efer::kLme | efer::kLma;
  s.segment[kCs] = SegmentCache{8, 0, 0xffffffff, 0xa09b};
  for (uint8_t segment : {kEs, kSs, kDs, kFs, kGs}) s.segment[segment] = SegmentCache{16, 0, 0xffffffff, 0xc093};
  s.gpr[kRsp] = 0x80000;
  cpu.state_changed();
}

struct Workload {
  const char* name;
  std::vector<uint8_t> code;
  uint64_t instructions_per_iteration;
};

std::vector<Workload> workloads() {
  return {
      // loop: add rax,rbx; xor rdx,rax; lea rbx,[rbx+rdx*2+1]; imul rsi,rax; shr rdi,3;
      //       or rdi,rsi; dec ecx; jnz loop; then HLT
      {"alu", {0x48, 0x01, 0xd8, 0x48, 0x31, 0xc2, 0x48, 0x8d, 0x5c, 0x53, 0x01, 0x48, 0x0f, 0xaf,
               0xf0, 0x48, 0xc1, 0xef, 0x03, 0x48, 0x09, 0xf7, 0xff, 0xc9, 0x75, 0xe6, 0xf4},
       8},
      // loop: mov eax,ecx; and eax,0x1fff; mov rdx,[r8+rax*8]; add rdx,rcx; mov [r8+rax*8],rdx;
      //       add r9,rdx; dec ecx; jnz loop
      {"memory", {0x89, 0xc8, 0x25, 0xff, 0x1f, 0x00, 0x00, 0x49, 0x8b, 0x14, 0xc0, 0x48, 0x01, 0xca,
                  0x49, 0x89, 0x14, 0xc0, 0x49, 0x01, 0xd1, 0xff, 0xc9, 0x75, 0xe7, 0xf4},
       7},
      // loop: call f; dec ecx; jnz loop; hlt; f: add rax,1; ret
      {"call", {0xe8, 0x06, 0x00, 0x00, 0x00, 0xff, 0xc9, 0x75, 0xf7, 0xf4, 0x48, 0x83, 0xc0, 0x01, 0xc3}, 5},
      // A compiler's prologue and epilogue (the JIT's fused stack runs):
      // loop: call f; dec ecx; jnz loop; hlt; f: push rbx, rbp, r12-r15; mov rax,rdi;
      //       pop r15-r12, rbp, rbx; ret
      {"prologue", {0xe8, 0x05, 0x00, 0x00, 0x00, 0xff, 0xc9, 0x75, 0xf7, 0xf4,
                    0x53, 0x55, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57, 0x48, 0x89, 0xf8,
                    0x41, 0x5f, 0x41, 0x5e, 0x41, 0x5d, 0x41, 0x5c, 0x5d, 0x5b, 0xc3},
       17},
      // What one handler call costs translated code (the stub, lamina_jit_call_handler, the
      // handler and the heavier exit of a block that called one): the same three-instruction
      // loop with an inlined ADD ("inline") and with CLD, which always runs its handler.
      // loop: add rax,1 / cld; dec ecx; jnz loop; hlt
      {"inline", {0x48, 0x83, 0xc0, 0x01, 0xff, 0xc9, 0x75, 0xf8, 0xf4}, 3},
      {"handler", {0xfc, 0xff, 0xc9, 0x75, 0xfb, 0xf4}, 3},
  };
}

// A 64 KiB firmware image: at F000:0000 a real-mode loop of 8 instructions (32-bit ALU work
// with operand-size prefixes) run `iterations` times, then OUT to port 0xf4 (QEMU's
// isa-debug-exit) and HLT; the reset vector jumps there.
std::vector<uint8_t> real_mode_image(uint32_t iterations) {
  std::vector<uint8_t> image(0x10000, 0xf4);
  const uint8_t code[] = {
      0x66, 0xb9, static_cast<uint8_t>(iterations), static_cast<uint8_t>(iterations >> 8),
      static_cast<uint8_t>(iterations >> 16), static_cast<uint8_t>(iterations >> 24),  // mov ecx, n
      0x66, 0x01, 0xd8,                    // loop: add eax, ebx
      0x66, 0x31, 0xc2,                    // xor edx, eax
      0x67, 0x66, 0x8d, 0x5c, 0x53, 0x01,  // lea ebx, [ebx+edx*2+1]
      0x66, 0x0f, 0xaf, 0xf0,              // imul esi, eax
      0x66, 0xc1, 0xef, 0x03,              // shr edi, 3
      0x66, 0x09, 0xf7,                    // or edi, esi
      0x66, 0x49,                          // dec ecx
      0x75, 0xe5,                          // jnz loop
      0xb0, 0x01, 0xe6, 0xf4, 0xf4,        // mov al, 1; out 0xf4, al; hlt
  };
  std::memcpy(image.data(), code, sizeof(code));
  const uint8_t reset[] = {0xea, 0x00, 0x00, 0x00, 0xf0};  // jmp far F000:0000
  std::memcpy(image.data() + 0xfff0, reset, sizeof(reset));
  return image;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string_view(argv[1]) == "--write-bios") {
    const auto image = real_mode_image(static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10)));
    std::FILE* file = std::fopen(argv[2], "wb");
    if (file == nullptr || std::fwrite(image.data(), 1, image.size(), file) != image.size()) return 1;
    return std::fclose(file) == 0 ? 0 : 1;
  }
  const uint64_t millions = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 200;
  const std::string_view which = argc > 2 ? argv[2] : "both";
  std::vector<CpuEngine> engines;
  if (which != "jit") engines.push_back(CpuEngine::kInterpreter);
  if (which != "interp") engines.push_back(CpuEngine::kJit);
  auto memory = GuestMemory::create({RamRegion{0, 64 << 20}});
  if (!memory) {
    fmt::print(stderr, "{}\n", memory.error().message());
    return 1;
  }
  QuietEnvironment environment;
  for (const CpuEngine engine : engines) {
  CpuConfiguration configuration;
  configuration.engine = engine;
  const char* engine_name = engine == CpuEngine::kJit ? "jit" : "interp";
  for (const Workload& workload : workloads()) {
    Cpu cpu(*memory, environment, configuration);
    enter_long_mode(*memory, cpu);
    std::memcpy(memory->host_pointer(kCode, workload.code.size()), workload.code.data(), workload.code.size());
    cpu.invalidate_code(kCode, workload.code.size());
    const uint64_t iterations = millions * 1000000 / workload.instructions_per_iteration;
    CpuState& s = cpu.state();
    s.rip = kCode;
    s.gpr[kRcx] = iterations & 0xffffffff;
    s.gpr[kR8] = kData;
    // Thread CPU time as well as wall time: the build machines are shared.
    timespec cpu_start{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu_start);
    const auto start = std::chrono::steady_clock::now();
    uint64_t retired = 0;
    for (;;) {
      const CpuExit exit = cpu.run(100'000'000);
      retired += exit.instructions;
      if (exit.kind != CpuExit::Kind::kBudgetExhausted) break;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    timespec cpu_end{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu_end);
    const double cpu_seconds = static_cast<double>(cpu_end.tv_sec - cpu_start.tv_sec) +
                               static_cast<double>(cpu_end.tv_nsec - cpu_start.tv_nsec) * 1e-9;
    fmt::print("{:8} {:6} {:12} guest instructions: {:.1f} MIPS wall ({:.3f} s), {:.1f} MIPS per CPU second\n",
               workload.name, engine_name, retired, retired / seconds / 1e6, seconds, retired / cpu_seconds / 1e6);
  }
  {
    // The QEMU comparison loop, from the same firmware image, in real mode from RESET.
    const uint32_t iterations = static_cast<uint32_t>(millions * 1000000 / 8);
    const auto image = real_mode_image(iterations);
    std::memcpy(memory->host_pointer(0xf0000, image.size()), image.data(), image.size());
    Cpu cpu(*memory, environment, configuration);
    cpu.state().segment[kCs] = SegmentCache{0xf000, 0xf0000, 0xffff, 0x9b};
    cpu.state().rip = 0xfff0;
    cpu.state_changed();
    timespec cpu_start{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu_start);
    const auto start = std::chrono::steady_clock::now();
    uint64_t retired = 0;
    for (;;) {
      const CpuExit exit = cpu.run(100'000'000);
      retired += exit.instructions;
      if (exit.kind != CpuExit::Kind::kBudgetExhausted) break;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    timespec cpu_end{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu_end);
    const double cpu_seconds = static_cast<double>(cpu_end.tv_sec - cpu_start.tv_sec) +
                               static_cast<double>(cpu_end.tv_nsec - cpu_start.tv_nsec) * 1e-9;
    fmt::print("realmode {:6} {:12} guest instructions: {:.1f} MIPS wall ({:.3f} s), {:.1f} MIPS per CPU second\n",
               engine_name, retired, retired / seconds / 1e6, seconds, retired / cpu_seconds / 1e6);
  }
  }
  return 0;
}
