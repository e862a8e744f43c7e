// A persistent pool of std::threads that splits index ranges across cores.
//
// parallel_for(n, fn) calls fn(begin, end) on disjoint chunks covering [0, n);
// the calling thread takes the first chunk, so a pool of 1 thread runs inline.
#pragma once

#include <condition_variable>
#include <cstddef>
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

  // Splits [0, n) into at most num_threads() chunks whose sizes are multiples
  // of `grain` (except the last) and runs fn(begin, end) on each.
  void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const std::function<void(size_t, size_t)>* job_ = nullptr;
  std::vector<std::pair<size_t, size_t>> chunks_;
  unsigned long long generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace spruce
