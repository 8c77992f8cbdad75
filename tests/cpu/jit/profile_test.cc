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

// Runs kRounds of a loop with a handler call (CPUID) and an inlined load on the JIT, to its
// HLT; a profile or perf map the environment asks for is written when the vCPU goes away.
constexpr int kRounds = 37;
void run_cpuid_loop() {
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

std::string read_whole(const std::filesystem::path& path) {
  std::ifstream file(path);
  return std::string((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
}

TEST(JitProfileTest, CountsHandlerCallsPerFormAndSlowPaths) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("lamina_jit_profile_" + std::to_string(::getpid()));
  std::filesystem::remove(path);
  ::setenv("LAMINA_JIT_PROFILE", path.c_str(), 1);
  run_cpuid_loop();
  ::unsetenv("LAMINA_JIT_PROFILE");
  ASSERT_TRUE(std::filesystem::exists(path)) << "no profile written";
  const std::string report = read_whole(path);
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

TEST(JitPerfMapTest, NamesEachTranslationByGuestRipAndKeepsItsFormsAndCode) {
  const std::string pid = std::to_string(::getpid());
  const std::filesystem::path map = "/tmp/perf-" + pid + ".map", blocks = "/tmp/lamina-jit-" + pid + ".blocks";
  std::filesystem::remove(map);
  std::filesystem::remove(blocks);
  ::setenv("LAMINA_JIT_PERF_MAP", "1", 1);
  run_cpuid_loop();
  ::unsetenv("LAMINA_JIT_PERF_MAP");
  const std::string map_text = read_whole(map), blocks_text = read_whole(blocks);
  std::filesystem::remove(map);
  std::filesystem::remove(blocks);
  // perf's format: "START SIZE NAME", hexadecimal, one line per translation, named by the
  // guest RIP of its block (all of them in the program here).
  std::istringstream lines(map_text);
  std::string line;
  size_t translations = 0;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string start, size, name;
    ASSERT_TRUE(fields >> start >> size >> name) << line;
    EXPECT_NE(std::stoull(start, nullptr, 16), 0u) << line;
    EXPECT_NE(std::stoull(size, nullptr, 16), 0u) << line;
    ASSERT_EQ(name.rfind("guest:", 0), 0u) << line;
    const uint64_t rip = std::stoull(name.substr(6), nullptr, 16);
    EXPECT_GE(rip, kCode) << line;
    EXPECT_LT(rip, kCode + 64) << line;
    ++translations;
    // Each has its block in the other file, with the same host address and size.
    EXPECT_NE(blocks_text.find("block " + name + " physical "), std::string::npos) << name;
    EXPECT_NE(blocks_text.find(" host " + start + " size " + size + "\n"), std::string::npos) << line;
  }
  EXPECT_GE(translations, 1u) << map_text;
  // The guest forms of the loop, and host code as hex bytes.
  EXPECT_NE(blocks_text.find("cpuid 32 (1a2, 64-bit)"), std::string::npos) << blocks_text;
  EXPECT_NE(blocks_text.find("mov m64 (8b, 64-bit)"), std::string::npos) << blocks_text;
  // The host code as hex, as many bytes as the map's size: the first block's begins with
  // the prologue's PUSH RBX (53).
  const size_t code = blocks_text.find("\n  code ");
  ASSERT_NE(code, std::string::npos) << blocks_text;
  const size_t end = blocks_text.find('\n', code + 1);
  const std::string hex = blocks_text.substr(code + 8, end - code - 8);
  EXPECT_EQ(hex.substr(0, 2), "53") << hex;
  std::istringstream first(map_text);
  std::string start, size;
  first >> start >> size;
  EXPECT_EQ(hex.size(), 2 * std::stoull(size, nullptr, 16)) << hex;
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
