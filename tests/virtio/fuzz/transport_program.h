#pragma once
// TransportProgram: the shared driver of the transport robustness test (GCC, every test run)
// and the libFuzzer target transport_fuzz: an input is a program of guest actions against a
// virtio-pci function with a virtio-rng behind it: register reads and writes of any width at
// any offset (common configuration, ISR, notify, device configuration, PCI config space with
// BARs, MSI-X and the configuration access window), raw writes into the rings' RAM, shortcuts
// that negotiate and start the device with a ring layout from the input, and save/load of the
// function (also from a damaged stream). Nothing may crash or hang, and afterwards a reset must
// bring the device back to a working one (recovers()).

#include <cstdint>
#include <optional>
#include <span>

#include "base/guest_memory.h"
#include "../pci_harness.h"
#include "virtio/dma_memory.h"
#include "virtio/virtio_rng.h"

namespace lamina::virtio::testing {

class TransportProgram {
 public:
  static constexpr uint64_t kRamSize = 1 << 20;

  TransportProgram();
  void run(std::span<const uint8_t> input);
  // Reset, program the BARs, negotiate, start a fresh queue and have one request served.
  bool recovers();
  // Entropy the device handed out so far (shows the programs reach the data path).
  uint64_t bytes_served() const;

 private:
  GuestMemory memory_;
  DmaMemory dma_;
  VirtioRng* rng_ = nullptr;
  std::optional<PciHarness> harness_;
};

}  // namespace lamina::virtio::testing
