#include "thread_pool.h"

#include <algorithm>

namespace spruce {

ThreadPool::ThreadPool(int num_threads) {
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::drain(uint32_t gen) {
  const Fn* fn = job_.load(std::memory_order_acquire);
  for (;;) {
    uint64_t s = state_.load(std::memory_order_acquire);
    uint32_t left = static_cast<uint32_t>(s);
    if (static_cast<uint32_t>(s >> 32) != gen || left == 0) return;
    if (!state_.compare_exchange_weak(s, s - 1, std::memory_order_acq_rel)) continue;
    // The chunk is ours and generation `gen` cannot end before we finish it,
    // so fn and the sizes below still belong to it.
    const size_t chunk = chunk_.load(std::memory_order_relaxed);
    const size_t index = chunks_.load(std::memory_order_relaxed) - left;
    size_t begin = index * chunk;
    size_t end = std::min(n_.load(std::memory_order_relaxed), begin + chunk);
    (*fn)(begin, end);
    done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::worker_loop() {
  uint32_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] {
        return stop_ || static_cast<uint32_t>(state_.load(std::memory_order_acquire) >> 32) != seen;
      });
      if (stop_) return;
      seen = static_cast<uint32_t>(state_.load(std::memory_order_acquire) >> 32);
    }
    drain(seen);
  }
}

void ThreadPool::parallel_for(size_t n, size_t grain, const Fn& fn) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  const size_t units = (n + grain - 1) / grain;
  if (workers_.empty() || units <= 1) {
    fn(0, n);
    return;
  }
  // About 4 chunks per thread: enough to rebalance, few enough to keep tiles big.
  const size_t target = std::min(units, static_cast<size_t>(num_threads()) * 4);
  const size_t units_per_chunk = (units + target - 1) / target;
  uint32_t gen, chunks;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t chunk = units_per_chunk * grain;
    chunks = static_cast<uint32_t>((n + chunk - 1) / chunk);
    n_.store(n, std::memory_order_relaxed);
    chunk_.store(chunk, std::memory_order_relaxed);
    chunks_.store(chunks, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    job_.store(&fn, std::memory_order_relaxed);
    gen = static_cast<uint32_t>(state_.load(std::memory_order_relaxed) >> 32) + 1;
    state_.store((static_cast<uint64_t>(gen) << 32) | chunks, std::memory_order_release);
  }
  wake_.notify_all();
  drain(gen);
  while (done_.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

}  // namespace spruce
