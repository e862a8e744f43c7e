#include "graph/model.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

namespace spruce {

namespace {

constexpr int64_t kMaxElements = int64_t{1} << 31;  // per tensor

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
  if (dtype == kInt8) return (numel + 3) / 4;
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

Model::Model(std::vector<TensorSpec> specs, const std::vector<OpSpec>& ops, std::vector<int> inputs,
             std::vector<int> outputs)
    : inputs_(std::move(inputs)), outputs_(std::move(outputs)) {
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
    if (s.dtype != kFloat32 && s.dtype != kInt8) {
      throw PlanError("tensor " + std::to_string(i) + " has unknown dtype " + std::to_string(s.dtype));
    }
    if (s.dtype == kInt8 && s.is_const) {
      throw PlanError("tensor " + std::to_string(i) + " is an int8 constant; int8 operators take their "
                      "constants as arrays");
    }
    t.shape = s.shape;
    t.layout = s.layout;
    t.dtype = s.dtype;
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
    if (tensors_[idx].dtype != kFloat32) throw PlanError("graph output " + std::to_string(idx) + " must be float32");
  }
  for (int idx : inputs_) {
    if (tensors_[idx].layout != kNative) throw PlanError("graph input " + std::to_string(idx) + " must be row-major");
    if (tensors_[idx].dtype != kFloat32) throw PlanError("graph input " + std::to_string(idx) + " must be float32");
  }
  const char* keep = std::getenv("SPRUCE_ENGINE_PLAIN_PLANES");
  if (keep == nullptr || std::strcmp(keep, "1") != 0) pad_planes();
}

// Planes that are not a whole number of vectors (14x14, 7x7) cost the sparse
// 1x1 conv twice: reading them it would copy its input into aligned tiles each
// run, and writing them it would store each tile's last vector under a mask
// (slow on AMD). So a tensor's planes are padded (196 -> 200 floats) when its
// writer or a reader wants that, they agree, and the others can deal with it:
// a depthwise conv writes and reads such planes, MEAN reads them. The 1x1 conv
// then reads its input in place and stores whole vectors.
// SPRUCE_ENGINE_PLAIN_PLANES=1 turns this off (tests compare both).
void Model::pad_planes() {
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
    if (writer[idx] < 0 || is_output[idx] || readers[idx].empty() || tensors_[idx].layout != kCHW ||
        tensors_[idx].dtype != kFloat32) {
      continue;
    }
    Op* w = ops_[writer[idx]].get();
    if (w->outputs.size() != 1) continue;
    int64_t stride = w->wanted_output_plane_stride();
    bool agree = true;
    for (Op* r : readers[idx]) {
      const int64_t wanted = r->wanted_input_plane_stride();
      // An op with more inputs reads only the first one padded, and only when
      // it asks for that (a sparse 1x1 conv with a scale or a residual).
      const bool single = r->inputs.size() == 1 ||
                          (wanted > 0 && r->inputs[0] == static_cast<int>(idx) &&
                           std::count(r->inputs.begin(), r->inputs.end(), r->inputs[0]) == 1);
      agree = agree && single && (wanted <= 0 || stride <= 0 || wanted == stride);
      if (wanted > 0) stride = wanted;
    }
    if (!agree || stride <= 0) continue;
    for (Op* r : readers[idx]) agree = agree && r->accepts_input_plane_stride(stride);
    if (!agree || !w->set_output_plane_stride(stride)) continue;
    for (Op* r : readers[idx]) r->set_input_plane_stride(stride);
    tensors_[idx].plane_stride = stride;
  }
}

}  // namespace spruce
