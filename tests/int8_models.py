"""Full-integer int8 .tflite files made by the real TF converter, for the engine's int8 tests.

The weights are zeroed by magnitude with NumPy (`tflite_models.prune_pointwise`), and the
converter stores the zeroed 1x1 kernels sparse (`EXPERIMENTAL_SPARSITY`) behind DENSIFY.
Inputs and outputs stay float32: the converter adds QUANTIZE and DEQUANTIZE at the ends.
"""

import numpy as np

from tflite_models import prune_pointwise


def representative(shape, count=8, seed=0):
    """A representative dataset for the converter: `count` images in [-1, 1]."""
    rng = np.random.default_rng(seed)
    images = [rng.uniform(-1.0, 1.0, (1,) + tuple(shape)).astype(np.float32) for _ in range(count)]
    return lambda: ([x] for x in images)


def convert_int8(model, path, sparse=True, count=8):
    """Write `model` to `path` as a full-integer int8 model with float input and output."""
    import tensorflow as tf

    # A static batch of 1, so that reshapes stay static (no SHAPE/PACK ops).
    spec = [tf.TensorSpec((1,) + tuple(model.input_shape[1:]), tf.float32)]
    optimizations = [tf.lite.Optimize.DEFAULT] + ([tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else [])
    model.export(str(path), format="litert", verbose=False, input_signature=spec,
                 optimizations=optimizations, representative_dataset=representative(model.input_shape[1:], count),
                 target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]})
    return path


def application(name, sparsity=0.0, size=224, seed=0):
    """A Keras application (weights=None, no classifier activation) with random batch-norm
    statistics, its 1x1 convs zeroed to `sparsity` by magnitude."""
    import keras

    from tflite_models import randomize_batchnorm

    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, name)(
        input_shape=(size, size, 3), weights=None, classifier_activation=None)
    randomize_batchnorm(model, seed)
    if sparsity:
        prune_pointwise(model, sparsity)
    return model


def small_net(size=32, seed=0):
    """A small MobileNetV2-like net: entry conv, depthwise (stride 1 and 2, with a
    ZeroPadding2D the loader folds), 1x1 convs, a residual ADD, MEAN and a Dense."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu6")(inputs)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = layers.Conv2D(24, 1)(x)
    y = layers.Conv2D(48, 1, activation="relu")(x)
    y = layers.DepthwiseConv2D(3, padding="same", activation="relu6")(y)
    y = layers.Conv2D(24, 1)(y)
    x = layers.Add()([x, y])
    x = layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="valid", activation="relu6")(x)
    x = layers.Conv2D(40, 1, activation="relu6")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10)(x)
    return keras.Model(inputs, outputs)
