// The virtual switch across processes, with the real `lamina` binary: a VM-side port starts
// the daemon in the background, two processes racing to start it end on one daemon, the
// daemon exits after its last port leaves, a killed daemon is replaced, and `lamina switch
// list/show` report it.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <fcntl.h>

#include <fmt/format.h>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "net/switch_port.h"
#include "net/switch_query.h"
#include "net_test_support.h"

#ifndef LAMINA_BINARY
#error "LAMINA_BINARY must name the lamina executable"
#endif

namespace lamina::net {
namespace {

using namespace std::chrono_literals;
using testing::frame;
using testing::mac;
using testing::receive_within;
using testing::send_frame;
using testing::tag_of;

SwitchConnectOptions auto_start_options(const std::string& label, const MacAddress& address,
                                        double idle_exit = 0.3) {
  SwitchConnectOptions options;
  options.label = label;
  options.mac = address;
  options.daemon.program = LAMINA_BINARY;
  options.daemon.arguments = {"--idle-exit", std::to_string(idle_exit)};
  return options;
}

// True while some process holds switch `name`'s lock (a daemon serves or is starting).
bool lock_is_held(const std::filesystem::path& runtime, const std::string& name) {
  auto path = runtime / "lamina/switch" / (name + ".lock");
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) return false;
  return ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0;
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition();
}

// Runs a shell command line; returns its exit status and standard output.
std::pair<int, std::string> run(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, ""};
  char chunk[4096];
  size_t got;
  while ((got = std::fread(chunk, 1, sizeof(chunk), pipe)) > 0) output.append(chunk, got);
  int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

class SwitchProcessTest : public ::testing::Test {
 protected:
  testing::PrivateRuntimeDirectory runtime_;
};

TEST_F(SwitchProcessTest, FirstPortStartsTheDaemonWhichExitsAfterTheLastLeaves) {
  ASSERT_FALSE(lock_is_held(runtime_.path(), "lab"));
  auto a = connect_switch("lab", auto_start_options("a", mac(1)));
  ASSERT_TRUE(a) << a.error().message();
  auto b = connect_switch("lab", auto_start_options("b", mac(2)));
  ASSERT_TRUE(b) << b.error().message();
  auto status = query_switch("lab");
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_NE(status->pid, ::getpid()) << "the daemon is its own process";
  EXPECT_EQ(status->ports.size(), 2U);
  EXPECT_TRUE(lock_is_held(runtime_.path(), "lab"));

  send_frame(**a, frame(MacAddress::broadcast(), mac(1), 9));
  auto got = receive_within(**b);
  ASSERT_TRUE(got);
  EXPECT_EQ(tag_of(*got), 9U);

  a->reset();
  // One port left: the daemon stays well past its idle time.
  std::this_thread::sleep_for(600ms);
  EXPECT_TRUE(query_switch("lab")) << "the daemon must not exit while a port is plugged in";
  b->reset();
  EXPECT_TRUE(wait_until([&] { return !lock_is_held(runtime_.path(), "lab"); }, 3s))
      << "the daemon should exit 0.3 s after the last port left";
  EXPECT_FALSE(std::filesystem::exists(runtime_.path() / "lamina/switch/lab.sock"));
  auto gone = query_switch("lab");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), ErrorCode::kNotFound);

  // And the next VM starts a fresh one.
  auto c = connect_switch("lab", auto_start_options("c", mac(3)));
  ASSERT_TRUE(c) << c.error().message();
  auto fresh = query_switch("lab");
  ASSERT_TRUE(fresh);
  EXPECT_NE(fresh->pid, status->pid);
}

TEST_F(SwitchProcessTest, TwoProcessesRacingToStartTheSwitchShareOneDaemon) {
  // Pipes: parent → children "go", children → parent "connected", parent → children "send".
  int go[2], connected[2], send_now[2];
  ASSERT_EQ(::pipe(go), 0);
  ASSERT_EQ(::pipe(connected), 0);
  ASSERT_EQ(::pipe(send_now), 0);
  pid_t children[2];
  for (int index = 0; index < 2; ++index) {
    children[index] = ::fork();
    ASSERT_GE(children[index], 0);
    if (children[index] != 0) continue;
    // The child: no gtest assertions, only an exit status.
    char byte;
    if (::read(go[0], &byte, 1) != 1) ::_exit(10);
    auto port = connect_switch("race", auto_start_options(fmt::format("child {}", index),
                                                          mac(static_cast<uint8_t>(index + 1)), 1));
    if (!port) {
      std::fprintf(stderr, "child %d: %s\n", index, port.error().message().c_str());
      ::_exit(11);
    }
    if (::write(connected[1], "c", 1) != 1) ::_exit(12);
    if (::read(send_now[0], &byte, 1) != 1) ::_exit(13);
    MacAddress own = mac(static_cast<uint8_t>(index + 1));
    MacAddress other = mac(static_cast<uint8_t>(2 - index));
    auto bytes = frame(MacAddress::broadcast(), own, 100 + index);
    if (!(*port)->send(bytes)) ::_exit(14);
    std::vector<std::byte> buffer(kMaxFrameSize);
    auto deadline = std::chrono::steady_clock::now() + 3s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto got = (*port)->receive(buffer);
      if (!got) ::_exit(15);
      if (*got && **got >= 14 &&
          MacAddress::from_bytes(std::span<const std::byte, 6>(buffer.data() + 6, 6)) == other) {
        ::_exit(0);
      }
      pollfd polled{(*port)->poll_fd(), POLLIN, 0};
      ::poll(&polled, 1, 100);
    }
    ::_exit(16);
  }
  ASSERT_EQ(::write(go[1], "gg", 2), 2);
  char two[2];
  size_t have = 0;
  while (have < 2) {
    ssize_t got = ::read(connected[0], two + have, 2 - have);
    if (got <= 0) break;
    have += static_cast<size_t>(got);
  }
  EXPECT_EQ(have, 2U) << "both children should connect";
  auto status = query_switch("race");
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_EQ(status->ports.size(), 2U) << "both ports on the one daemon";
  ASSERT_EQ(::write(send_now[1], "ss", 2), 2);
  for (pid_t child : children) {
    int exit_status = 0;
    ASSERT_EQ(::waitpid(child, &exit_status, 0), child);
    EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
        << "child exit status " << WEXITSTATUS(exit_status);
  }
  for (int fd : {go[0], go[1], connected[0], connected[1], send_now[0], send_now[1]}) ::close(fd);
}

TEST_F(SwitchProcessTest, KilledDaemonIsNoticedAndReplaced) {
  auto a = connect_switch("lab", auto_start_options("a", mac(1)));
  ASSERT_TRUE(a) << a.error().message();
  auto status = query_switch("lab");
  ASSERT_TRUE(status);
  ASSERT_EQ(::kill(status->pid, SIGKILL), 0);
  // The port learns it on its next receive (POLLHUP wakes a polling device thread).
  pollfd polled{(*a)->poll_fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&polled, 1, 3000), 1);
  std::vector<std::byte> buffer(kMaxFrameSize);
  auto received = (*a)->receive(buffer);
  ASSERT_FALSE(received);
  EXPECT_EQ(received.error().code(), ErrorCode::kIo);
  // The dead daemon left its socket file behind; the next port replaces it.
  EXPECT_TRUE(std::filesystem::exists(runtime_.path() / "lamina/switch/lab.sock"));
  auto b = connect_switch("lab", auto_start_options("b", mac(2)));
  ASSERT_TRUE(b) << b.error().message();
  auto fresh = query_switch("lab");
  ASSERT_TRUE(fresh);
  EXPECT_NE(fresh->pid, status->pid);
}

TEST_F(SwitchProcessTest, DaemonStopsCleanlyOnSigterm) {
  auto a = connect_switch("lab", auto_start_options("a", mac(1), 0));
  ASSERT_TRUE(a) << a.error().message();
  auto status = query_switch("lab");
  ASSERT_TRUE(status);
  ASSERT_EQ(::kill(status->pid, SIGTERM), 0);
  EXPECT_TRUE(wait_until([&] { return !lock_is_held(runtime_.path(), "lab"); }, 3s))
      << "SIGTERM should stop the daemon";
  EXPECT_FALSE(std::filesystem::exists(runtime_.path() / "lamina/switch/lab.sock"))
      << "a stopped daemon removes its socket";
  std::vector<std::byte> buffer(kMaxFrameSize);
  EXPECT_FALSE((*a)->receive(buffer)) << "the port sees the switch gone";
}

TEST_F(SwitchProcessTest, DaemonThatCannotStartReportsWhy) {
  SwitchConnectOptions options = auto_start_options("a", mac(1));
  options.daemon.arguments = {"--mac-age", "-1"};
  auto port = connect_switch("lab", options);
  ASSERT_FALSE(port);
  EXPECT_EQ(port.error().code(), ErrorCode::kIo);
  EXPECT_NE(port.error().message().find("the switch daemon for lab failed: --mac-age must be"),
            std::string::npos)
      << port.error().message();

  // A command line the daemon cannot even parse: it exits at once, its log says why.
  options.daemon.arguments = {"--max-ports", "0"};
  auto started = std::chrono::steady_clock::now();
  port = connect_switch("lab", options);
  ASSERT_FALSE(port);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2s) << "no waiting for a dead daemon";
  EXPECT_NE(port.error().message().find("exited without starting"), std::string::npos)
      << port.error().message();
  std::ifstream log(runtime_.path() / "lamina/switch/lab.log");
  std::string logged((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(logged.find("--max-ports"), std::string::npos) << logged;

  options.daemon.program = "/nonexistent/lamina";
  port = connect_switch("lab", options);
  ASSERT_FALSE(port);
  EXPECT_NE(port.error().message().find("cannot run the lamina program"), std::string::npos)
      << port.error().message();
}

TEST_F(SwitchProcessTest, ListAndShowFromTheCommandLine) {
  const std::string lamina = LAMINA_BINARY;
  auto [empty_status, empty] = run(lamina + " switch list");
  EXPECT_EQ(empty_status, 0);
  EXPECT_NE(empty.find("no switches are running"), std::string::npos) << empty;

  auto a = connect_switch("lab", auto_start_options("vm-a", mac(1), 5));
  auto b = connect_switch("lab", auto_start_options("vm-b", mac(2), 5));
  ASSERT_TRUE(a && b);
  send_frame(**a, frame(MacAddress::broadcast(), mac(1), 1));
  ASSERT_TRUE(receive_within(**b));

  auto [list_status, list] = run(lamina + " switch list --json");
  ASSERT_EQ(list_status, 0) << list;
  auto listed = nlohmann::json::parse(list);
  ASSERT_EQ(listed.size(), 1U) << list;
  EXPECT_EQ(listed[0]["name"], "lab");
  EXPECT_EQ(listed[0]["ports"], 2);
  EXPECT_EQ(listed[0]["macs"], 1);

  auto [show_status, show] = run(lamina + " switch show lab --json");
  ASSERT_EQ(show_status, 0) << show;
  auto shown = nlohmann::json::parse(show);
  ASSERT_EQ(shown["ports"].size(), 2U);
  EXPECT_EQ(shown["ports"][0]["label"], "vm-a");
  EXPECT_EQ(shown["ports"][0]["received_frames"], 1);
  EXPECT_EQ(shown["ports"][1]["label"], "vm-b");
  EXPECT_EQ(shown["ports"][1]["sent_frames"], 1);
  ASSERT_EQ(shown["macs"].size(), 1U);
  EXPECT_EQ(shown["macs"][0]["address"], mac(1).to_string());
  EXPECT_EQ(shown["macs"][0]["port"], (*a)->port_id());

  EXPECT_EQ(shown["ports"][0]["mac"], mac(1).to_string());
  EXPECT_EQ(shown["ports"][0]["mac_spoofing"], false);
  EXPECT_EQ(shown["ports"][0]["spoofed_frames"], 0);

  // A frame from another source address on a port without MAC spoofing: dropped, counted.
  send_frame(**b, frame(MacAddress::broadcast(), mac(1), 2));
  EXPECT_FALSE(receive_within(**a, 200ms));
  auto [text_status, text] = run(lamina + " switch show lab");
  EXPECT_EQ(text_status, 0);
  EXPECT_NE(text.find("SPOOFED"), std::string::npos) << text;
  std::istringstream lines(text);
  bool counted = false;
  for (std::string line; std::getline(lines, line);) {
    if (line.find("vm-b") == std::string::npos) continue;
    std::istringstream fields(line);
    std::vector<std::string> words{std::istream_iterator<std::string>(fields), {}};
    // PORT PID LABEL MAC SPOOF RX-FRAMES RX-BYTES TX-FRAMES TX-BYTES MALFORMED DROPPED SPOOFED
    counted = words.size() >= 12 && words[3] == mac(2).to_string() && words[4] == "off" &&
              words[11] == "1";
  }
  EXPECT_TRUE(counted) << text;
  EXPECT_NE(text.find("vm-a"), std::string::npos) << text;
  EXPECT_NE(text.find(mac(1).to_string()), std::string::npos) << text;

  auto [missing_status, missing] = run(lamina + " switch show nosuch");
  EXPECT_EQ(missing_status, 1);
  EXPECT_NE(missing.find("lamina switch show: switch nosuch is not running"), std::string::npos)
      << missing;
  auto [bad_status, bad] = run(lamina + " switch show 'a/b'");
  EXPECT_EQ(bad_status, 1);
  EXPECT_NE(bad.find("is not a switch name"), std::string::npos) << bad;
  auto [busy_status, busy] = run(lamina + " switch serve lab");
  EXPECT_EQ(busy_status, 1);
  EXPECT_NE(busy.find("switch lab is already running"), std::string::npos) << busy;
}

}  // namespace
}  // namespace lamina::net
