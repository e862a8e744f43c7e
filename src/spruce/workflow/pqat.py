"""The quantization-aware stage of `spruce run --quantize int8`: the pruned model fine-tuned
int8-aware with its zeros kept (tfmot's PQAT), then converted to int8 as post-training
quantization converts it.

Post-training quantization rounds a model that never saw int8: a few outliers in the
calibration images set the step of a whole activation tensor. This stage wraps pruned.keras
with `spruce.qat.quantize_aware` (kernels rounded per output channel, held to their zeros by a
fixed mask; inputs rounded per tensor), fixes the input ranges to the min and max over the
same calibration images the converter will use (`observe_ranges`), and fine-tunes for
`qat_epochs` at `qat_learning_rate`, so that training sees the rounding the int8 file will do.
The fine-tuned model, stripped, is saved as pruned_pqat.keras and converted to
pruned_pqat_int8.tflite (int8, 1x1 filters stored sparse) in the child process the post-training
stage uses, calibrated on the same images. Its BatchNorm statistics are not recalibrated, as the
float stages' are: they were learned under int8 rounding, which is how the int8 file computes,
and re-estimating them on float activations undoes part of what the fine-tune learned.

The stage is recorded on its own: its key is the float export's (so the models') plus the
quantize mode, the calibration size and the fine-tuning's settings, so changing `qat_epochs`
or `qat_learning_rate` redoes it alone. It trains on one device even in a --distribute run:
one short epoch of a pruned model does not pay for replicating the wrapped layers.
"""

import dataclasses
import hashlib
import json
import os

import numpy as np

from spruce.workflow.quantize import CALIBRATION_SAMPLES, Int8Model

FILES = {
    "pruned_pqat.keras": "pruned model after quantization-aware fine-tuning, zeros kept (Keras 3)",
    "pruned_pqat_int8.tflite": "it as full-integer int8, 1x1 filters stored sparse (int8 behind DENSIFY)",
}
# Bumped when this stage's code changes what it produces.
STAGE_VERSION = 2


@dataclasses.dataclass(frozen=True)
class PqatModel(Int8Model):
    """The int8 file of the quantization-aware fine-tune, and the Keras figures around it."""

    epochs: int
    learning_rate: float
    keras_accuracy: float  # the fine-tuned float model, as the converter reads it
    # Keras test accuracy with int8 rounding simulated (spruce.qat), before and after the
    # fine-tune: before, it is post-training quantization as Keras sees it.
    simulated_before: float
    simulated_after: float
    sparsity_1x1: float | None  # zeros in its 1x1 convolutions
    zeros_kept: bool  # every zero of pruned.keras is still zero, and no weight became zero
    history: dict  # loss and accuracy per epoch of the fine-tune


def stage_key(config, export_key):
    """The stage's key: the float export's (which holds the models'), the mode, the calibration
    size, the fine-tuning's settings and this stage's version."""
    values = {"export": export_key, "quantize": config.quantize, "calibration": CALIBRATION_SAMPLES,
              "epochs": config.qat_epochs, "learning_rate": config.qat_learning_rate, "version": STAGE_VERSION}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def compute(state):
    """The recorded stage: fine-tune, save, convert, evaluate. Returns (PqatModel, the manifest record)."""
    import keras

    from spruce.qat import observe_ranges, quantize_aware, strip_quantize_aware
    from spruce.workflow import evaluate, measure, quantize
    from spruce.workflow.artifacts import atomic_path
    from spruce.workflow.progress import FitProgress, log
    from spruce.workflow.train import learning_rate, outputs_logits, steps_per_epoch

    config, data = state.config, state.data
    pruned = state.models["pruned"]
    images = quantize.calibration_images(data.x_train, seed=config.seed)
    log(f"pqat: quantization-aware fine-tuning of pruned.keras, {config.qat_epochs} epoch(s) at learning "
        f"rate {config.qat_learning_rate}, input ranges from {len(images)} calibration images ...", state.quiet)
    keras.utils.set_random_seed(config.seed + 2)
    aware = quantize_aware(pruned)
    observe_ranges(aware, images)

    def test(model, label):
        return evaluate.keras_accuracy(model, data.x_test, data.y_test, label=label, progress=state.progress)

    before = test(aware, "test pruned, int8 simulated (Keras)")
    spe = steps_per_epoch(len(data.x_train), config.batch_size)
    rate = learning_rate(config.qat_learning_rate, config.lr_schedule, spe * config.qat_epochs, spe)
    # The wrapped last layer hides its activation: ask the plain model whether it ends in a softmax.
    aware.compile(optimizer=keras.optimizers.Adam(rate), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=outputs_logits(pruned)))
    h = aware.fit(data.x_train, data.y_train, batch_size=config.batch_size, epochs=config.qat_epochs,
                  validation_data=(data.x_val, data.y_val), shuffle=True, verbose=0,
                  callbacks=[FitProgress("pqat", spe, state.progress)])
    after = test(aware, "test pruned_pqat, int8 simulated (Keras)")
    model = strip_quantize_aware(aware)
    with atomic_path(state.path("pruned_pqat.keras")) as tmp:
        model.save(tmp)
    export = quantize.export_calibrated(state, images, ("pruned_pqat",))["pruned_pqat"]
    path = state.path("pruned_pqat_int8.tflite")
    result = PqatModel(
        tflite_accuracy=evaluate.tflite_accuracy(path, data.x_test, data.y_test,
                                                 label="test pruned_pqat_int8.tflite (LiteRT)",
                                                 progress=state.progress),
        tflite_bytes=os.path.getsize(path), tflite_gzip_bytes=measure.gzip_size(path),
        weight_bytes=quantize.weight_bytes(path), export=export,
        epochs=config.qat_epochs, learning_rate=config.qat_learning_rate,
        keras_accuracy=test(model, "test pruned_pqat (Keras)"),
        simulated_before=before, simulated_after=after,
        sparsity_1x1=measure.one_by_one_sparsity(model), zeros_kept=same_zeros(pruned, model),
        history={k: [float(v) for v in values] for k, values in h.history.items()})
    log(f"pqat: int8 test accuracy on LiteRT {result.tflite_accuracy:.2%} (Keras, int8 simulated: "
        f"{before:.2%} before the fine-tune, {after:.2%} after)", state.quiet)
    return result, {"result": result.to_dict()}


def reuse(entry):
    return PqatModel.from_dict(entry["result"])


def same_zeros(reference, model):
    """True when every kernel of `model` is zero exactly where `reference`'s (same layer names) is."""
    import keras

    from spruce.layers import flatten_layers

    kernels = {layer.name: layer.kernel for layer in flatten_layers(model) if getattr(layer, "kernel", None)
               is not None}
    for layer in flatten_layers(reference):
        kernel = getattr(layer, "kernel", None)
        if kernel is None or layer.name not in kernels:
            continue
        ours = keras.ops.convert_to_numpy(kernels[layer.name]) == 0
        if not np.array_equal(ours, keras.ops.convert_to_numpy(kernel) == 0):
            return False
    return True
