#pragma once
// TransferRollback: puts CPL, CS, SS, RSP and RFLAGS (VM) back when a far transfer, return or event delivery
// faults after it began switching them (a push to the new stack, a descriptor write), so the
// fault is delivered from the state the instruction started in (SDM 6.5: faults are restartable).
//
// Ownership: borrows the core for one instruction. Thread-safety: the vCPU's thread only.

#include "cpu/x86/core.h"

namespace lamina::cpu::x86 {

class TransferRollback {
 public:
  explicit TransferRollback(CpuCore& core)
      : core_(core),
        cpl_(core.state.cpl),
        code_(core.state.segment[kCs]),
        stack_(core.state.segment[kSs]),
        stack_pointer_(core.state.gpr[kRsp]),
        rflags_(core.state.rflags) {}
  TransferRollback(const TransferRollback&) = delete;
  TransferRollback& operator=(const TransferRollback&) = delete;
  ~TransferRollback() {
    if (committed_) return;
    core_.state.cpl = cpl_;
    core_.state.segment[kCs] = code_;
    core_.state.segment[kSs] = stack_;
    core_.state.gpr[kRsp] = stack_pointer_;
    core_.state.rflags = rflags_;
    core_.update_mode();
  }
  // The transfer completed: keep what it changed.
  void commit() { committed_ = true; }

 private:
  CpuCore& core_;
  const uint8_t cpl_;
  const SegmentCache code_;
  const SegmentCache stack_;
  const uint64_t stack_pointer_;
  const uint64_t rflags_;  // without the lazy arithmetic flags, which a transfer leaves alone
  bool committed_ = false;
};

}  // namespace lamina::cpu::x86
