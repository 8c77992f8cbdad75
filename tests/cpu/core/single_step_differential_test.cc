// Single step against the host CPU: the same 64-bit user code runs natively with EFLAGS.TF,
// each #DB reaching a SIGTRAP handler that records RIP, and on the built-in CPU at CPL 3,
// where a #DB handler records the pushed RIP. The trap addresses, as offsets into the code,
// must be the same list: POPF setting TF (no trap after it), ordinary instructions, MOV SS
// (the trap held for one instruction), REP STOSB (a trap per iteration) and the POPF that
// clears TF (still a trap).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "long_mode_fixture.h"
#include "test_machine.h"

namespace lamina::cpu::x86::testing {
namespace {

// The code under test, without its last instruction (RET on the host, HLT in the emulator).
// Its scratch buffer for REP STOSB is at offset 0x800 of the same page.
std::vector<uint8_t> stepped_code() {
  return {
      0x9c, 0x48, 0x81, 0x0c, 0x24, 0x00, 0x01, 0x00, 0x00, 0x9d,  // pushfq; or [rsp], TF; popfq
      0x90,                                                        // nop
      0xb8, 0x01, 0x00, 0x00, 0x00,                                // mov eax, 1
      0x8c, 0xd0,                                                  // mov eax, ss
      0x8e, 0xd0,                                                  // mov ss, eax (held)
      0x90,                                                        // nop
      0x48, 0x8d, 0x3d, 0xe4, 0x07, 0x00, 0x00,                    // lea rdi, [rip + 0x7e4]
      0xb9, 0x03, 0x00, 0x00, 0x00,                                // mov ecx, 3
      0xb0, 0x55,                                                  // mov al, 0x55
      0xf3, 0xaa,                                                  // rep stosb
      0x9c, 0x48, 0x81, 0x24, 0x24, 0xff, 0xfe, 0xff, 0xff, 0x9d,  // pushfq; and [rsp], ~TF; popfq
  };
}

// The SIGTRAP handler's record: static storage, written only by the handler.
std::array<uint64_t, 64> g_host_traps{};
std::atomic<size_t> g_host_trap_count{0};  // lock-free, so usable in the handler
uint64_t g_host_code = 0;

void on_trap(int, siginfo_t*, void* context) {
  const auto* user = static_cast<const ucontext_t*>(context);
  const size_t index = g_host_trap_count.fetch_add(1, std::memory_order_relaxed);
  if (index < g_host_traps.size()) {
    g_host_traps[index] = static_cast<uint64_t>(user->uc_mcontext.gregs[REG_RIP]) - g_host_code;
  }
}

std::vector<uint64_t> host_trap_offsets(const std::vector<uint8_t>& body) {
  void* page =
      mmap(nullptr, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) return {};
  std::memcpy(page, body.data(), body.size());
  static_cast<uint8_t*>(page)[body.size()] = 0xc3;  // ret
  struct sigaction action {};
  struct sigaction previous {};
  action.sa_sigaction = &on_trap;
  action.sa_flags = SA_SIGINFO;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTRAP, &action, &previous);
  g_host_code = reinterpret_cast<uint64_t>(page);
  g_host_trap_count.store(0);
  reinterpret_cast<void (*)()>(page)();
  sigaction(SIGTRAP, &previous, nullptr);
  munmap(page, 4096);
  const size_t count = std::min<size_t>(g_host_trap_count.load(), g_host_traps.size());
  return {g_host_traps.begin(), g_host_traps.begin() + static_cast<std::ptrdiff_t>(count)};
}

class SingleStepDifferential : public LongModeFixture {
 protected:
  static constexpr uint64_t kCount = kData, kRips = kData + 8;

  std::vector<uint64_t> emulator_trap_offsets(std::vector<uint8_t> body) {
    body.push_back(0xf4);  // hlt: #GP at CPL 3, after TF is clear again
    start(3, body);
    // #DB: push rax; push rbx; mov rbx, [kCount]; mov rax, [rsp+16]; mov [rbx*8+kRips], rax;
    // inc qword [kCount]; pop rbx; pop rax; iretq
    std::vector<uint8_t> handler = {0x50, 0x53, 0x48, 0x8b, 0x1c, 0x25};
    append32(handler, kCount);
    for (uint8_t byte : {0x48, 0x8b, 0x44, 0x24, 0x10, 0x48, 0x89, 0x04, 0xdd})
      handler.push_back(byte);
    append32(handler, kRips);
    for (uint8_t byte : {0x48, 0xff, 0x04, 0x25}) handler.push_back(byte);
    append32(handler, kCount);
    for (uint8_t byte : {0x5b, 0x58, 0x48, 0xcf}) handler.push_back(byte);
    machine.write(kHandler, handler);
    machine.set_long_gate(vector::kDebug, kHandler);
    halting_handler(vector::kGeneralProtection, kHandler + 0x200);
    machine.write64(kCount, 0);
    EXPECT_EQ(run().kind, CpuExit::Kind::kHalted);
    EXPECT_EQ(state().rip, kHandler + 0x201) << "ended at the HLT after the code";
    std::vector<uint64_t> offsets;
    for (uint64_t i = 0; i < machine.read64(kCount) && i < 64; ++i)
      offsets.push_back(machine.read64(kRips + 8 * i) - kCode);
    return offsets;
  }

 private:
  static void append32(std::vector<uint8_t>& bytes, uint64_t value) {
    for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<uint8_t>(value >> (8 * i)));
  }
};

TEST_F(SingleStepDifferential, TrapAddressesMatchTheHost) {
  const std::vector<uint8_t> code = stepped_code();
  const std::vector<uint64_t> host = host_trap_offsets(code);
  ASSERT_FALSE(host.empty()) << "the host reported no single-step trap";
  const std::vector<uint64_t> emulated = emulator_trap_offsets(code);
  EXPECT_EQ(emulated, host);
  // What the host confirms, as offsets of the pushed RIP: nothing after the POPF that sets TF
  // (at 9); after NOP, MOV EAX 1, MOV EAX SS; nothing between MOV SS (18) and the NOP after it
  // (20, trap at 21); LEA, MOV ECX, MOV AL (trap at 35); REP STOSB (35) twice on itself, then
  // past it; then PUSHFQ, AND and the POPFQ that clears TF.
  const std::vector<uint64_t> expected = {11, 16, 18, 21, 28, 33, 35, 35, 35, 37, 38, 46, 47};
  EXPECT_EQ(emulated, expected);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
