// Python access to the raw kernels (submodule `_engine.kernels`), for the
// NumPy-reference tests and the kernel benchmarks. Every argument is checked
// (bindings/checks.h) and a bad one raises ValueError; the kernels never check.
#include <optional>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/checks.h"
#include "kernels/kernels.h"

namespace py = pybind11;

namespace spruce {

using bindings::check_array;
using bindings::check_range;
using bindings::conv_hwc_params;
using bindings::data_of;
using bindings::dwconv_params;
using bindings::end_or;
using bindings::Float;
using bindings::Int;
using bindings::Int32;
using bindings::kInf;
using bindings::make_activation;
using bindings::mutable_data_of;
using bindings::optional_bias;
using bindings::output_array;
using bindings::parse_isa;
using bindings::shape_str;
using kernels::Activation;
using kernels::Isa;

void register_kernel_bindings(py::module_& parent) {
  py::module_ m = parent.def_submodule(
      "kernels", "Raw hot kernels of spruce's engine on numpy float32 arrays (tests, benchmarks).");

  m.def("cpu_has_avx2", &kernels::cpu_has_avx2, "True if AVX2+FMA kernels are built and the CPU runs them.");
  m.def("cpu_has_avx512", &kernels::cpu_has_avx512,
        "True if AVX-512 kernels are built and the CPU runs them (and the AVX2 ones).");
  m.def("default_isa", [] { return std::string(kernels::isa_name(kernels::default_isa())); },
        "ISA the engine uses by default ('avx2' or 'portable'; SPRUCE_KERNELS_ISA=portable forces it).");

  py::class_<kernels::SparseMatrix>(m, "SparseMatrix")
      .def_readonly("rows", &kernels::SparseMatrix::rows)
      .def_readonly("cols", &kernels::SparseMatrix::cols)
      .def_readonly("in_stride", &kernels::SparseMatrix::in_stride)
      .def_property_readonly("nnz", &kernels::SparseMatrix::nnz)
      .def_readonly("group_rows", &kernels::SparseMatrix::group_rows)
      .def_property_readonly("row_ptr", [](const kernels::SparseMatrix& s) {
        return py::array_t<int32_t>(s.row_ptr.size(), s.row_ptr.data());
      });
  py::class_<kernels::PackedDense>(m, "PackedDense")
      .def_readonly("rows", &kernels::PackedDense::rows)
      .def_readonly("cols", &kernels::PackedDense::cols)
      .def_readonly("panel", &kernels::PackedDense::panel);
  py::class_<kernels::PackedConvHwc>(m, "PackedConvHwc")
      .def_readonly("out_c", &kernels::PackedConvHwc::out_c)
      .def_readonly("kernel", &kernels::PackedConvHwc::kernel)
      .def_readonly("in_c", &kernels::PackedConvHwc::in_c);

  m.def(
      "pack_sparse",
      [](const py::object& weights, Int in_stride) {
        py::array w = check_array(weights, "weights", {-1, -1});
        if (in_stride <= 0) {
          throw py::value_error("in_stride must be > 0 (pixels per input channel). Received: in_stride=" +
                                std::to_string(in_stride));
        }
        try {
          return kernels::pack_sparse(data_of(w), static_cast<int32_t>(w.shape(0)),
                                      static_cast<int32_t>(w.shape(1)), in_stride);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      py::arg("weights"), py::arg("in_stride"),
      "Compresses a dense [N, K] weight matrix per output channel for inputs of in_stride pixels.");

  m.def(
      "spmm",
      [](const kernels::SparseMatrix& w, const py::object& input, const py::object& bias,
         const py::object& out, Int n_begin, std::optional<Int> n_end, Int p_begin,
         std::optional<Int> p_end, Float act_min, Float act_max, bool hard_swish,
         const std::string& isa, bool input_padded, Int out_stride, bool output_padded,
         const py::object& input_scale, const py::object& residual) {
        py::array x = check_array(input, "input", {w.cols, w.in_stride});
        // The weights scaled per input channel, as the engine's fused MUL does.
        std::vector<float> scaled;
        if (!input_scale.is_none()) {
          py::array s = check_array(input_scale, "input_scale", {w.cols});
          std::vector<float> base = w.values;
          base.insert(base.end(), w.group_values.begin(), w.group_values.end());
          const std::vector<int32_t> cols = kernels::spmm_value_columns(w);
          scaled.resize(base.size());
          kernels::spmm_scale_values(base.data(), cols.data(), data_of(s), scaled.data(),
                                     static_cast<int64_t>(base.size()), parse_isa(isa));
        }
        py::array b_keep;
        const float* b = optional_bias(bias, w.rows, &b_keep);
        if (out_stride < 0) throw py::value_error("out_stride must be >= 0. Received: " + std::to_string(out_stride));
        if (out_stride == 0) out_stride = w.in_stride;
        const int64_t ne = end_or(n_end, w.rows), pe = end_or(p_end, w.in_stride);
        check_range("output channel", n_begin, ne, w.rows);
        check_range("pixel", p_begin, pe, std::min<int64_t>(w.in_stride, out_stride));
        py::array y = output_array(out, {w.rows, out_stride});
        // Padded ranges read the input and read / write the output to the last vector's end.
        const int64_t reach = p_begin + kernels::whole_vectors(pe - p_begin);
        if (input_padded && reach > w.in_stride) {
          throw py::value_error("input_padded=True reads up to pixel p_begin + (p_end - p_begin) rounded up to "
                                "a multiple of 8, which must be <= in_stride. Received: p_begin=" +
                                std::to_string(p_begin) + ", p_end=" + std::to_string(pe) +
                                ", in_stride=" + std::to_string(w.in_stride));
        }
        if ((input_padded || output_padded) && reach > out_stride) {
          throw py::value_error("input_padded / output_padded read or write the output up to pixel p_begin + "
                                "(p_end - p_begin) rounded up to a multiple of 8, which must be <= out_stride. "
                                "Received: p_begin=" + std::to_string(p_begin) + ", p_end=" + std::to_string(pe) +
                                ", out_stride=" + std::to_string(out_stride));
        }
        py::array r;
        if (!residual.is_none()) {
          r = check_array(residual, "residual", {w.rows, -1});
          if (r.shape(1) < pe) {
            throw py::value_error("residual must have at least p_end columns. Received: residual.shape[1]=" +
                                  std::to_string(r.shape(1)) + ", p_end=" + std::to_string(pe));
          }
        }
        const Activation act = make_activation(act_min, act_max, hard_swish);
        const Isa i = parse_isa(isa);
        float* yd = mutable_data_of(y);
        {
          py::gil_scoped_release release;
          kernels::spmm(w, b, data_of(x), yd, out_stride, static_cast<int32_t>(n_begin),
                        static_cast<int32_t>(ne), p_begin, pe, act, i, input_padded, output_padded,
                        scaled.empty() ? nullptr : scaled.data(),
                        scaled.empty() ? nullptr : scaled.data() + w.nnz(), residual.is_none() ? nullptr : data_of(r),
                        residual.is_none() ? 0 : r.shape(1));
        }
        return y;
      },
      py::arg("w"), py::arg("input"), py::arg("bias") = py::none(), py::arg("out") = py::none(),
      py::arg("n_begin") = 0, py::arg("n_end") = py::none(), py::arg("p_begin") = 0,
      py::arg("p_end") = py::none(), py::arg("act_min") = -kInf, py::arg("act_max") = kInf,
      py::arg("hard_swish").noconvert() = false, py::arg("isa") = "auto",
      py::arg("input_padded").noconvert() = false, py::arg("out_stride") = 0, py::arg("output_padded").noconvert() = false,
      py::arg("input_scale") = py::none(), py::arg("residual") = py::none(),
      "Sparse 1x1 conv: out[n, p] = act(bias[n] + sum_k W[n, k] * input[k, p]) over the given ranges.\n"
      "input_scale: [K] factors the weights of each input channel are multiplied by first.\n"
      "input_padded: the input may be read to the last vector's end (its extra lanes are dropped).\n"
      "out_stride: floats between output rows (0: in_stride). output_padded: the output may be written\n"
      "to the last vector's end (junk in the extra lanes).\n"
      "residual: an [N, >= p_end] array added to each sum before the activation (a fused residual ADD).");

  m.def(
      "spmv",
      [](const py::object& weights, const py::object& input, const std::string& isa) {
        py::array w = check_array(weights, "weights", {-1, -1});
        const int64_t N = w.shape(0), K = w.shape(1);
        py::array x = check_array(input, "input", {K});
        const Isa i = parse_isa(isa);
        // CSR as the matrix-vector operator packs it: exact zeros dropped.
        const float* wd = data_of(w);
        std::vector<float> values;
        std::vector<int32_t> cols;
        std::vector<int64_t> row_ptr{0};
        for (int64_t n = 0; n < N; ++n) {
          for (int64_t k = 0; k < K; ++k) {
            if (wd[n * K + k] != 0.0f) values.push_back(wd[n * K + k]), cols.push_back(static_cast<int32_t>(k));
          }
          row_ptr.push_back(static_cast<int64_t>(values.size()));
        }
        py::array y = output_array(py::none(), {N});
        const float* xd = data_of(x);
        float* yd = mutable_data_of(y);
        {
          py::gil_scoped_release release;
          kernels::spmv(values.data(), cols.data(), row_ptr.data(), xd, yd, 0, N, i);
        }
        return y;
      },
      py::arg("weights"), py::arg("input"), py::arg("isa") = "auto",
      "Sparse matrix [N, K] (exact zeros dropped) times vector [K]: y[n] = sum_k W[n, k] * x[k].");

  m.def(
      "pack_dense",
      [](const py::object& weights) {
        py::array w = check_array(weights, "weights", {-1, -1});
        return kernels::pack_dense(data_of(w), static_cast<int32_t>(w.shape(0)),
                                   static_cast<int32_t>(w.shape(1)));
      },
      py::arg("weights"), "Packs a dense [N, K] weight matrix for gemm.");

  m.def(
      "gemm",
      [](const kernels::PackedDense& w, const py::object& input, const py::object& bias,
         const py::object& out, Int n_begin, std::optional<Int> n_end, Int p_begin,
         std::optional<Int> p_end, Float act_min, Float act_max, bool hard_swish,
         const std::string& isa, const py::object& residual) {
        py::array x = check_array(input, "input", {w.cols, -1});
        const int64_t P = x.shape(1);
        py::array b_keep;
        const float* b = optional_bias(bias, w.rows, &b_keep);
        py::array y = output_array(out, {w.rows, P});
        py::array r;
        if (!residual.is_none()) r = check_array(residual, "residual", {w.rows, P});
        const int64_t ne = end_or(n_end, w.rows), pe = end_or(p_end, P);
        check_range("output channel", n_begin, ne, w.rows);
        check_range("pixel", p_begin, pe, P);
        const Activation act = make_activation(act_min, act_max, hard_swish);
        const Isa i = parse_isa(isa);
        float* yd = mutable_data_of(y);
        const float* rd = residual.is_none() ? nullptr : data_of(r);
        {
          py::gil_scoped_release release;
          kernels::gemm(w, b, data_of(x), P, yd, P, static_cast<int32_t>(n_begin),
                        static_cast<int32_t>(ne), p_begin, pe, act, rd, i);
        }
        return y;
      },
      py::arg("w"), py::arg("input"), py::arg("bias") = py::none(), py::arg("out") = py::none(),
      py::arg("n_begin") = 0, py::arg("n_end") = py::none(), py::arg("p_begin") = 0,
      py::arg("p_end") = py::none(), py::arg("act_min") = -kInf, py::arg("act_max") = kInf,
      py::arg("hard_swish").noconvert() = false, py::arg("isa") = "auto", py::arg("residual") = py::none(),
      "Dense 1x1 conv in CHW (GEMM [N, K] x [K, P]) over the given ranges.\n"
      "residual: an [N, P] array added to each sum before the activation (a fused residual ADD).");

  m.def(
      "dwconv_chw",
      [](const py::object& weights, const py::object& input, const py::object& bias, Int32 stride,
         const std::vector<Int32>& padding, const py::object& out, Int c_begin,
         std::optional<Int> c_end, Float act_min, Float act_max, bool hard_swish,
         const std::string& isa, Int out_stride, const std::optional<std::vector<Int>>& in_hw, bool swish) {
        py::array w, x;
        kernels::DwConvParams p = dwconv_params(weights, input, stride, padding, w, x, in_hw);
        const int64_t C = w.shape(0);
        py::array b_keep;
        const float* b = optional_bias(bias, C, &b_keep);
        const int64_t pixels = static_cast<int64_t>(p.out_h()) * p.out_w();
        if (out_stride != 0 && out_stride < pixels) {
          throw py::value_error("out_stride must be 0 or at least out_h * out_w = " + std::to_string(pixels) +
                                ". Received: out_stride=" + std::to_string(out_stride));
        }
        p.out_stride = out_stride;
        py::array y = out_stride > 0 ? output_array(out, {C, out_stride}) : output_array(out, {C, p.out_h(), p.out_w()});
        const int64_t ce = end_or(c_end, C);
        check_range("channel", c_begin, ce, C);
        const Activation act = make_activation(act_min, act_max, hard_swish);
        const Isa i = parse_isa(isa);
        float* yd = mutable_data_of(y);
        {
          py::gil_scoped_release release;
          const int32_t c0 = static_cast<int32_t>(c_begin), c1 = static_cast<int32_t>(ce);
          // As the depthwise operator runs it: fused where a kernel can, else two passes.
          if (!swish || !kernels::dwconv_chw_swish(p, data_of(w), b, data_of(x), yd, c0, c1, act, i)) {
            kernels::dwconv_chw(p, data_of(w), b, data_of(x), yd, c0, c1, act, i);
            for (int32_t c = c0; swish && c < c1; ++c) {
              float* plane = yd + c * p.out_plane();
              kernels::unary(kernels::UnaryFn::kSwish, plane, plane, static_cast<size_t>(pixels), i);
            }
          }
        }
        return y;
      },
      py::arg("weights"), py::arg("input"), py::arg("bias") = py::none(), py::arg("stride") = 1,
      py::arg("padding") = std::vector<int32_t>{0, 0, 0, 0}, py::arg("out") = py::none(),
      py::arg("c_begin") = 0, py::arg("c_end") = py::none(), py::arg("act_min") = -kInf,
      py::arg("act_max") = kInf, py::arg("hard_swish").noconvert() = false, py::arg("isa") = "auto",
      py::arg("out_stride") = 0,
      py::arg("in_hw") = py::none(), py::arg("swish").noconvert() = false,
      "Depthwise conv in CHW; weights [C, k, k], input [C, H, W], padding (top, left, bottom, right).\n"
      "swish: x / (1 + exp(-x)) after the activation, in the kernel's epilogue where it has one.\n"
      "out_stride > 0: output [C, out_stride], plane c in row c's first out_h * out_w floats (the rest junk).\n"
      "in_hw = (H, W): input [C, S], plane c in row c's first H * W floats (the rest unused).");

  m.def(
      "pack_conv_hwc2chw",
      [](const py::object& weights) {
        py::array w = check_array(weights, "weights", {-1, -1, -1, -1});
        if (w.shape(1) != w.shape(2) || w.shape(1) <= 0 || w.shape(3) <= 0) {
          throw py::value_error("weights must be OHWI [out_c, k, k, in_c] with a square kernel. Received: shape=" +
                                shape_str(w));
        }
        return kernels::pack_conv_hwc2chw(data_of(w), static_cast<int32_t>(w.shape(0)),
                                          static_cast<int32_t>(w.shape(1)),
                                          static_cast<int32_t>(w.shape(3)));
      },
      py::arg("weights"), "Packs OHWI conv weights for conv_hwc2chw.");

  m.def(
      "conv_hwc2chw",
      [](const kernels::PackedConvHwc& w, const py::object& input, const py::object& bias,
         Int32 stride, const std::vector<Int32>& padding, const py::object& out,
         Int oy_begin, std::optional<Int> oy_end, Float act_min, Float act_max,
         bool hard_swish, const std::string& isa) {
        py::array x = check_array(input, "input", {-1, -1, w.in_c});
        const kernels::ConvHwcParams p = conv_hwc_params(x, w.out_c, w.kernel, w.in_c, stride, padding);
        py::array b_keep;
        const float* b = optional_bias(bias, w.out_c, &b_keep);
        py::array y = output_array(out, {w.out_c, p.out_h(), p.out_w()});
        const int64_t ye = end_or(oy_end, p.out_h());
        check_range("output row", oy_begin, ye, p.out_h());
        const Activation act = make_activation(act_min, act_max, hard_swish);
        const Isa i = parse_isa(isa);
        float* yd = mutable_data_of(y);
        {
          py::gil_scoped_release release;
          kernels::conv_hwc2chw(p, w, b, data_of(x), yd, static_cast<int32_t>(oy_begin),
                                static_cast<int32_t>(ye), act, i);
        }
        return y;
      },
      py::arg("w"), py::arg("input"), py::arg("bias") = py::none(), py::arg("stride") = 2,
      py::arg("padding") = std::vector<int32_t>{0, 0, 0, 0}, py::arg("out") = py::none(),
      py::arg("oy_begin") = 0, py::arg("oy_end") = py::none(), py::arg("act_min") = -kInf,
      py::arg("act_max") = kInf, py::arg("hard_swish").noconvert() = false, py::arg("isa") = "auto",
      "Entry conv: input HWC [H, W, in_c], output CHW [out_c, OH, OW].");

  m.def(
      "global_avg_pool_chw",
      [](const py::object& input, const py::object& out, Int c_begin, std::optional<Int> c_end,
         const std::string& isa) {
        py::array x = check_array(input, "input", {-1, -1});
        const int64_t C = x.shape(0), P = x.shape(1);
        py::array y = output_array(out, {C});
        const int64_t ce = end_or(c_end, C);
        check_range("channel", c_begin, ce, C);
        const Isa i = parse_isa(isa);
        float* yd = mutable_data_of(y);
        py::gil_scoped_release release;
        kernels::global_avg_pool_chw(data_of(x), P, P, yd, static_cast<int32_t>(c_begin),
                                     static_cast<int32_t>(ce), i);
        return y;
      },
      py::arg("input"), py::arg("out") = py::none(), py::arg("c_begin") = 0,
      py::arg("c_end") = py::none(), py::arg("isa") = "auto", "Mean over pixels of [C, P].");

  m.def(
      "fully_connected",
      [](const py::object& weights, const py::object& input, const py::object& bias, const py::object& out,
         Int o_begin, std::optional<Int> o_end, Float act_min, Float act_max, const std::string& isa) {
        py::array w = check_array(weights, "weights", {-1, -1});
        const int64_t outputs = w.shape(0), k = w.shape(1);
        py::array x = check_array(input, "input", {k});
        py::array b_keep;
        const float* b = optional_bias(bias, outputs, &b_keep);
        py::array y = output_array(out, {outputs});
        const int64_t oe = end_or(o_end, outputs);
        check_range("output", o_begin, oe, outputs);
        const Activation act = make_activation(act_min, act_max, false);
        const Isa i = parse_isa(isa);
        float* yd = mutable_data_of(y);
        {
          py::gil_scoped_release release;
          kernels::fully_connected(data_of(x), data_of(w), b, yd, k, o_begin, oe, act, i);
        }
        return y;
      },
      py::arg("weights"), py::arg("input"), py::arg("bias") = py::none(), py::arg("out") = py::none(),
      py::arg("o_begin") = 0, py::arg("o_end") = py::none(), py::arg("act_min") = -kInf,
      py::arg("act_max") = kInf, py::arg("isa") = "auto",
      "Fully connected row: out[o] = act(bias[o] + sum_i weights[o, i] * input[i]) over the given outputs.");

  register_int8_kernel_bindings(m);
  register_spconv_bindings(m);
}

}  // namespace spruce
