// The Python module spruce.runtime._engine: a Graph built from a plan (lists of
// dicts made by spruce/runtime/loader.py), run on NumPy arrays with the GIL
// released, and timed in a native loop.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include "bindings/bindings.h"
#include "bindings/checks.h"
#include "graph/graph.h"
#include "kernels/kernels.h"

namespace py = pybind11;

namespace spruce {

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using bindings::Double;
using bindings::Int;
using IndexList = std::vector<bindings::Strict<int>>;

std::string dtype_of(const py::handle& h) {
  return py::isinstance<py::array>(h) ? std::string(py::str(py::reinterpret_borrow<py::array>(h).dtype()))
                                      : std::string(py::str(py::type::of(h)));
}

// A float32 NumPy array (a strided one is copied); another dtype is refused, not converted.
FloatArray float32_array(const py::handle& h, const std::string& what) {
  if (!py::isinstance<py::array>(h) || !py::reinterpret_borrow<py::array>(h).dtype().is(py::dtype::of<float>())) {
    throw PlanError(what + " must be a float32 numpy array. Received: " + dtype_of(h) +
                    ". Pass np.asarray(..., np.float32).");
  }
  return FloatArray::ensure(h);
}

Array to_array(const py::handle& h, const std::string& what) {
  FloatArray a = float32_array(h, what);
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
    std::string got = py::repr(d[key]);
    if (got.size() > 80) got = got.substr(0, 77) + "...";
    throw PlanError(where + ": '" + key + "' has the wrong type. Received: " + got);
  }
}

// Plain C++ values of strictly checked ones (bindings/checks.h).
template <typename T>
std::vector<T> plain(const std::vector<bindings::Strict<T>>& v) {
  return std::vector<T>(v.begin(), v.end());
}
template <typename K, typename V, typename T>
std::map<K, T> plain(const std::map<K, V>& m) {
  std::map<K, T> out;
  for (const auto& [k, v] : m) out.emplace(k, static_cast<T>(v));
  return out;
}

py::dict as_dict(const py::handle& h, const std::string& where) {
  if (!py::isinstance<py::dict>(h)) {
    throw PlanError(where + " must be a dict. Received: " + std::string(py::str(py::type::of(h))));
  }
  return py::reinterpret_borrow<py::dict>(h);
}

TensorSpec to_tensor_spec(const py::handle& h, size_t i) {
  std::string where = "tensor " + std::to_string(i);
  py::dict d = as_dict(h, where);
  TensorSpec t;
  t.shape = plain(get_key<std::vector<Int>>(d, "shape", where));
  t.layout = get_key<bindings::Strict<int>>(d, "layout", where);
  if (d.contains("dtype")) t.dtype = get_key<bindings::Strict<int>>(d, "dtype", where);
  if (d.contains("data") && !d["data"].is_none()) {
    Array a = to_array(d["data"], where + " data");
    t.is_const = true;
    t.const_data = std::move(a.data);
  }
  return t;
}

OpSpec to_op_spec(const py::handle& h, size_t i) {
  std::string where = "operator " + std::to_string(i);
  py::dict d = as_dict(h, where);
  OpSpec s;
  s.kind = get_key<std::string>(d, "kind", where);
  s.name = d.contains("name") ? get_key<std::string>(d, "name", where) : where;
  s.inputs = plain(get_key<IndexList>(d, "inputs", where));
  s.outputs = plain(get_key<IndexList>(d, "outputs", where));
  if (d.contains("ints")) s.ints = plain<std::string, Int, int64_t>(get_key<std::map<std::string, Int>>(d, "ints", where));
  if (d.contains("floats")) {
    s.floats = plain<std::string, Double, double>(get_key<std::map<std::string, Double>>(d, "floats", where));
  }
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
  // num_threads is checked first: no thread starts for a plan that is refused.
  PyGraph(const py::list& tensors, const py::list& ops, const IndexList& inputs,
          const IndexList& outputs, Int num_threads) {
    const int threads = checked_num_threads(num_threads);
    std::vector<TensorSpec> tspecs;
    for (size_t i = 0; i < tensors.size(); ++i) tspecs.push_back(to_tensor_spec(tensors[i], i));
    std::vector<OpSpec> ospecs;
    for (size_t i = 0; i < ops.size(); ++i) ospecs.push_back(to_op_spec(ops[i], i));
    auto model = std::make_shared<const Model>(std::move(tspecs), ospecs, plain(inputs), plain(outputs));
    graph_ = std::make_unique<Graph>(std::move(model), threads);
  }

  // Another graph running this one's model: the operators and their packed
  // weights are shared (immutable), the activation arena and threads its own.
  // What run_shared's copies are made with, so a batch on N threads packs the
  // weights once, not N + 1 times.
  std::unique_ptr<PyGraph> replica(Int num_threads) const {
    const int threads = checked_num_threads(num_threads);
    return std::unique_ptr<PyGraph>(new PyGraph(std::make_unique<Graph>(graph_->model(), threads)));
  }

  // Runs on each image when the arrays carry a batch the graph was not built
  // for and the graph's batch is 1.
  py::list run(const py::list& arrays) {
    Batch batch = prepare(arrays);
    {
      py::gil_scoped_release release;
      std::atomic<int64_t> next{0};
      run_images(batch, next);
    }
    return batch.result();
  }

  // run() on a batch shared out among `copies` of this graph (replicas, one
  // thread each), on native threads with the GIL released once (Python
  // threads start late enough to show on a batch). Each thread takes the next
  // image not yet taken, so a thread
  // whose core is slowed (a busy neighbour, a co-scheduled thread) runs fewer
  // images instead of holding up the batch. Each image gets the arithmetic of
  // run(), so which copy ran it does not change its outputs.
  py::list run_shared(const std::vector<PyGraph*>& copies, const py::list& arrays) {
    Batch batch = prepare(arrays);
    std::vector<PyGraph*> graphs{this};
    for (PyGraph* c : copies) {
      if (c == nullptr || c == this || !c->same_io(*this)) {
        throw PlanError("run_shared needs distinct copies of the graph (same inputs and outputs)");
      }
      graphs.push_back(c);
    }
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(graphs.size()), batch.runs);
    {
      py::gil_scoped_release release;
      std::vector<std::thread> threads;
      std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
      std::atomic<int64_t> next{0};
      auto share = [&](int64_t i) {
        try {
          graphs[i]->run_images(batch, next);
        } catch (...) {
          errors[i] = std::current_exception();
        }
      };
      for (int64_t i = 1; i < n; ++i) threads.emplace_back(share, i);
      share(0);
      for (auto& t : threads) t.join();
      for (auto& e : errors) {
        if (e) std::rethrow_exception(e);
      }
    }
    return batch.result();
  }

  // Seconds per run; inputs keep the values of the last run() (zeros at first).
  std::vector<double> benchmark(Int runs, Int warmup) {
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
  py::list profile(Int runs) {
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
  // A validated call: the inputs (kept alive), the outputs allocated, and
  // where image b of each lives.
  struct Batch {
    std::vector<FloatArray> xs, ys;
    std::vector<const float*> src;
    std::vector<float*> dst;
    int64_t runs = 1;  // images run one at a time (1 when the arrays match the graph)
    py::list result() const {
      py::list out;
      for (const auto& y : ys) out.append(y);
      return out;
    }
  };

  Batch prepare(const py::list& arrays) {
    const auto& ins = graph_->inputs();
    if (arrays.size() != ins.size()) {
      throw PlanError("the model takes " + std::to_string(ins.size()) + " input(s); received " +
                      std::to_string(arrays.size()));
    }
    Batch batch;
    int64_t images = -1;
    bool per_image = false;
    for (size_t i = 0; i < ins.size(); ++i) {
      FloatArray a = float32_array(arrays[i], "input " + std::to_string(i));
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
      batch.xs.push_back(std::move(a));
    }
    for (int idx : graph_->outputs()) {
      std::vector<py::ssize_t> shape(graph_->tensor(idx).shape.begin(), graph_->tensor(idx).shape.end());
      if (per_image) shape[0] = static_cast<py::ssize_t>(images) * shape[0];
      batch.ys.emplace_back(shape);
    }
    for (auto& a : batch.xs) batch.src.push_back(a.data());
    for (auto& y : batch.ys) batch.dst.push_back(y.mutable_data());
    batch.runs = per_image ? images : 1;
    return batch;
  }

  // Inputs and outputs of the same sizes: `other` can run this graph's batches.
  bool same_io(const PyGraph& other) const {
    auto sizes = [](const Graph& g, const std::vector<int>& ids) {
      std::vector<size_t> n;
      for (int i : ids) n.push_back(g.tensor(i).numel);
      return n;
    };
    return sizes(*graph_, graph_->inputs()) == sizes(*other.graph_, other.graph_->inputs()) &&
           sizes(*graph_, graph_->outputs()) == sizes(*other.graph_, other.graph_->outputs());
  }

  // Runs the images of `batch` that `next` hands out until none is left (GIL
  // released by the caller).
  void run_images(const Batch& batch, std::atomic<int64_t>& next) {
    const auto& ins = graph_->inputs();
    const auto& outs = graph_->outputs();
    std::lock_guard<std::mutex> lock(mutex_);
    for (int64_t b; (b = next.fetch_add(1, std::memory_order_relaxed)) < batch.runs;) {
      for (size_t i = 0; i < ins.size(); ++i) {
        size_t n = graph_->tensor(ins[i]).numel;
        std::memcpy(graph_->data(ins[i]), batch.src[i] + b * n, n * sizeof(float));
      }
      graph_->execute();
      for (size_t i = 0; i < outs.size(); ++i) {
        size_t n = graph_->tensor(outs[i]).numel;
        std::memcpy(batch.dst[i] + b * n, graph_->data(outs[i]), n * sizeof(float));
      }
    }
  }

  explicit PyGraph(std::unique_ptr<Graph> graph) : graph_(std::move(graph)) {}

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
      .def(py::init<const py::list&, const py::list&, const spruce::IndexList&, const spruce::IndexList&,
                    spruce::Int>(),
           py::arg("tensors"), py::arg("ops"), py::arg("inputs"), py::arg("outputs"),
           py::arg("num_threads") = 1)
      .def("replica", &PyGraph::replica, py::arg("num_threads") = 1)
      .def("run", &PyGraph::run, py::arg("inputs"))
      .def("run_shared", &PyGraph::run_shared, py::arg("copies"), py::arg("inputs"))
      .def("benchmark", &PyGraph::benchmark, py::arg("runs"), py::arg("warmup"))
      .def("execute", &PyGraph::execute)
      .def("profile", &PyGraph::profile, py::arg("runs") = 1)
      .def_property_readonly("op_families", &PyGraph::op_families)
      .def_property_readonly("input_shapes", &PyGraph::input_shapes)
      .def_property_readonly("output_shapes", &PyGraph::output_shapes)
      .def_property_readonly("arena_bytes", &PyGraph::arena_bytes)
      .def_property_readonly("naive_bytes", &PyGraph::naive_bytes)
      .def_property_readonly("num_threads", &PyGraph::num_threads);
  m.attr("MAX_THREADS") = spruce::kMaxThreads;
  m.def("isa", [] { return std::string(spruce::kernels::isa_name(spruce::kernels::default_isa())); },
        "The instruction set the kernels run with on this CPU.");
  spruce::register_kernel_bindings(m);
}
