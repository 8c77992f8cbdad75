#pragma once
// One libvncclient (from Debian's libvncserver package) connection for the display tests: the
// VNC server's unit tests and the `vnc_probe` tool the guest and laminad tests drive. The
// default pixel format (8 bits per sample, 4 bytes per pixel, red in the lowest byte) and
// lossless encodings only, so frames compare byte for byte with screenshots.
//
// Thread-safety: one thread uses a client.

#include <rfb/rfbclient.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>

namespace lamina::display::test_support {

class VncTestClient {
 public:
  // `host` is an address with `port`, or the path of a Unix socket (libvncclient connects to a
  // socket when the name is one). `password` answers VNC Authentication (RFB 6.2.2); without
  // one a server that asks for it refuses the handshake.
  explicit VncTestClient(const std::string& host, int port = 5900,
                         std::optional<std::string> password = std::nullopt)
      : password_(std::move(password)) {
    client_ = rfbGetClient(8, 3, 4);
    client_->serverHost = strdup(host.c_str());
    client_->serverPort = port;
    client_->connectTimeout = 10;
    client_->canHandleNewFBSize = TRUE;
    // Lossless encodings only (tight would send noise or photographs as JPEG).
    client_->appData.encodingsString = "zlib raw";
    client_->appData.enableJPEG = FALSE;
    rfbClientSetClientData(client_, const_cast<char*>(&kPasswordTag), this);
    client_->GetPassword = [](rfbClient* client) -> char* {
      auto* self = static_cast<VncTestClient*>(rfbClientGetClientData(client, const_cast<char*>(&kPasswordTag)));
      return self->password_ ? strdup(self->password_->c_str()) : nullptr;
    };
    int argc = 0;
    if (!rfbInitClient(client_, &argc, nullptr)) client_ = nullptr;  // freed by libvncclient
  }
  ~VncTestClient() {
    if (client_ != nullptr) rfbClientCleanup(client_);
  }
  VncTestClient(const VncTestClient&) = delete;
  VncTestClient& operator=(const VncTestClient&) = delete;

  bool connected() const { return client_ != nullptr; }
  bool closed() const { return closed_; }
  rfbClient* get() { return client_; }
  int width() const { return client_->width; }
  int height() const { return client_->height; }

  // Handles server messages until `done` holds, the time is up, or the server closes.
  bool pump_until(const std::function<bool()>& done,
                  std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!closed_ && std::chrono::steady_clock::now() < deadline) {
      if (done()) return true;
      const int ready = WaitForMessage(client_, 50'000);
      if (ready < 0 || (ready > 0 && !HandleRFBServerMessage(client_))) closed_ = true;
    }
    return done();
  }
  // 0xRRGGBB at (x, y).
  uint32_t pixel(int x, int y) const {
    const auto* bytes = reinterpret_cast<const uint8_t*>(client_->frameBuffer) +
                        (size_t(y) * client_->width + x) * 4;
    return uint32_t{bytes[0]} << 16 | uint32_t{bytes[1]} << 8 | bytes[2];
  }
  // The frame as packed RGB, row by row.
  std::string rgb() const {
    std::string out;
    out.reserve(size_t(client_->width) * client_->height * 3);
    const auto* bytes = reinterpret_cast<const char*>(client_->frameBuffer);
    for (size_t index = 0; index < size_t(client_->width) * client_->height; ++index) {
      out.append(bytes + index * 4, 3);
    }
    return out;
  }
  bool key(uint32_t keysym) {
    return SendKeyEvent(client_, keysym, TRUE) && SendKeyEvent(client_, keysym, FALSE);
  }

 private:
  // Only its address is used: the tag of this object in libvncclient's client data.
  static constexpr char kPasswordTag = 0;
  std::optional<std::string> password_;
  rfbClient* client_ = nullptr;
  bool closed_ = false;
};

}  // namespace lamina::display::test_support
