// Differential tests: random user-mode instruction sequences run on the host CPU and on the
// built-in CPU (64-bit mode, CPL 3, paging mapping the very same virtual addresses) from the
// same registers, flags and memory; registers, defined flags, memory and faults must agree.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <sys/mman.h>

#include <cstring>
#include <random>

#include "host_execution.h"
#include "instruction_generator.h"
#include "test_machine.h"

namespace lamina::cpu::x86::testing {
namespace {

constexpr uint64_t kDataSize = 16384, kStackSize = 16384;
constexpr uint64_t kCodeOffset = 256;
constexpr uint64_t kHandlers = 0x5000, kIstTop = 0x9000;
constexpr uint64_t kGuestCode = 0x200000, kGuestData = 0x210000, kGuestStack = 0x220000;
constexpr uint64_t kArithmetic = 0x8d5, kDirection = 0x400;

uint8_t* map_low(uint64_t size, int protection) {
  void* address = mmap(nullptr, size, protection, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
  if (address == MAP_FAILED) throw std::runtime_error("mmap failed");
  return static_cast<uint8_t*>(address);
}

class Differential {
 public:
  Differential()
      : code_(map_low(4096, PROT_READ | PROT_WRITE | PROT_EXEC)),
        data_(map_low(kDataSize, PROT_READ | PROT_WRITE)),
        stack_(map_low(kStackSize, PROT_READ | PROT_WRITE)),
        host_(code_) {
    machine_.enter_long_mode(3, 1 << 20);
    machine_.map_range(reinterpret_cast<uint64_t>(code_), kGuestCode, 4096);
    machine_.map_range(reinterpret_cast<uint64_t>(data_), kGuestData, kDataSize);
    machine_.map_range(reinterpret_cast<uint64_t>(stack_), kGuestStack, kStackSize);
    // Every vector lands on its own HLT through IST 1 (so the test stack is untouched).
    for (unsigned vector = 0; vector < 32; ++vector) {
      const uint8_t halt[] = {0xf4};
      machine_.write(kHandlers + vector, halt);
      machine_.set_long_gate(static_cast<uint8_t>(vector), kHandlers + vector, 1, 3);
    }
    machine_.write64(TestMachine::kTss + 0x24, kIstTop);
    machine_.write64(TestMachine::kTss + 4, kIstTop);
  }
  ~Differential() {
    munmap(code_, 4096);
    munmap(data_, kDataSize);
    munmap(stack_, kStackSize);
  }

  // Runs one case; returns an empty string when host and emulator agree.
  std::string run_case(std::mt19937_64& random, InstructionClass kind) {
    const int length = 1 + static_cast<int>(random() % 6);
    const uint64_t data = reinterpret_cast<uint64_t>(data_);
    const GeneratedSequence sequence = generate_sequence(random, kind, length, data, kDataSize);

    RegisterFile initial;
    for (uint64_t& value : initial.gpr) {
      switch (random() % 4) {
        case 0: value = random() % 300; break;
        case 1: value = ~uint64_t{0} - random() % 3; break;
        default: value = random(); break;
      }
    }
    initial.gpr[15] = data + kDataSize / 4;
    initial.gpr[4] = reinterpret_cast<uint64_t>(stack_) + kStackSize / 2;
    initial.rflags = 0x202 | (random() & kArithmetic);
    for (uint64_t i = 0; i < kDataSize; i += 8) {
      const uint64_t value = random();
      std::memcpy(data_ + i, &value, 8);
    }
    std::memset(stack_, 0x5a, kStackSize);
    std::memcpy(machine_.memory().host_pointer(kGuestData, kDataSize), data_, kDataSize);
    std::memcpy(machine_.memory().host_pointer(kGuestStack, kStackSize), stack_, kStackSize);

    const HostOutcome host = host_.run(sequence.code, initial);

    std::vector<uint8_t> guest_code(sequence.code);
    guest_code.push_back(0xcc);  // INT3 ends the guest run
    machine_.write(kGuestCode + kCodeOffset, guest_code);
    CpuState& state = machine_.state();
    std::memcpy(state.gpr.data(), initial.gpr, sizeof(initial.gpr));
    state.rip = host_.code_address();
    state.write_rflags(initial.rflags);
    state.halted = false;
    const CpuExit exit = machine_.cpu().run(100000);
    if (exit.kind != CpuExit::Kind::kHalted) return "guest did not stop at a handler: " + exit.reason;
    const uint64_t vector = state.rip - kHandlers - 1;
    const bool error_code = vector == 8 || (vector >= 10 && vector <= 14) || vector == 17;
    const uint64_t frame = state.gpr[4] + (error_code ? 8 : 0);
    RegisterFile guest;
    std::memcpy(guest.gpr, state.gpr.data(), sizeof(guest.gpr));
    guest.rip = machine_.read64(frame);
    guest.rflags = machine_.read64(frame + 16);
    guest.gpr[4] = machine_.read64(frame + 24);

    if (host.signal != 0) ++faulted_cases;
    std::string problems;
    const uint64_t end = host_.code_address() + sequence.code.size();
    if (host.signal == 0) {
      if (vector != 3 || guest.rip != end + 1)
        problems += fmt::format("host ran to the end, guest stopped with vector {} at {:x}; ", vector, guest.rip);
    } else {
      const uint64_t expected_vector = host.signal == SIGFPE ? 0 : host.signal == SIGILL ? 6 : 13;
      if (vector != expected_vector && !(expected_vector == 13 && vector == 14))
        problems += fmt::format("host signal {} but guest vector {}; ", host.signal, vector);
      if (guest.rip != host.registers.rip)
        problems += fmt::format("fault rip host {:x} guest {:x}; ", host.registers.rip, guest.rip);
    }
    for (int i = 0; i < 16; ++i) {
      if (host.registers.gpr[i] != guest.gpr[i])
        problems += fmt::format("r{} host {:x} guest {:x}; ", i, host.registers.gpr[i], guest.gpr[i]);
    }
    const uint64_t mask = (host.signal == 0 ? sequence.defined_flags : 0) | kDirection;
    if ((host.registers.rflags & mask) != (guest.rflags & mask))
      problems += fmt::format("flags host {:x} guest {:x} (compared {:x}); ", host.registers.rflags & mask,
                              guest.rflags & mask, mask);
    if (std::memcmp(data_, machine_.memory().host_pointer(kGuestData, kDataSize), kDataSize) != 0)
      problems += "data memory differs; ";
    if (std::memcmp(stack_, machine_.memory().host_pointer(kGuestStack, kStackSize), kStackSize) != 0)
      problems += "stack memory differs; ";
    if (!problems.empty()) {
      std::string bytes;
      for (uint8_t b : sequence.code) bytes += fmt::format("{:02x} ", b);
      problems += "code: " + bytes;
    }
    return problems;
  }

 public:
  int faulted_cases = 0;

 private:
  uint8_t* code_;
  uint8_t* data_;
  uint8_t* stack_;
  HostExecutor host_;
  TestMachine machine_;
};

// Returns how many cases faulted on the host (and so compared fault delivery).
int run_class(InstructionClass kind, uint64_t seed, int cases) {
  Differential differential;
  std::mt19937_64 random(seed);
  int failures = 0;
  for (int i = 0; i < cases && failures < 10; ++i) {
    const std::string problem = differential.run_case(random, kind);
    if (!problem.empty()) {
      ++failures;
      ADD_FAILURE() << "case " << i << ": " << problem;
    }
  }
  EXPECT_EQ(failures, 0);
  return differential.faulted_cases;
}

TEST(Differential, Alu) { run_class(InstructionClass::kAlu, 1, 4000); }
TEST(Differential, ShiftsAndRotates) { run_class(InstructionClass::kShift, 2, 4000); }
TEST(Differential, MultiplyDivide) {
  // Divide errors must be among the cases, so #DE delivery is compared too.
  EXPECT_GT(run_class(InstructionClass::kMultiplyDivide, 3, 4000), 100);
}
TEST(Differential, BitOperations) { run_class(InstructionClass::kBit, 4, 4000); }
TEST(Differential, MovesConditionalsAndExchanges) { run_class(InstructionClass::kMove, 5, 4000); }
TEST(Differential, StringOperations) { run_class(InstructionClass::kString, 6, 4000); }
TEST(Differential, StackOperations) { run_class(InstructionClass::kStack, 7, 4000); }

}  // namespace
}  // namespace lamina::cpu::x86::testing
