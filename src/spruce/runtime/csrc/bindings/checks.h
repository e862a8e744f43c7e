// Argument checks shared by the Python bindings (bindings/kernels.cc,
// bindings/engine.cc) and the benchmark module (bench/module.cc): every
// argument is checked here and a bad one raises TypeError (wrong kind) or
// ValueError (wrong value), since the kernels never check.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/kernels.h"

namespace spruce {
namespace bindings {

namespace py = pybind11;

// Integer and float parameters that take exactly those kinds. pybind11's own
// casters take True for 1 (a bool is an int in Python), np.True_ for 1, and
// anything with __bool__ for a bool; these refuse bools and floats where an
// int goes and bools where a float goes, so the call fails with pybind11's
// TypeError (which lists the expected types) instead of running on a value the
// caller did not mean. An int outside T's range raises ValueError. Bool
// parameters get the same strictness from py::arg(...).noconvert().
template <typename T>
struct Strict {
  T value = 0;
  Strict() = default;
  Strict(T v) : value(v) {}  // NOLINT: used as the T it wraps
  operator T() const { return value; }
};
using Int = Strict<int64_t>;
using Int32 = Strict<int32_t>;
using Float = Strict<float>;
using Double = Strict<double>;

inline bool is_bool(PyObject* o) {
  // numpy.bool (numpy.bool_ before NumPy 2) is no subclass of Python's bool.
  const char* name = Py_TYPE(o)->tp_name;
  return PyBool_Check(o) || std::strcmp(name, "numpy.bool") == 0 || std::strcmp(name, "numpy.bool_") == 0;
}

// The int of a Python int or NumPy integer (anything with __index__ but a bool).
template <typename T>
bool load_int(PyObject* o, T* out) {
  if (is_bool(o) || !PyIndex_Check(o)) return false;
  py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(o));
  if (!index) {
    PyErr_Clear();
    return false;
  }
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (overflow != 0 || v < static_cast<long long>(std::numeric_limits<T>::min()) ||
      v > static_cast<long long>(std::numeric_limits<T>::max())) {
    throw py::value_error("the integer " + std::string(py::str(index)) + " is out of range: this argument takes " +
                          std::to_string(std::numeric_limits<T>::min()) + " to " +
                          std::to_string(std::numeric_limits<T>::max()));
  }
  *out = static_cast<T>(v);
  return true;
}

// The value of a Python float or int, or a NumPy number; not of a bool or a string.
template <typename T>
bool load_float(PyObject* o, T* out) {
  if (is_bool(o)) return false;
  const PyNumberMethods* number = Py_TYPE(o)->tp_as_number;
  const bool numpy_number = number != nullptr && number->nb_float != nullptr &&
                            std::strncmp(Py_TYPE(o)->tp_name, "numpy.", 6) == 0;
  if (!PyFloat_Check(o) && !PyLong_Check(o) && !PyIndex_Check(o) && !numpy_number) return false;
  const double v = PyFloat_AsDouble(o);
  if (v == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    return false;
  }
  *out = static_cast<T>(v);
  return true;
}

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    s += std::to_string(a.shape(i));
    if (a.ndim() == 1 || i + 1 < a.ndim()) s += a.ndim() == 1 ? "," : ", ";
  }
  return s + ")";
}

// A C-contiguous float32 array of the given rank; `shape` entries < 0 are free.
inline py::array check_array(const py::object& obj, const char* name, std::vector<py::ssize_t> shape,
                      bool writeable = false) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string(name) + " must be a numpy array of float32. Received: " +
                         std::string(py::str(py::type::of(obj))) + ". Pass np.asarray(..., np.float32).");
  }
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().is(py::dtype::of<float>())) {
    throw py::value_error(std::string(name) + " must have dtype float32. Received: dtype=" +
                          std::string(py::str(a.dtype())) + ". Convert it with .astype(np.float32).");
  }
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(name) +
                          " must be C-contiguous. Received a strided view; pass np.ascontiguousarray(...).");
  }
  if (writeable && !a.writeable()) {
    throw py::value_error(std::string(name) + " must be writeable. Received a read-only array.");
  }
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || a.shape(i) == shape[i];
  if (!ok) {
    std::string want = "(";
    for (size_t i = 0; i < shape.size(); ++i) {
      want += shape[i] < 0 ? std::string("any") : std::to_string(shape[i]);
      if (i + 1 < shape.size()) want += ", ";
    }
    throw py::value_error(std::string(name) + " must have shape " + want + "). Received: shape=" +
                          shape_str(a));
  }
  return a;
}

inline const float* data_of(const py::array& a) { return static_cast<const float*>(a.data()); }
inline float* mutable_data_of(py::array& a) { return static_cast<float*>(a.mutable_data()); }

inline const float* optional_bias(const py::object& bias, py::ssize_t n, py::array* keep) {
  if (bias.is_none()) return nullptr;
  *keep = check_array(bias, "bias", {n});
  return data_of(*keep);
}

// `out` if given (checked), else a new zeroed array of that shape.
inline py::array output_array(const py::object& out, const std::vector<py::ssize_t>& shape) {
  if (out.is_none()) {
    py::array_t<float> a(shape);
    std::fill(a.mutable_data(), a.mutable_data() + a.size(), 0.0f);
    return std::move(a);
  }
  return check_array(out, "out", shape, /*writeable=*/true);
}

inline void check_range(const char* what, int64_t begin, int64_t end, int64_t size) {
  if (begin < 0 || end < begin || end > size) {
    throw py::value_error(std::string(what) + " range must satisfy 0 <= begin <= end <= " +
                          std::to_string(size) + ". Received: [" + std::to_string(begin) + ", " +
                          std::to_string(end) + ")");
  }
}

inline kernels::Isa parse_isa(const std::string& isa) {
  if (isa == "auto") return kernels::default_isa();
  if (isa == "portable") return kernels::Isa::kPortable;
  if (isa == "avx2") {
    if (!kernels::cpu_has_avx2()) {
      throw py::value_error("isa='avx2' needs an x86 CPU with AVX2 and FMA and a build with the AVX2 "
                            "kernels; this one has neither. Use isa='auto' or 'portable'.");
    }
    return kernels::Isa::kAvx2;
  }
  if (isa == "avx512") {
    if (!kernels::cpu_has_avx512()) {
      throw py::value_error("isa='avx512' needs an x86 CPU with AVX-512F, AVX2 and FMA and a build with "
                            "the AVX-512 kernels; this one has neither. Use isa='auto', 'avx2' or 'portable'.");
    }
    return kernels::Isa::kAvx512;
  }
  throw py::value_error("isa must be one of 'auto', 'avx512', 'avx2', 'portable'. Received: isa='" + isa + "'");
}

inline kernels::Activation make_activation(float act_min, float act_max, bool hard_swish) {
  if (std::isnan(act_min) || std::isnan(act_max) || act_min > act_max) {
    throw py::value_error("act_min must be <= act_max. Received: act_min=" + std::to_string(act_min) +
                          ", act_max=" + std::to_string(act_max));
  }
  kernels::Activation a;
  a.min = act_min;
  a.max = act_max;
  a.hard_swish = hard_swish;
  return a;
}

inline int64_t end_or(const std::optional<Int>& end, int64_t size) { return end ? end->value : size; }

inline void check_padding(const std::vector<Int32>& padding) {
  if (padding.size() != 4 || *std::min_element(padding.begin(), padding.end()) < 0) {
    throw py::value_error("padding must be 4 non-negative ints (top, left, bottom, right). Received " +
                          std::to_string(padding.size()) + " values or a negative one.");
  }
}

inline void check_conv_geometry(const char* op, int64_t in_h, int64_t in_w, int32_t kernel, int32_t stride,
                         const std::vector<Int32>& padding) {
  check_padding(padding);
  if (kernel <= 0 || stride <= 0) {
    throw py::value_error(std::string(op) + ": kernel and stride must be > 0. Received: kernel=" +
                          std::to_string(kernel) + ", stride=" + std::to_string(stride));
  }
  if (in_h + padding[0] + padding[2] < kernel || in_w + padding[1] + padding[3] < kernel) {
    throw py::value_error(std::string(op) + ": the padded input (" +
                          std::to_string(in_h + padding[0] + padding[2]) + " x " +
                          std::to_string(in_w + padding[1] + padding[3]) +
                          ") is smaller than the kernel (" + std::to_string(kernel) +
                          "). Pad more or use a smaller kernel.");
  }
}

// Validates depthwise weights [C][K][K], input [C][H][W] (or [C][S], planes S
// floats apart, with in_hw = (H, W)) and the geometry; returns the params.
inline kernels::DwConvParams dwconv_params(const py::object& weights, const py::object& input, int32_t stride,
                                   const std::vector<Int32>& padding, py::array& w, py::array& x,
                                   const std::optional<std::vector<Int>>& in_hw = std::nullopt) {
  w = check_array(weights, "weights", {-1, -1, -1});
  const int64_t C = w.shape(0);
  const int32_t K = static_cast<int32_t>(w.shape(1));
  check_array(weights, "weights", {C, K, K});
  int64_t H = 0, W = 0, stride_floats = 0;
  if (in_hw.has_value()) {
    if (in_hw->size() != 2 || (*in_hw)[0] <= 0 || (*in_hw)[1] <= 0) {
      throw py::value_error("in_hw must be (height, width), both > 0");
    }
    x = check_array(input, "input", {C, -1});
    H = (*in_hw)[0], W = (*in_hw)[1], stride_floats = x.shape(1);
    if (H * W > stride_floats) {
      throw py::value_error("input planes of " + std::to_string(stride_floats) + " floats cannot hold in_hw = (" +
                            std::to_string(H) + ", " + std::to_string(W) + ")");
    }
  } else {
    x = check_array(input, "input", {C, -1, -1});
    H = x.shape(1), W = x.shape(2);
  }
  check_conv_geometry("dwconv_chw", H, W, K, stride, padding);
  kernels::DwConvParams p;
  p.in_h = static_cast<int32_t>(H);
  p.in_w = static_cast<int32_t>(W);
  p.in_stride = stride_floats;
  p.kernel = K;
  p.stride = stride;
  p.pad_top = padding[0];
  p.pad_left = padding[1];
  p.pad_bottom = padding[2];
  p.pad_right = padding[3];
  return p;
}

// Entry-conv geometry for an HWC input `x` and packed weights of `kernel` x
// `kernel` taps, after checking it.
inline kernels::ConvHwcParams conv_hwc_params(const py::array& x, int32_t out_c, int32_t kernel, int32_t in_c,
                                              int32_t stride, const std::vector<Int32>& padding) {
  check_conv_geometry("conv_hwc2chw", x.shape(0), x.shape(1), kernel, stride, padding);
  kernels::ConvHwcParams p;
  p.in_h = static_cast<int32_t>(x.shape(0));
  p.in_w = static_cast<int32_t>(x.shape(1));
  p.in_c = in_c;
  p.out_c = out_c;
  p.kernel = kernel;
  p.stride = stride;
  p.pad_top = padding[0];
  p.pad_left = padding[1];
  p.pad_bottom = padding[2];
  p.pad_right = padding[3];
  return p;
}

constexpr float kInf = std::numeric_limits<float>::infinity();

}  // namespace bindings
}  // namespace spruce

namespace pybind11 {
namespace detail {

template <typename T>
struct type_caster<spruce::bindings::Strict<T>> {
  PYBIND11_TYPE_CASTER(spruce::bindings::Strict<T>, const_name<std::is_integral<T>::value>("int", "float"));
  bool load(handle src, bool /*convert*/) {
    if constexpr (std::is_integral<T>::value) {
      return spruce::bindings::load_int(src.ptr(), &value.value);
    } else {
      return spruce::bindings::load_float(src.ptr(), &value.value);
    }
  }
  static handle cast(const spruce::bindings::Strict<T>& v, return_value_policy, handle) {
    if constexpr (std::is_integral<T>::value) {
      return PyLong_FromLongLong(static_cast<long long>(v.value));
    } else {
      return PyFloat_FromDouble(static_cast<double>(v.value));
    }
  }
};

}  // namespace detail
}  // namespace pybind11
