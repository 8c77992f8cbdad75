// Value-level pieces of src/net: MAC addresses, the MAC table (with made-up time), switch
// names and paths, the --net option, and the switch protocol's decoders on hostile input.

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fstream>

#include "net/mac_address.h"
#include "net/mac_table.h"
#include "net/network_option.h"
#include "net/switch_paths.h"
#include "net/switch_protocol.h"
#include "net_test_support.h"

namespace lamina::net {
namespace {

using namespace std::chrono_literals;
using testing::mac;

TEST(MacAddress, ParsesAndFormats) {
  auto parsed = MacAddress::parse("52:54:00:AB:cd:0f");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->bytes(), (std::array<uint8_t, 6>{0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f}));
  EXPECT_EQ(parsed->to_string(), "52:54:00:ab:cd:0f");
  EXPECT_TRUE(MacAddress::parse("52-54-00-ab-cd-0f"));
  for (const char* bad : {"", "52:54:00:ab:cd", "52:54:00:ab:cd:0g",
                          "52:54:00:ab:cd:0f:", "525400abcd0f", "52:54:00:ab:cd:0f1"}) {
    auto refused = MacAddress::parse(bad);
    ASSERT_FALSE(refused) << bad;
    EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
  }
}

TEST(MacAddress, GroupBitAndRandomAddresses) {
  EXPECT_TRUE(MacAddress::broadcast().is_group());
  EXPECT_TRUE(MacAddress::parse("01:00:5e:00:00:01")->is_group());  // IPv4 multicast
  EXPECT_FALSE(MacAddress::parse("52:54:00:00:00:01")->is_group());
  MacAddress first = MacAddress::random();
  MacAddress second = MacAddress::random();
  EXPECT_NE(first, second);
  for (const auto& address : {first, second}) {
    EXPECT_FALSE(address.is_group());
    EXPECT_EQ(address.bytes()[0] & 0x02, 0x02) << "locally administered";
  }
}

TEST(MacTable, LearnsMovesAgesAndForgetsPorts) {
  MacTable table(300s, 16);
  auto start = MacTable::Clock::time_point{} + 1000s;
  EXPECT_EQ(table.learn(mac(1), 1, start), MacTable::Learned::kNew);
  EXPECT_EQ(table.learn(mac(1), 1, start + 1s), MacTable::Learned::kRefreshed);
  EXPECT_EQ(table.learn(mac(2), 2, start), MacTable::Learned::kNew);
  EXPECT_EQ(table.lookup(mac(1), start + 2s), 1U);
  EXPECT_EQ(table.learn(mac(1), 3, start + 2s), MacTable::Learned::kMoved);
  EXPECT_EQ(table.lookup(mac(1), start + 3s), 3U);
  EXPECT_EQ(table.lookup(mac(9), start), std::nullopt);
  // mac(2) was last seen at `start`: alive until 300 s later, gone at 300 s.
  EXPECT_EQ(table.lookup(mac(2), start + 299s), 2U);
  EXPECT_EQ(table.lookup(mac(2), start + 300s), std::nullopt);
  EXPECT_EQ(table.entries(start + 300s).size(), 1U);
  EXPECT_EQ(table.expire(start + 300s), 1U);
  EXPECT_EQ(table.size(), 1U);
  EXPECT_EQ(table.forget_port(3), 1U);
  EXPECT_EQ(table.size(), 0U);
}

TEST(MacTable, FullTableRefusesNewAddressesUntilSomeAgeOut) {
  MacTable table(10s, 2);
  auto start = MacTable::Clock::time_point{} + 100s;
  EXPECT_EQ(table.learn(mac(1), 1, start), MacTable::Learned::kNew);
  EXPECT_EQ(table.learn(mac(2), 1, start + 5s), MacTable::Learned::kNew);
  EXPECT_EQ(table.learn(mac(3), 2, start + 6s), MacTable::Learned::kTableFull);
  EXPECT_EQ(table.lookup(mac(3), start + 6s), std::nullopt);
  // Known addresses still refresh in a full table.
  EXPECT_EQ(table.learn(mac(2), 2, start + 7s), MacTable::Learned::kMoved);
  // mac(1) ages out at start + 10 s, making room.
  EXPECT_EQ(table.learn(mac(3), 2, start + 10s), MacTable::Learned::kNew);
  auto entries = table.entries(start + 10s);
  ASSERT_EQ(entries.size(), 2U);
  EXPECT_EQ(entries[0].address, mac(2));
  EXPECT_EQ(entries[0].age, 3s);
  EXPECT_EQ(entries[1].address, mac(3));
}

TEST(MacTable, EachPortLearnsAtMostItsShare) {
  MacTable table(10s, 100, 3);
  auto start = MacTable::Clock::time_point{} + 100s;
  for (uint8_t i = 1; i <= 3; ++i)
    EXPECT_EQ(table.learn(mac(i), 1, start), MacTable::Learned::kNew);
  EXPECT_EQ(table.learn(mac(4), 1, start), MacTable::Learned::kPortFull);
  EXPECT_EQ(table.port_size(1), 3U);
  // Its old entries refresh; other ports still learn.
  EXPECT_EQ(table.learn(mac(1), 1, start + 1s), MacTable::Learned::kRefreshed);
  EXPECT_EQ(table.learn(mac(5), 2, start + 1s), MacTable::Learned::kNew);
  // Moving a station onto a full port counts against it too.
  EXPECT_EQ(table.learn(mac(5), 1, start + 2s), MacTable::Learned::kPortFull);
  EXPECT_EQ(table.lookup(mac(5), start + 2s), 2U);
  // Moving one away frees a place.
  EXPECT_EQ(table.learn(mac(2), 2, start + 3s), MacTable::Learned::kMoved);
  EXPECT_EQ(table.port_size(1), 2U);
  EXPECT_EQ(table.learn(mac(4), 1, start + 3s), MacTable::Learned::kNew);
  // Ageing frees places: mac(3) was last seen at start, so it is gone at start + 10 s.
  EXPECT_EQ(table.learn(mac(6), 1, start + 10s), MacTable::Learned::kNew);
  EXPECT_EQ(table.lookup(mac(3), start + 10s), std::nullopt);
  EXPECT_EQ(table.forget_port(1), 3U);
  EXPECT_EQ(table.port_size(1), 0U);
}

TEST(MacTable, AgeingFollowsLastSeenOrder) {
  MacTable table(30s, 1000);
  auto start = MacTable::Clock::time_point{} + 100s;
  for (uint8_t i = 1; i <= 20; ++i) {
    ASSERT_EQ(table.learn(mac(i), 1, start + std::chrono::seconds(i)), MacTable::Learned::kNew);
  }
  // Refreshing mac(1) moves it behind the others.
  EXPECT_EQ(table.learn(mac(1), 1, start + 21s), MacTable::Learned::kRefreshed);
  // At start + 40 s, mac(2)..mac(10) have aged out; mac(1) and mac(11)..mac(20) stay.
  EXPECT_EQ(table.expire(start + 40s), 9U);
  EXPECT_EQ(table.size(), 11U);
  EXPECT_EQ(table.lookup(mac(1), start + 40s), 1U);
  EXPECT_EQ(table.lookup(mac(11), start + 40s), 1U);
  EXPECT_EQ(table.expire(start + 40s), 0U) << "nothing more to age";
  // An earlier time (the daemon never passes one) still lands in age order: mac(30), seen at
  // start + 15 s, ages out with mac(11)..mac(15) at start + 45 s.
  EXPECT_EQ(table.learn(mac(30), 1, start + 15s), MacTable::Learned::kNew);
  EXPECT_EQ(table.expire(start + 45s), 6U) << "mac(11)..mac(15) and mac(30)";
  EXPECT_EQ(table.lookup(mac(16), start + 45s), 1U);
}

TEST(MacTable, CraftedAddressesDoNotShareABucket) {
  // With the address itself as the hash (as before), every multiple of the bucket count
  // lands in bucket 0 and each lookup scans them all. The keyed hash spreads them.
  MacTable table(300s, 4096);
  const uint64_t buckets = table.bucket_count();
  auto now = MacTable::Clock::time_point{} + 1s;
  for (uint64_t i = 1; i <= 4096; ++i) {
    uint64_t value = (i * buckets) & 0xfeffffffffffULL;
    std::array<uint8_t, 6> bytes{};
    for (int b = 0; b < 6; ++b) bytes[b] = static_cast<uint8_t>(value >> (40 - 8 * b));
    table.learn(MacAddress(bytes), static_cast<SwitchPortId>(i), now);
  }
  EXPECT_GT(table.size(), 4000U);
  EXPECT_EQ(table.bucket_count(), buckets) << "no rehash while learning";
  EXPECT_LE(table.longest_bucket(), 12U);
}

TEST(SwitchPaths, NamesAreValidated) {
  for (const char* good : {"a", "lab", "Lab_1.test-2",
                           "0123456789012345678901234567890123456789"
                           "012345678901234567890123"}) {
    EXPECT_TRUE(validate_switch_name(good)) << good;
  }
  for (const char* bad : {"", ".", "..", "a/b", "a b", "lab:1", "läb", "x\n",
                          "01234567890123456789012345678901234567890123456789012345678901234"}) {
    auto refused = validate_switch_name(bad);
    ASSERT_FALSE(refused) << bad;
    EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(refused.error().message().find("not a switch name"), std::string::npos);
  }
}

TEST(SwitchPaths, FolderIsPrivateAndOwnedByTheUser) {
  testing::PrivateRuntimeDirectory runtime;
  auto missing = switch_directory(/*create=*/false);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  auto paths = switch_paths("lab", /*create=*/true);
  ASSERT_TRUE(paths) << paths.error().message();
  EXPECT_EQ(paths->socket, runtime.path() / "lamina/switch/lab.sock");
  EXPECT_EQ(paths->lock, runtime.path() / "lamina/switch/lab.lock");
  struct stat status {};
  ASSERT_EQ(::stat((runtime.path() / "lamina/switch").c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 0777, 0700U);
  ASSERT_EQ(::stat((runtime.path() / "lamina").c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 0777, 0700U);

  // A symbolic link planted where the folder should be is refused.
  std::filesystem::remove_all(runtime.path() / "lamina");
  std::filesystem::create_directory(runtime.path() / "elsewhere");
  std::filesystem::create_directory_symlink(runtime.path() / "elsewhere",
                                            runtime.path() / "lamina");
  auto refused = switch_paths("lab", /*create=*/true);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("not a folder"), std::string::npos);
}

TEST(SwitchPaths, SquattedOrLooseFoldersAreRefusedWithTheFix) {
  testing::PrivateRuntimeDirectory scratch;
  // Made by us even under a umask that would take the owner's bits: still exactly 0700.
  const auto made = scratch.path() / "made";
  const mode_t old_mask = ::umask(0277);
  auto created = ensure_private_directory(made, /*create=*/true);
  ::umask(old_mask);
  ASSERT_TRUE(created) << created.error().message();
  struct stat status {};
  ASSERT_EQ(::stat(made.c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 07777, 0700U);
  EXPECT_TRUE(ensure_private_directory(made, /*create=*/true)) << "ours: used again";

  auto expect_refused = [](const std::filesystem::path& path, const std::string& why) {
    auto refused = ensure_private_directory(path, /*create=*/true);
    ASSERT_FALSE(refused) << path;
    EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(refused.error().message().find(why), std::string::npos) << refused.error().message();
    EXPECT_NE(refused.error().message().find("rm -r " + path.string()), std::string::npos)
        << "the message says how to fix it: " << refused.error().message();
  };
  // Ours but open to others (another user may have put a socket in it): refused, not repaired.
  const auto loose = scratch.path() / "loose";
  ASSERT_EQ(::mkdir(loose.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(loose.c_str(), 0777), 0);
  expect_refused(loose, "has mode 0777, not 0700");
  ASSERT_EQ(::stat(loose.c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 07777, 0777U) << "left as found";
  // A file or a link where the folder should be.
  const auto file = scratch.path() / "file";
  std::ofstream(file) << "x";
  expect_refused(file, "is not a folder");
  const auto link = scratch.path() / "link";
  std::filesystem::create_directory_symlink(made, link);
  expect_refused(link, "is not a folder");
  // Another user's folder with the right mode (what a squatter in /tmp makes). Only root can
  // make one for the test.
  if (::getuid() == 0) {
    const auto foreign = scratch.path() / "foreign";
    ASSERT_EQ(::mkdir(foreign.c_str(), 0700), 0);
    ASSERT_EQ(::chown(foreign.c_str(), 4242, 4242), 0);
    expect_refused(foreign, "belongs to uid 4242, not to you");
  }
}

TEST(SwitchPaths, WithoutXdgRuntimeDirTheFolderIsInTmpPerUser) {
  testing::PrivateRuntimeDirectory runtime;
  ::unsetenv("XDG_RUNTIME_DIR");
  const std::filesystem::path expected = fmt::format("/tmp/lamina-{}/switch", ::getuid());
  // Not created here (other runs of this user may use it): only where it is looked for.
  auto directory = switch_directory(/*create=*/false);
  if (directory) {
    EXPECT_EQ(*directory, expected);
  } else {
    EXPECT_NE(directory.error().message().find(fmt::format("/tmp/lamina-{}", ::getuid())),
              std::string::npos)
        << directory.error().message();
  }
}

TEST(SwitchPaths, SocketPathThatDoesNotFitIsRefused) {
  testing::PrivateRuntimeDirectory runtime;
  auto deep = runtime.path() / std::string(60, 'd');
  std::filesystem::create_directory(deep);
  ::setenv("XDG_RUNTIME_DIR", deep.c_str(), 1);
  auto refused = switch_paths(std::string(64, 'n'), /*create=*/true);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("longer than a Unix socket allows"), std::string::npos);
}

TEST(NetworkOption, ParsesSwitchAndTap) {
  auto on_switch = parse_network_option("switch:lab,mac=52:54:00:12:34:56");
  ASSERT_TRUE(on_switch) << on_switch.error().message();
  EXPECT_EQ(on_switch->backend, NetworkBackend::kSwitch);
  EXPECT_EQ(on_switch->name, "lab");
  EXPECT_EQ(on_switch->mac.to_string(), "52:54:00:12:34:56");

  EXPECT_FALSE(on_switch->mac_spoofing) << "off by default";
  auto spoofing = parse_network_option("switch:lab,mac-spoofing=on,mac=52:54:00:12:34:57");
  ASSERT_TRUE(spoofing) << spoofing.error().message();
  EXPECT_TRUE(spoofing->mac_spoofing);
  EXPECT_EQ(spoofing->mac.to_string(), "52:54:00:12:34:57");
  EXPECT_FALSE(parse_network_option("switch:lab,mac-spoofing=off")->mac_spoofing);

  auto on_tap = parse_network_option("tap:tap0");
  ASSERT_TRUE(on_tap);
  EXPECT_EQ(on_tap->backend, NetworkBackend::kTap);
  EXPECT_EQ(on_tap->name, "tap0");
  EXPECT_FALSE(on_tap->mac.is_group());
  EXPECT_FALSE(on_tap->mac.is_zero());
}

TEST(NetworkOption, RefusesBadInputNamingIt) {
  struct Case {
    const char* text;
    const char* message;
  };
  for (const auto& [text, message] : std::initializer_list<Case>{
           {"lab", "use switch:NAME or tap:IFNAME"},
           {"vde:lab", "'vde' is not a network backend"},
           {"switch:", "is not a switch name"},
           {"switch:a/b", "is not a switch name"},
           {"tap:", "not an interface name"},
           {"tap:0123456789abcdef", "not an interface name"},
           {"switch:lab,mac=01:00:5e:00:00:01", "needs a unicast address"},
           {"switch:lab,mac=00:00:00:00:00:00", "needs a unicast address"},
           {"switch:lab,mac=zz", "is not a MAC address"},
           {"switch:lab,speed=10", "'speed=10' is not a network setting"},
           {"switch:lab,mac-spoofing=yes", "mac-spoofing is on or off"},
           {"tap:tap0,mac-spoofing=on", "mac-spoofing= applies to switch: networks"},
       }) {
    auto refused = parse_network_option(text);
    ASSERT_FALSE(refused) << text;
    EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument) << text;
    EXPECT_NE(refused.error().message().find(message), std::string::npos)
        << text << ": " << refused.error().message();
  }
}

TEST(SwitchProtocol, HelloAndWelcomeRoundTrip) {
  auto hello = decode_hello(encode_hello({SwitchRole::kPort, "vm one", mac(5), true}));
  ASSERT_TRUE(hello) << hello.error().message();
  EXPECT_EQ(hello->role, SwitchRole::kPort);
  EXPECT_EQ(hello->label, "vm one");
  EXPECT_EQ(hello->mac, mac(5));
  EXPECT_TRUE(hello->mac_spoofing);
  auto plain = decode_hello(encode_hello({SwitchRole::kPort, "vm two", mac(6), false}));
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->mac_spoofing);
  SwitchHello query;
  query.role = SwitchRole::kQuery;
  EXPECT_TRUE(decode_hello(encode_hello(query)));
  EXPECT_EQ(decode_welcome(encode_welcome(7)), 7U);
  auto refused = decode_welcome(encode_refusal("full"));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("refused the port: full"), std::string::npos);
}

TEST(SwitchProtocol, HostileMessagesAreErrorsNotCrashes) {
  // Version 1 ports (no MAC address) are refused, so no client skips the source check.
  auto old_client = decode_hello(R"({"lamina_switch": 1, "role": "port", "label": "old"})");
  ASSERT_FALSE(old_client);
  EXPECT_NE(old_client.error().message().find("speaks version 2"), std::string::npos);
  for (const char* bad : {"", "{", "[]", "null", "{\"lamina_switch\": 2, \"role\": \"port\"}",
                          R"({"lamina_switch": 2, "role": "port", "mac": "01:00:5e:00:00:01"})",
                          R"({"lamina_switch": 2, "role": "port", "mac": "00:00:00:00:00:00"})",
                          R"({"lamina_switch": 2, "role": "port", "mac": 5})",
                          R"({"lamina_switch": 2, "role": "port", "mac": "02:00:00:00:00:01",
                              "mac_spoofing": "on"})",
                          "{\"lamina_switch\": 1}", "{\"lamina_switch\": 1, \"role\": 5}",
                          "{\"lamina_switch\": 1, \"role\": \"admin\"}",
                          "{\"lamina_switch\": \"1\", \"role\": \"port\"}"}) {
    EXPECT_FALSE(decode_hello(bad)) << bad;
  }
  for (const char* bad : {"", "{}", "{\"port\": -1}", "{\"port\": \"1\"}", "{\"port\": 1e20}",
                          "{\"port\": 4294967296}"}) {
    EXPECT_FALSE(decode_welcome(bad)) << bad;
  }
  for (const char* bad : {"", "[1]", "{\"ports\": 5}", "{\"ports\": [{\"id\": \"x\"}]}",
                          "{\"pid\": \"x\"}", "{\"macs\": [1]}"}) {
    EXPECT_FALSE(decode_status(bad)) << bad;
  }
  // An over-long label is cut, not trusted.
  auto hello =
      decode_hello(encode_hello({SwitchRole::kPort, std::string(1000, 'x'), mac(1), false}));
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->label.size(), 128U);
}

TEST(SwitchProtocol, StatusRoundTrip) {
  SwitchStatus status;
  status.name = "lab";
  status.pid = 42;
  status.flooded_frames = 3;
  status.ports.push_back({.id = 2,
                          .label = "vm",
                          .pid = 7,
                          .received_frames = 5,
                          .dropped_frames = 1,
                          .mac = "02:00:00:00:00:01",
                          .mac_spoofing = true,
                          .spoofed_frames = 9,
                          .unlearned_sources = 4});
  status.macs.push_back({"02:00:00:00:00:01", 2, 1.5});
  auto decoded = decode_status(encode_status(status));
  ASSERT_TRUE(decoded) << decoded.error().message();
  EXPECT_EQ(decoded->name, "lab");
  EXPECT_EQ(decoded->flooded_frames, 3U);
  ASSERT_EQ(decoded->ports.size(), 1U);
  EXPECT_EQ(decoded->ports[0].received_frames, 5U);
  EXPECT_EQ(decoded->ports[0].dropped_frames, 1U);
  EXPECT_EQ(decoded->ports[0].mac, "02:00:00:00:00:01");
  EXPECT_TRUE(decoded->ports[0].mac_spoofing);
  EXPECT_EQ(decoded->ports[0].spoofed_frames, 9U);
  EXPECT_EQ(decoded->ports[0].unlearned_sources, 4U);
  ASSERT_EQ(decoded->macs.size(), 1U);
  EXPECT_EQ(decoded->macs[0].address, "02:00:00:00:00:01");
}

}  // namespace
}  // namespace lamina::net
