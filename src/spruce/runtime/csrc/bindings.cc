// The Python module spruce.runtime._engine: a Graph built from a plan (lists of
// dicts made by spruce/runtime/loader.py), run on NumPy arrays with the GIL
// released, and timed in a native loop.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>

#include "graph.h"
#include "kernels.h"

namespace py = pybind11;

namespace spruce {

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

Array to_array(const py::handle& h, const std::string& what) {
  FloatArray a = FloatArray::ensure(h);
  if (!a) throw PlanError(what + " must be a float array");
  Array out;
  out.shape.assign(a.shape(), a.shape() + a.ndim());
  out.data.assign(a.data(), a.data() + a.size());
  return out;
}

template <typename T>
T get_key(const py::dict& d, const char* key, const std::string& where) {
  if (!d.contains(key)) throw PlanError(where + " has no '" + key + "'");
  try {
    return d[key].cast<T>();
  } catch (const py::cast_error&) {
    throw PlanError(where + ": '" + key + "' has the wrong type");
  }
}

TensorSpec to_tensor_spec(const py::handle& h, size_t i) {
  std::string where = "tensor " + std::to_string(i);
  py::dict d = py::reinterpret_borrow<py::dict>(h);
  TensorSpec t;
  t.shape = get_key<std::vector<int64_t>>(d, "shape", where);
  t.layout = get_key<int>(d, "layout", where);
  if (d.contains("data") && !d["data"].is_none()) {
    Array a = to_array(d["data"], where + " data");
    t.is_const = true;
    t.const_data = std::move(a.data);
  }
  return t;
}

OpSpec to_op_spec(const py::handle& h, size_t i) {
  std::string where = "operator " + std::to_string(i);
  py::dict d = py::reinterpret_borrow<py::dict>(h);
  OpSpec s;
  s.kind = get_key<std::string>(d, "kind", where);
  s.name = d.contains("name") ? d["name"].cast<std::string>() : where;
  s.inputs = get_key<std::vector<int>>(d, "inputs", where);
  s.outputs = get_key<std::vector<int>>(d, "outputs", where);
  if (d.contains("ints")) s.ints = get_key<std::map<std::string, int64_t>>(d, "ints", where);
  if (d.contains("floats")) s.floats = get_key<std::map<std::string, double>>(d, "floats", where);
  if (d.contains("arrays")) {
    py::dict arrays = get_key<py::dict>(d, "arrays", where);
    for (auto item : arrays) {
      std::string key = item.first.cast<std::string>();
      s.arrays[key] = to_array(item.second, where + " array '" + key + "'");
    }
  }
  return s;
}

class PyGraph {
 public:
  PyGraph(const py::list& tensors, const py::list& ops, std::vector<int> inputs, std::vector<int> outputs,
          int num_threads) {
    std::vector<TensorSpec> tspecs;
    for (size_t i = 0; i < tensors.size(); ++i) tspecs.push_back(to_tensor_spec(tensors[i], i));
    std::vector<OpSpec> ospecs;
    for (size_t i = 0; i < ops.size(); ++i) ospecs.push_back(to_op_spec(ops[i], i));
    graph_ = std::make_unique<Graph>(std::move(tspecs), ospecs, std::move(inputs), std::move(outputs),
                                     num_threads);
  }

  // Runs on each image when the arrays carry a batch the graph was not built
  // for and the graph's batch is 1.
  py::list run(const py::list& arrays) {
    const auto& ins = graph_->inputs();
    if (arrays.size() != ins.size()) {
      throw PlanError("the model takes " + std::to_string(ins.size()) + " input(s); received " +
                      std::to_string(arrays.size()));
    }
    std::vector<FloatArray> xs;
    int64_t images = -1;
    bool per_image = false;
    for (size_t i = 0; i < ins.size(); ++i) {
      FloatArray a = FloatArray::ensure(arrays[i]);
      if (!a) throw PlanError("input " + std::to_string(i) + " must be convertible to float32");
      const Tensor& t = graph_->tensor(ins[i]);
      std::vector<int64_t> got(a.shape(), a.shape() + a.ndim());
      bool exact = got == t.shape;
      bool batched = !exact && got.size() == t.shape.size() && t.shape[0] == 1 && got[0] >= 1 &&
                     std::equal(got.begin() + 1, got.end(), t.shape.begin() + 1);
      if (!exact && !batched) {
        throw PlanError("input " + std::to_string(i) + " should have shape " + shape_text(t.shape) +
                        " (any batch size when it is 1); received " + shape_text(got));
      }
      int64_t b = exact ? 1 : got[0];
      if (images != -1 && b != images) throw PlanError("all inputs must have the same batch size");
      images = b;
      per_image = per_image || batched;
      xs.push_back(std::move(a));
    }
    const auto& outs = graph_->outputs();
    std::vector<FloatArray> ys;
    for (int idx : outs) {
      std::vector<py::ssize_t> shape(graph_->tensor(idx).shape.begin(), graph_->tensor(idx).shape.end());
      if (per_image) shape[0] = static_cast<py::ssize_t>(images) * shape[0];
      ys.emplace_back(shape);
    }
    std::vector<const float*> src;
    for (auto& a : xs) src.push_back(a.data());
    std::vector<float*> dst;
    for (auto& y : ys) dst.push_back(y.mutable_data());
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      for (int64_t b = 0; b < (per_image ? images : 1); ++b) {
        for (size_t i = 0; i < ins.size(); ++i) {
          size_t n = graph_->tensor(ins[i]).numel;
          std::memcpy(graph_->data(ins[i]), src[i] + b * n, n * sizeof(float));
        }
        graph_->execute();
        for (size_t i = 0; i < outs.size(); ++i) {
          size_t n = graph_->tensor(outs[i]).numel;
          std::memcpy(dst[i] + b * n, graph_->data(outs[i]), n * sizeof(float));
        }
      }
    }
    py::list result;
    for (auto& y : ys) result.append(y);
    return result;
  }

  // Seconds per run; inputs keep the values of the last run() (zeros at first).
  std::vector<double> benchmark(int runs, int warmup) {
    if (runs < 1) throw PlanError("runs must be >= 1. Received: runs=" + std::to_string(runs));
    if (warmup < 0) throw PlanError("warmup must be >= 0. Received: warmup=" + std::to_string(warmup));
    std::vector<double> times;
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    for (int i = 0; i < warmup; ++i) graph_->execute();
    for (int i = 0; i < runs; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      graph_->execute();
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return times;
  }

  // One run on the inputs of the last run(), nothing copied in or out: what a
  // caller that times each call from Python measures (Engine.benchmark with
  // timer="python"), the way Python code times LiteRT's Interpreter.invoke().
  void execute() {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    graph_->execute();
  }

  // (name, family, flops, seconds) per operator, each the median of `runs`.
  py::list profile(int runs) {
    if (runs < 1) throw PlanError("runs must be >= 1. Received: runs=" + std::to_string(runs));
    std::vector<std::vector<double>> per_op(graph_->num_ops());
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      for (int r = 0; r < runs; ++r) {
        std::vector<double> t = graph_->profile();
        for (size_t i = 0; i < t.size(); ++i) per_op[i].push_back(t[i]);
      }
    }
    py::list out;
    for (size_t i = 0; i < per_op.size(); ++i) {
      auto& v = per_op[i];
      std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
      const Op& op = graph_->op(i);
      out.append(py::make_tuple(op.name, op.family(), op.flops(), v[v.size() / 2]));
    }
    return out;
  }

  // (name, family) per operator, in execution order.
  py::list op_families() const {
    py::list out;
    for (size_t i = 0; i < graph_->num_ops(); ++i) out.append(py::make_tuple(graph_->op(i).name, graph_->op(i).family()));
    return out;
  }

  py::list input_shapes() const { return shapes(graph_->inputs()); }
  py::list output_shapes() const { return shapes(graph_->outputs()); }
  size_t arena_bytes() const { return graph_->arena_bytes(); }
  size_t naive_bytes() const { return graph_->naive_bytes(); }
  int num_threads() const { return graph_->num_threads(); }

 private:
  static std::string shape_text(const std::vector<int64_t>& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + ")";
  }
  py::list shapes(const std::vector<int>& ids) const {
    py::list out;
    for (int i : ids) out.append(py::tuple(py::cast(graph_->tensor(i).shape)));
    return out;
  }

  std::unique_ptr<Graph> graph_;
  std::mutex mutex_;
};

}  // namespace

}  // namespace spruce

PYBIND11_MODULE(_engine, m) {
  using spruce::PyGraph;
  m.doc() = "spruce's native sparse inference engine";
  py::register_exception<spruce::PlanError>(m, "PlanError", PyExc_ValueError);
  py::class_<PyGraph>(m, "Graph")
      .def(py::init<const py::list&, const py::list&, std::vector<int>, std::vector<int>, int>(),
           py::arg("tensors"), py::arg("ops"), py::arg("inputs"), py::arg("outputs"),
           py::arg("num_threads") = 1)
      .def("run", &PyGraph::run, py::arg("inputs"))
      .def("benchmark", &PyGraph::benchmark, py::arg("runs"), py::arg("warmup"))
      .def("execute", &PyGraph::execute)
      .def("profile", &PyGraph::profile, py::arg("runs") = 1)
      .def_property_readonly("op_families", &PyGraph::op_families)
      .def_property_readonly("input_shapes", &PyGraph::input_shapes)
      .def_property_readonly("output_shapes", &PyGraph::output_shapes)
      .def_property_readonly("arena_bytes", &PyGraph::arena_bytes)
      .def_property_readonly("naive_bytes", &PyGraph::naive_bytes)
      .def_property_readonly("num_threads", &PyGraph::num_threads);
  m.def("isa", [] { return std::string(spruce::kernels::isa_name(spruce::kernels::default_isa())); },
        "The instruction set the kernels run with on this CPU.");
  spruce::register_kernel_bindings(m);
}
