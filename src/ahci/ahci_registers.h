#pragma once
// The AHCI 1.3.1 register map (sections 3.1 and 3.3) and the in-memory structures the HBA
// reads and writes (chapter 4), as typed constants.

#include <cstdint>

namespace lamina::ahci {

// Generic host control (section 3.1).
inline constexpr uint64_t kHostCapabilities = 0x00;  // CAP
inline constexpr uint64_t kHostControl = 0x04;       // GHC
inline constexpr uint64_t kHostInterruptStatus = 0x08;  // IS
inline constexpr uint64_t kHostPortsImplemented = 0x0c;  // PI
inline constexpr uint64_t kHostVersion = 0x10;           // VS
inline constexpr uint64_t kHostCapabilities2 = 0x24;     // CAP2

inline constexpr uint32_t kCapS64a = 1u << 31;   // 64-bit addressing
inline constexpr uint32_t kCapSclo = 1u << 24;   // command list override
inline constexpr uint32_t kCapIssGen1 = 1u << 20;  // interface speed: 1.5 Gb/s
inline constexpr uint32_t kCapSam = 1u << 18;    // AHCI mode only
inline constexpr uint32_t kCapNcsShift = 8;      // command slots - 1

inline constexpr uint32_t kGhcReset = 1u << 0;
inline constexpr uint32_t kGhcInterruptEnable = 1u << 1;
inline constexpr uint32_t kGhcAhciEnable = 1u << 31;

inline constexpr uint32_t kAhciVersion13 = 0x00010300;

// Port registers: port n at 0x100 + n * 0x80 (section 3.3).
inline constexpr uint64_t kPortBase = 0x100;
inline constexpr uint64_t kPortStride = 0x80;
inline constexpr uint64_t kPortCommandListBase = 0x00;  // PxCLB
inline constexpr uint64_t kPortCommandListBaseHigh = 0x04;
inline constexpr uint64_t kPortFisBase = 0x08;  // PxFB
inline constexpr uint64_t kPortFisBaseHigh = 0x0c;
inline constexpr uint64_t kPortInterruptStatus = 0x10;  // PxIS
inline constexpr uint64_t kPortInterruptEnable = 0x14;  // PxIE
inline constexpr uint64_t kPortCommand = 0x18;          // PxCMD
inline constexpr uint64_t kPortTaskFile = 0x20;         // PxTFD
inline constexpr uint64_t kPortSignature = 0x24;        // PxSIG
inline constexpr uint64_t kPortSataStatus = 0x28;       // PxSSTS
inline constexpr uint64_t kPortSataControl = 0x2c;      // PxSCTL
inline constexpr uint64_t kPortSataError = 0x30;        // PxSERR
inline constexpr uint64_t kPortSataActive = 0x34;       // PxSACT
inline constexpr uint64_t kPortCommandIssue = 0x38;     // PxCI

// PxIS bits (section 3.3.5).
inline constexpr uint32_t kPortIrqD2hRegister = 1u << 0;  // DHRS
inline constexpr uint32_t kPortIrqPioSetup = 1u << 1;     // PSS
inline constexpr uint32_t kPortIrqTaskFileError = 1u << 30;  // TFES
inline constexpr uint32_t kPortIrqValid = 0xfdc000ff;

// PxCMD bits (section 3.3.7).
inline constexpr uint32_t kCmdStart = 1u << 0;          // ST
inline constexpr uint32_t kCmdSpinUp = 1u << 1;         // SUD
inline constexpr uint32_t kCmdPowerOn = 1u << 2;        // POD
inline constexpr uint32_t kCmdCommandListOverride = 1u << 3;  // CLO
inline constexpr uint32_t kCmdFisReceiveEnable = 1u << 4;     // FRE
inline constexpr uint32_t kCmdFisReceiveRunning = 1u << 14;   // FR
inline constexpr uint32_t kCmdListRunning = 1u << 15;         // CR
inline constexpr uint32_t kCmdWritable = kCmdStart | kCmdSpinUp | kCmdPowerOn |
                                         kCmdFisReceiveEnable | (1u << 24) /* ATAPI */ |
                                         (1u << 25) /* DLAE */ | (1u << 26) /* ALPE */ |
                                         (1u << 27) /* ASP */;

// PxSSTS with a device present and communicating at Gen1, interface active (section 3.3.10).
inline constexpr uint32_t kSataStatusActive = 0x113;

// In memory (chapter 4): a command header is 32 bytes, the command table holds the command FIS
// at 0, the ATAPI command at 0x40 and the PRDT from 0x80; the received-FIS area holds the PIO
// Setup FIS at 0x20 and the D2H Register FIS at 0x40.
inline constexpr uint64_t kCommandHeaderSize = 32;
inline constexpr uint64_t kCommandTableAtapi = 0x40;
inline constexpr uint64_t kCommandTablePrdt = 0x80;
inline constexpr uint64_t kReceivedPioSetup = 0x20;
inline constexpr uint64_t kReceivedD2hRegister = 0x40;
inline constexpr uint32_t kHeaderAtapi = 1u << 5;
inline constexpr uint8_t kFisRegisterH2d = 0x27;
inline constexpr uint8_t kFisRegisterD2h = 0x34;
inline constexpr uint8_t kFisPioSetup = 0x5f;
inline constexpr uint8_t kDeviceControlSoftReset = 0x04;  // SRST

}  // namespace lamina::ahci
