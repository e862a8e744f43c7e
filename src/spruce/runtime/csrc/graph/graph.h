// One runnable instance of a Model: the activation arena and its memory plan,
// and the thread pool the operators split their work across.
#pragma once

#include <memory>
#include <vector>

#include "graph/float_buffer.h"
#include "graph/model.h"
#include "graph/thread_pool.h"

namespace spruce {

// The most threads a graph runs on.
constexpr int kMaxThreads = 256;

// num_threads, after checking it is in [1, kMaxThreads] (PlanError if not).
int checked_num_threads(int64_t num_threads);

// One runnable instance of a Model: the activation arena (planned for its
// thread count), the tensors' addresses in it, and a thread pool.
class Graph {
 public:
  Graph(std::shared_ptr<const Model> model, int num_threads);

  const std::shared_ptr<const Model>& model() const { return model_; }
  const std::vector<int>& inputs() const { return model_->inputs(); }
  const std::vector<int>& outputs() const { return model_->outputs(); }
  const Tensor& tensor(int i) const { return tensors_.at(static_cast<size_t>(i)); }
  float* data(int i) { return tensors_.at(static_cast<size_t>(i)).data; }
  size_t arena_bytes() const { return arena_floats_ * sizeof(float); }
  size_t naive_bytes() const { return naive_floats_ * sizeof(float); }
  int num_threads() const { return pool_.num_threads(); }
  size_t num_ops() const { return model_->num_ops(); }
  const Op& op(size_t i) const { return model_->op(i); }

  void execute();
  // Per-op wall time of one run, seconds.
  std::vector<double> profile();

 private:
  void plan_memory();

  std::shared_ptr<const Model> model_;
  std::vector<Tensor> tensors_;  // the model's, with activations in this graph's arena
  std::vector<float*> scratch_;  // per op, in the arena
  float* arena_ = nullptr;
  FloatBuffer arena_owner_;
  size_t arena_floats_ = 0;
  size_t naive_floats_ = 0;
  ThreadPool pool_;
};

}  // namespace spruce
