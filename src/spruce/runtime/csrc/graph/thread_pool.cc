#include "graph/thread_pool.h"

#include "graph/denormals.h"

#include <algorithm>
#include <chrono>

namespace spruce {

ThreadPool::ThreadPool(int num_threads) {
  const unsigned cores = std::thread::hardware_concurrency();
  spin_ = cores == 0 || static_cast<unsigned>(num_threads) <= cores;
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

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

// How long a worker polls for the next job before it sleeps. An inference runs
// one parallel_for per layer, tens of microseconds apart: waking a sleeping
// thread costs about as much as a small layer, so workers stay awake through a
// run and sleep once the engine is idle. A pool with more threads than cores
// never polls: its pollers would take the cores from the threads with work.
constexpr auto kSpin = std::chrono::microseconds(300);

}  // namespace

void ThreadPool::worker_loop() {
  flush_denormals_for_good();
  uint32_t seen = 0;
  for (;;) {
    const auto spin_until = std::chrono::steady_clock::now() + kSpin;
    for (int i = 0; spin_; ++i) {
      if (static_cast<uint32_t>(state_.load(std::memory_order_acquire) >> 32) != seen) break;
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > spin_until) break;
      cpu_relax();
    }
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
  // At least 4 chunks per thread when there are enough units (enough to
  // rebalance, few enough to keep tiles big), else one unit per chunk: 10 units
  // on 2 threads make 10 chunks, not 5 of 2 that would split 3:2.
  const size_t units_per_chunk = std::max<size_t>(1, units / (static_cast<size_t>(num_threads()) * 4));
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
