// vnc_probe: a VNC client for the guest and laminad display tests, on libvncclient (issue 15's
// "a VNC client (libvncclient from the same package)"). It connects to a VM's VNC server, waits
// for a settled picture, presses keys and checks that each one changed the screen, then writes
// the frame it holds:
//   vnc_probe SOCKET OUT.rgb [--keys Down,...] [--last-keys Return] [--size WxH]
//             [--password P] [--wait-close]
//   vnc_probe SOCKET --expect-refusal [--password P]
//   vnc_probe SOCKET --pointer X,Y [--size WxH] [--password P]: once the screen has that size,
//             moves the pointer to (X, Y) and clicks the left button there (no picture needed)
// OUT.rgb: "WIDTH HEIGHT\n" then WIDTH*HEIGHT*3 bytes of RGB (png_check.py --same-as reads it).
// Exit 0 when every step held, 1 with the reason otherwise, 2 for bad arguments.
#include <rfb/keysym.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "vnc_test_client.h"

namespace {

using namespace std::chrono_literals;
using lamina::display::test_support::VncTestClient;

const std::map<std::string, uint32_t> kKeysyms = {
    {"Down", XK_Down}, {"Up", XK_Up}, {"Return", XK_Return}, {"Escape", XK_Escape}};

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> names;
  size_t start = 0;
  while (start < list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    if (comma > start) names.push_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  return names;
}

struct Picture {
  int width = 0;
  int height = 0;
  std::string rgb;
  bool operator==(const Picture&) const = default;
};

Picture picture(const VncTestClient& client) { return {client.width(), client.height(), client.rgb()}; }

// More than one colour among a sample of pixels: a blank or cleared screen is not a picture.
bool has_content(const Picture& shown) {
  std::set<std::string> colours;
  for (size_t offset = 0; offset + 3 <= shown.rgb.size() && colours.size() < 2; offset += 3 * 97) {
    colours.insert(shown.rgb.substr(offset, 3));
  }
  return colours.size() > 1;
}

// The screen is WIDTHxHEIGHT `size` (any size when empty).
bool has_size(int width, int height, const std::string& size) {
  return size.empty() || std::to_string(width) + "x" + std::to_string(height) == size;
}

// Pumps until the screen has not changed for `quiet`, shows a picture, and has `size` if one
// is asked for.
bool wait_stable(VncTestClient& client, std::chrono::milliseconds quiet, std::chrono::seconds limit,
                 const std::string& size) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!client.closed() && std::chrono::steady_clock::now() < deadline) {
    const Picture before = picture(client);
    client.pump_until([] { return false; }, quiet);
    const Picture after = picture(client);
    if (after == before && has_size(after.width, after.height, size) && has_content(after)) return true;
  }
  return false;
}

bool write_frame(const VncTestClient& client, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << client.width() << ' ' << client.height() << '\n' << client.rgb();
  return bool(out.flush());
}

// libvncclient's log lines would drown the test's own output.
void quiet_log(const char*, ...) {}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("A libvncclient probe for Lamina's display tests");
  std::string socket_path, output, keys, last_keys, size, password;
  std::string pointer;
  bool expect_refusal = false, wait_close = false;
  app.add_option("socket", socket_path, "the VNC server's Unix socket")->required();
  app.add_option("output", output, "where the last frame goes (RGB with a size line)");
  app.add_option("--keys", keys, "keys to press one by one, each must change the screen");
  app.add_option("--last-keys", last_keys, "keys pressed at the end, not checked");
  app.add_option("--size", size, "WIDTHxHEIGHT the screen must have before the keys");
  app.add_option("--password", password, "answer VNC Authentication with it");
  app.add_option("--pointer", pointer, "X,Y: move the pointer there and click the left button");
  app.add_flag("--expect-refusal", expect_refusal, "succeed only if the handshake is refused");
  app.add_flag("--wait-close", wait_close, "read until the server closes (the VM stopped)");
  CLI11_PARSE(app, argc, argv);
  for (const auto& name : split(keys + "," + last_keys)) {
    if (!kKeysyms.contains(name)) {
      std::fprintf(stderr, "unknown key '%s' (Down, Up, Return, Escape)\n", name.c_str());
      return 2;
    }
  }
  // A server that closes (the VM stopped) must fail a write, not kill the probe.
  std::signal(SIGPIPE, SIG_IGN);
  rfbClientLog = quiet_log;
  rfbClientErr = quiet_log;
  const auto given_password = password.empty() ? std::nullopt : std::optional(password);

  if (expect_refusal) {
    VncTestClient client(socket_path, 5900, given_password);
    if (client.connected()) {
      std::puts("the server took the handshake");
      return 1;
    }
    std::puts("refused");
    return 0;
  }
  int x = 0, y = 0;
  if (!pointer.empty() && (std::sscanf(pointer.c_str(), "%d,%d", &x, &y) != 2 || x < 0 || y < 0)) {
    std::fputs("--pointer wants X,Y\n", stderr);
    return 2;
  }
  if (pointer.empty() && output.empty()) {
    std::fputs("an OUTPUT file is needed\n", stderr);
    return 2;
  }
  // The VM may still be creating its socket.
  std::optional<VncTestClient> client;
  for (int attempt = 0; attempt < 300; ++attempt) {
    client.emplace(socket_path, 5900, given_password);
    if (client->connected()) break;
    client.reset();
    std::this_thread::sleep_for(100ms);
  }
  if (!client) {
    std::puts("could not connect (or the handshake was refused)");
    return 1;
  }
  if (!pointer.empty()) {
    const bool sized = client->pump_until([&] { return has_size(client->width(), client->height(), size); }, 60s);
    if (!sized) {
      std::printf("the screen is %dx%d, not %s\n", client->width(), client->height(), size.c_str());
      return 1;
    }
    const bool sent = SendPointerEvent(client->get(), x, y, 0) &&
                      SendPointerEvent(client->get(), x, y, rfbButton1Mask) &&
                      SendPointerEvent(client->get(), x, y, 0);
    client->pump_until([] { return false; }, 1s);  // the server handles them before we go
    return sent ? 0 : 1;
  }
  if (!wait_stable(*client, 1500ms, 60s, size)) {
    std::puts("the screen never settled on a picture");
    return 1;
  }
  std::vector<std::string> unchanged;
  for (const auto& name : split(keys)) {
    const Picture before = picture(*client);
    client->key(kKeysyms.at(name));
    // The guest may take a while to redraw (GRUB's gfxterm repaints through the framebuffer).
    client->pump_until([&] { return picture(*client) != before; }, 30s);
    wait_stable(*client, 1000ms, 30s, "");
    if (picture(*client) == before) {
      unchanged.push_back(name);
    } else {
      std::printf("key %s: the screen changed\n", name.c_str());
    }
  }
  if (!write_frame(*client, output)) {
    std::printf("could not write %s\n", output.c_str());
    return 1;
  }
  for (const auto& name : split(last_keys)) client->key(kKeysyms.at(name));
  // The server sends the last screen when the VM stops, then closes.
  if (wait_close) {
    client->pump_until([&] { return client->closed(); }, 120s);
    if (!client->closed()) {
      std::puts("the server did not close in 120 s");
      return 1;
    }
    if (!write_frame(*client, output)) return 1;
  }
  if (!unchanged.empty()) {
    std::printf("keys that did not change the screen:");
    for (const auto& name : unchanged) std::printf(" %s", name.c_str());
    std::puts("");
    return 1;
  }
  return 0;
}
