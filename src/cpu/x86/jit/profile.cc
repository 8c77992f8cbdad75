#include "cpu/x86/jit/profile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fmt/format.h>
#include <vector>

namespace lamina::cpu::x86::jit {
namespace {

constexpr const char* kAlu[8] = {"add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"};
constexpr const char* kShift[8] = {"rol", "ror", "rcl", "rcr", "shl", "shr", "sal", "sar"};
constexpr const char* kUnary[8] = {"test", "test", "not", "neg", "mul", "imul", "div", "idiv"};
constexpr const char* kGroup5[8] = {"inc", "dec", "call", "callf", "jmp", "jmpf", "push", "(ff/7)"};
constexpr const char* kCondition[16] = {"o", "no", "b", "ae", "e", "ne", "be", "a",
                                        "s", "ns", "p", "np", "l", "ge", "le", "g"};

// The mnemonic of the forms a kernel and its user space run most (SDM vol. 2, appendix A's
// opcode maps); others print as their opcode.
std::string mnemonic(const Instruction& in) {
  const uint8_t op = in.opcode_byte();
  const uint8_t digit = in.group_index();
  if (in.map() == kMapOneByte) {
    if (op < 0x40 && (op & 7) < 6) return kAlu[op >> 3];
    if (op >= 0x40 && op < 0x50) return op < 0x48 ? "inc" : "dec";
    if (op >= 0x50 && op < 0x58) return "push";
    if (op >= 0x58 && op < 0x60) return "pop";
    if (op >= 0x70 && op < 0x80) return std::string("j") + kCondition[op & 15];
    if (op >= 0x80 && op <= 0x83) return kAlu[digit];
    if (op >= 0x91 && op <= 0x97) return "xchg";
    if (op >= 0xb0 && op <= 0xbf) return "mov";
    if (op == 0xc0 || op == 0xc1 || (op >= 0xd0 && op <= 0xd3)) return kShift[digit];
    if (op == 0xf6 || op == 0xf7) return kUnary[digit];
    if (op == 0xfe) return digit == 0 ? "inc" : digit == 1 ? "dec" : "(fe)";
    if (op == 0xff) return kGroup5[digit];
    switch (op) {
      case 0x63: return "movsxd";
      case 0x68: case 0x6a: return "push";
      case 0x69: case 0x6b: return "imul";
      case 0x6c: case 0x6d: return "ins";
      case 0x6e: case 0x6f: return "outs";
      case 0x84: case 0x85: case 0xa8: case 0xa9: return "test";
      case 0x86: case 0x87: return "xchg";
      case 0x88: case 0x89: case 0x8a: case 0x8b: case 0xa0: case 0xa1: case 0xa2: case 0xa3:
      case 0xc6: case 0xc7: return "mov";
      case 0x8c: case 0x8e: return "mov sreg";
      case 0x8d: return "lea";
      case 0x8f: return "pop";
      case 0x90: return in.rep == 0xf3 ? "pause" : "nop";
      case 0x98: return "cbw/cwde/cdqe";
      case 0x99: return "cwd/cdq/cqo";
      case 0x9c: return "pushf";
      case 0x9d: return "popf";
      case 0x9e: return "sahf";
      case 0x9f: return "lahf";
      case 0xa4: case 0xa5: return "movs";
      case 0xa6: case 0xa7: return "cmps";
      case 0xaa: case 0xab: return "stos";
      case 0xac: case 0xad: return "lods";
      case 0xae: case 0xaf: return "scas";
      case 0xc2: case 0xc3: return "ret";
      case 0xc8: return "enter";
      case 0xc9: return "leave";
      case 0xca: case 0xcb: return "retf";
      case 0xcc: return "int3";
      case 0xcd: return "int";
      case 0xcf: return "iret";
      case 0xe4: case 0xe5: case 0xec: case 0xed: return "in";
      case 0xe6: case 0xe7: case 0xee: case 0xef: return "out";
      case 0xe8: return "call";
      case 0xe9: case 0xeb: return "jmp";
      case 0xf4: return "hlt";
      case 0xf5: return "cmc";
      case 0xf8: return "clc";
      case 0xf9: return "stc";
      case 0xfa: return "cli";
      case 0xfb: return "sti";
      case 0xfc: return "cld";
      case 0xfd: return "std";
      default: break;
    }
  } else if (in.map() == kMap0F) {
    if (op >= 0x40 && op < 0x50) return std::string("cmov") + kCondition[op & 15];
    if (op >= 0x80 && op < 0x90) return std::string("j") + kCondition[op & 15];
    if (op >= 0x90 && op < 0xa0) return std::string("set") + kCondition[op & 15];
    if (op >= 0xc8 && op < 0xd0) return "bswap";
    switch (op) {
      case 0x00: return fmt::format("(0f00/{})", digit);
      case 0x01: return fmt::format("(0f01/{} {:02x})", digit, in.modrm);
      case 0x05: return "syscall";
      case 0x07: return "sysret";
      case 0x09: return "wbinvd";
      case 0x0b: return "ud2";
      case 0x0d: case 0x18: return "prefetch";
      case 0x1f: return "nop";
      case 0x20: case 0x22: return "mov cr";
      case 0x21: case 0x23: return "mov dr";
      case 0x30: return "wrmsr";
      case 0x31: return "rdtsc";
      case 0x32: return "rdmsr";
      case 0xa2: return "cpuid";
      case 0xa3: return "bt";
      case 0xa4: case 0xa5: return "shld";
      case 0xab: return "bts";
      case 0xac: case 0xad: return "shrd";
      case 0xae: return fmt::format("(0fae/{})", digit);
      case 0xaf: return "imul";
      case 0xb0: case 0xb1: return "cmpxchg";
      case 0xb3: return "btr";
      case 0xb6: case 0xb7: return "movzx";
      case 0xba: {
        constexpr const char* kBitTests[4] = {"bt", "bts", "btr", "btc"};
        return digit >= 4 ? kBitTests[digit - 4] : "(0fba)";
      }
      case 0xbb: return "btc";
      case 0xbc: return in.rep == 0xf3 ? "tzcnt" : "bsf";
      case 0xbd: return in.rep == 0xf3 ? "lzcnt" : "bsr";
      case 0xbe: case 0xbf: return "movsx";
      case 0xc0: case 0xc1: return "xadd";
      case 0xc7: return fmt::format("(0fc7/{})", digit);
      default: break;
    }
  }
  return fmt::format("op {:x}", in.opcode);
}

// Byte forms of the one-byte map (the w bit clear) and of SETcc, CMPXCHG/XADD Eb: their
// operand is a byte whatever operand_size says.
bool byte_form(const Instruction& in) {
  const uint8_t op = in.opcode_byte();
  if (in.map() == kMap0F) return (op >= 0x90 && op < 0xa0) || op == 0xb0 || op == 0xc0;
  if (in.map() != kMapOneByte) return false;
  if (op < 0x40) return (op & 7) < 6 && (op & 1) == 0;
  if (op >= 0xb0 && op <= 0xb7) return true;
  switch (op) {
    case 0x80: case 0x82: case 0x84: case 0x86: case 0x88: case 0x8a: case 0xa0: case 0xa2:
    case 0xa4: case 0xa6: case 0xa8: case 0xaa: case 0xac: case 0xae: case 0xc0: case 0xc6:
    case 0xd0: case 0xd2: case 0xf6: case 0xfe: case 0x6c: case 0x6e: case 0xe4: case 0xe6:
    case 0xec: case 0xee:
      return true;
    default: return false;
  }
}

// Opcodes whose ModRM.reg selects the operation (a group, SDM vol. 2 table A-6).
bool group_opcode(const Instruction& in) {
  const uint8_t op = in.opcode_byte();
  if (in.map() == kMap0F) return op <= 0x01 || op == 0x18 || op == 0xae || op == 0xba || op == 0xc7;
  if (in.map() != kMapOneByte) return false;
  return (op >= 0x80 && op <= 0x83) || op == 0x8f || op == 0xc0 || op == 0xc1 || op == 0xc6 ||
         op == 0xc7 || (op >= 0xd0 && op <= 0xd3) || op == 0xf6 || op == 0xf7 || op == 0xfe || op == 0xff;
}

uint64_t key_of(const Instruction& in) {
  const uint64_t digit = in.has_modrm && group_opcode(in) ? in.group_index() : 0;
  return uint64_t{in.opcode} | digit << 16 | uint64_t{in.memory} << 19 | uint64_t{in.operand_size} << 20 |
         uint64_t{in.rep} << 24 | uint64_t{in.lock} << 32 | uint64_t{static_cast<uint8_t>(in.mode)} << 33 |
         uint64_t{in.map() == kMap0F && in.opcode_byte() == 0x01 ? in.modrm : uint8_t{0}} << 40 |
         uint64_t{in.mandatory_prefix} << 48;
}

}  // namespace

std::unique_ptr<JitProfile> JitProfile::from_environment(uint32_t vcpu_index) {
  const char* path = std::getenv("LAMINA_JIT_PROFILE");
  if (path == nullptr || *path == '\0') return nullptr;
  return std::make_unique<JitProfile>(path, vcpu_index);
}

JitProfile::JitProfile(std::string path, uint32_t vcpu_index) : path_(std::move(path)), vcpu_index_(vcpu_index) {}

std::string JitProfile::describe(const Instruction& in) {
  std::string text = mnemonic(in);
  const uint8_t op = in.opcode_byte();
  const bool string = in.map() == kMapOneByte && ((op >= 0xa4 && op <= 0xaf) || (op >= 0x6c && op <= 0x6f));
  if (string && in.rep != 0) text = (in.rep == 0xf3 ? "rep " : "repne ") + text;
  if (in.lock) text = "lock " + text;
  const unsigned bits = (byte_form(in) ? 1 : in.operand_size) * 8;
  if (in.has_modrm) {
    text += fmt::format(" {}{}", in.memory ? "m" : "r", bits);
  } else {
    text += fmt::format(" {}", bits);
  }
  static constexpr const char* kModes[] = {"16-bit", "32-bit", "64-bit"};
  text += fmt::format(" ({:x}, {})", in.opcode, kModes[static_cast<int>(in.mode)]);
  return text;
}

uint64_t* JitProfile::handler_counter(const Instruction& in, bool slow_path) {
  Counts& counts = forms_[key_of(in)];
  if (counts.form.empty()) counts.form = describe(in);
  return slow_path ? &counts.slow_paths : &counts.calls;
}

void JitProfile::note_translation(std::chrono::nanoseconds took, size_t code_bytes) {
  ++translations_;
  translation_nanoseconds_ += static_cast<uint64_t>(took.count());
  code_bytes_ += code_bytes;
}

void JitProfile::write(uint64_t retired, uint64_t epochs) const {
  std::FILE* file = std::fopen(path_.c_str(), "a");
  if (file == nullptr) return;
  std::vector<const Counts*> sorted;
  uint64_t calls = 0, slow = 0;
  for (const auto& [key, counts] : forms_) {
    sorted.push_back(&counts);
    calls += counts.calls;
    slow += counts.slow_paths;
  }
  std::ranges::sort(sorted, [](const Counts* a, const Counts* b) {
    return a->calls + a->slow_paths > b->calls + b->slow_paths;
  });
  const auto share = [retired](uint64_t n) { return retired == 0 ? 0.0 : 100.0 * static_cast<double>(n) / static_cast<double>(retired); };
  std::string text = fmt::format(
      "lamina JIT profile, vCPU {}: {} instructions retired; handler calls {} ({:.2f}%) of forms not inlined, "
      "{} ({:.2f}%) slow paths of inlined forms\n"
      "translations {} in {:.3f} s ({:.1f} us each, {:.1f} KiB code), cache flushes {}, blocks interpreted "
      "before translation {}\n"
      "run loop entries into translated code {}; chain calls into C++ {} (found {}, not found {}, "
      "stopped {}; from stale exits {}); exits patched {} (to global pages {}, within their page {}); "
      "chaining epochs {}\n"
      "{:>12} {:>7} {:>12}  form\n",
      vcpu_index_, retired, calls, share(calls), slow, share(slow), translations_,
      static_cast<double>(translation_nanoseconds_) / 1e9,
      translations_ == 0 ? 0.0 : static_cast<double>(translation_nanoseconds_) / 1e3 / static_cast<double>(translations_),
      static_cast<double>(code_bytes_) / 1024.0, flushes_, interpreted_blocks_, runs_,
      chain_outcomes_[0] + chain_outcomes_[1] + chain_outcomes_[2], chain_outcomes_[0], chain_outcomes_[1],
      chain_outcomes_[2], stale_sites_, patches_[0] + patches_[1] + patches_[2], patches_[1], patches_[2], epochs,
      "calls", "%", "slow paths");
  constexpr size_t kTop = 200;
  for (size_t i = 0; i < sorted.size() && i < kTop; ++i) {
    text += fmt::format("{:>12} {:>7.2f} {:>12}  {}\n", sorted[i]->calls, share(sorted[i]->calls),
                        sorted[i]->slow_paths, sorted[i]->form);
  }
  std::fputs(text.c_str(), file);
  std::fclose(file);
}

}  // namespace lamina::cpu::x86::jit
