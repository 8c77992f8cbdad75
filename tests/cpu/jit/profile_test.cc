// LAMINA_JIT_PROFILE: translated code counts each handler call per instruction form, and the
// engine writes the forms with their counts when its vCPU goes away.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <xbyak/xbyak.h>

#include "cpu/x86/decoder.h"
#include "cpu/x86/jit/profile.h"
#include "test_machine.h"

namespace lamina::cpu::x86::testing {
namespace {

using namespace Xbyak::util;

constexpr uint64_t kCode = 0x100000, kData = 0x120000, kStackTop = 0x180000;

// The line of `form` in the report, or "".
std::string line_of(const std::string& report, const std::string& form) {
  std::istringstream lines(report);
  for (std::string line; std::getline(lines, line);) {
    if (line.find(form) != std::string::npos) return line;
  }
  return "";
}

TEST(JitProfileTest, CountsHandlerCallsPerFormAndSlowPaths) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("lamina_jit_profile_" + std::to_string(::getpid()));
  std::filesystem::remove(path);
  ::setenv("LAMINA_JIT_PROFILE", path.c_str(), 1);
  constexpr int kRounds = 37;
  {
    Xbyak::CodeGenerator c(4096, Xbyak::DontSetProtectRWE);
    Xbyak::Label loop;
    c.mov(r12d, kRounds);
    c.mov(rsi, kData);
    c.L(loop);
    c.xor_(eax, eax);
    c.cpuid();                  // always a handler call
    c.mov(rdx, qword[rsi]);     // inlined: a TLB miss on its first run takes the slow path
    c.dec(r12d);
    c.jnz(loop);
    c.hlt();
    CpuConfiguration configuration;
    configuration.engine = CpuEngine::kJit;
    TestMachine machine(16 << 20, configuration);
    machine.enter_long_mode(0);
    machine.write(kCode, std::vector<uint8_t>(c.getCode(), c.getCode() + c.getSize()));
    machine.state().rip = kCode;
    machine.state().gpr[kRsp] = kStackTop;
    machine.state().halted = false;
    machine.cpu().run(100'000);
    ASSERT_EQ(machine.state().gpr[12], 0u);
  }
  ::unsetenv("LAMINA_JIT_PROFILE");
  std::ifstream file(path);
  ASSERT_TRUE(file) << "no profile written";
  const std::string report((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::filesystem::remove(path);
  EXPECT_NE(report.find("lamina JIT profile, vCPU 0"), std::string::npos) << report;
  // Every round's CPUID called its handler from translated code.
  const std::string cpuid = line_of(report, "cpuid 32 (1a2, 64-bit)");
  ASSERT_FALSE(cpuid.empty()) << report;
  EXPECT_EQ(std::stoull(cpuid), static_cast<uint64_t>(kRounds)) << cpuid;
  // The load is inlined: it appears only for its slow path (the first TLB miss).
  const std::string load = line_of(report, "mov m64 (8b, 64-bit)");
  ASSERT_FALSE(load.empty()) << report;
  std::istringstream fields(load);
  uint64_t calls = 0, slow = 0;
  double share = 0;
  fields >> calls >> share >> slow;
  EXPECT_EQ(calls, 0u) << load;
  EXPECT_GE(slow, 1u) << load;
  EXPECT_LT(slow, static_cast<uint64_t>(kRounds)) << load;
}

TEST(JitProfileTest, DescribesMnemonicAndOperandForm) {
  const auto describe = [](std::vector<uint8_t> bytes) {
    Instruction in;
    EXPECT_EQ(decode(bytes, CodeMode::k64, in), DecodeStatus::kOk);
    return jit::JitProfile::describe(in);
  };
  EXPECT_EQ(describe({0x48, 0x63, 0xc1}), "movsxd r64 (63, 64-bit)");
  EXPECT_EQ(describe({0x0f, 0x92, 0xc0}), "setb r8 (192, 64-bit)");
  EXPECT_EQ(describe({0x83, 0x10, 0x01}), "adc m32 (83, 64-bit)");
  EXPECT_EQ(describe({0xf3, 0x48, 0xab}), "rep stos 64 (ab, 64-bit)");
  EXPECT_EQ(describe({0xf0, 0x0f, 0xb1, 0x0a}), "lock cmpxchg m32 (1b1, 64-bit)");
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
