#pragma once
// A test bench for AhciController: guest RAM, a memory-backed disk and disc, the controller
// with the disk on port 0 and the CD-ROM on port 1, and the steps of issuing one command the
// way SeaBIOS's ahci_command() does (command list, received-FIS area, one command table).

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <cstring>
#include <memory>
#include <vector>

#include "ahci/ahci_controller.h"
#include "ahci/ahci_registers.h"
#include "ahci/ata_disk.h"
#include "ahci/atapi_cdrom.h"
#include "base/byte_order.h"
#include "base/guest_memory.h"
#include "hw/irq_line.h"

namespace lamina::ahci::testing {

// A disk image in host memory.
class MemoryDisk final : public storage::BlockDevice {
 public:
  MemoryDisk(uint64_t size, bool read_only) : bytes_(size), read_only_(read_only) {
    for (size_t i = 0; i < bytes_.size(); ++i) bytes_[i] = static_cast<std::byte>(i * 7 + i / 512);
  }
  uint64_t size() const override { return bytes_.size(); }
  bool read_only() const override { return read_only_; }
  Result<void> read(uint64_t offset, std::span<std::byte> data) override {
    if (offset > bytes_.size() || data.size() > bytes_.size() - offset) {
      return fail(ErrorCode::kInvalidArgument, "past the end");
    }
    std::memcpy(data.data(), bytes_.data() + offset, data.size());
    return {};
  }
  Result<void> write(uint64_t offset, std::span<const std::byte> data) override {
    if (read_only_ || offset > bytes_.size() || data.size() > bytes_.size() - offset) {
      return fail(ErrorCode::kInvalidArgument, "refused");
    }
    std::memcpy(bytes_.data() + offset, data.data(), data.size());
    return {};
  }
  Result<void> flush() override {
    ++flushes;
    return {};
  }
  Result<void> discard(uint64_t, uint64_t) override { return {}; }

  std::vector<std::byte> bytes_;
  bool read_only_;
  std::atomic<int> flushes{0};
};

class CountingLine final : public hw::IrqLine {
 public:
  void set_level(bool asserted) override { level = asserted; }
  std::atomic<bool> level{false};
};

class AhciBench : public ::testing::Test {
 protected:
  static constexpr uint64_t kRamSize = 8 << 20;
  static constexpr uint64_t kCommandList = 0x10000;  // port p's list at + p * 0x1000
  static constexpr uint64_t kFisArea = 0x20000;      // port p's area at + p * 0x100
  static constexpr uint64_t kTable = 0x30000;        // the command table of slot 0
  static constexpr uint64_t kBuffer = 0x100000;
  static constexpr uint64_t kDiskBytes = 1 << 20;
  static constexpr uint64_t kDiscBytes = 64 * 2048;

  AhciBench()
      : memory_(std::move(*GuestMemory::create({{0, kRamSize}}))),
        dma_(memory_),
        disk_(std::make_shared<MemoryDisk>(kDiskBytes, false)),
        disc_(std::make_shared<MemoryDisk>(kDiscBytes, true)) {
    std::vector<std::unique_ptr<SataDrive>> drives;
    drives.push_back(std::make_unique<AtaDisk>(disk_, "disk-serial"));
    drives.push_back(std::make_unique<AtapiCdrom>(disc_, "cd-serial"));
    controller_ = std::make_unique<AhciController>(dma_, std::move(drives));
    controller_->set_intx_line(&line_);
  }

  uint32_t reg(uint64_t offset) {
    std::array<std::byte, 4> value{};
    controller_->abar().read(offset, value);
    return load_le<uint32_t>(value.data());
  }
  void set_reg(uint64_t offset, uint32_t value) {
    std::array<std::byte, 4> bytes{};
    store_le<uint32_t>(bytes.data(), value);
    controller_->abar().write(offset, bytes);
  }
  static uint64_t port_reg(unsigned port, uint64_t offset) {
    return kPortBase + port * kPortStride + offset;
  }
  // SeaBIOS's ahci_port_alloc + setup: list and FIS area, FIS receive, then start.
  void start_port(unsigned port) {
    set_reg(port_reg(port, kPortCommandListBase), static_cast<uint32_t>(kCommandList + port * 0x1000));
    set_reg(port_reg(port, kPortFisBase), static_cast<uint32_t>(kFisArea + port * 0x100));
    set_reg(port_reg(port, kPortCommandListBaseHigh), 0);
    set_reg(port_reg(port, kPortFisBaseHigh), 0);
    set_reg(port_reg(port, kPortCommand), kCmdFisReceiveEnable | kCmdSpinUp | kCmdPowerOn);
    set_reg(port_reg(port, kPortCommand),
            kCmdFisReceiveEnable | kCmdSpinUp | kCmdPowerOn | kCmdStart);
  }
  void put(uint64_t address, std::span<const std::byte> bytes) {
    ASSERT_TRUE(memory_.write(address, bytes));
  }
  void put8(uint64_t address, uint8_t value) {
    std::array<std::byte, 1> byte{std::byte{value}};
    put(address, byte);
  }
  void put32(uint64_t address, uint32_t value) {
    std::array<std::byte, 4> bytes{};
    store_le<uint32_t>(bytes.data(), value);
    put(address, bytes);
  }
  std::vector<std::byte> get(uint64_t address, size_t length) {
    std::vector<std::byte> bytes(length);
    EXPECT_TRUE(memory_.read(address, bytes));
    return bytes;
  }
  uint8_t get8(uint64_t address) { return static_cast<uint8_t>(get(address, 1)[0]); }

  struct Command {
    uint8_t command = 0;
    uint8_t features = 0;
    uint64_t lba = 0;
    uint16_t count = 0;
    std::vector<uint8_t> packet;  // ATAPI: the CDB
    bool write = false;
    // PRDT entries: (address, bytes).
    std::vector<std::pair<uint64_t, uint32_t>> regions;
  };
  // Lays the command out in slot 0, issues it and waits for the controller to finish it.
  // Returns PxTFD.
  uint32_t issue(unsigned port, const Command& command) {
    const uint64_t list = kCommandList + port * 0x1000;
    std::array<std::byte, 32> header{};
    const uint32_t flags = 5 | (command.packet.empty() ? 0 : kHeaderAtapi) |
                           (command.write ? 1u << 6 : 0) |
                           static_cast<uint32_t>(command.regions.size()) << 16;
    store_le<uint32_t>(header.data(), flags);
    store_le<uint64_t>(header.data() + 8, kTable);
    put(list, header);
    std::array<std::byte, 0x80> table{};
    table[0] = std::byte{kFisRegisterH2d};
    table[1] = std::byte{0x80};
    table[2] = std::byte{command.command};
    table[3] = std::byte{command.features};
    for (int i = 0; i < 3; ++i) table[4 + i] = static_cast<std::byte>(command.lba >> (8 * i));
    table[7] = std::byte{0x40};
    for (int i = 0; i < 3; ++i) table[8 + i] = static_cast<std::byte>(command.lba >> (24 + 8 * i));
    table[12] = static_cast<std::byte>(command.count);
    table[13] = static_cast<std::byte>(command.count >> 8);
    for (size_t i = 0; i < command.packet.size() && i < 16; ++i) {
      table[kCommandTableAtapi + i] = std::byte{command.packet[i]};
    }
    put(kTable, table);
    for (size_t i = 0; i < command.regions.size(); ++i) {
      std::array<std::byte, 16> entry{};
      store_le<uint64_t>(entry.data(), command.regions[i].first);
      store_le<uint32_t>(entry.data() + 12, command.regions[i].second - 1);
      put(kTable + kCommandTablePrdt + 16 * i, entry);
    }
    set_reg(port_reg(port, kPortInterruptStatus), 0xffffffff);
    set_reg(port_reg(port, kPortCommandIssue), 1);
    controller_->wait_idle();
    EXPECT_EQ(reg(port_reg(port, kPortCommandIssue)), 0u);
    return reg(port_reg(port, kPortTaskFile));
  }

  GuestMemory memory_;
  DmaMemory dma_;
  std::shared_ptr<MemoryDisk> disk_;
  std::shared_ptr<MemoryDisk> disc_;
  CountingLine line_;
  std::unique_ptr<AhciController> controller_;
};

}  // namespace lamina::ahci::testing
