// The execution plan the Python loader hands over, checked again here, and the
// Model compiled from it (operators with their packed weights).
//
// Tensors carry their logical (TFLite, NHWC-order) shape and a memory layout:
// kNative is row-major in logical order; kCHW stores a 4-D [N, H, W, C] tensor
// as N images of C planes of H x W (what the sparse kernels want). Nothing in a
// plan is trusted: every index, shape and array size is checked before use and
// a bad one raises PlanError (a Python ValueError).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "graph/thread_pool.h"

namespace spruce {

struct PlanError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum Layout : int { kNative = 0, kCHW = 1 };

// Element types. int8 tensors (the activations of TFLite's full-integer
// models) live in the same float arena, four values to a float slot; only the
// int8 operators (ops/quantized_*.cc) read or write them.
enum DType : int { kFloat32 = 0, kInt8 = 1 };

// Fused activations (TFLite's ActivationFunctionType values).
enum Activation : int { kActNone = 0, kActRelu = 1, kActReluN1To1 = 2, kActRelu6 = 3 };

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

struct TensorSpec {
  std::vector<int64_t> shape;
  int layout = kNative;
  int dtype = kFloat32;
  bool is_const = false;
  std::vector<float> const_data;  // row-major in memory-layout order
};

struct OpSpec {
  std::string kind;
  std::string name;
  std::vector<int> inputs;
  std::vector<int> outputs;
  std::map<std::string, int64_t> ints;
  std::map<std::string, double> floats;
  std::map<std::string, Array> arrays;
};

struct Tensor {
  std::vector<int64_t> shape;  // logical
  int layout = kNative;
  int dtype = kFloat32;
  bool is_const = false;
  size_t numel = 0;
  float* data = nullptr;  // an int8 tensor's bytes start here
  int8_t* s8() const { return reinterpret_cast<int8_t*>(data); }
  // kCHW only: floats from one channel plane to the next when more than H * W
  // (Model::pad_planes); the floats between planes hold junk.
  int64_t plane_stride = 0;
  // Memory-order dims: shape for kNative, [N, C, H, W] for kCHW.
  std::vector<int64_t> mem_shape() const;
  // Floats the tensor occupies: numel, or more with padded planes.
  size_t alloc_floats() const;
};

// What an op's run() sees: the tensors of the graph running it (addresses in
// that graph's arena), its thread pool, and the op's working memory.
struct RunContext {
  const std::vector<Tensor>* tensors;
  ThreadPool* pool;
  float* scratch;  // scratch_floats() floats, 64-byte aligned; null when it asks for none
};

// An operator with its weights packed for the kernels. Built and configured
// (plane strides) while its Model is built, then only run: run() is const, so
// the graphs sharing a Model run its ops at once from their own threads.
class Op {
 public:
  virtual ~Op() = default;
  virtual void run(const RunContext& ctx) const = 0;
  // Multiply-adds x 2 per run, for GFLOP/s reports; 0 when negligible.
  virtual double flops() const { return 0.0; }
  virtual const char* family() const = 0;
  // Floats of working memory the op needs while it runs; each graph places it
  // in its arena (64-byte aligned, shared with tensors not alive at that op)
  // and passes it as RunContext::scratch.
  virtual size_t scratch_floats() const { return 0; }
  // Padded channel planes (Model::pad_planes): the plane stride an op would
  // like its first CHW input or its output to have (0: none), whether it can
  // read an input with a given stride, and the setters the model calls when
  // the wishes agree and every reader accepts; a writer returns false if it
  // cannot write planes that far apart.
  virtual int64_t wanted_input_plane_stride() const { return 0; }
  virtual int64_t wanted_output_plane_stride() const { return 0; }
  virtual bool accepts_input_plane_stride(int64_t stride) const {
    return stride > 0 && stride == wanted_input_plane_stride();
  }
  virtual void set_input_plane_stride(int64_t /*stride*/) {}
  virtual bool set_output_plane_stride(int64_t /*stride*/) { return false; }
  std::string name;
  std::vector<int> inputs;
  std::vector<int> outputs;
};

// Builds and checks one op; defined in ops/registry.cc.
std::unique_ptr<Op> make_op(const OpSpec& spec, const std::vector<Tensor>& tensors);

// A checked plan, compiled: the tensors' shapes, layouts and constants, and
// the operators with their packed weights. Immutable once built, so every
// Graph that runs it (the copies a batch is shared out among) holds it through
// a shared_ptr<const Model> instead of packing its own weights.
class Model {
 public:
  Model(std::vector<TensorSpec> tensors, const std::vector<OpSpec>& ops, std::vector<int> inputs,
        std::vector<int> outputs);
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const std::vector<int>& inputs() const { return inputs_; }
  const std::vector<int>& outputs() const { return outputs_; }
  // Activations have no data here: each Graph places them in its own arena.
  const std::vector<Tensor>& tensors() const { return tensors_; }
  size_t num_ops() const { return ops_.size(); }
  const Op& op(size_t i) const { return *ops_[i]; }

 private:
  void pad_planes();

  std::vector<Tensor> tensors_;
  std::vector<std::vector<float>> const_storage_;
  std::vector<std::unique_ptr<Op>> ops_;
  std::vector<int> inputs_;
  std::vector<int> outputs_;
};

// Helpers for ops.
int64_t get_int(const OpSpec& s, const char* key);
int64_t get_int(const OpSpec& s, const char* key, int64_t fallback);
double get_float(const OpSpec& s, const char* key, double fallback);
const Array& get_array(const OpSpec& s, const char* key);
const Array* find_array(const OpSpec& s, const char* key);
[[noreturn]] void fail(const OpSpec& s, const std::string& what);

}  // namespace spruce
