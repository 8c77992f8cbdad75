#pragma once
// Handler selection: each handler file exposes a selector for the opcodes it implements;
// select_handler() (dispatch.cc) routes a decoded instruction to the right one. A null result
// means the instruction is not implemented and raises #UD.

#include "cpu/x86/instruction.h"

namespace lamina::cpu::x86 {

Handler select_handler(const Instruction& in);
// True when the block must end after this instruction (branches, mode and system changes).
bool ends_block(const Instruction& in);

Handler select_alu_handler(const Instruction& in);        // alu_handlers.cc
Handler select_data_handler(const Instruction& in);       // data_handlers.cc
Handler select_shift_handler(const Instruction& in);      // shift_handlers.cc
Handler select_muldiv_handler(const Instruction& in);     // muldiv_handlers.cc
Handler select_bit_handler(const Instruction& in);        // bit_handlers.cc
Handler select_string_handler(const Instruction& in);     // string_handlers.cc
Handler select_control_handler(const Instruction& in);    // control_flow.cc
// A Jcc before its block's end: taken, it ends the block (stop_block and side_exit).
Handler select_side_exit_handler(const Instruction& in);  // control_flow.cc
Handler select_stack_handler(const Instruction& in);      // stack_handlers.cc
Handler select_system_handler(const Instruction& in);     // system_handlers.cc
Handler select_fast_system_call_handler(const Instruction& in);  // fast_system_call.cc
Handler select_descriptor_handler(const Instruction& in); // descriptor_handlers.cc
Handler select_bcd_handler(const Instruction& in);        // bcd_handlers.cc
Handler select_atomic_handler(const Instruction& in);     // atomic_handlers.cc
Handler select_simd_handler(const Instruction& in);       // simd_seam.cc

// Raises #UD; the handler of every decodable but unimplemented instruction.
void invalid_opcode(CpuCore& core, const Instruction& in);

}  // namespace lamina::cpu::x86

namespace lamina::cpu::x86 {
// #GP(0) unless CPL <= IOPL or the TSS I/O permission bitmap allows every byte of the access
// (SDM vol. 1, 19.5). Used by IN/OUT/INS/OUTS.
void check_io_permission(CpuCore& core, uint16_t port, uint8_t size);
}  // namespace lamina::cpu::x86
