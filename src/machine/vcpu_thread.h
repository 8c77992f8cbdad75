#pragma once
// VcpuThread: the host thread that runs one vCPU. It calls Vcpu::run(budget) in a loop; when the
// guest halts (HLT) or an application processor waits for its SIPI, it sleeps until the vCPU's
// local APIC kicks it (wake()). INIT and SIPI messages the LAPIC accepted are handed to the vCPU
// before each slice. A triple fault posts MachineExit::kTripleFault to the machine's StopQueue
// and ends the thread.
//
// Ownership: borrows the Vcpu, its LocalApic and the StopQueue, which must outlive the thread;
// owns the std::jthread, joined by stop() or the destructor. Thread-safety: wake() and stop()
// from any thread (wake() is the LAPIC's kick callback, called without LAPIC locks held).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "accel/accelerator.h"
#include "hw/local_apic.h"
#include "machine/machine_exit.h"

namespace lamina::machine {

class VcpuThread {
 public:
  // Guest instructions per run() call: small enough that INIT/SIPI and a stop request are seen
  // within a fraction of a millisecond, large enough that the loop costs nothing measurable.
  static constexpr uint64_t kSliceInstructions = 200'000;

  // `setup` (may be empty) runs first on the new thread (MachineOptions::guest_thread_setup).
  VcpuThread(uint32_t index, accel::Vcpu& vcpu, hw::LocalApic& apic, StopQueue& stops,
             std::function<void()> setup = {})
      : index_(index), vcpu_(vcpu), apic_(apic), stops_(stops), setup_(std::move(setup)) {}
  ~VcpuThread() { stop(); }
  VcpuThread(const VcpuThread&) = delete;
  VcpuThread& operator=(const VcpuThread&) = delete;

  void start();
  // Something may be pending in the LAPIC (interrupt, NMI, INIT, SIPI): look again.
  void wake();
  // Asks the thread to finish its slice and joins it.
  void stop();
  // Holds the vCPU at the next slice boundary (an instruction boundary) until resumed; the
  // LAPIC keeps accepting interrupts meanwhile. From any thread.
  void set_paused(bool paused);
  // After set_paused(true): returns once the thread holds at the boundary (or has ended, or
  // never started), so its vCPU's state may be read. From any thread but the vCPU's.
  void wait_parked();

  // Auto-converge (live migration): after each slice the thread sleeps so that the vCPU runs
  // (100 - percent)% of the time; 0 to 99. From any thread.
  void set_throttle(unsigned percent) { throttle_percent_.store(std::min(percent, 99u)); }

  // Guest instructions retired so far; from any thread (exact after join).
  uint64_t instructions() const { return instructions_.load(std::memory_order_relaxed); }
  // The vCPU's code cache as of its last slice; from any thread.
  accel::CodeCacheStats code_cache_stats() const {
    return {translations_.load(std::memory_order_relaxed), flushes_.load(std::memory_order_relaxed),
            cache_used_.load(std::memory_order_relaxed), cache_capacity_.load(std::memory_order_relaxed)};
  }

 private:
  void loop(std::stop_token stop);
  void run_slices(const std::stop_token& stop);
  // Hands accepted INIT/SIPI messages to the vCPU.
  void forward_startup_messages();
  // Sleeps until wake() or stop(); returns false when stopping.
  bool sleep(const std::stop_token& stop);
  // Auto-converge's sleep after a slice that ran for `ran`.
  void throttle_sleep(const std::stop_token& stop, std::chrono::steady_clock::duration ran,
                      unsigned percent);
  // Waits while paused; returns false when stopping.
  bool wait_while_paused(const std::stop_token& stop);

  const uint32_t index_;
  accel::Vcpu& vcpu_;
  hw::LocalApic& apic_;
  StopQueue& stops_;
  std::function<void()> setup_;
  std::mutex mutex_;
  std::condition_variable woken_;
  std::condition_variable parked_changed_;
  bool wake_pending_ = false;
  bool paused_ = false;
  bool parked_ = false;    // the thread waits in wait_while_paused()
  bool finished_ = false;  // the loop has returned (stopped, or a triple fault)
  bool started_ = false;   // start() was called
  std::atomic<uint64_t> instructions_ = 0;
  // code_cache_stats(), published after each slice (the vCPU's own counters are its thread's).
  std::atomic<uint64_t> translations_ = 0, flushes_ = 0, cache_used_ = 0, cache_capacity_ = 0;
  std::atomic<unsigned> throttle_percent_ = 0;
  std::jthread thread_;
};

}  // namespace lamina::machine
