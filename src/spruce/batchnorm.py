"""BatchNorm recalibration: moving statistics that match a model's final weights.

BatchNormalization's moving averages (momentum 0.99) trail weights that were still moving
in the last few hundred training steps, so a short training can end with statistics far from
the final weights' and an evaluation far below training accuracy. Recalibrating runs the model
in training mode over a few batches with a running mean (momentum 1 - 1/k at the k-th batch),
so every BatchNorm ends with the plain average of its batches' statistics ("precise BN").
"""

import numbers

import numpy as np

from spruce.layers import flatten_layers


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    return int(value)


def recalibrate_batchnorm(model, x, seed=0, batches=32, batch_size=256):
    """Set every BatchNormalization's moving statistics to their average over `x`'s batches.

    Args:
        model: a Keras model; nested models are searched too.
        x: the inputs to compute the statistics on (an array whose first axis is the batch),
            typically the training images.
        seed: seeds the choice of images in each batch.
        batches: how many batches to average (fewer when `x` holds fewer).
        batch_size: images per batch (all of `x` when it holds fewer).

    Only the moving mean and variance change: no weight is trained, and each layer's
    momentum is restored afterwards. Recalibrate a stripped model (`spruce.strip_pruning`):
    a model still wrapped for pruning would advance its pruning step in training mode.
    Returns the names of the layers recalibrated.
    """
    import keras

    batches = _positive_int("batches", batches)
    batch_size = _positive_int("batch_size", batch_size)
    if np.ndim(x) < 1 or len(x) == 0:
        raise ValueError("x must hold at least one input along its first axis. "
                         f"Received: x of shape {np.shape(x)}")
    bns = [layer for layer in flatten_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return []
    rng = np.random.default_rng(seed)
    momenta = [bn.momentum for bn in bns]
    try:
        for k in range(1, min(batches, int(np.ceil(len(x) / batch_size))) + 1):
            for bn in bns:
                bn.momentum = 1.0 - 1.0 / k
            pick = rng.choice(len(x), min(batch_size, len(x)), replace=False)
            model(x[np.sort(pick)], training=True)
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
    return [bn.name for bn in bns]
