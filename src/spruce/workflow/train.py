"""Training recipes: dense training, then fine-tuning with pruning.

The guide's constant learning rate leaves BatchNorm's moving statistics chasing weights that
still move at the end, so evaluation lands far below training accuracy; a learning rate that
decays to almost zero lets the weights, and so the statistics, settle (Adam, cosine decay).
"""

import contextlib
import math

import keras
import numpy as np

from spruce.batchnorm import recalibrate_batchnorm
from spruce.layers import flatten_layers
from spruce.workflow.config import ConfigError
from spruce.workflow.progress import FitProgress


def learning_rate(config_lr, schedule, total_steps, steps_per_epoch):
    """A Keras learning-rate schedule named by `schedule` (cosine, exponential, constant)."""
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config_lr, max(1, total_steps), alpha=0.01)
    if schedule == "exponential":
        # reaches 1% of the initial rate at the last step, as the cosine schedule does
        return keras.optimizers.schedules.ExponentialDecay(
            config_lr, max(1, steps_per_epoch), 0.01 ** (steps_per_epoch / max(1, total_steps)))
    if schedule == "constant":
        return config_lr
    raise ValueError(f"lr_schedule must be one of cosine, exponential, constant. Received: lr_schedule={schedule!r}")


def outputs_logits(model):
    """True unless the model ends in a softmax (then the loss takes probabilities)."""
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    if activation is keras.activations.softmax or type(last).__name__ == "Softmax":
        return False
    return not (type(last).__name__ == "Activation" and getattr(last, "activation", None) is keras.activations.softmax)


def compile_model(model, lr):
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=outputs_logits(model)),
        metrics=["accuracy"],
    )


def steps_per_epoch(n, batch_size):
    return int(math.ceil(n / batch_size))


def _history(h):
    return {k: [float(v) for v in values] for k, values in h.history.items()}


@contextlib.contextmanager
def _engine(distributed):
    """All local devices through the backend's data-parallel engine, or nothing special."""
    if not distributed:
        yield
        return
    from spruce.distribute import data_parallel

    with data_parallel():
        yield


def _replicated(model, distributed):
    """The model to train: `model` itself, or (inside the engine) its replicated copy.

    Under TensorFlow the copy's BatchNormalization is synchronized, so that replicas
    normalise with the global batch's statistics as one device does; under JAX the
    batch is one sharded array and its statistics are global already.
    """
    if not distributed:
        return model
    from spruce.distribute import copy_model

    return copy_model(model, synchronized_batchnorm=keras.backend.backend() == "tensorflow")


def train_dense(model, data, config, log_dir=None, progress=True, distributed=False):
    """Train `model` on `data` with the dense recipe; return the per-epoch history.

    `distributed`: train a replicated copy on all local devices (the batch size is the
    global batch), then copy its weights back into `model`, which stays a plain model.
    """
    spe = steps_per_epoch(len(data.x_train), config.batch_size)
    with _engine(distributed):
        trained = _replicated(model, distributed)
        keras.utils.set_random_seed(config.seed)  # after the copy: the same shuffles as 1 device
        compile_model(trained, learning_rate(config.learning_rate, config.lr_schedule,
                                             spe * config.dense_epochs, spe))
        callbacks = [FitProgress("dense", spe, progress)]
        if log_dir:
            callbacks.append(EpochScalars(log_dir))
        h = trained.fit(data.x_train, data.y_train, batch_size=config.batch_size,
                        epochs=config.dense_epochs, validation_data=(data.x_val, data.y_val),
                        shuffle=True, verbose=0, callbacks=callbacks)
    if trained is not model:
        model.set_weights(trained.get_weights())
    recalibrate_batchnorm(model, data.x_train, config.seed)
    return _history(h)


def pruning_schedule(config, n_train):
    """The PolynomialDecay schedule of the config, in optimizer steps.

    The schedule prunes only at multiples of `frequency`, so `end_step` is aligned to
    one (otherwise the final sparsity is never applied); a short fine-tuning (--quick)
    lowers the frequency so that sparsity still rises in at least four steps.
    """
    from spruce.schedules import PolynomialDecay

    total = steps_per_epoch(n_train, config.batch_size) * config.prune_epochs
    end = max(1, int(round(total * config.pruning_end_fraction)))
    frequency = max(1, min(config.pruning_frequency, end // 4))
    end = max(frequency, end // frequency * frequency)
    return PolynomialDecay(initial_sparsity=config.initial_sparsity,
                           final_sparsity=config.final_sparsity,
                           begin_step=0, end_step=end, frequency=frequency)


def pruning_policy(target, pointwise_only=False):
    """The policy that prunes what `target` runs sparse: XNNPACK's sparse path, or spruce's engine."""
    from spruce import policies

    if target == "x86":
        return policies.PruneForLatencyOnSpruce(pointwise_only=pointwise_only)
    return policies.PruneForLatencyOnXNNPack()


def prune_finetune(dense_model, data, config, log_dir=None, progress=True, distributed=False, teacher=None):
    """Wrap `dense_model` for pruning (the policy of `config.target`), fine-tune it, strip it.

    Returns (stripped_model, history, sparsity_trace); the trace holds the fraction of
    zeros of every pruned kernel, sampled at each pruning step. `distributed`: prune
    and fine-tune a replicated copy on all local devices; the returned model is a
    plain single-device one either way. With `config.distill`, the fine-tuning learns
    from `teacher` (default: `dense_model`) as well as from the labels.
    """
    from spruce.callbacks import PruningSummaries, UpdatePruningStep
    from spruce.prune import prune_low_magnitude, strip_pruning

    schedule = pruning_schedule(config, len(data.x_train))
    spe = steps_per_epoch(len(data.x_train), config.batch_size)
    with _engine(distributed):
        source = _replicated(dense_model, distributed)
        keras.utils.set_random_seed(config.seed + 1)
        # Both policies wrap 1x1 convolutions (for the engine, SeparableConv2D's 1x1 part too),
        # whose (in, out) matrix takes blocks.
        pruned = prune_low_magnitude(source, pruning_schedule=schedule,
                                     block_size=tuple(config.block_size),
                                     pruning_policy=pruning_policy(config.target, config.pointwise_only))
        if config.sparsity_allocation == "erk":
            _allocate_erk(pruned)
        lr = learning_rate(config.prune_learning_rate, config.lr_schedule, spe * config.prune_epochs, spe)
        trained = pruned
        if config.distill:
            trained = _distiller(pruned, teacher if teacher is not None else dense_model, config, distributed)
            trained.compile(optimizer=keras.optimizers.Adam(lr), metrics=["accuracy"])
        else:
            compile_model(pruned, lr)
        trace = SparsityTrace(schedule.frequency)
        callbacks = [UpdatePruningStep(), trace, FitProgress("prune", spe, progress)]
        if log_dir:
            callbacks += [PruningSummaries(log_dir=log_dir, update_freq=schedule.frequency),
                          EpochScalars(log_dir)]
        h = trained.fit(data.x_train, data.y_train, batch_size=config.batch_size,
                        epochs=config.prune_epochs, validation_data=(data.x_val, data.y_val),
                        shuffle=True, verbose=0, callbacks=callbacks)
        stripped = strip_pruning(pruned)
    if distributed:  # a plain single-device model, BatchNorm not synchronized: what export wants
        from spruce.distribute import copy_model

        stripped = copy_model(stripped)
    recalibrate_batchnorm(stripped, data.x_train, config.seed)
    trace.sample(stripped, trace.step, force=True)
    return stripped, _history(h), trace.to_dict()


def _distiller(student, teacher, config, distributed):
    """`student` wrapped to learn from `teacher` too (`spruce.distill.Distiller`)."""
    from spruce.distill import Distiller

    from_logits = outputs_logits(teacher)
    return Distiller(student, _replicated(teacher, distributed), alpha=config.distill_alpha,
                     temperature=config.distill_temperature, from_logits=from_logits)


def _allocate_erk(pruned):
    from spruce.allocation import allocate_erk

    try:
        allocate_erk(pruned)
    except ValueError as e:
        raise ConfigError(f"sparsity_allocation='erk' cannot prune this model: {e} In spruce run: "
                          "raise final_sparsity, or set sparsity_allocation = 'uniform' "
                          "(--allocation uniform).") from None


def kernel_sparsity(model):
    """{layer name: fraction of zeros} for every 1x1 Conv2D and Dense kernel of a plain model."""
    out = {}
    for layer in flatten_layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None or type(layer).__name__ not in ("Conv2D", "Dense"):
            continue
        if type(layer).__name__ == "Conv2D" and tuple(layer.kernel_size) != (1, 1):
            continue
        out[layer.name] = float(np.mean(keras.ops.convert_to_numpy(kernel) == 0))
    return out


class EpochScalars(keras.callbacks.Callback):
    """Loss, accuracy and learning rate per epoch, as TensorBoard scalars in `log_dir`.

    Uses spruce's own event-file writer, so TensorBoard need not be installed to train.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        from spruce.callbacks import EventFileWriter

        if self._writer is None:
            self._writer = EventFileWriter(self.log_dir)
        scalars = {f"epoch_{k}": float(v) for k, v in (logs or {}).items()
                   if np.ndim(v) == 0 and k != "learning_rate"}
        lr = getattr(self.model.optimizer, "learning_rate", None)
        if lr is not None:
            scalars["epoch_learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        self._writer.add_scalars(scalars, epoch + 1)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class SparsityTrace(keras.callbacks.Callback):
    """Samples the fraction of zeros of each pruned kernel every `frequency` steps."""

    def __init__(self, frequency):
        super().__init__()
        self.frequency = max(1, int(frequency))
        self.step = 0
        self.steps, self.layers = [], {}

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.frequency == 0 or self.step == 1:
            sync = getattr(self.model, "jax_state_sync", None)
            if sync is not None:  # JAX keeps the variables in its own state mid-epoch
                sync()
            self.sample(self.model, self.step)

    def sample(self, model, step, force=False):
        if not force and self.steps and self.steps[-1] == step:
            return
        values = pruned_layer_sparsity(model)
        if not values:
            return
        self.steps.append(int(step))
        for name, value in values.items():
            self.layers.setdefault(name, []).append(value)

    def to_dict(self):
        return {"steps": self.steps, "layers": self.layers}


def pruned_layer_sparsity(model):
    """{layer name: fraction of zeros of its mask} for the pruned layers of `model`.

    Reads the masks of the pruning wrappers (`pruning_vars`: (weight, mask, threshold),
    as in tfmot); on a plain model, the zeros of the 1x1 conv and Dense kernels.
    """
    out = {}
    for layer in flatten_layers(model):
        for weight, mask, _ in getattr(layer, "pruning_vars", None) or []:
            inner = getattr(layer, "layer", layer)
            out[inner.name] = float(1.0 - np.mean(keras.ops.convert_to_numpy(mask.value)))
    if out:
        return out
    return {k: v for k, v in kernel_sparsity(model).items() if v > 0}
