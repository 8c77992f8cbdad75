#include "host_runner.h"

#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <cstring>
#include <stdexcept>

namespace lamina::cpu::x86::test {
namespace {

constexpr size_t kPageSize = 4096;
constexpr int32_t kGprOffset = 512;
constexpr int32_t kFlagsOffset = 512 + 16 * 8;

// A signal handler cannot receive context; the resume point lives in thread-local storage.
thread_local uintptr_t resume_address = 0;
thread_local uintptr_t page_start = 0;
thread_local int caught_signal = 0;

// SIGFPE (#XM, #MF), SIGILL (#UD) and SIGSEGV (#GP) raised by the instruction under test resume
// after it; any other fault gets the default action.
void on_fault(int number, siginfo_t*, void* raw_context) {
  auto* context = static_cast<ucontext_t*>(raw_context);
  auto rip = static_cast<uintptr_t>(context->uc_mcontext.gregs[REG_RIP]);
  if (rip < page_start || rip >= page_start + kPageSize) {
    signal(number, SIG_DFL);
    return;
  }
  caught_signal = number;
  context->uc_mcontext.gregs[REG_RIP] = static_cast<greg_t>(resume_address);
}

void emit(std::vector<uint8_t>& code, std::initializer_list<uint8_t> bytes) {
  code.insert(code.end(), bytes);
}
void emit32(std::vector<uint8_t>& code, int32_t value) {
  for (int i = 0; i < 4; ++i) code.push_back(static_cast<uint8_t>(value >> (8 * i)));
}
// mov reg, [rdi + disp32] (load=true) or mov [rdi + disp32], reg.
void move_gpr(std::vector<uint8_t>& code, unsigned reg, bool load) {
  code.push_back(static_cast<uint8_t>(0x48 | ((reg >> 3) << 2)));
  code.push_back(load ? 0x8b : 0x89);
  code.push_back(static_cast<uint8_t>(0x80 | ((reg & 7) << 3) | 7));
  emit32(code, kGprOffset + static_cast<int32_t>(reg) * 8);
}
bool loaded(unsigned reg) { return reg != 4 && reg != 6 && reg != 7; }

}  // namespace

HostRunner::HostRunner() {
  void* page = mmap(nullptr, kPageSize, PROT_READ | PROT_WRITE | PROT_EXEC,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) throw std::runtime_error("cannot map an executable page");
  page_ = static_cast<uint8_t*>(page);
  struct sigaction action {};
  action.sa_sigaction = on_fault;
  action.sa_flags = SA_SIGINFO;
  sigemptyset(&action.sa_mask);
  for (int number : {SIGFPE, SIGILL, SIGSEGV}) sigaction(number, &action, nullptr);
}

HostRunner::~HostRunner() {
  for (int number : {SIGFPE, SIGILL, SIGSEGV}) signal(number, SIG_DFL);
  munmap(page_, kPageSize);
}

bool HostRunner::run(const std::vector<uint8_t>& instruction, HostMachine& machine,
                     uint8_t* memory) {
  std::vector<uint8_t> code;
  emit(code, {0x53, 0x55, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57});  // push callee-saved
  emit(code, {0x48, 0x81, 0xec});                                            // sub rsp, 520
  emit32(code, 520);
  emit(code, {0x0f, 0xae, 0x04, 0x24});  // fxsave [rsp]: the host's own state
  emit(code, {0x48, 0x0f, 0xae, 0x0f});  // fxrstor64 [rdi]
  for (unsigned reg = 0; reg < 16; ++reg) {
    if (loaded(reg)) move_gpr(code, reg, true);
  }
  emit(code, {0xff, 0xb7});  // push qword [rdi + flags]; popfq
  emit32(code, kFlagsOffset);
  emit(code, {0x9d});
  code.insert(code.end(), instruction.begin(), instruction.end());
  size_t resume = code.size();
  emit(code, {0x9c, 0x8f, 0x87});  // pushfq; pop qword [rdi + flags]
  emit32(code, kFlagsOffset);
  for (unsigned reg = 0; reg < 16; ++reg) {
    if (loaded(reg)) move_gpr(code, reg, false);
  }
  emit(code, {0x48, 0x0f, 0xae, 0x07});  // fxsave64 [rdi]
  emit(code, {0x0f, 0xae, 0x0c, 0x24});  // fxrstor [rsp]
  emit(code, {0x48, 0x81, 0xc4});        // add rsp, 520
  emit32(code, 520);
  emit(code, {0x41, 0x5f, 0x41, 0x5e, 0x41, 0x5d, 0x41, 0x5c, 0x5d, 0x5b, 0xfc, 0xc3});
  if (code.size() > kPageSize) throw std::runtime_error("stub too long");
  std::memcpy(page_, code.data(), code.size());
  resume_address = reinterpret_cast<uintptr_t>(page_ + resume);
  page_start = reinterpret_cast<uintptr_t>(page_);
  caught_signal = 0;
  auto function = reinterpret_cast<void (*)(HostMachine*, uint8_t*)>(page_);
  function(&machine, memory);
  last_signal_ = caught_signal;
  return caught_signal == SIGFPE;
}

void state_to_fxsave(const SimdState& state, uint8_t* image) {
  std::memset(image, 0, 512);
  std::memcpy(image + 0, &state.control, 2);
  std::memcpy(image + 2, &state.status, 2);
  image[4] = state.tag_valid;
  std::memcpy(image + 24, &state.mxcsr, 4);
  for (unsigned i = 0; i < 8; ++i) {
    const X87Register& reg = state.x87[(state.top() + i) & 7];
    std::memcpy(image + 32 + 16 * i, &reg.significand, 8);
    std::memcpy(image + 40 + 16 * i, &reg.sign_exponent, 2);
  }
  for (unsigned i = 0; i < 16; ++i)
    std::memcpy(image + 160 + 16 * i, state.xmm[i].bytes.data(), 16);
}

void fxsave_to_state(const uint8_t* image, SimdState& state) {
  std::memcpy(&state.control, image + 0, 2);
  std::memcpy(&state.status, image + 2, 2);
  state.tag_valid = image[4];
  std::memcpy(&state.mxcsr, image + 24, 4);
  for (unsigned i = 0; i < 8; ++i) {
    X87Register& reg = state.x87[(state.top() + i) & 7];
    std::memcpy(&reg.significand, image + 32 + 16 * i, 8);
    std::memcpy(&reg.sign_exponent, image + 40 + 16 * i, 2);
  }
  for (unsigned i = 0; i < 16; ++i)
    std::memcpy(state.xmm[i].bytes.data(), image + 160 + 16 * i, 16);
}

}  // namespace lamina::cpu::x86::test
