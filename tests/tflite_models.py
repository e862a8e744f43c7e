"""Tiny Keras models and real converter output for the .tflite reader/export/inspect tests.

Weights are zeroed by magnitude with NumPy (a reference independent of spruce's
pruning code), and files come from the real TF converter.
"""

import numpy as np


def zero_by_magnitude(kernel, sparsity):
    """`kernel` with its `sparsity` fraction of smallest-magnitude entries set to 0."""
    flat = np.abs(kernel).ravel()
    k = int(round(sparsity * flat.size))
    out = kernel.copy()
    if k:
        threshold = np.partition(flat, k - 1)[k - 1]
        out[np.abs(kernel) <= threshold] = 0
    return out


def is_pointwise_conv(layer):
    import keras

    return isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1)


def prune_pointwise(model, sparsity, layers=None):
    """Zero `sparsity` of each 1x1 conv kernel (or of `layers`) in place; returns model."""
    for layer in layers if layers is not None else model.layers:
        if is_pointwise_conv(layer) or layers is not None:
            weights = layer.get_weights()
            weights[0] = zero_by_magnitude(weights[0], sparsity)
            layer.set_weights(weights)
    return model


def randomize_batchnorm(model, seed=0):
    """Give BatchNormalization layers non-trivial statistics, so folding them matters."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                rng.normal(0, 0.1, beta.shape).astype("float32"),
                rng.normal(0, 0.1, mean.shape).astype("float32"),
                rng.uniform(0.5, 1.5, var.shape).astype("float32"),
            ])
    return model


def convert(model, path, sparse=True, batch_size=1):
    """Write `model` to `path` with the real TF converter (static batch); returns path."""
    import tensorflow as tf

    spec = [tf.TensorSpec((batch_size,) + tuple(model.input_shape[1:]), tf.float32)]
    kwargs = {"optimizations": [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]} if sparse else {}
    model.export(str(path), format="litert", verbose=False, input_signature=spec, **kwargs)
    return path


def conv_weights(model):
    """Weights of each CONV_2D of a read .tflite, in operator order, seen through DENSIFY."""
    sg = model.main
    producer = {o: op for op in sg.operators for o in op.outputs}
    out = []
    for op in sg.operators:
        if op.opcode != "CONV_2D":
            continue
        tensor = sg.tensors[op.inputs[1]]
        if tensor.data is None and tensor.index in producer and producer[tensor.index].opcode == "DENSIFY":
            tensor = sg.tensors[producer[tensor.index].inputs[0]]
        out.append(tensor)
    return out


def _act(kind):
    from keras import layers

    if kind == "relu6":
        return layers.ReLU(max_value=6.0)
    return layers.Activation(kind)


def sparse_path_net(input_shape=(16, 16, 3), entry_padding="valid", activations=("relu",) * 4,
                    dw_padding="valid", dw_kernel=3, residual=False, dense_mid=False,
                    head="dense", keepdims=True):
    """A tiny guide-like CNN with one switch per rule of XNNPACK's sparse path.

    entry 3x3/2 conv -> depthwise 3x3 -> 1x1 [-> Dense on the 4-D map] [-> residual 1x1 + Add]
    -> stride-2 depthwise (dw_kernel, dw_padding) -> 1x1 -> global average pooling -> head.
    """
    import keras
    from keras import layers

    act = iter(activations)
    inputs = keras.Input(input_shape)
    x = layers.ZeroPadding2D(1)(inputs) if entry_padding == "valid" else inputs
    x = layers.Conv2D(8, 3, strides=2, padding=entry_padding)(x)
    x = _act(next(act))(layers.BatchNormalization()(x))
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = _act(next(act))(layers.BatchNormalization()(x))
    x = layers.Conv2D(16, 1)(x)
    x = layers.BatchNormalization()(x)
    if dense_mid:
        x = layers.Dense(16)(x)
    if residual:
        h = layers.Conv2D(16, 1)(x)
        x = layers.Add()([x, layers.BatchNormalization()(h)])
    if dw_padding == "valid":
        x = layers.ZeroPadding2D(dw_kernel // 2)(x)
    x = layers.DepthwiseConv2D(dw_kernel, strides=2, padding=dw_padding)(x)
    x = _act(next(act))(layers.BatchNormalization()(x))
    x = layers.Conv2D(32, 1)(x)
    x = _act(next(act))(layers.BatchNormalization()(x))
    if head == "conv":  # a 1x1-conv classifier after the pooling
        x = layers.GlobalAveragePooling2D(keepdims=True)(x)
        outputs = layers.Flatten()(layers.Conv2D(10, 1)(x))
    else:
        x = layers.GlobalAveragePooling2D(keepdims=keepdims)(x)
        outputs = layers.Dense(10)(layers.Flatten()(x) if keepdims else x)
    return keras.Model(inputs, outputs)
