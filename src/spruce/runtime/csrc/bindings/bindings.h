// The Python bindings' own declarations: pybind11 appears in bindings/ only,
// so the kernels, operators and graph build and test without Python.
#pragma once

#include <pybind11/pybind11.h>

namespace spruce {

// Adds the submodule `kernels` (raw kernels on numpy arrays, for tests and
// benchmarks) to the engine's Python module. Defined in bindings/kernels.cc.
void register_kernel_bindings(pybind11::module_& m);
// Adds the sparse KxK convolution to that submodule. Defined in bindings/kernels_spconv.cc.
void register_spconv_bindings(pybind11::module_& kernels_module);

// Adds the int8 kernels to that submodule. Defined in bindings/kernels_int8.cc.
void register_int8_kernel_bindings(pybind11::module_& kernels);

}  // namespace spruce
