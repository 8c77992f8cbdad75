#pragma once
// TransportProgram: the shared driver of the transport robustness test (GCC, every test run)
// and the libFuzzer target transport_fuzz: an input is a program of guest actions against a
// virtio-pci function with a virtio-rng or a virtio-console (on an endless in-memory host end)
// behind it: register reads and writes of any width at
// any offset (common configuration, ISR, notify, device configuration, PCI config space with
// BARs, MSI-X and the configuration access window), raw writes into the rings' RAM, shortcuts
// that negotiate and start the device with a ring layout from the input, and save/load of the
// function (also from a damaged stream). Nothing may crash or hang, and afterwards a reset must
// bring the device back to a working one (recovers()).

#include <cstdint>
#include <optional>
#include <span>

#include "../pci_harness.h"
#include "base/guest_memory.h"
#include "virtio/console_backend.h"
#include "virtio/virtio_tablet.h"
#include "virtio/dma_memory.h"
#include "virtio/virtio_rng.h"

namespace lamina::virtio::testing {

// The console's host end for the program: always has input, takes all output.
class EndlessConsoleEnd final : public ConsoleBackend {
 public:
  void set_listener(Listener*) override {}
  size_t input_pending() const override { return 4096; }
  size_t read(std::span<std::byte> out) override {
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::byte>(i);
    return out.size();
  }
  bool output_ready() const override { return true; }
  void write(std::span<const std::byte> data) override { written += data.size(); }
  uint64_t written = 0;
};

class TransportProgram {
 public:
  static constexpr uint64_t kRamSize = 1 << 20;
  enum class Device { kRng, kConsole, kTablet };

  explicit TransportProgram(Device device = Device::kRng);
  void run(std::span<const uint8_t> input);
  // Reset, program the BARs, negotiate, start a fresh queue and have one request served.
  bool recovers();
  // Bytes the device moved so far (entropy served, console output taken, or tablet events
  // delivered): shows the programs reach the data path.
  uint64_t bytes_served() const;

 private:
  GuestMemory memory_;
  DmaMemory dma_;
  Device device_;
  EndlessConsoleEnd console_end_;  // before the harness, which the console detaches from
  VirtioRng* rng_ = nullptr;
  VirtioTablet* tablet_ = nullptr;
  std::optional<PciHarness> harness_;
};

}  // namespace lamina::virtio::testing
