// What `--accel kvm` tells a user when KVM cannot be used: kUnsupported with the cause named.
// LAMINA_KVM_DEVICE points the backend at something that is not a usable KVM device.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "accel/accelerator.h"

namespace lamina::accel {
namespace {

class DeviceOverride {
 public:
  explicit DeviceOverride(const char* path) { ::setenv("LAMINA_KVM_DEVICE", path, 1); }
  ~DeviceOverride() { ::unsetenv("LAMINA_KVM_DEVICE"); }
};

TEST(KvmAvailability, MissingDeviceIsUnsupportedAndSaysSo) {
  const DeviceOverride device("/nonexistent/kvm");
  auto probe = probe_kvm();
  ASSERT_FALSE(probe.has_value());
  EXPECT_EQ(probe.error().code(), ErrorCode::kUnsupported);
  EXPECT_NE(probe.error().message().find("/nonexistent/kvm does not exist"), std::string::npos);
  EXPECT_NE(probe.error().message().find("--accel emu"), std::string::npos);
  auto memory = GuestMemory::create({RamRegion{0, 1 << 20}});
  ASSERT_TRUE(memory.has_value());
  auto accelerator = create_kvm_accelerator(*memory);
  ASSERT_FALSE(accelerator.has_value());
  EXPECT_EQ(accelerator.error().code(), ErrorCode::kUnsupported);
}

TEST(KvmAvailability, SomethingElseIsNotAKvmDevice) {
  const DeviceOverride device("/dev/null");
  auto probe = probe_kvm();
  ASSERT_FALSE(probe.has_value());
  EXPECT_EQ(probe.error().code(), ErrorCode::kUnsupported);
  EXPECT_NE(probe.error().message().find("/dev/null is not a KVM device"), std::string::npos);
}

TEST(KvmAvailability, TooManyVcpusAreRefused) {
  if (auto usable = probe_kvm(); !usable) GTEST_SKIP() << usable.error().message();
  auto memory = GuestMemory::create({RamRegion{0, 1 << 20}});
  ASSERT_TRUE(memory.has_value());
  cpu::x86::CpuFeatures features;
  features.vcpu_count = 256;
  auto accelerator = create_kvm_accelerator(*memory, features);
  ASSERT_FALSE(accelerator.has_value());
  EXPECT_EQ(accelerator.error().code(), ErrorCode::kInvalidArgument);
  features.vcpu_count = 2;
  auto two = create_kvm_accelerator(*memory, features);
  ASSERT_TRUE(two.has_value()) << two.error().message();
  EXPECT_EQ((*two)->name(), "kvm");
}

TEST(KvmAvailability, ADeviceOpenedEarlierServesWhenThePathCannot) {
  // The worker opens /dev/kvm before its sandbox and makes each boot's VM from that fd.
  auto device = open_kvm_device();
  if (!device) GTEST_SKIP() << device.error().message();
  const DeviceOverride unreachable("/nonexistent/kvm");
  auto memory = GuestMemory::create({RamRegion{0, 1 << 20}});
  ASSERT_TRUE(memory.has_value());
  for (int boot = 0; boot < 2; ++boot) {
    auto accelerator = create_kvm_accelerator(*memory, {}, device->get());
    ASSERT_TRUE(accelerator.has_value()) << accelerator.error().message();
    EXPECT_EQ((*accelerator)->name(), "kvm");
  }
  EXPECT_FALSE(create_kvm_accelerator(*memory).has_value());
}

TEST(KvmAvailability, OpeningAMissingDeviceSaysSo) {
  const DeviceOverride device("/nonexistent/kvm");
  auto opened = open_kvm_device();
  ASSERT_FALSE(opened.has_value());
  EXPECT_EQ(opened.error().code(), ErrorCode::kUnsupported);
  EXPECT_NE(opened.error().message().find("/nonexistent/kvm does not exist"), std::string::npos);
}

}  // namespace
}  // namespace lamina::accel
