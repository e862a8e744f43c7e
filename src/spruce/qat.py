"""Quantization-aware fine-tuning that keeps the pruning masks (tfmot's PQAT), in keras.ops.

`quantize_aware(model)` wraps every Conv2D, DepthwiseConv2D and Dense of a pruned (stripped)
model in `QuantizeAware`, which trains the layer as the int8 export will run it:

- its kernel, with the zeros it holds kept at zero by a fixed mask, is rounded per output
  channel to 255 symmetric levels, as the TF converter quantizes weights. Per-channel
  symmetric rounding is unchanged by a positive per-channel factor, so rounding the kernel
  before a BatchNormalization folds into it is the same as rounding the folded kernel;
- its input is rounded per tensor to 256 asymmetric levels over a range: after
  `observe_ranges(model, calibration)`, the min and max over the calibration data, fixed
  while training, which is how the converter will calibrate the int8 file from the same data;
  otherwise an exponential moving average of the training batches' min and max.

Rounding passes gradients straight through. `strip_quantize_aware` gives back the plain
model, masked weights in place; `spruce.export_litert(quantize="int8")` then converts it,
calibrated on the same data. Only Keras 3 operations are used, so it trains under every
backend. The recipe (`spruce run --quantize int8` follows it, see `spruce.workflow.pqat`):

    aware = quantize_aware(pruned)                  # stripped of its pruning wrappers
    observe_ranges(aware, calibration)              # e.g. 500 training images
    aware.compile(...); aware.fit(x, y, epochs=1)   # a small learning rate
    model = strip_quantize_aware(aware)
    spruce.export_litert(model, path, quantize="int8", representative_dataset=calibration)

Leave the stripped model's BatchNorm statistics as the fine-tune left them: they were learned
under int8 rounding, and `spruce.recalibrate_batchnorm` would re-estimate them on float
activations, costing the int8 file part of what the fine-tune gained.
"""

import keras
from keras import ops

QUANTIZED_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense")


def fake_quant_per_channel(kernel, channel_axes):
    """`kernel` rounded to 255 symmetric levels per channel (the axes kept), gradients straight through."""
    axes = tuple(a for a in range(len(kernel.shape)) if a not in channel_axes)
    scale = ops.maximum(ops.max(ops.abs(kernel), axis=axes, keepdims=True), 1e-12) / 127.0
    rounded = ops.clip(ops.round(kernel / scale), -127.0, 127.0) * scale
    return kernel + ops.stop_gradient(rounded - kernel)


def fake_quant_range(x, low, high):
    """`x` rounded to 256 levels over [low, high] widened to hold 0 (an int8 zero point), gradients
    straight through."""
    low, high = ops.minimum(low, 0.0), ops.maximum(high, 0.0)
    scale = ops.maximum(high - low, 1e-8) / 255.0
    zero = ops.round(-low / scale)
    rounded = (ops.clip(ops.round(x / scale) + zero, 0.0, 255.0) - zero) * scale
    return x + ops.stop_gradient(rounded - x)


@keras.saving.register_keras_serializable(package="spruce")
class QuantizeAware(keras.layers.Wrapper):
    """Runs `layer` with int8-rounded input and kernel; the kernel's zeros stay zeros."""

    def __init__(self, layer, momentum=0.99, **kwargs):
        super().__init__(layer, **kwargs)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] (1: ranges fixed). Received: momentum={momentum}")
        self.momentum = momentum
        self._observing = False

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        kernel = self.layer.kernel
        self.mask = self.add_weight(name="mask", shape=kernel.shape, initializer="ones", trainable=False)
        self.input_min = self.add_weight(name="input_min", shape=(), initializer="zeros", trainable=False)
        self.input_max = self.add_weight(name="input_max", shape=(), initializer="zeros", trainable=False)
        self.seen = self.add_weight(name="seen", shape=(), initializer="zeros", trainable=False)
        self.built = True

    def keep_zeros(self):
        """Fix the mask to the kernel's current zeros (call once the pruned weights are loaded)."""
        self.mask.assign(ops.cast(ops.not_equal(self.layer.kernel, 0.0), self.mask.dtype))

    def _channel_axes(self):
        rank = len(self.layer.kernel.shape)
        if type(self.layer).__name__ == "DepthwiseConv2D":  # (h, w, in, multiplier): one scale per output
            return (rank - 2, rank - 1)
        return (rank - 1,)

    def call(self, inputs, training=None):
        if self._observing:  # observe_ranges: the running min and max over every batch seen
            low, high = ops.min(inputs), ops.max(inputs)
            first = ops.equal(self.seen, 0.0)
            self.input_min.assign(ops.where(first, low, ops.minimum(self.input_min, low)))
            self.input_max.assign(ops.where(first, high, ops.maximum(self.input_max, high)))
            self.seen.assign(self.seen + 1.0)
        elif training and self.momentum < 1.0:
            low, high = ops.min(inputs), ops.max(inputs)
            first = ops.equal(self.seen, 0.0)
            m = self.momentum
            self.input_min.assign(ops.where(first, low, m * self.input_min + (1 - m) * low))
            self.input_max.assign(ops.where(first, high, m * self.input_max + (1 - m) * high))
            self.seen.assign(self.seen + 1.0)
        inputs = fake_quant_range(inputs, self.input_min, self.input_max)
        kernel = self.layer.kernel
        quantized = fake_quant_per_channel(ops.multiply(kernel.value, self.mask.value), self._channel_axes())
        mapping = [(v, quantized if v is kernel else v.value) for v in self.layer.variables]
        with keras.StatelessScope(state_mapping=mapping):
            return self.layer(inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum}


def quantize_aware(model, momentum=0.99):
    """A copy of `model` (pruned, wrappers stripped) whose Conv2D, DepthwiseConv2D and Dense
    layers train int8-aware, their zeros kept; other layers keep their weights as they are.

    The input ranges start from the first training batch, so fine-tune (model.fit) before
    evaluating the wrapped model; strip it with `strip_quantize_aware` to export.
    """
    if not isinstance(model, keras.Model) or not model.inputs:
        raise ValueError("quantize_aware expects a built Sequential or Functional keras.Model. "
                         f"Received: {type(model).__name__}")
    wrapped = [layer.name for layer in model.layers if type(layer).__name__ == "PruneLowMagnitude"]
    if wrapped:
        raise ValueError(f"quantize_aware expects a model stripped of its pruning wrappers; {wrapped[0]!r} "
                         "is still wrapped. Call spruce.strip_pruning(model) first.")

    def wrap(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        if type(layer).__name__ in QUANTIZED_LAYERS:
            return QuantizeAware(fresh, momentum=momentum, name=f"quantize_aware_{layer.name}")
        return fresh

    clone = keras.models.clone_model(model, clone_function=wrap)
    copies = {(c.layer.name if isinstance(c, QuantizeAware) else c.name): c for c in clone.layers}
    for layer in model.layers:
        copy = copies.get(layer.name)
        if isinstance(copy, QuantizeAware):
            copy.layer.set_weights(layer.get_weights())
            copy.keep_zeros()
        elif copy is not None:
            copy.set_weights(layer.get_weights())
    return clone


def observe_ranges(model, x, batch_size=100):
    """Set every input range of the `QuantizeAware` layers of `model` to the min and max over `x`
    (the calibration data the export will use), and fix them for the fine-tuning: the
    converter calibrates the same way, so training sees the rounding the int8 file will do."""
    layers = [layer for layer in model.layers if isinstance(layer, QuantizeAware)]
    for layer in layers:
        layer.seen.assign(0.0)
        layer._observing = True
    try:
        for start in range(0, len(x), batch_size):
            model(x[start:start + batch_size], training=False)
    finally:
        for layer in layers:
            layer._observing = False
            layer.momentum = 1.0
    return model


def strip_quantize_aware(model):
    """The plain model again: same layers and names, the masked float weights of the fine-tune."""
    def unwrap(layer):
        inner = layer.layer if isinstance(layer, QuantizeAware) else layer
        return inner.__class__.from_config(inner.get_config())

    plain = keras.models.clone_model(model, clone_function=unwrap)
    copies = {c.name: c for c in plain.layers}
    for layer in model.layers:
        if isinstance(layer, QuantizeAware):
            kernel = ops.convert_to_numpy(layer.layer.kernel) * ops.convert_to_numpy(layer.mask)
            copies[layer.layer.name].set_weights([kernel] + layer.layer.get_weights()[1:])
        elif layer.name in copies:
            copies[layer.name].set_weights(layer.get_weights())
    return plain
