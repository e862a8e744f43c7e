"""Multiply-accumulate counts of one layer call, from its shapes.

Only the layers that dominate inference cost are counted (convolutions and
dense layers); element-wise layers, pooling and normalisation count zero.
Unknown (None) spatial sizes make the count unknown, reported as 0.
"""

import math

import keras


def _known(shape):
    return all(d is not None for d in shape[1:])


def _per_example(shape):
    return math.prod(shape[1:])


def call_macs(layer, input_shapes, output_shapes):
    """MACs of one example through `layer` (batch dimension excluded)."""
    if not input_shapes or not output_shapes:
        return 0
    x, y = input_shapes[0], output_shapes[0]
    if not (_known(x) and _known(y)):
        return 0
    L = keras.layers
    if isinstance(layer, L.SeparableConv2D) or isinstance(layer, L.SeparableConv1D):
        ks = math.prod(layer.kernel_size)
        in_ch = x[-1]
        out_positions = _per_example(y) // y[-1]
        return out_positions * in_ch * layer.depth_multiplier * (ks + layer.filters)
    if isinstance(layer, (L.DepthwiseConv2D, L.DepthwiseConv1D)):
        return _per_example(y) * math.prod(layer.kernel_size)
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        ks = math.prod(layer.kernel_size)
        groups = getattr(layer, "groups", 1) or 1
        return _per_example(y) * ks * (x[-1] // groups)
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        return _per_example(x) * math.prod(layer.kernel_size) * layer.filters
    if isinstance(layer, L.Dense):
        return _per_example(y) * x[-1]
    return 0
