// The --cpu-model option, on the command line and in a VM definition: the host's model needs
// KVM, which a definition for the built-in CPU cannot have.
#include <gtest/gtest.h>

#include "machine/vm_config.h"
#include "machine/vm_definition.h"

namespace lamina::machine {
namespace {

TEST(CpuModelOptionTest, ParsesTheModelsAndNamesTheOptionOnABadOne) {
  EXPECT_EQ(parse_cpu_model("lamina").value(), CpuModel::kLamina);
  EXPECT_EQ(parse_cpu_model("lamina-kvm").value(), CpuModel::kLaminaKvm);
  EXPECT_EQ(parse_cpu_model("host").value(), CpuModel::kHost);
  const auto bad = parse_cpu_model("max");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("--cpu-model"), std::string::npos);
}

TEST(CpuModelOptionTest, DefinitionCarriesTheModel) {
  auto config = vm_config_from_definition(nlohmann::json{{"accel", "kvm"}, {"cpu_model", "host"}},
                                          HostChecks::kNone);
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_EQ(config->cpu_model, CpuModel::kHost);
  config = vm_config_from_definition(nlohmann::json::object(), HostChecks::kNone);
  ASSERT_TRUE(config);
  EXPECT_EQ(config->cpu_model, CpuModel::kLamina);
  EXPECT_FALSE(vm_config_from_definition(nlohmann::json{{"cpu_model", "max"}}, HostChecks::kNone));
}

TEST(CpuModelOptionTest, TheHostsModelNeedsKvm) {
  const auto config = vm_config_from_definition(
      nlohmann::json{{"accel", "emu"}, {"cpu_model", "host"}}, HostChecks::kNone);
  ASSERT_FALSE(config);
  EXPECT_NE(config.error().message().find("--cpu-model host presents the host's CPU through KVM"),
            std::string::npos)
      << config.error().message();
  EXPECT_TRUE(vm_config_from_definition(nlohmann::json{{"accel", "auto"}, {"cpu_model", "host"}},
                                        HostChecks::kNone));
}

}  // namespace
}  // namespace lamina::machine
