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


def _bottleneck(x, filters, stride, expansion, name):
    """ResNet bottleneck: 1x1 reduce, 3x3 (carrying the stride), 1x1 expand, added to a shortcut.

    The stride sits on the 3x3 conv, as in torchvision's ResNet v1.5: a strided 1x1 would drop
    three quarters of its input without reading it.
    """
    out = filters * expansion
    shortcut = x
    if stride != 1 or x.shape[-1] != out:
        shortcut = layers.Conv2D(out, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    h = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_reduce")(x)
    h = layers.BatchNormalization(name=f"{name}_reduce_bn")(h)
    h = layers.ReLU(name=f"{name}_reduce_relu")(h)
    h = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(h)
    h = layers.BatchNormalization(name=f"{name}_conv_bn")(h)
    h = layers.ReLU(name=f"{name}_conv_relu")(h)
    h = layers.Conv2D(out, 1, use_bias=False, name=f"{name}_expand")(h)
    h = layers.BatchNormalization(name=f"{name}_expand_bn")(h)
    x = layers.Add(name=f"{name}_add")([shortcut, h])
    return layers.ReLU(name=f"{name}_out")(x)


def resnet_small(input_shape=(32, 32, 3), num_classes=10, width=16, blocks=(2, 2, 2), expansion=4,
                 stem_stride=1):
    """A small ResNet of bottleneck blocks for 32x32 images, for pruning every convolution.

    Stem: 3x3 conv of 2 * `width` filters, stride `stem_stride` (2 quarters the work of
    everything after it, as ResNet's own stem does on larger images). Then one stage per entry of `blocks`, the
    first at `width` filters and stride 1, each next one at twice the filters and stride 2;
    every block widens by `expansion`, with a projection shortcut where the shape changes.
    Global average pooling and a Dense layer close it. Outside the stem, nearly all of its
    multiply-adds are in convolutions that spruce's engine runs sparse once pruned.
    """
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"width must be a positive integer. Received: width={width!r}")
    if (not isinstance(blocks, (tuple, list)) or not blocks
            or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in blocks)):
        raise ValueError("blocks must be a non-empty list of positive integers, the number of "
                         f"blocks of each stage, as in (2, 2, 2). Received: blocks={blocks!r}")
    if not isinstance(expansion, int) or isinstance(expansion, bool) or expansion < 1:
        raise ValueError(f"expansion must be a positive integer. Received: expansion={expansion!r}")
    if stem_stride not in (1, 2) or isinstance(stem_stride, bool):
        raise ValueError(f"stem_stride must be 1 or 2. Received: stem_stride={stem_stride!r}")
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(2 * width, 3, strides=stem_stride, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, count in enumerate(blocks):
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            x = _bottleneck(x, width << stage, stride, expansion, f"stage{stage + 1}_block{i + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet_small")


# The builders `spruce run --model NAME[:ARGS]` reaches by name, beside keras.applications'
# (whose names these must not take). Each takes input_shape and num_classes, set by the run.
NAMED = {"ResNetSmall": resnet_small}
