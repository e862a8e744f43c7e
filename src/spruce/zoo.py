"""Reference architectures, built with XNNPACK's sparse path in mind.

`guide_model` is the network of the TFMOT guide "Pruning for on-device inference
with XNNPACK". The MobileNet-style builders use symmetric padding everywhere
(ZeroPadding2D + `valid` before each stride-2 conv), as the sparse path needs.
"""

import keras
from keras import layers


def guide_model(input_shape=(32, 32, 3), num_classes=10, keepdims=True):
    """The guide's MobileNet-style CNN.

    The guide's first version uses `GlobalAveragePooling2D()` (keepdims=False),
    which tfmot's policy refuses; `keepdims=True` is its fixed version.
    """
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.ZeroPadding2D(padding=1),
            layers.Conv2D(8, (3, 3), strides=(2, 2), padding="valid"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.DepthwiseConv2D((3, 3), padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Conv2D(16, (1, 1)),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.ZeroPadding2D(padding=1),
            layers.DepthwiseConv2D((3, 3), strides=(2, 2), padding="valid"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Conv2D(32, (1, 1)),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.GlobalAveragePooling2D(keepdims=keepdims),
            layers.Flatten(),
            layers.Dense(num_classes),
        ],
        name="guide_model",
    )


def _activation(kind):
    if kind == "relu6":
        return layers.ReLU(max_value=6.0)
    return layers.Activation(kind)


def _conv_bn(x, filters, kernel, stride, activation):
    if stride == 2:
        x = layers.ZeroPadding2D(padding=kernel // 2)(x)
    x = layers.Conv2D(
        filters, kernel, strides=stride, padding="valid" if stride == 2 else "same", use_bias=False
    )(x)
    x = layers.BatchNormalization()(x)
    return _activation(activation)(x) if activation else x


def _depthwise_bn(x, kernel, stride, activation):
    if stride == 2:
        x = layers.ZeroPadding2D(padding=kernel // 2)(x)
    x = layers.DepthwiseConv2D(
        kernel, strides=stride, padding="valid" if stride == 2 else "same", use_bias=False
    )(x)
    x = layers.BatchNormalization()(x)
    return _activation(activation)(x)


def mobilenet_v1(input_shape=(224, 224, 3), num_classes=1000, alpha=1.0, activation="relu6"):
    """MobileNetV1 with symmetric padding: 13 depthwise-separable blocks."""
    def c(n):
        return max(8, int(n * alpha))

    inputs = keras.Input(shape=input_shape)
    x = _conv_bn(inputs, c(32), 3, 2, activation)
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]
    plan += [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for filters, stride in plan:
        x = _depthwise_bn(x, 3, stride, activation)
        x = _conv_bn(x, c(filters), 1, 1, activation)
    x = layers.GlobalAveragePooling2D(keepdims=True)(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="mobilenet_v1")


def mobilenet_v2(input_shape=(160, 160, 3), num_classes=1000, alpha=1.0, activation="relu6"):
    """MobileNetV2-style net: inverted residuals with Add, some 5x5 depthwise."""
    def c(n):
        return max(8, int(n * alpha) // 8 * 8)

    inputs = keras.Input(shape=input_shape)
    x = _conv_bn(inputs, c(32), 3, 2, activation)
    # (expansion, filters, repeats, first stride, depthwise kernel)
    plan = [(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 32, 3, 2, 5), (6, 64, 2, 2, 3),
            (6, 96, 2, 1, 3), (6, 160, 2, 2, 5), (6, 320, 1, 1, 3)]
    for expansion, filters, repeats, first_stride, kernel in plan:
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            shortcut = x
            in_ch = x.shape[-1]
            h = _conv_bn(x, in_ch * expansion, 1, 1, activation) if expansion != 1 else x
            h = _depthwise_bn(h, kernel, stride, activation)
            h = _conv_bn(h, c(filters), 1, 1, None)
            x = layers.Add()([shortcut, h]) if stride == 1 and in_ch == c(filters) else h
    x = _conv_bn(x, c(1280), 1, 1, activation)
    x = layers.GlobalAveragePooling2D(keepdims=True)(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")
