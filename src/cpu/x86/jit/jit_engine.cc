#include "cpu/x86/jit/jit_engine.h"

#include <utility>

#include "cpu/x86/jit/translator.h"

namespace lamina::cpu::x86::jit {

Result<std::unique_ptr<JitEngine>> JitEngine::create(CpuCore& core, size_t cache_bytes) {
  auto cache = CodeCache::create(cache_bytes);
  if (!cache) return fail(cache.error());
  return std::unique_ptr<JitEngine>(new JitEngine(core, std::move(*cache)));
}

JitEngine::JitEngine(CpuCore& core, std::unique_ptr<CodeCache> cache)
    : core_(core), cache_(std::move(cache)), translator_(std::make_unique<Translator>(core, record_)) {}

JitEngine::~JitEngine() = default;

const std::byte* JitEngine::code_for(Block& block) {
  if (block.code != nullptr && block.code_epoch == cache_->epoch()) return block.code;
  block.code = nullptr;
  const std::span<const std::byte> code = translator_->translate(block);
  if (code.empty()) return nullptr;
  const std::byte* installed = cache_->install(code);
  if (installed == nullptr) {
    // Full: drop every translation (their blocks see the new epoch) and start again.
    cache_->flush();
    installed = cache_->install(code);
    if (installed == nullptr) return nullptr;
  }
  ++translations_;
  block.code = installed;
  block.code_epoch = cache_->epoch();
  return installed;
}

BlockRun JitEngine::run(Block& block, bool& translated) {
  const std::byte* code = code_for(block);
  translated = code != nullptr;
  if (!translated) return {};
  const auto function = reinterpret_cast<Translator::Code>(const_cast<std::byte*>(code));
  const uint32_t result = function(&core_);
  return BlockRun{result & ~Translator::kFaulted, (result & Translator::kFaulted) != 0};
}

void JitEngine::rethrow_exception() {
  if (record_.other) {
    std::exception_ptr other = std::exchange(record_.other, nullptr);
    record_.fault.reset();
    std::rethrow_exception(other);
  }
  const GuestFault fault = *record_.fault;
  record_.fault.reset();
  throw fault;
}

}  // namespace lamina::cpu::x86::jit
