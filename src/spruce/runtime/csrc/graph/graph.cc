#include "graph/graph.h"

#include "graph/denormals.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <string>

namespace spruce {

namespace {

constexpr size_t kAlignFloats = 16;               // 64 bytes
constexpr size_t kSlackFloats = 16;               // vector over-read room
constexpr size_t kReuseDelayMaxFloats = 1 << 18;  // 1 MiB (see plan_memory)
constexpr int kReuseDelayOps = 3;                 // (see plan_memory)

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

}  // namespace

int checked_num_threads(int64_t num_threads) {
  if (num_threads < 1 || num_threads > kMaxThreads) {
    throw PlanError("num_threads must be in [1, " + std::to_string(kMaxThreads) +
                    "]. Received: num_threads=" + std::to_string(num_threads));
  }
  return static_cast<int>(num_threads);
}

Graph::Graph(std::shared_ptr<const Model> model, int num_threads)
    : model_(std::move(model)), tensors_(model_->tensors()), scratch_(model_->num_ops(), nullptr),
      pool_(checked_num_threads(num_threads)) {
  plan_memory();
}

// Liveness-based arena: a tensor lives from the op that writes it to the last
// op that reads it; tensors whose lives overlap get disjoint byte ranges
// (greedy best fit, largest first, as TFLite's arena planner does).
void Graph::plan_memory() {
  const size_t n = tensors_.size();
  const int end = static_cast<int>(model_->num_ops());
  auto op = [&](int i) -> const Op& { return model_->op(static_cast<size_t>(i)); };
  std::vector<int> first(n, std::numeric_limits<int>::max()), last(n, -1);
  for (int idx : inputs()) first[idx] = -1, last[idx] = std::max(last[idx], -1);
  for (int i = 0; i < end; ++i) {
    for (int idx : op(i).inputs) last[idx] = std::max(last[idx], i);
    for (int idx : op(i).outputs) first[idx] = std::min(first[idx], i), last[idx] = std::max(last[idx], i);
  }
  for (int idx : outputs()) last[idx] = end;
  for (int idx : inputs()) last[idx] = end;  // inputs stay readable (benchmark reruns)
  // With several threads, the memory of a tensor small enough to stay in a
  // core's L2 goes to no other tensor until kReuseDelayOps operators after its
  // last reader: a 1x1 conv split by output channels leaves every input plane
  // in both cores' caches, and a depthwise conv writing over those lines at
  // once would first have to take each from the other core. The arena hardly
  // grows, since the small tensors fit in the large ones' gaps.
  if (pool_.num_threads() > 1) {
    for (size_t i = 0; i < n; ++i) {
      if (!tensors_[i].is_const && last[i] >= first[i] && tensors_[i].alloc_floats() <= kReuseDelayMaxFloats) {
        last[i] = std::min(end, last[i] + kReuseDelayOps);
      }
    }
  }

  // Items n + i are the scratch of op i, alive during that op only.
  struct Item { size_t tensor, size; int first, last; size_t offset; };
  std::vector<Item> items;
  for (size_t i = 0; i < n; ++i) {
    if (tensors_[i].is_const || last[i] < first[i]) continue;
    items.push_back({i, round_up(tensors_[i].alloc_floats() + kSlackFloats, kAlignFloats), first[i], last[i], 0});
  }
  for (int i = 0; i < end; ++i) {
    if (size_t floats = op(i).scratch_floats()) {
      items.push_back({n + static_cast<size_t>(i), round_up(floats + kSlackFloats, kAlignFloats), i, i, 0});
    }
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.size != b.size ? a.size > b.size : a.tensor < b.tensor;
  });
  std::vector<const Item*> placed;
  size_t total = 0;
  naive_floats_ = 0;
  for (Item& it : items) {
    naive_floats_ += it.size;
    std::vector<std::pair<size_t, size_t>> busy;
    for (const Item* p : placed) {
      if (p->first <= it.last && it.first <= p->last) busy.push_back({p->offset, p->offset + p->size});
    }
    std::sort(busy.begin(), busy.end());
    size_t best = std::numeric_limits<size_t>::max(), best_gap = best, cursor = 0;
    for (auto& b : busy) {
      if (b.first > cursor && b.first - cursor >= it.size && b.first - cursor < best_gap) {
        best = cursor;
        best_gap = b.first - cursor;
      }
      cursor = std::max(cursor, b.second);
    }
    it.offset = best != std::numeric_limits<size_t>::max() ? best : cursor;
    total = std::max(total, it.offset + it.size);
    placed.push_back(&it);
  }
  arena_floats_ = std::max<size_t>(total, kAlignFloats);
  // The early layers' activations span megabytes (thousands of 4 KiB pages):
  // FloatBuffer puts them on 2 MiB pages where the OS offers them.
  arena_owner_ = FloatBuffer(arena_floats_);
  arena_ = arena_owner_.data();
  for (const Item& it : items) {
    if (it.tensor < n) {
      tensors_[it.tensor].data = arena_ + it.offset;
    } else {
      scratch_[it.tensor - n] = arena_ + it.offset;
    }
  }
}

void Graph::execute() {
  ScopedFlushDenormals flush;
  for (size_t i = 0; i < model_->num_ops(); ++i) model_->op(i).run(RunContext{&tensors_, &pool_, scratch_[i]});
}

std::vector<double> Graph::profile() {
  ScopedFlushDenormals flush;
  std::vector<double> times;
  for (size_t i = 0; i < model_->num_ops(); ++i) {
    auto t0 = std::chrono::steady_clock::now();
    model_->op(i).run(RunContext{&tensors_, &pool_, scratch_[i]});
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return times;
}

}  // namespace spruce
