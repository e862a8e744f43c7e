"""Writes the fuzz target's seed corpus: small real .tflite files from the TF converter.

Each model is tiny (a few channels on an 8x8 image) so that the corpus stays a few
kilobytes a file, and together the models use every operator the engine runs:
convolutions of every kind the loader tells apart, sparse weights behind DENSIFY,
float16 weights behind DEQUANTIZE, the fused swish and hard-swish epilogues,
squeeze-and-excite, pooling, concatenation, the standalone activations, the
arithmetic of preprocessing layers, a graph with two inputs, and one operator
the engine refuses. Run from the repository root:

    PYTHONPATH=src python tests/fuzz/make_seeds.py [out_dir]
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/, for tflite_models

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _models():
    import keras
    from keras import layers

    from tflite_models import zero_by_magnitude

    def pruned(conv, x, sparsity=0.9):
        y = conv(x)
        kernel, bias = conv.get_weights()
        conv.set_weights([zero_by_magnitude(kernel, sparsity), bias])
        return y

    def mobilenet():
        inputs = keras.Input((8, 8, 3))
        x = layers.ZeroPadding2D(((0, 1), (0, 1)))(inputs)
        x = layers.Conv2D(8, 3, strides=2, activation="relu6")(x)
        x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
        y = pruned(layers.Conv2D(8, 1), x)
        x = layers.Add()([x, y])
        x = layers.GlobalAveragePooling2D()(x)
        outputs = layers.Dense(4, activation="softmax")(x)
        return keras.Model(inputs, outputs), {"sparse": True}

    def efficientnet():
        inputs = keras.Input((8, 8, 3))
        x = layers.Rescaling(1 / 255.0, offset=-0.5)(inputs)
        x = layers.Normalization(mean=[0.4, 0.5, 0.6], variance=[0.2, 0.3, 0.4])(x)
        x = layers.Conv2D(8, 3, padding="same", activation="swish")(x)
        x = layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
        x = layers.Activation("hard_swish")(x)
        se = layers.GlobalAveragePooling2D(keepdims=True)(x)
        se = layers.Conv2D(4, 1, activation="relu")(se)
        se = layers.Conv2D(8, 1, activation="sigmoid")(se)
        x = layers.Multiply()([x, se])
        x = pruned(layers.Conv2D(16, 1), x)
        x = layers.Activation("swish")(x)
        outputs = layers.Flatten()(layers.GlobalAveragePooling2D(keepdims=True)(x))
        return keras.Model(inputs, outputs), {"sparse": True}

    def resnet():
        inputs = keras.Input((9, 9, 2))
        x = layers.Conv2D(6, 3, dilation_rate=2, padding="same")(inputs)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        a = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
        b = layers.AveragePooling2D(2, strides=1, padding="same")(x)
        c = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="valid")(x)
        c = layers.ZeroPadding2D(1)(c)
        x = layers.Concatenate()([a, b, c])
        x = layers.Conv2D(5, (1, 3), strides=(1, 2))(x)
        outputs = layers.Reshape((-1,))(x)
        return keras.Model(inputs, outputs), {"sparse": False}

    def activations():
        inputs = keras.Input((4, 4, 3))
        x = layers.Conv2D(6, 1)(inputs)
        parts = [layers.Activation(kind)(x) for kind in ("elu", "tanh", "sigmoid", "relu")]
        parts.append(layers.LeakyReLU(negative_slope=0.25)(x))
        parts.append(layers.ReLU(max_value=6.0)(x))
        x = layers.Concatenate()(parts)
        x = layers.Subtract()([x, layers.Conv2D(36, 1)(x)])
        x = layers.Flatten()(x)
        x = layers.Dense(5, activation="relu")(x)
        outputs = layers.Softmax()(x)
        return keras.Model(inputs, outputs), {"sparse": False}

    def two_inputs():
        a = keras.Input((6, 6, 4))
        b = keras.Input((6, 6, 4))
        x = layers.Add()([a, layers.Activation("relu")(b)])
        y = layers.Conv2D(3, 3, strides=2, padding="same")(x)
        z = layers.Dense(2)(layers.Reshape((6 * 6 * 4,))(x))
        return keras.Model([a, b], [y, z]), {"sparse": False}

    def float16():
        inputs = keras.Input((8, 8, 3))
        x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
        x = pruned(layers.Conv2D(8, 1), x)
        outputs = layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, outputs), {"sparse": False, "fp16": True}

    def unsupported():
        inputs = keras.Input((4, 4, 3))
        x = layers.Conv2D(4, 1)(inputs)
        outputs = layers.Permute((3, 1, 2))(x)  # TRANSPOSE: refused at load time
        return keras.Model(inputs, outputs), {"sparse": False}

    for make in (mobilenet, efficientnet, resnet, activations, two_inputs, float16, unsupported):
        keras.utils.set_random_seed(0)
        model, options = make()
        yield make.__name__, model, options


def _export_several_inputs(model, path):
    # export_litert passes several inputs' specs unnested, which Keras' export takes
    # for positional arguments; one list of specs is one argument.
    import tensorflow as tf

    spec = [[tf.TensorSpec((1,) + tuple(t.shape[1:]), tf.float32) for t in model.inputs]]
    model.export(path, format="litert", verbose=False, input_signature=spec)


def main(out_dir=os.path.join(HERE, "corpus")):
    from spruce import export_litert

    os.makedirs(out_dir, exist_ok=True)
    for name, model, options in _models():
        path = os.path.join(out_dir, f"{name}.tflite")
        if len(model.inputs) > 1:
            _export_several_inputs(model, path)
        else:
            export_litert(model, path, sparse=options["sparse"], fp16=options.get("fp16", False),
                          verify=name != "unsupported")
        print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:])
