#include "host_execution.h"

#include <signal.h>
#include <setjmp.h>
#include <sys/ucontext.h>

#include <cstring>
#include <optional>
#include <stdexcept>

namespace lamina::cpu::x86::testing {
namespace {

// Context layout the generated prologue/epilogue use.
struct Context {
  uint64_t gpr[16];
  uint64_t rflags;      // 128
  uint64_t host_rsp;    // 136
  uint64_t scratch;     // 144
};

// The signal handler reaches the run in progress through these (signal handlers take no
// user argument; one test thread uses the executor at a time).
sigjmp_buf* active_jump = nullptr;
HostOutcome* active_outcome = nullptr;

void on_signal(int signal_number, siginfo_t*, void* raw_context) {
  // The test code may have set RFLAGS.AC, which the kernel keeps for the handler; with CR0.AM
  // on (as Linux runs), any misaligned access of ours would raise #AC again. Clear it first.
  asm volatile("pushfq; andq $~0x40000, (%%rsp); popfq" ::: "memory", "cc");
  auto* context = static_cast<ucontext_t*>(raw_context);
  const greg_t* g = context->uc_mcontext.gregs;
  RegisterFile& r = active_outcome->registers;
  r.gpr[0] = g[REG_RAX]; r.gpr[1] = g[REG_RCX]; r.gpr[2] = g[REG_RDX]; r.gpr[3] = g[REG_RBX];
  r.gpr[4] = g[REG_RSP]; r.gpr[5] = g[REG_RBP]; r.gpr[6] = g[REG_RSI]; r.gpr[7] = g[REG_RDI];
  r.gpr[8] = g[REG_R8]; r.gpr[9] = g[REG_R9]; r.gpr[10] = g[REG_R10]; r.gpr[11] = g[REG_R11];
  r.gpr[12] = g[REG_R12]; r.gpr[13] = g[REG_R13]; r.gpr[14] = g[REG_R14]; r.gpr[15] = g[REG_R15];
  r.rip = g[REG_RIP];
  r.rflags = g[REG_EFL];
  active_outcome->signal = signal_number;
  active_outcome->trap_number = static_cast<uint64_t>(g[REG_TRAPNO]);
  active_outcome->error_code = static_cast<uint64_t>(g[REG_ERR]);
  active_outcome->fault_address = static_cast<uint64_t>(g[REG_CR2]);
  siglongjmp(*active_jump, 1);
}

class Emitter {
 public:
  explicit Emitter(uint8_t* out) : out_(out) {}
  void bytes(std::initializer_list<uint8_t> values) { for (uint8_t v : values) out_[size_++] = v; }
  void u32(uint32_t value) { for (int i = 0; i < 4; ++i) out_[size_++] = static_cast<uint8_t>(value >> (8 * i)); }
  void u64(uint64_t value) { for (int i = 0; i < 8; ++i) out_[size_++] = static_cast<uint8_t>(value >> (8 * i)); }
  // mov reg, [base + disp32] (load) or mov [base + disp32], reg (store); base is rdi or rax.
  void move(bool load, uint8_t reg, uint8_t base, uint32_t displacement) {
    bytes({static_cast<uint8_t>(0x48 | ((reg & 8) ? 4 : 0)), static_cast<uint8_t>(load ? 0x8b : 0x89),
           static_cast<uint8_t>(0x80 | ((reg & 7) << 3) | base)});
    u32(displacement);
  }
  size_t size() const { return size_; }

 private:
  uint8_t* out_;
  size_t size_ = 0;
};

constexpr size_t kPrologueSpace = 256;

void load_data_selectors(const HostSelectors& selectors) {
  asm volatile("movw %0, %%ds; movw %1, %%es; movw %2, %%gs; movw %3, %%ss"
               :: "r"(selectors.ds), "r"(selectors.es), "r"(selectors.gs), "r"(selectors.ss) : "memory");
}

}  // namespace

HostSelectors read_host_selectors() {
  HostSelectors s;
  asm volatile("movw %%cs, %0; movw %%ss, %1; movw %%ds, %2; movw %%es, %3; movw %%fs, %4; movw %%gs, %5"
               : "=r"(s.cs), "=r"(s.ss), "=r"(s.ds), "=r"(s.es), "=r"(s.fs), "=r"(s.gs));
  return s;
}

std::optional<HostDescriptor> probe_host_descriptor(uint16_t selector) {
  uint32_t access = 0, limit = 0;
  uint8_t visible = 0, has_limit = 0;
  asm volatile("larl %k3, %0; setz %1; lsll %k3, %2; setz %4"
               : "=&r"(access), "=&r"(visible), "=&r"(limit), "+r"(selector), "=&r"(has_limit) :: "cc");
  if (!visible || !has_limit) return std::nullopt;
  return HostDescriptor{access, limit};
}

HostExecutor::HostExecutor(uint8_t* code_page)
    : page_(code_page), alternate_stack_(1 << 16), selectors_(read_host_selectors()) {
  stack_t alternate{};
  alternate.ss_sp = alternate_stack_.data();
  alternate.ss_size = alternate_stack_.size();
  if (sigaltstack(&alternate, nullptr) != 0) throw std::runtime_error("sigaltstack failed");
  struct sigaction action{};
  action.sa_sigaction = &on_signal;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  for (int signal_number : {SIGFPE, SIGSEGV, SIGILL, SIGBUS, SIGTRAP}) sigaction(signal_number, &action, nullptr);
}

HostExecutor::~HostExecutor() {
  for (int signal_number : {SIGFPE, SIGSEGV, SIGILL, SIGBUS, SIGTRAP}) signal(signal_number, SIG_DFL);
  stack_t disable{};
  disable.ss_flags = SS_DISABLE;
  sigaltstack(&disable, nullptr);
}

uint64_t HostExecutor::code_address() const { return reinterpret_cast<uint64_t>(page_) + kPrologueSpace; }

HostOutcome HostExecutor::run(std::span<const uint8_t> code, const RegisterFile& initial) {
  Context context{};
  std::memcpy(context.gpr, initial.gpr, sizeof(context.gpr));
  context.rflags = initial.rflags;

  // Prologue at the page start: save callee-saved registers, load flags and registers.
  Emitter prologue(page_);
  prologue.bytes({0x53, 0x55, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57});
  prologue.move(false, 4, 7, 136);                         // mov [rdi+136], rsp
  prologue.bytes({0xff, 0xb7}); prologue.u32(128);         // push qword [rdi+128]
  prologue.bytes({0x9d});                                  // popfq
  for (uint8_t reg = 1; reg < 16; ++reg)
    if (reg != 7) prologue.move(true, reg, 7, reg * 8);
  prologue.move(true, 0, 7, 0);
  prologue.move(true, 7, 7, 56);
  // Jump to the test code at a fixed offset.
  const int64_t gap = static_cast<int64_t>(kPrologueSpace) - static_cast<int64_t>(prologue.size()) - 5;
  prologue.bytes({0xe9});
  prologue.u32(static_cast<uint32_t>(gap));

  uint8_t* test = page_ + kPrologueSpace;
  std::memcpy(test, code.data(), code.size());
  Emitter epilogue(test + code.size());
  const uint64_t context_address = reinterpret_cast<uint64_t>(&context);
  epilogue.bytes({0x48, 0xa3}); epilogue.u64(context_address + 144);  // movabs [scratch], rax
  epilogue.bytes({0x48, 0xb8}); epilogue.u64(context_address);        // movabs rax, context
  for (uint8_t reg = 1; reg < 16; ++reg) epilogue.move(false, reg, 0, reg * 8);
  epilogue.move(true, 4, 0, 136);                                      // back to the host stack
  epilogue.bytes({0x9c, 0x59});                                        // pushfq; pop rcx
  epilogue.bytes({0x68, 0x02, 0x02, 0x00, 0x00, 0x9d});                // push 0x202; popfq (AC off)
  epilogue.move(false, 1, 0, 128);
  epilogue.move(true, 1, 0, 144);
  epilogue.move(false, 1, 0, 0);
  epilogue.bytes({0xfc});                                              // cld for the C++ side
  epilogue.bytes({0x41, 0x5f, 0x41, 0x5e, 0x41, 0x5d, 0x41, 0x5c, 0x5d, 0x5b, 0xc3});

  HostOutcome outcome;
  sigjmp_buf jump;
  active_jump = &jump;
  active_outcome = &outcome;
  if (sigsetjmp(jump, 1) == 0) {
    using Entry = void (*)(Context*);
    reinterpret_cast<Entry>(reinterpret_cast<uintptr_t>(page_))(&context);
    std::memcpy(outcome.registers.gpr, context.gpr, sizeof(context.gpr));
    outcome.registers.rflags = context.rflags;
    outcome.registers.rip = reinterpret_cast<uint64_t>(test) + code.size();
  }
  active_jump = nullptr;
  active_outcome = nullptr;
  load_data_selectors(selectors_);
  return outcome;
}

}  // namespace lamina::cpu::x86::testing
