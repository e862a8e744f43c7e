// A persistent pool of std::threads that splits index ranges across cores.
//
// parallel_for(n, grain, fn) calls fn(begin, end) on disjoint chunks covering
// [0, n). Chunks are handed out dynamically (a few per thread) and the calling
// thread takes them too, so a thread that the OS deschedules, or a chunk that
// costs more than others (sparse rows), does not hold the others up. A pool of
// 1 thread runs everything inline. Idle workers poll for the next job for a
// short while before they sleep, so consecutive layers start without a wake-up.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace spruce {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Chunk sizes are multiples of `grain` (except the last).
  void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn);

 private:
  using Fn = std::function<void(size_t, size_t)>;
  void worker_loop();
  // Runs chunks of generation `gen` until none is left.
  void drain(uint32_t gen);

  std::vector<std::thread> workers_;
  bool spin_ = true;  // idle workers poll briefly before sleeping (see thread_pool.cc)
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  // (generation << 32) | number of chunks not yet handed out.
  std::atomic<uint64_t> state_{0};
  std::atomic<uint32_t> done_{0};
  std::atomic<const Fn*> job_{nullptr};
  std::atomic<size_t> n_{0}, chunk_{0};
  std::atomic<uint32_t> chunks_{0};
};

}  // namespace spruce
