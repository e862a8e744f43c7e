"""Which weights of which layers are pruned.

Built-in Keras layers are looked up by type; any other layer takes part by
implementing `PrunableLayer.get_prunable_weights()`. Layers with nothing worth
pruning (normalization, depthwise convolutions, layers without weights) pass
through; a layer with weights that spruce does not know is refused, by name.
"""

import abc

import keras
from keras import layers

# layer type -> attribute names of the weights to prune
_PRUNABLE = {
    layers.Conv1D: ("kernel",),
    layers.Conv2D: ("kernel",),
    layers.Conv3D: ("kernel",),
    layers.Conv1DTranspose: ("kernel",),
    layers.Conv2DTranspose: ("kernel",),
    layers.Conv3DTranspose: ("kernel",),
    layers.Dense: ("kernel",),
    layers.SeparableConv1D: ("pointwise_kernel",),
    layers.SeparableConv2D: ("pointwise_kernel",),
    layers.Embedding: ("embeddings",),
}

# layers with weights, none of which is pruned
_NOTHING_TO_PRUNE = tuple(
    getattr(layers, name)
    for name in (
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "RMSNormalization",
        "UnitNormalization",
        "SpectralNormalization",
        "Normalization",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "PReLU",
    )
    if hasattr(layers, name)
)


class PrunableLayer(abc.ABC):
    """Mix into a custom layer to make it prunable.

    ```python
    class MyDense(keras.layers.Dense, spruce.PrunableLayer):
        def get_prunable_weights(self):
            return [self.kernel]
    ```
    """

    @abc.abstractmethod
    def get_prunable_weights(self):
        """The layer's `keras.Variable`s to prune (the layer is built when this is called)."""


def _custom_prunable(layer):
    return isinstance(layer, PrunableLayer) or callable(getattr(layer, "get_prunable_weights", None))


def _builtin_attributes(layer):
    for cls in type(layer).__mro__:
        if cls in _PRUNABLE:
            return _PRUNABLE[cls]
    return None


def has_weights(layer):
    """Whether `layer` has (or, unbuilt, will have) any weights."""
    if layer.built:
        return bool(layer.weights)
    return not isinstance(layer, _weightless_types())


def _weightless_types():
    names = (
        "InputLayer", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Flatten", "Reshape",
        "Permute", "RepeatVector", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
        "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
        "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
        "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "MaxPooling1D",
        "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
        "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
        "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
        "GlobalMaxPooling3D", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
        "Concatenate", "Dot", "Identity", "ActivityRegularization", "Masking",
    )
    return tuple(getattr(layers, n) for n in names if hasattr(layers, n))


def supports(layer):
    """True when `layer` has weights spruce knows how to prune."""
    return _custom_prunable(layer) or _builtin_attributes(layer) is not None


def nothing_to_prune(layer):
    """True for layers that pass through unwrapped: no weights, or none worth pruning."""
    if supports(layer):
        return False
    return isinstance(layer, _NOTHING_TO_PRUNE) or not has_weights(layer)


def unsupported_message(layer):
    return (
        f"Layer '{layer.name}' ({type(layer).__name__}) has weights but spruce does not know "
        "which of them to prune. Either implement spruce.PrunableLayer on it "
        "(`get_prunable_weights()` returning the variables to prune), or leave it out: clone "
        "the model with a clone_function that wraps only the layers you choose with "
        "spruce.prune_low_magnitude, or pass a pruning_policy whose allow_pruning() returns "
        "False for it."
    )


def get_prunable_weights(layer):
    """The built `layer`'s variables to prune, validated."""
    if _custom_prunable(layer):
        weights = list(layer.get_prunable_weights())
    else:
        attributes = _builtin_attributes(layer)
        if attributes is None:
            raise ValueError(unsupported_message(layer))
        weights = [_variable(layer, name) for name in attributes]
    for weight in weights:
        if not isinstance(weight, keras.Variable):
            raise ValueError(
                f"Layer '{layer.name}': the weights to prune must be keras.Variable objects of "
                f"the layer. Received: {type(weight).__name__}. A quantized or LoRA-enabled "
                "layer cannot be pruned; prune before quantizing or enabling LoRA."
            )
    return weights


def _variable(layer, name):
    # Dense/Conv expose `kernel` as a property over `_kernel` (LoRA, quantization).
    private = getattr(layer, "_" + name, None)
    if isinstance(private, keras.Variable):
        return private
    return getattr(layer, name)
