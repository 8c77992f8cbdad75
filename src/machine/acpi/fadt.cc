#include "machine/acpi/fadt.h"

#include <cassert>

namespace lamina::machine::acpi {

namespace {

constexpr uint8_t kPm1EventLength = 4;
constexpr uint8_t kPm1ControlLength = 2;
constexpr uint8_t kPmTimerLength = 4;

// IAPC_BOOT_ARCH bits (table 5.11).
constexpr uint16_t kLegacyDevices = 1 << 0;
constexpr uint16_t k8042 = 1 << 1;
constexpr uint16_t kVgaNotPresent = 1 << 2;

GenericAddress io_block(uint16_t port, uint8_t length, uint8_t access_size) {
  if (port == 0) return {};
  return {AddressSpace::kSystemIo, static_cast<uint8_t>(length * 8), 0, access_size, port};
}

}  // namespace

Bytes build_fadt(const AcpiConfig& config, uint64_t dsdt_address, uint64_t facs_address) {
  const uint8_t gpe0_length = config.gpe0_port == 0 ? 0 : config.gpe0_length;
  Table fadt("FACP", 6);
  fadt.u32(static_cast<uint32_t>(facs_address));  // FIRMWARE_CTRL
  fadt.u32(static_cast<uint32_t>(dsdt_address));  // DSDT
  fadt.u8(0);                                     // reserved (ACPI 1.0 INT_MODEL)
  fadt.u8(0);                                     // preferred PM profile: unspecified
  fadt.u16(config.sci_irq);
  // SMI_CMD 0: no SMM handshake; the OS finds the machine already in ACPI mode, so the PM
  // device must report PM1_CNT.SCI_EN = 1 from reset.
  fadt.u32(0);
  fadt.u8(0);  // ACPI_ENABLE
  fadt.u8(0);  // ACPI_DISABLE
  fadt.u8(0);  // S4BIOS_REQ
  fadt.u8(0);  // PSTATE_CNT
  fadt.u32(config.pm1a_event_port);
  fadt.u32(0);  // PM1b_EVT_BLK
  fadt.u32(config.pm1a_control_port);
  fadt.u32(0);  // PM1b_CNT_BLK
  fadt.u32(0);  // PM2_CNT_BLK
  fadt.u32(config.pm_timer_port);
  fadt.u32(config.gpe0_port);
  fadt.u32(0);  // GPE1_BLK
  fadt.u8(kPm1EventLength);
  fadt.u8(kPm1ControlLength);
  fadt.u8(0);  // PM2_CNT_LEN
  fadt.u8(kPmTimerLength);
  fadt.u8(gpe0_length);
  fadt.u8(0);  // GPE1_BLK_LEN
  fadt.u8(0);  // GPE1_BASE
  fadt.u8(0);  // CST_CNT
  // Latencies above 100 / 1000 us say C2 and C3 are not supported (section 5.2.9).
  fadt.u16(101);   // P_LVL2_LAT
  fadt.u16(1001);  // P_LVL3_LAT
  fadt.u16(0);     // FLUSH_SIZE
  fadt.u16(0);     // FLUSH_STRIDE
  fadt.u8(0);      // DUTY_OFFSET
  fadt.u8(0);      // DUTY_WIDTH
  fadt.u8(0);      // DAY_ALRM
  fadt.u8(0);      // MON_ALRM
  fadt.u8(config.rtc_century_index);
  uint16_t boot_architecture = kLegacyDevices;
  if (config.has_i8042) boot_architecture |= k8042;
  if (!config.has_vga) boot_architecture |= kVgaNotPresent;
  fadt.u16(boot_architecture);
  fadt.u8(0);  // reserved
  fadt.u32(kFadtWbinvd | kFadtProcC1 | kFadtSleepButton | kFadtTimerValueExtended |
           kFadtResetRegisterSupported);
  fadt.gas(io_block(config.reset_port, 1, 1));  // RESET_REG
  fadt.u8(config.reset_value);
  fadt.u16(0);  // ARM_BOOT_ARCH
  fadt.u8(0);   // FADT minor version: ACPI 6.0
  fadt.u64(0);  // X_FIRMWARE_CTRL: the 32-bit FIRMWARE_CTRL holds the FACS (below 4 GiB)
  fadt.u64(dsdt_address);  // X_DSDT
  fadt.gas(io_block(config.pm1a_event_port, kPm1EventLength, 2));
  fadt.gas({});  // X_PM1b_EVT_BLK
  fadt.gas(io_block(config.pm1a_control_port, kPm1ControlLength, 2));
  fadt.gas({});  // X_PM1b_CNT_BLK
  fadt.gas({});  // X_PM2_CNT_BLK
  fadt.gas(io_block(config.pm_timer_port, kPmTimerLength, 3));
  fadt.gas(io_block(config.gpe0_port, gpe0_length, 1));
  fadt.gas({});  // X_GPE1_BLK
  fadt.gas({});  // SLEEP_CONTROL_REG (hardware-reduced only)
  fadt.gas({});  // SLEEP_STATUS_REG
  fadt.text("Lamina", 8);  // hypervisor vendor identity
  assert(fadt.size() == kFadtSize);
  return std::move(fadt).finish();
}

}  // namespace lamina::machine::acpi
