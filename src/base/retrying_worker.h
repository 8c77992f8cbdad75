#pragma once
// RetryingWorker: one background thread that runs queued jobs in turn, each until it succeeds,
// says there is nothing left to do (kNotFound), or `attempts` tries `pause` apart have failed;
// then its `done` callback hears the last result and the number of tries. For work that waits
// on something outside (a network card's switch daemon coming back), off the thread that
// noticed the need (a device's I/O thread, a worker's event reader).
//
// Ownership: owns its thread. Thread-safety: post() from any thread; stop() (also the
// destructor) cuts a pause short, drops what is queued and joins, so it must not run on the
// worker's own thread (a job or a callback).

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "base/error.h"

namespace lamina {

class RetryingWorker {
 public:
  using Job = std::move_only_function<Result<void>()>;
  using Done = std::move_only_function<void(const Result<void>& last, int tries)>;

  RetryingWorker(int attempts, std::chrono::milliseconds pause) : attempts_(attempts), pause_(pause) {}
  ~RetryingWorker() { stop(); }
  RetryingWorker(const RetryingWorker&) = delete;
  RetryingWorker& operator=(const RetryingWorker&) = delete;

  // The thread starts with the first job. After stop() jobs are dropped.
  void post(Job job, Done done) {
    std::lock_guard lock(mutex_);
    if (stopped_) return;
    queue_.push_back({std::move(job), std::move(done)});
    if (!thread_.joinable()) thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
    wanted_.notify_one();
  }

  void stop() {
    std::jthread thread;
    {
      std::lock_guard lock(mutex_);
      stopped_ = true;
      queue_.clear();
      thread.swap(thread_);
    }
    // ~jthread requests the stop, which wakes the waits below, and joins.
  }

 private:
  struct Entry {
    Job job;
    Done done;
  };

  void run(std::stop_token stop) {
    for (;;) {
      Entry entry;
      {
        std::unique_lock lock(mutex_);
        if (!wanted_.wait(lock, stop, [this] { return !queue_.empty(); })) return;
        entry = std::move(queue_.front());
        queue_.pop_front();
      }
      for (int tries = 1;; ++tries) {
        Result<void> result = entry.job();
        const bool finished = result || result.error().code() == ErrorCode::kNotFound || tries >= attempts_;
        if (finished) {
          if (entry.done) entry.done(result, tries);
          break;
        }
        std::unique_lock lock(mutex_);
        wanted_.wait_for(lock, stop, pause_, [] { return false; });
        if (stop.stop_requested()) return;
      }
    }
  }

  const int attempts_;
  const std::chrono::milliseconds pause_;
  std::mutex mutex_;
  std::condition_variable_any wanted_;
  std::deque<Entry> queue_;
  bool stopped_ = false;
  std::jthread thread_;
};

}  // namespace lamina
