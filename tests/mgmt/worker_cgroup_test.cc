// Where laminad puts its workers' memory cgroups, from /proc/self/cgroup and /proc/mounts as
// the three kinds of host write them. (The system test checks a real worker's cgroup and limit
// on the host it runs on.)

#include "mgmt/worker_cgroup.h"

#include <gtest/gtest.h>

namespace lamina::mgmt {
namespace {

constexpr const char* kHybridMounts =
    "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"
    "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n"
    "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n"
    "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";

TEST(WorkerCgroupPlace, HybridHostsUseTheV1MemoryHierarchy) {
  // v2 is mounted but holds no memory controller (its cgroup.controllers lacks it).
  auto parent = find_cgroup_parent(
      "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n", kHybridMounts);
  ASSERT_TRUE(parent) << parent.error().message();
  EXPECT_EQ(parent->version, WorkerCgroup::Version::kV1);
  EXPECT_EQ(parent->folder, "/sys/fs/cgroup/memory/process_api/abc/lamina");
}

TEST(WorkerCgroupPlace, CombinedV1ControllersAreRecognised) {
  auto parent = find_cgroup_parent("3:memory,hugetlb:/svc\n",
                                   "cgroup /cg/mem cgroup rw,memory,hugetlb 0 0\n");
  ASSERT_TRUE(parent);
  EXPECT_EQ(parent->folder, "/cg/mem/svc/lamina");
}

TEST(WorkerCgroupPlace, NoMemoryCgroupIsUnsupported) {
  auto none = find_cgroup_parent("1:cpu:/\n", "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), ErrorCode::kUnsupported);
  // A memory line without its hierarchy mounted is no better.
  EXPECT_FALSE(find_cgroup_parent("4:memory:/x\n", "proc /proc proc rw 0 0\n"));
}

TEST(WorkerCgroupOom, CountsFromEitherHierarchy) {
  // cgroup v1 memory.oom_control and v2 memory.events.
  EXPECT_EQ(parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"), 2u);
  EXPECT_EQ(parse_oom_kills("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n"), 1u);
  EXPECT_EQ(parse_oom_kills("oom_kill_disable 0\nunder_oom 0\n"), std::nullopt);
  EXPECT_EQ(parse_oom_kills("oom_kill x\n"), std::nullopt);
  EXPECT_EQ(parse_oom_kills(""), std::nullopt);
}

}  // namespace
}  // namespace lamina::mgmt
