// The Python module spruce.runtime._bench: timing loops around the kernels and
// the core's measured FMA peak, for benchmarks/bench_kernels.py and
// bench_engine.py. Kept out of spruce.runtime._engine, which carries no
// benchmark code; it links the same kernels. Each timer packs its weights
// first (not timed), so it takes the arrays the kernel bindings take.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "bench/fma_peak.h"
#include "bindings/checks.h"
#include "graph/float_buffer.h"
#include "kernels/kernels.h"

namespace py = pybind11;

namespace spruce {
namespace {

using bindings::check_array;
using bindings::Int32;
using bindings::data_of;
using bindings::mutable_data_of;
using bindings::optional_bias;
using bindings::output_array;
using bindings::parse_isa;
using kernels::Activation;
using kernels::Isa;

// Runs `fn` warmup + repeats times with the GIL released; returns the seconds
// of each timed run.
template <typename Fn>
py::array_t<double> time_runs(Fn&& fn, int repeats, int warmup) {
  if (repeats <= 0 || warmup < 0) {
    throw py::value_error("repeats must be > 0 and warmup >= 0. Received: repeats=" +
                          std::to_string(repeats) + ", warmup=" + std::to_string(warmup));
  }
  std::vector<double> seconds(static_cast<size_t>(repeats));
  {
    py::gil_scoped_release release;
    for (int i = 0; i < warmup; ++i) fn();
    for (int i = 0; i < repeats; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      fn();
      seconds[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
  }
  return py::array_t<double>(seconds.size(), seconds.data());
}

// The benchmarks time every kernel with a fused RELU6, as MobileNetV1 runs them.
Activation relu6() {
  Activation a;
  a.min = 0.0f;
  a.max = 6.0f;
  return a;
}

// A 1x1 conv timer's arguments, checked: weights [N, K], input [K, P], an
// optional bias [N] and the ISA.
struct Pointwise {
  py::array w, x, bias_keep;
  const float* bias = nullptr;
  int32_t n = 0, k = 0;
  int64_t p = 0;
  Isa isa = Isa::kPortable;
};

Pointwise pointwise_args(const py::object& weights, const py::object& input, const py::object& bias,
                         const std::string& isa) {
  Pointwise a;
  a.w = check_array(weights, "weights", {-1, -1});
  a.n = static_cast<int32_t>(a.w.shape(0));
  a.k = static_cast<int32_t>(a.w.shape(1));
  a.x = check_array(input, "input", {a.k, -1});
  a.p = a.x.shape(1);
  a.bias = optional_bias(bias, a.n, &a.bias_keep);
  a.isa = parse_isa(isa);
  return a;
}

// The input and output as the engine hands them to a 1x1 kernel: 64-byte
// aligned planes padded to whole 16-float vectors (its arena and pad_planes),
// where a NumPy array is only 16-byte aligned. Rows that split cache lines cost
// the AVX-512 sparse kernel about a quarter of its speed, which the engine
// never pays.
struct EnginePlanes {
  int64_t stride;
  FloatBuffer x, y;
  explicit EnginePlanes(const Pointwise& a)
      : stride((a.p + 15) / 16 * 16), x(static_cast<size_t>(a.k * stride)), y(static_cast<size_t>(a.n * stride)) {
    const float* src = data_of(a.x);
    for (int64_t k = 0; k < a.k; ++k) std::copy_n(src + k * a.p, a.p, x.data() + k * stride);
  }
};

py::array_t<double> time_spmm(const py::object& weights, const py::object& input, const py::object& bias,
                              Int32 repeats, Int32 warmup, const std::string& isa) {
  Pointwise a = pointwise_args(weights, input, bias, isa);
  EnginePlanes planes(a);
  // pack_sparse's std::invalid_argument (offsets past int32) reaches Python as ValueError.
  const kernels::SparseMatrix packed = kernels::pack_sparse(data_of(a.w), a.n, a.k, planes.stride);
  const float* xd = planes.x.data();
  float* yd = planes.y.data();
  const Activation act = relu6();
  return time_runs([&] {
    kernels::spmm(packed, a.bias, xd, yd, planes.stride, 0, packed.rows, 0, a.p, act, a.isa, /*input_padded=*/true,
                  /*output_padded=*/true);
  }, repeats, warmup);
}

py::array_t<double> time_gemm(const py::object& weights, const py::object& input, const py::object& bias,
                              Int32 repeats, Int32 warmup, const std::string& isa) {
  Pointwise a = pointwise_args(weights, input, bias, isa);
  EnginePlanes planes(a);
  const kernels::PackedDense packed = kernels::pack_dense(data_of(a.w), a.n, a.k);
  const float* xd = planes.x.data();
  float* yd = planes.y.data();
  const Activation act = relu6();
  return time_runs([&] {
    kernels::gemm(packed, a.bias, xd, planes.stride, yd, planes.stride, 0, packed.rows, 0, a.p, act, a.isa);
  }, repeats, warmup);
}

py::array_t<double> time_dwconv_chw(const py::object& weights, const py::object& input, Int32 stride,
                                    const std::vector<Int32>& padding, Int32 repeats, Int32 warmup,
                                    const std::string& isa) {
  py::array w, x;
  const kernels::DwConvParams p = bindings::dwconv_params(weights, input, stride, padding, w, x);
  const int64_t C = w.shape(0);
  py::array y = output_array(py::none(), {C, p.out_h(), p.out_w()});
  const Isa i = parse_isa(isa);
  const float* wd = data_of(w);
  const float* xd = data_of(x);
  float* yd = mutable_data_of(y);
  const Activation act = relu6();
  return time_runs([&] { kernels::dwconv_chw(p, wd, nullptr, xd, yd, 0, static_cast<int32_t>(C), act, i); },
                   repeats, warmup);
}

py::array_t<double> time_conv_hwc2chw(const py::object& weights, const py::object& input, Int32 stride,
                                      const std::vector<Int32>& padding, Int32 repeats, Int32 warmup,
                                      const std::string& isa) {
  py::array w = check_array(weights, "weights", {-1, -1, -1, -1});
  if (w.shape(1) != w.shape(2) || w.shape(1) <= 0 || w.shape(3) <= 0) {
    throw py::value_error("weights must be OHWI [out_c, k, k, in_c] with a square kernel. Received: shape=" +
                          bindings::shape_str(w));
  }
  const int32_t out_c = static_cast<int32_t>(w.shape(0)), kernel = static_cast<int32_t>(w.shape(1));
  const int32_t in_c = static_cast<int32_t>(w.shape(3));
  py::array x = check_array(input, "input", {-1, -1, in_c});
  const kernels::ConvHwcParams p = bindings::conv_hwc_params(x, out_c, kernel, in_c, stride, padding);
  const Isa i = parse_isa(isa);
  const kernels::PackedConvHwc packed = kernels::pack_conv_hwc2chw(data_of(w), out_c, kernel, in_c);
  py::array y = output_array(py::none(), {out_c, p.out_h(), p.out_w()});
  const float* xd = data_of(x);
  float* yd = mutable_data_of(y);
  const Activation act = relu6();
  return time_runs([&] { kernels::conv_hwc2chw(p, packed, nullptr, xd, yd, 0, p.out_h(), act, i); }, repeats,
                   warmup);
}

}  // namespace
}  // namespace spruce

PYBIND11_MODULE(_bench, m) {
  using spruce::bindings::Double;
  m.doc() = "Timing loops around spruce's kernels and the core's FMA peak (benchmarks only)";
  m.def(
      "fma_peak_gflops",
      [](Double seconds, const std::string& isa) {
        if (!(seconds > 0.0 && seconds <= 10.0)) {
          throw py::value_error("seconds must be in (0, 10]. Received: seconds=" + std::to_string(seconds));
        }
        const spruce::kernels::Isa i = spruce::bindings::parse_isa(isa);
        py::gil_scoped_release release;
        return spruce::bench::fma_peak_gflops(i, seconds);
      },
      py::arg("seconds") = 0.2, py::arg("isa") = "auto",
      "Measured single-thread FMA throughput of this core (GFLOP/s): the peak kernels are reported against.");
  // Seconds per run of one kernel over a whole layer, timed in a native loop.
  m.def("time_spmm", &spruce::time_spmm, py::arg("weights"), py::arg("input"), py::arg("bias") = py::none(),
        py::arg("repeats") = 20, py::arg("warmup") = 3, py::arg("isa") = "auto",
        "Sparse 1x1 conv: weights [N, K] (packed first, exact zeros dropped), input [K, P].");
  m.def("time_gemm", &spruce::time_gemm, py::arg("weights"), py::arg("input"), py::arg("bias") = py::none(),
        py::arg("repeats") = 20, py::arg("warmup") = 3, py::arg("isa") = "auto",
        "Dense 1x1 conv: weights [N, K] (packed first), input [K, P].");
  m.def("time_dwconv_chw", &spruce::time_dwconv_chw, py::arg("weights"), py::arg("input"), py::arg("stride") = 1,
        py::arg("padding") = std::vector<int32_t>{0, 0, 0, 0}, py::arg("repeats") = 20, py::arg("warmup") = 3,
        py::arg("isa") = "auto", "Depthwise conv in CHW: weights [C, k, k], input [C, H, W].");
  m.def("time_conv_hwc2chw", &spruce::time_conv_hwc2chw, py::arg("weights"), py::arg("input"),
        py::arg("stride") = 2, py::arg("padding") = std::vector<int32_t>{0, 0, 0, 0}, py::arg("repeats") = 20,
        py::arg("warmup") = 3, py::arg("isa") = "auto",
        "Entry conv: OHWI weights (packed first), input HWC [H, W, in_c].");
}
