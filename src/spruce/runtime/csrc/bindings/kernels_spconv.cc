// Python access to the sparse KxK convolution (kernels/spconv.h), in the
// `_engine.kernels` submodule beside the other raw kernels, for the NumPy
// reference tests and benchmarks. Every argument is checked here.
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/checks.h"
#include "kernels/spconv.h"

namespace py = pybind11;

namespace spruce {

using bindings::check_array;
using bindings::check_padding;
using bindings::check_range;
using bindings::data_of;
using bindings::end_or;
using bindings::kInf;
using bindings::make_activation;
using bindings::mutable_data_of;
using bindings::optional_bias;
using bindings::output_array;
using bindings::parse_isa;
using kernels::Activation;

void register_spconv_bindings(py::module_& m) {
  py::class_<kernels::SparseConv>(m, "SparseConv")
      .def_property_readonly("nnz", &kernels::SparseConv::nnz)
      .def_property_readonly("out_h", [](const kernels::SparseConv& w) { return w.shape.out_h(); })
      .def_property_readonly("out_w", [](const kernels::SparseConv& w) { return w.shape.out_w(); })
      .def_property_readonly("packed_floats", &kernels::SparseConv::packed_floats)
      .def_readonly("tile_rows", &kernels::SparseConv::tile_rows)
      .def_readonly("tile_vectors", &kernels::SparseConv::tile_vectors)
      .def_readonly("k_block", &kernels::SparseConv::k_block)
      .def_readonly("blocks", &kernels::SparseConv::blocks);

  m.def(
      "pack_spconv",
      [](const py::object& weights, std::vector<bindings::Int32> in_hw, std::vector<bindings::Int32> stride,
         std::vector<bindings::Int32> padding) {
        py::array w = check_array(weights, "weights", {-1, -1, -1, -1});
        if (in_hw.size() != 2 || stride.size() != 2) {
          throw py::value_error("in_hw and stride must be (height, width) pairs");
        }
        check_padding(padding);
        kernels::SpConvShape s;
        s.out_c = static_cast<int32_t>(w.shape(0));
        s.kernel_h = static_cast<int32_t>(w.shape(1));
        s.kernel_w = static_cast<int32_t>(w.shape(2));
        s.in_c = static_cast<int32_t>(w.shape(3));
        s.in_h = in_hw[0], s.in_w = in_hw[1];
        s.stride_h = stride[0], s.stride_w = stride[1];
        s.pad_top = padding[0], s.pad_left = padding[1], s.pad_bottom = padding[2], s.pad_right = padding[3];
        try {
          return kernels::pack_spconv(data_of(w), s);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      py::arg("weights"), py::arg("in_hw"), py::arg("stride") = std::vector<bindings::Int32>{1, 1},
      py::arg("padding") = std::vector<bindings::Int32>{0, 0, 0, 0},
      "Packs [O, kh, kw, I] weights for inputs of in_hw pixels, stride (sh, sw) and padding\n"
      "(top, left, bottom, right).");

  m.def(
      "spconv",
      [](const kernels::SparseConv& w, const py::object& input, const py::object& bias, const py::object& out,
         bindings::Int n_begin, std::optional<bindings::Int> n_end, bindings::Int oy_begin, std::optional<bindings::Int> oy_end,
         std::vector<int64_t> pack_splits, bindings::Float act_min, bindings::Float act_max, bool hard_swish, const std::string& isa) {
        const kernels::SpConvShape& s = w.shape;
        py::array x = check_array(input, "input", {s.in_c, s.in_h, s.in_w});
        py::array b_keep;
        const float* b = optional_bias(bias, s.out_c, &b_keep);
        py::array y = output_array(out, {s.out_c, s.out_h(), s.out_w()});
        const int64_t ne = end_or(n_end, s.out_c), oe = end_or(oy_end, s.out_h());
        check_range("output channel", n_begin, ne, s.out_c);
        check_range("output row", oy_begin, oe, s.out_h());
        // The input is packed in the parts [0, pack_splits[0]), [pack_splits[0], ...), ..., [.., in_c).
        std::vector<int64_t> cuts{0};
        for (int64_t c : pack_splits) {
          if (c < cuts.back() || c > s.in_c) {
            throw py::value_error("pack_splits must be increasing channels in [0, in_c]. Received: " + std::to_string(c));
          }
          cuts.push_back(c);
        }
        cuts.push_back(s.in_c);
        const Activation act = make_activation(act_min, act_max, hard_swish);
        const kernels::Isa i = parse_isa(isa);
        float* yd = mutable_data_of(y);
        {
          py::gil_scoped_release release;
          std::vector<float> packed(static_cast<size_t>(w.packed_floats()));
          const int64_t plane = static_cast<int64_t>(s.in_h) * s.in_w;
          for (size_t c = 0; c + 1 < cuts.size(); ++c) {
            kernels::spconv_pack_input(w, data_of(x), plane, packed.data(), static_cast<int32_t>(cuts[c]),
                                       static_cast<int32_t>(cuts[c + 1]));
          }
          kernels::spconv(w, b, packed.data(), yd, static_cast<int64_t>(s.out_h()) * s.out_w(),
                          static_cast<int32_t>(n_begin), static_cast<int32_t>(ne), static_cast<int32_t>(oy_begin),
                          static_cast<int32_t>(oe), act, i);
        }
        return y;
      },
      py::arg("w"), py::arg("input"), py::arg("bias") = py::none(), py::arg("out") = py::none(),
      py::arg("n_begin") = 0, py::arg("n_end") = py::none(), py::arg("oy_begin") = 0,
      py::arg("oy_end") = py::none(), py::arg("pack_splits") = std::vector<int64_t>{},
      py::arg("act_min") = -kInf, py::arg("act_max") = kInf, py::arg("hard_swish").noconvert() = false,
      py::arg("isa") = "auto",
      "Sparse KxK conv of a [I, H, W] input into [O, out_h, out_w], over output channels\n"
      "[n_begin, n_end) and output rows [oy_begin, oy_end) (the rest of `out` is left as is).");
}

}  // namespace spruce
