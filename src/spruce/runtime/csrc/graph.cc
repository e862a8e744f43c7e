#include "graph.h"

#include "denormals.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace spruce {

namespace {

constexpr int64_t kMaxElements = int64_t{1} << 31;  // per tensor
constexpr size_t kAlignFloats = 16;                  // 64 bytes
constexpr size_t kSlackFloats = 16;                  // vector over-read room
constexpr size_t kReuseDelayMaxFloats = 1 << 18;     // 1 MiB (see plan_memory)
constexpr int kReuseDelayOps = 3;                    // (see plan_memory)

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

std::vector<int64_t> Tensor::mem_shape() const {
  if (layout == kCHW) return {shape[0], shape[3], shape[1], shape[2]};
  return shape;
}

size_t Tensor::alloc_floats() const {
  if (layout != kCHW || plane_stride <= shape[1] * shape[2]) return numel;
  return static_cast<size_t>(shape[0] * shape[3] * plane_stride);
}

int64_t get_int(const OpSpec& s, const char* key) {
  auto it = s.ints.find(key);
  if (it == s.ints.end()) fail(s, std::string("missing integer parameter '") + key + "'");
  return it->second;
}

int64_t get_int(const OpSpec& s, const char* key, int64_t fallback) {
  auto it = s.ints.find(key);
  return it == s.ints.end() ? fallback : it->second;
}

double get_float(const OpSpec& s, const char* key, double fallback) {
  auto it = s.floats.find(key);
  return it == s.floats.end() ? fallback : it->second;
}

const Array* find_array(const OpSpec& s, const char* key) {
  auto it = s.arrays.find(key);
  return it == s.arrays.end() ? nullptr : &it->second;
}

const Array& get_array(const OpSpec& s, const char* key) {
  const Array* a = find_array(s, key);
  if (!a) fail(s, std::string("missing array '") + key + "'");
  return *a;
}

void fail(const OpSpec& s, const std::string& what) {
  throw PlanError("operator " + s.name + " (" + s.kind + "): " + what);
}

Graph::Graph(std::vector<TensorSpec> specs, const std::vector<OpSpec>& ops, std::vector<int> inputs,
             std::vector<int> outputs, int num_threads)
    : inputs_(std::move(inputs)), outputs_(std::move(outputs)), pool_(std::max(1, num_threads)) {
  if (num_threads < 1 || num_threads > 256) {
    throw PlanError("num_threads must be in [1, 256]. Received: num_threads=" +
                    std::to_string(num_threads));
  }
  const size_t n = specs.size();
  tensors_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    TensorSpec& s = specs[i];
    Tensor& t = tensors_[i];
    if (s.shape.empty() || s.shape.size() > 6) {
      throw PlanError("tensor " + std::to_string(i) + " has rank " + std::to_string(s.shape.size()) +
                      "; expected rank 1 to 6");
    }
    int64_t numel = 1;
    for (int64_t d : s.shape) {
      if (d < 1 || d > kMaxElements) {
        throw PlanError("tensor " + std::to_string(i) + " has invalid shape " + shape_str(s.shape));
      }
      numel *= d;
      if (numel > kMaxElements) {
        throw PlanError("tensor " + std::to_string(i) + " is too large: shape " + shape_str(s.shape));
      }
    }
    if (s.layout != kNative && s.layout != kCHW) {
      throw PlanError("tensor " + std::to_string(i) + " has unknown layout " + std::to_string(s.layout));
    }
    if (s.layout == kCHW && s.shape.size() != 4) {
      throw PlanError("tensor " + std::to_string(i) + " is channel-major but not 4-D: shape " +
                      shape_str(s.shape));
    }
    t.shape = s.shape;
    t.layout = s.layout;
    t.is_const = s.is_const;
    t.numel = static_cast<size_t>(numel);
    if (s.is_const) {
      if (s.const_data.size() != t.numel) {
        throw PlanError("constant tensor " + std::to_string(i) + " has " +
                        std::to_string(s.const_data.size()) + " values; its shape " +
                        shape_str(s.shape) + " needs " + std::to_string(t.numel));
      }
      const_storage_.push_back(std::move(s.const_data));
      t.data = const_storage_.back().data();
    }
  }
  auto check_index = [&](int idx, const std::string& where) {
    if (idx < 0 || static_cast<size_t>(idx) >= n) {
      throw PlanError(where + " refers to tensor " + std::to_string(idx) + "; the plan has " +
                      std::to_string(n) + " tensors");
    }
  };
  // Dataflow: each activation is written once, before it is read.
  std::vector<char> ready(n, 0);
  for (size_t i = 0; i < n; ++i) ready[i] = tensors_[i].is_const;
  for (int idx : inputs_) {
    check_index(idx, "a graph input");
    if (tensors_[idx].is_const) throw PlanError("graph input " + std::to_string(idx) + " is a constant");
    if (ready[idx]) throw PlanError("graph input " + std::to_string(idx) + " is listed twice");
    ready[idx] = 1;
  }
  for (const OpSpec& s : ops) {
    for (int idx : s.inputs) {
      check_index(idx, "operator " + s.name);
      if (!ready[idx]) fail(s, "reads tensor " + std::to_string(idx) + " before it is computed");
    }
    if (s.outputs.empty()) fail(s, "has no outputs");
    for (int idx : s.outputs) {
      check_index(idx, "operator " + s.name);
      if (ready[idx]) fail(s, "writes tensor " + std::to_string(idx) + ", which already has a value");
      ready[idx] = 1;
    }
    ops_.push_back(make_op(s, tensors_));
    ops_.back()->name = s.name;
    ops_.back()->inputs = s.inputs;
    ops_.back()->outputs = s.outputs;
  }
  if (outputs_.empty()) throw PlanError("the plan has no outputs");
  for (int idx : outputs_) {
    check_index(idx, "a graph output");
    if (!ready[idx]) throw PlanError("graph output " + std::to_string(idx) + " is never computed");
    if (tensors_[idx].layout != kNative) throw PlanError("graph output " + std::to_string(idx) + " must be row-major");
  }
  for (int idx : inputs_) {
    if (tensors_[idx].layout != kNative) throw PlanError("graph input " + std::to_string(idx) + " must be row-major");
  }
  const char* keep = std::getenv("SPRUCE_ENGINE_PLAIN_PLANES");
  if (keep == nullptr || std::strcmp(keep, "1") != 0) pad_planes();
  plan_memory();
}

// Planes that are not a whole number of vectors (14x14, 7x7) cost the sparse
// 1x1 conv twice: reading them it would copy its input into aligned tiles each
// run, and writing them it would store each tile's last vector under a mask
// (slow on AMD). So a tensor's planes are padded (196 -> 200 floats) when its
// writer or a reader wants that, they agree, and the others can deal with it:
// a depthwise conv writes and reads such planes, MEAN reads them. The 1x1 conv
// then reads its input in place and stores whole vectors.
// SPRUCE_ENGINE_PLAIN_PLANES=1 turns this off (tests compare both).
void Graph::pad_planes() {
  const size_t n = tensors_.size();
  std::vector<int> writer(n, -1);
  std::vector<std::vector<Op*>> readers(n);
  for (size_t i = 0; i < ops_.size(); ++i) {
    for (int idx : ops_[i]->inputs) readers[idx].push_back(ops_[i].get());
    for (int idx : ops_[i]->outputs) writer[idx] = static_cast<int>(i);
  }
  std::vector<char> is_output(n, 0);
  for (int idx : outputs_) is_output[idx] = 1;
  for (size_t idx = 0; idx < n; ++idx) {
    if (writer[idx] < 0 || is_output[idx] || readers[idx].empty() || tensors_[idx].layout != kCHW) continue;
    Op* w = ops_[writer[idx]].get();
    if (w->outputs.size() != 1) continue;
    int64_t stride = w->wanted_output_plane_stride();
    bool agree = true;
    for (Op* r : readers[idx]) {
      const int64_t wanted = r->wanted_input_plane_stride();
      agree = agree && r->inputs.size() == 1 && (wanted <= 0 || stride <= 0 || wanted == stride);
      if (wanted > 0) stride = wanted;
    }
    if (!agree || stride <= 0) continue;
    for (Op* r : readers[idx]) agree = agree && r->accepts_input_plane_stride(stride);
    if (!agree || !w->set_output_plane_stride(stride)) continue;
    for (Op* r : readers[idx]) r->set_input_plane_stride(stride);
    tensors_[idx].plane_stride = stride;
  }
}

// Liveness-based arena: a tensor lives from the op that writes it to the last
// op that reads it; tensors whose lives overlap get disjoint byte ranges
// (greedy best fit, largest first, as TFLite's arena planner does).
void Graph::plan_memory() {
  const size_t n = tensors_.size();
  const int end = static_cast<int>(ops_.size());
  std::vector<int> first(n, std::numeric_limits<int>::max()), last(n, -1);
  for (int idx : inputs_) first[idx] = -1, last[idx] = std::max(last[idx], -1);
  for (int i = 0; i < end; ++i) {
    for (int idx : ops_[i]->inputs) last[idx] = std::max(last[idx], i);
    for (int idx : ops_[i]->outputs) first[idx] = std::min(first[idx], i), last[idx] = std::max(last[idx], i);
  }
  for (int idx : outputs_) last[idx] = end;
  for (int idx : inputs_) last[idx] = end;  // inputs stay readable (benchmark reruns)
  // With several threads, the memory of a tensor small enough to stay in a
  // core's L2 goes to no other tensor until kReuseDelayOps operators after its
  // last reader. A 1x1 conv split by output channels reads every input plane
  // on every thread, so those lines sit in both cores' caches; a depthwise
  // conv writing its output over them at once must first take each line from
  // the other core (MobileNetV1 90%, 2 threads: the 14x14 depthwise layers
  // took 43-59 us, 26-28 us with this delay, 36 us on one thread). In-process
  // A/B of one image on 2 threads against no delay, by per-round medians:
  // 1.08-1.11x at 90% (35-38 of 40 rounds), 1.06x at 75%, 1.02x dense; a
  // delay of 2 gave 1.07-1.08x, 1.04x, 1.02x. The arena stays 5.42 MB: the
  // small tensors fit in the large ones' gaps.
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
    if (size_t floats = ops_[i]->scratch_floats()) {
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
  // FloatBuffer puts them on 2 MiB pages where the OS offers them
  // (MobileNetV1-224: fastest run 1-3% faster).
  arena_owner_ = FloatBuffer(arena_floats_);
  arena_ = arena_owner_.data();
  for (const Item& it : items) {
    if (it.tensor < n) {
      tensors_[it.tensor].data = arena_ + it.offset;
    } else {
      ops_[it.tensor - n]->scratch = arena_ + it.offset;
    }
  }
}

void Graph::execute() {
  ScopedFlushDenormals flush;
  RunContext ctx{&tensors_, &pool_};
  for (auto& op : ops_) op->run(ctx);
}

std::vector<double> Graph::profile() {
  ScopedFlushDenormals flush;
  RunContext ctx{&tensors_, &pool_};
  std::vector<double> times;
  for (auto& op : ops_) {
    auto t0 = std::chrono::steady_clock::now();
    op->run(ctx);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return times;
}

}  // namespace spruce
