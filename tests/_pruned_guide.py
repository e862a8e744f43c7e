"""The TFMOT guide's model with its 1x1 convolutions pruned by magnitude, exported to .tflite.

Shared by the latency tests (bench, densify, check-arm64). Weights are deterministic:
random init from a fixed seed, batch-norm statistics set away from identity so that
folding them changes the weights, and the 1x1 kernels zeroed by spruce's magnitude mask.
"""

import numpy as np

SIGNATURE_SHAPE = (1, 32, 32, 3)


def pruned_guide(sparsity, seed=0):
    import keras

    from spruce.masking import magnitude_mask
    from spruce.zoo import guide_model

    keras.utils.set_random_seed(seed)
    model = guide_model()
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n).astype("float32"),
                               rng.normal(0, 0.1, n).astype("float32"),
                               rng.normal(0, 0.1, n).astype("float32"),
                               rng.uniform(0.5, 1.5, n).astype("float32")])
        elif isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (1, 1) and sparsity:
            kernel, *rest = layer.get_weights()
            mask = keras.ops.convert_to_numpy(magnitude_mask(kernel, sparsity)[0])
            layer.set_weights([kernel * mask] + rest)
    return model


def export(model, path, sparse):
    import keras
    import tensorflow as tf

    kwargs = {"optimizations": [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]} if sparse else {}
    model.export(str(path), format="litert", verbose=False,
                 input_signature=[keras.InputSpec(shape=SIGNATURE_SHAPE, dtype="float32")], **kwargs)
    return str(path)
