#include "thread_pool.h"

#include <algorithm>

namespace spruce {

ThreadPool::ThreadPool(int num_threads) {
  int extra = std::max(0, num_threads - 1);
  chunks_.resize(static_cast<size_t>(extra) + 1);
  for (int i = 0; i < extra; ++i) {
    workers_.emplace_back([this, i] { worker_loop(i + 1); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(int index) {
  unsigned long long seen = 0;
  for (;;) {
    const std::function<void(size_t, size_t)>* job;
    std::pair<size_t, size_t> chunk;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
      chunk = chunks_[static_cast<size_t>(index)];
    }
    if (chunk.first < chunk.second) (*job)(chunk.first, chunk.second);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(size_t n, size_t grain,
                              const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  size_t units = (n + grain - 1) / grain;
  size_t parts = std::min<size_t>(units, static_cast<size_t>(num_threads()));
  if (parts <= 1) {
    fn(0, n);
    return;
  }
  // Even split in units of `grain`; threads beyond `parts` get empty chunks.
  std::vector<std::pair<size_t, size_t>> chunks(static_cast<size_t>(num_threads()), {0, 0});
  size_t begin_unit = 0;
  for (size_t p = 0; p < parts; ++p) {
    size_t count = units / parts + (p < units % parts ? 1 : 0);
    size_t b = std::min(n, begin_unit * grain);
    size_t e = std::min(n, (begin_unit + count) * grain);
    chunks[p] = {b, e};
    begin_unit += count;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    chunks_ = chunks;
    job_ = &fn;
    pending_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  start_cv_.notify_all();
  fn(chunks[0].first, chunks[0].second);
  std::unique_lock<std::mutex> lock(mutex_);
  done_cv_.wait(lock, [&] { return pending_ == 0; });
}

}  // namespace spruce
