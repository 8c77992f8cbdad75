#include "machine/display_option.h"

#include "machine/vm_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace lamina::machine {
namespace {

TEST(DisplayOptionTest, ParsesNoneTcpAndUnix) {
  auto none = parse_display("none");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->kind, DisplayKind::kNone);
  auto tcp = parse_display("vnc:127.0.0.1:5901");
  ASSERT_TRUE(tcp);
  EXPECT_EQ(tcp->kind, DisplayKind::kVncTcp);
  EXPECT_EQ(tcp->host, "127.0.0.1");
  EXPECT_EQ(tcp->port, 5901);
  auto ipv6 = parse_display("vnc:::1:0");
  ASSERT_TRUE(ipv6);
  EXPECT_EQ(ipv6->host, "::1");
  EXPECT_EQ(ipv6->port, 0);
  auto unix_socket = parse_display("vnc:unix:/run/vm.vnc");
  ASSERT_TRUE(unix_socket);
  EXPECT_EQ(unix_socket->kind, DisplayKind::kVncUnix);
  EXPECT_EQ(unix_socket->path, "/run/vm.vnc");
}

// ",password-file=PATH" after either address; the password is the file's first line, 1 to 8
// characters (RFB's VNC Authentication uses 8), and a missing file names itself.
TEST(DisplayOptionTest, APasswordFileFollowsTheAddress) {
  auto tcp = parse_display("vnc:127.0.0.1:5901,password-file=/etc/lamina/vnc.pass");
  ASSERT_TRUE(tcp);
  EXPECT_EQ(tcp->host, "127.0.0.1");
  EXPECT_EQ(tcp->port, 5901);
  EXPECT_EQ(tcp->password_file, "/etc/lamina/vnc.pass");
  auto unix_socket = parse_display("vnc:unix:/run/a,b.vnc,password-file=/p");
  ASSERT_TRUE(unix_socket);
  EXPECT_EQ(unix_socket->path, "/run/a,b.vnc");
  EXPECT_EQ(unix_socket->password_file, "/p");
  EXPECT_TRUE(parse_display("vnc:unix:/run/vm.vnc")->password_file.empty());
  EXPECT_FALSE(parse_display("vnc:unix:/run/vm.vnc,password-file="));

  const auto folder = std::filesystem::temp_directory_path() / ("lamina-vncpass-" + std::to_string(::getpid()));
  std::filesystem::create_directories(folder);
  auto password_in = [&](const std::string& name, const std::string& content) {
    std::ofstream(folder / name) << content;
    DisplayOption option = *parse_display("vnc:unix:/x,password-file=" + (folder / name).string());
    return read_display_password(option, nullptr);
  };
  EXPECT_EQ(*password_in("good", "s3cret!\nignored\n"), "s3cret!");
  EXPECT_EQ(*password_in("crlf", "12345678\r\n"), "12345678");
  auto long_one = password_in("long", "123456789\n");
  ASSERT_FALSE(long_one);
  EXPECT_NE(long_one.error().message().find("1 to 8 characters"), std::string::npos);
  EXPECT_FALSE(password_in("empty", "\n"));
  DisplayOption missing = *parse_display("vnc:unix:/x,password-file=" + (folder / "none").string());
  auto absent = read_display_password(missing, nullptr);
  ASSERT_FALSE(absent);
  EXPECT_NE(absent.error().message().find("VNC password"), std::string::npos);
  EXPECT_EQ(*read_display_password(*parse_display("vnc:unix:/x"), nullptr), "");
  std::filesystem::remove_all(folder);
}

TEST(DisplayOptionTest, RefusesWhatIsNotADisplay) {
  for (const char* text : {"", "vnc", "vnc:", "vnc:host", "vnc:host:", "vnc:host:65536",
                           "vnc:host:12x", "vnc:unix:", "sdl", "vnc::5900"}) {
    auto parsed = parse_display(text);
    EXPECT_FALSE(parsed) << text;
    if (!parsed) {
      EXPECT_NE(parsed.error().message().find("--display"), std::string::npos);
    }
  }
  EXPECT_FALSE(parse_display("vnc:unix:" + std::string(108, 'x')));
}

TEST(DisplayOptionTest, VgaDefaultsToStdWithFirmwareOrADisplay) {
  const DisplayOption none;
  const DisplayOption vnc{.kind = DisplayKind::kVncTcp, .host = "::1", .port = 0, .path = {},
                          .password_file = {}};
  EXPECT_EQ(effective_vga(std::nullopt, FirmwareKind::kNone, none), VgaKind::kNone);
  EXPECT_EQ(effective_vga(std::nullopt, FirmwareKind::kBios, none), VgaKind::kStd);
  EXPECT_EQ(effective_vga(std::nullopt, FirmwareKind::kNone, vnc), VgaKind::kStd);
  EXPECT_EQ(effective_vga(VgaKind::kNone, FirmwareKind::kBios, none), VgaKind::kNone);
  EXPECT_TRUE(parse_vga("std"));
  EXPECT_FALSE(parse_vga("cirrus"));
}

TEST(DisplayOptionTest, ADisplayWithoutAVgaAdapterIsRefused) {
  VmConfig config;
  config.firmware = FirmwareChoice{FirmwareKind::kNone, {}};
  config.kernel = "/nonexistent";
  config.vga = VgaKind::kNone;
  config.display.kind = DisplayKind::kVncUnix;
  config.display.path = "/tmp/x.sock";
  auto valid = validate(config, HostChecks::kNone);
  ASSERT_FALSE(valid);
  EXPECT_NE(valid.error().message().find("--vga std"), std::string::npos);
  config.vga = VgaKind::kStd;
  EXPECT_TRUE(validate(config, HostChecks::kNone))
      << validate(config, HostChecks::kNone).error().message();
}

}  // namespace
}  // namespace lamina::machine
