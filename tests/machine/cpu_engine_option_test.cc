// The --cpu-engine and --code-cache options, on the command line and in a VM definition.
#include <gtest/gtest.h>

#include "machine/vm_config.h"
#include "machine/vm_definition.h"

namespace lamina::machine {
namespace {

TEST(CpuEngineOptionTest, ParsesBothEnginesAndNamesTheOptionOnABadOne) {
  EXPECT_EQ(parse_cpu_engine("jit").value(), CpuEngine::kJit);
  EXPECT_EQ(parse_cpu_engine("interp").value(), CpuEngine::kInterp);
  const auto bad = parse_cpu_engine("tcg");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("--cpu-engine"), std::string::npos);
}

TEST(CpuEngineOptionTest, CodeCacheSizeIsBounded) {
  EXPECT_EQ(parse_code_cache("64M").value(), uint64_t{64} << 20);
  EXPECT_FALSE(parse_code_cache("512K"));
  EXPECT_FALSE(parse_code_cache("2G"));
  EXPECT_FALSE(parse_code_cache("lots"));
}

TEST(CpuEngineOptionTest, DefinitionCarriesTheEngineAndCache) {
  const auto config = vm_config_from_definition(
      nlohmann::json{{"cpu_engine", "jit"}, {"code_cache", "8M"}}, HostChecks::kNone);
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_EQ(config->cpu_engine, CpuEngine::kJit);
  EXPECT_EQ(config->code_cache_bytes, uint64_t{8} << 20);
  EXPECT_FALSE(vm_config_from_definition(nlohmann::json{{"cpu_engine", "fast"}}, HostChecks::kNone));
}

}  // namespace
}  // namespace lamina::machine
