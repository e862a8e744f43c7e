// Python access to the int8 kernels (in `_engine.kernels`), for the NumPy
// reference tests in tests/test_kernels_int8.py. Every argument is checked and
// a bad one raises ValueError; the kernels never check.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/checks.h"
#include "kernels/kernels.h"

namespace py = pybind11;

namespace spruce {

namespace {

using bindings::check_range;
using bindings::end_or;
using bindings::parse_isa;

// A C-contiguous array of dtype T and the given rank; `shape` entries < 0 are free.
template <typename T>
py::array_t<T> typed(const py::object& obj, const char* name, std::vector<py::ssize_t> shape) {
  if (!py::isinstance<py::array>(obj) || !py::reinterpret_borrow<py::array>(obj).dtype().is(py::dtype::of<T>())) {
    const std::string got = py::isinstance<py::array>(obj) ? std::string(py::str(obj.attr("dtype")))
                                                           : std::string(py::str(py::type::of(obj)));
    throw py::value_error(std::string(name) + " must be a numpy array of " + std::string(py::str(py::dtype::of<T>())) +
                          ". Received: " + got);
  }
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || a.shape(i) == shape[i];
  if (!ok) throw py::value_error(std::string(name) + " has the wrong shape. Received: shape=" + bindings::shape_str(a));
  return py::array_t<T>(a);
}

std::vector<int32_t> bias_or_zeros(const py::object& bias, py::ssize_t n) {
  if (bias.is_none()) return std::vector<int32_t>(static_cast<size_t>(n), 0);
  py::array_t<int32_t> b = typed<int32_t>(bias, "bias", {n});
  return std::vector<int32_t>(b.data(), b.data() + n);
}

kernels::QS8Output output_params(int32_t zero_point, int32_t out_min, int32_t out_max) {
  for (int32_t v : {zero_point, out_min, out_max}) {
    if (v < -128 || v > 127) throw py::value_error("zero points and output bounds must be in [-128, 127]");
  }
  if (out_min > out_max) throw py::value_error("output_min must be <= output_max");
  kernels::QS8Output o;
  o.zero_point = zero_point;
  o.lo = static_cast<float>(out_min - zero_point);
  o.hi = static_cast<float>(out_max - zero_point);
  return o;
}

void check_zero_point(int32_t zp) {
  if (zp < -128 || zp > 127) throw py::value_error("input_zero_point must be in [-128, 127]");
}

}  // namespace

void register_int8_kernel_bindings(py::module_& m) {
  m.def("cpu_has_avx512_vnni", &kernels::cpu_has_avx512_vnni,
        "True if the CPU runs AVX-512 VNNI (the int8 kernels' AVX-512 path).");

  m.def(
      "qs8_conv1x1",
      [](const py::object& weights, const py::object& input, const py::object& bias, const py::object& scale,
         int32_t input_zero_point, int32_t output_zero_point, int32_t output_min, int32_t output_max,
         int64_t r_begin, std::optional<int64_t> r_end, const std::string& isa) {
        py::array_t<int8_t> w = typed<int8_t>(weights, "weights", {-1, -1});
        const py::ssize_t rows = w.shape(0), cols = w.shape(1);
        py::array_t<int8_t> x = typed<int8_t>(input, "input", {cols, -1});
        const int64_t pixels = x.shape(1);
        py::array_t<float> s = typed<float>(scale, "scale", {rows});
        const std::vector<int32_t> b = bias_or_zeros(bias, rows);
        check_zero_point(input_zero_point);
        const int64_t re = end_or(r_end, rows);
        check_range("row", r_begin, re, rows);
        const kernels::Isa i = parse_isa(isa);
        const kernels::QS8BlockMatrix packed =
            kernels::pack_qs8_blocks(w.data(), static_cast<int32_t>(rows), static_cast<int32_t>(cols), b.data(),
                                     s.data(), input_zero_point, output_params(output_zero_point, output_min, output_max));
        py::array_t<int8_t> y({rows, static_cast<py::ssize_t>(pixels)});
        std::fill(y.mutable_data(), y.mutable_data() + y.size(), int8_t{0});
        std::vector<uint8_t> tile(kernels::qs8_tile_bytes(packed.cols));
        int8_t* yd = y.mutable_data();
        {
          py::gil_scoped_release release;
          for (int64_t p = 0; p < pixels; p += kernels::kQS8Tile) {
            const int64_t count = std::min<int64_t>(kernels::kQS8Tile, pixels - p);
            kernels::qs8_interleave_tile(x.data(), pixels, packed.cols, p, count, tile.data(), i);
            kernels::qs8_spmm_tile(packed, tile.data(), count, static_cast<int32_t>(r_begin),
                                   static_cast<int32_t>(re), yd + p, pixels, i);
          }
        }
        return py::make_tuple(y, packed.stored_blocks());
      },
      py::arg("weights"), py::arg("input"), py::arg("bias"), py::arg("scale"), py::arg("input_zero_point"),
      py::arg("output_zero_point"), py::arg("output_min") = -128, py::arg("output_max") = 127,
      py::arg("r_begin") = 0, py::arg("r_end") = py::none(), py::arg("isa") = "auto",
      "int8 1x1 conv of CHW [I, P] by weights [O, I] over rows [r_begin, r_end) (others zero); returns "
      "(output [O, P], the stored 4-weight blocks).");

  m.def(
      "qs8_dwconv",
      [](const py::object& weights, const py::object& input, const py::object& bias, const py::object& scale,
         std::vector<int32_t> stride, std::vector<int32_t> padding, int32_t input_zero_point,
         int32_t output_zero_point, int32_t output_min, int32_t output_max, int64_t c_begin,
         std::optional<int64_t> c_end, const std::string& isa) {
        py::array_t<int8_t> w = typed<int8_t>(weights, "weights", {-1, -1, -1});
        const py::ssize_t C = w.shape(0);
        py::array_t<int8_t> x = typed<int8_t>(input, "input", {C, -1, -1});
        py::array_t<float> s = typed<float>(scale, "scale", {C});
        const std::vector<int32_t> b = bias_or_zeros(bias, C);
        check_zero_point(input_zero_point);
        if (stride.size() != 2 || padding.size() != 4) throw py::value_error("stride is (h, w), padding (top, left, bottom, right)");
        kernels::QS8DwParams p;
        p.in_h = static_cast<int32_t>(x.shape(1)), p.in_w = static_cast<int32_t>(x.shape(2));
        p.kernel_h = static_cast<int32_t>(w.shape(1)), p.kernel_w = static_cast<int32_t>(w.shape(2));
        p.stride_h = stride[0], p.stride_w = stride[1], p.pad_top = padding[0], p.pad_left = padding[1];
        p.input_zero_point = input_zero_point;
        for (int32_t v : {p.stride_h, p.stride_w}) {
          if (v < 1 || v > 16) throw py::value_error("strides must be in [1, 16]");
        }
        for (int32_t v : padding) {
          if (v < 0 || v > 16) throw py::value_error("padding must be in [0, 16]");
        }
        p.out_h = (p.in_h + padding[0] + padding[2] - p.kernel_h) / p.stride_h + 1;
        p.out_w = (p.in_w + padding[1] + padding[3] - p.kernel_w) / p.stride_w + 1;
        if (p.in_h + padding[0] + padding[2] < p.kernel_h || p.in_w + padding[1] + padding[3] < p.kernel_w) {
          throw py::value_error("the kernel does not fit the padded input");
        }
        const int64_t ce = end_or(c_end, C);
        check_range("channel", c_begin, ce, C);
        const kernels::Isa i = parse_isa(isa);
        const kernels::QS8DwWeights packed = kernels::pack_qs8_dw(p, w.data(), static_cast<int32_t>(C), b.data(), s.data());
        std::vector<int16_t> scratch(kernels::qs8_dwconv_scratch(p));
        py::array_t<int8_t> y({C, static_cast<py::ssize_t>(p.out_h), static_cast<py::ssize_t>(p.out_w)});
        std::fill(y.mutable_data(), y.mutable_data() + y.size(), int8_t{0});
        const kernels::QS8Output out = output_params(output_zero_point, output_min, output_max);
        int8_t* yd = y.mutable_data();
        {
          py::gil_scoped_release release;
          kernels::qs8_dwconv_chw(p, packed, out, x.data(), yd, static_cast<int32_t>(c_begin),
                                  static_cast<int32_t>(ce), scratch.data(), i);
        }
        return y;
      },
      py::arg("weights"), py::arg("input"), py::arg("bias"), py::arg("scale"), py::arg("stride"), py::arg("padding"),
      py::arg("input_zero_point"), py::arg("output_zero_point"), py::arg("output_min") = -128,
      py::arg("output_max") = 127, py::arg("c_begin") = 0, py::arg("c_end") = py::none(), py::arg("isa") = "auto",
      "int8 depthwise conv of CHW [C, H, W] by weights [C, kh, kw] over channels [c_begin, c_end) (others zero).");

  m.def(
      "qs8_quantize",
      [](const py::object& input, float inverse_scale, int32_t zero_point, const std::string& isa) {
        py::array_t<float> x = typed<float>(input, "input", {-1});
        check_zero_point(zero_point);
        if (!(inverse_scale > 0.0f) || !std::isfinite(inverse_scale)) {
          throw py::value_error("inverse_scale must be positive and finite");
        }
        const kernels::Isa i = parse_isa(isa);
        py::array_t<int8_t> y(x.shape(0));
        kernels::qs8_quantize(x.data(), y.mutable_data(), x.shape(0), inverse_scale, zero_point, i);
        return y;
      },
      py::arg("input"), py::arg("inverse_scale"), py::arg("zero_point"), py::arg("isa") = "auto",
      "float32 [n] -> int8: round(clamp(x * inverse_scale, -128 - zp, 127 - zp)) + zp.");

  m.def(
      "qs8_fully_connected",
      [](const py::object& weights, const py::object& input, const py::object& bias, const py::object& scale,
         int32_t input_zero_point, int32_t output_zero_point, int32_t output_min, int32_t output_max,
         const std::string& isa) {
        py::array_t<int8_t> w = typed<int8_t>(weights, "weights", {-1, -1});
        const py::ssize_t O = w.shape(0), K = w.shape(1);
        py::array_t<int8_t> x = typed<int8_t>(input, "input", {K});
        py::array_t<float> s = typed<float>(scale, "scale", {O});
        std::vector<int32_t> b = bias_or_zeros(bias, O);
        check_zero_point(input_zero_point);
        for (py::ssize_t o = 0; o < O; ++o) {
          int64_t sum = 0;
          for (py::ssize_t k = 0; k < K; ++k) sum += w.data()[o * K + k];
          b[o] = static_cast<int32_t>(b[o] - (input_zero_point + 128) * sum);
        }
        std::vector<uint8_t> xu(static_cast<size_t>(K));
        kernels::qs8_to_u8(x.data(), xu.data(), K);
        const kernels::Isa i = parse_isa(isa);
        py::array_t<int8_t> y(O);
        const kernels::QS8Output out = output_params(output_zero_point, output_min, output_max);
        kernels::qs8_fully_connected(xu.data(), w.data(), b.data(), s.data(), out, y.mutable_data(), K, 0, O, i);
        return y;
      },
      py::arg("weights"), py::arg("input"), py::arg("bias"), py::arg("scale"), py::arg("input_zero_point"),
      py::arg("output_zero_point"), py::arg("output_min") = -128, py::arg("output_max") = 127,
      py::arg("isa") = "auto", "int8 fully connected row: weights [O, K], input [K] -> [O].");
}

}  // namespace spruce
