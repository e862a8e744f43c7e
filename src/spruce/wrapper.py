"""`PruneLowMagnitude`: the layer wrapper that holds masks and prunes during training.

Per prunable weight the wrapper holds a mask and a threshold variable, and one
`pruning_step` for the layer. All of them are non-trainable variables that the
wrapper updates inside `call(training=True)`, so every Keras backend carries the
updates through its train step (JAX keeps variables in its own state during an
epoch; TF traces the step), as it does for BatchNormalization's moving stats:

1. the step advances by one per training batch (tfmot: step 1 is the first batch),
   once even when a shared layer runs several times in the batch;
2. when the schedule says so, masks are recomputed from |weight * mask|, so
   pruned weights stay pruned while the sparsity rises;
3. the wrapped layer runs with weight * mask in place of weight.

The weight variables themselves are multiplied by their masks at every epoch end
(`UpdatePruningStep`) and by `strip_pruning`, which returns exact zeros.
"""

import numbers

import keras
from keras import ops
from keras.src.backend.common.stateless_scope import get_stateless_scope  # no public accessor

from spruce import registry
from spruce.masking import POOLING_TYPES, as_matrix_shape, compute_mask
from spruce.schedules import ConstantSparsity, PruningSchedule, deserialize, serialize

CALLBACK_ERROR = (
    "PruneLowMagnitude needs the UpdatePruningStep callback during training. Add it: "
    "model.fit(..., callbacks=[spruce.UpdatePruningStep()]). In a custom training loop call "
    "`cb = spruce.UpdatePruningStep(); cb.set_model(model); cb.on_train_begin()` before the "
    "first step and `cb.on_epoch_end(epoch)` after each epoch."
)


def _two_ints(value, name, check):
    try:
        pair = tuple(value)
    except TypeError:
        pair = None
    if (
        pair is None
        or len(pair) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair)
        or not check(*pair)
    ):
        raise ValueError(name + f" Received: {value!r}")
    return tuple(int(v) for v in pair)


def check_pruning_arguments(pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n):
    """Validate prune_low_magnitude's pruning arguments; return them normalized."""
    if isinstance(pruning_schedule, dict):
        pruning_schedule = deserialize(pruning_schedule)
    if not isinstance(pruning_schedule, PruningSchedule):
        raise ValueError(
            "`pruning_schedule` must be a spruce.PruningSchedule such as "
            f"spruce.PolynomialDecay(...) or spruce.ConstantSparsity(...). Received: "
            f"{pruning_schedule!r}"
        )
    block_size = _two_ints(
        block_size, "`block_size` must be a pair of positive integers (height, width).",
        lambda h, w: h > 0 and w > 0,
    )
    if block_pooling_type not in POOLING_TYPES:
        raise ValueError(
            f"`block_pooling_type` must be 'AVG' or 'MAX'. Received: {block_pooling_type!r}"
        )
    if sparsity_m_by_n is not None:
        sparsity_m_by_n = _two_ints(
            sparsity_m_by_n,
            "`sparsity_m_by_n` must be a pair of integers (m, n) with 0 < m < n: m zeros in "
            "every n consecutive weights, e.g. (2, 4).",
            lambda m, n: 0 < m < n,
        )
        if block_size != (1, 1):
            raise ValueError(
                "`sparsity_m_by_n` and `block_size` cannot be combined. Received: "
                f"sparsity_m_by_n={sparsity_m_by_n}, block_size={block_size}. Keep "
                "block_size=(1, 1) with m-by-n sparsity."
            )
    return pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n


@keras.saving.register_keras_serializable(package="spruce")
class PruneLowMagnitude(keras.layers.Wrapper):
    """Prunes the wrapped layer's weights by magnitude, on a schedule.

    Args:
        layer: the layer to prune (see `spruce.registry` for which weights).
        pruning_schedule: a `PruningSchedule`; default `ConstantSparsity(0.5, 0)`.
        block_size: (height, width) blocks of a 2-D weight pruned together.
        block_pooling_type: 'AVG' or 'MAX', how a block's magnitude is scored.
        sparsity_m_by_n: (m, n): m zeros in every n weights along the input channels.
    """

    def __init__(self, layer, pruning_schedule=None, block_size=(1, 1),
                 block_pooling_type="AVG", sparsity_m_by_n=None, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                f"PruneLowMagnitude wraps a keras.layers.Layer. Received: {layer!r}"
            )
        if pruning_schedule is None:
            pruning_schedule = ConstantSparsity(0.5, 0)
        (self.pruning_schedule, self.block_size, self.block_pooling_type,
         self.sparsity_m_by_n) = check_pruning_arguments(
            pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n)
        if not registry.supports(layer):
            raise ValueError(registry.unsupported_message(layer))
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        super().__init__(layer, **kwargs)
        self.pruning_vars = []
        self.step_callback_ready = False  # set by UpdatePruningStep.on_train_begin
        self.failed_without_callback = False

    def build(self, input_shape=None):
        super().build(input_shape)
        weights = registry.get_prunable_weights(self.layer)
        self._prunable_ids = {id(w) for w in weights}
        names = [w.name for w in weights]
        vars_ = []
        for index, weight in enumerate(weights):
            self._check_weight_shape(weight)
            base = weight.name if names.count(weight.name) == 1 else f"{weight.name}_{index}"
            mask = self.add_weight(
                name=f"{base}_mask", shape=weight.shape, initializer="ones", dtype=weight.dtype,
                trainable=False, aggregation="only_first_replica",
            )
            threshold = self.add_weight(
                name=f"{base}_threshold", shape=(), initializer="zeros", dtype=weight.dtype,
                trainable=False, aggregation="only_first_replica",
            )
            vars_.append((weight, mask, threshold))
        self.pruning_vars = vars_
        self.pruning_step = self.add_weight(
            name="pruning_step", shape=(), initializer=keras.initializers.Constant(-1),
            dtype="int32", trainable=False, aggregation="only_first_replica",
        )

    def _check_weight_shape(self, weight):
        shape = tuple(weight.shape)
        if self.sparsity_m_by_n and len(shape) < 2:
            raise ValueError(
                f"Layer '{self.layer.name}': m-by-n sparsity needs weights of rank >= 2; "
                f"'{weight.name}' has shape {shape}. Leave this layer out of m-by-n pruning."
            )
        if self.block_size != (1, 1) and as_matrix_shape(shape) is None:
            raise ValueError(
                f"Layer '{self.layer.name}': block sparsity needs a 2-D weight or a 1x1 "
                f"convolution kernel; '{weight.name}' has shape {shape}. Use block_size=(1, 1) "
                "for this layer."
            )

    # -- training-time updates ------------------------------------------------

    def _update_masks(self):
        if not self.step_callback_ready:
            self.failed_without_callback = True  # UpdatePruningStep then retraces the step
            raise ValueError(CALLBACK_ERROR)
        step = ops.add(self.pruning_step.value, 1)
        self.pruning_step.assign(step)
        should_prune, sparsity = self.pruning_schedule(step)
        should_prune = ops.logical_and(should_prune, ops.greater_equal(step, 1))
        for weight, mask, threshold in self.pruning_vars:
            current = ops.multiply(weight.value, mask.value)

            def recompute(current=current):
                return compute_mask(current, sparsity, self.block_size,
                                    self.block_pooling_type, self.sparsity_m_by_n)

            def keep(mask=mask, threshold=threshold):
                return mask.value, threshold.value

            new_mask, new_threshold = ops.cond(should_prune, recompute, keep)
            mask.assign(new_mask)
            threshold.assign(new_threshold)

    def _first_call_in_step(self):
        """False when this (shared) layer already ran in the same train step.

        A step is marked on the object that lives exactly as long as it: the
        trainer's StatelessScope (JAX calls the model through `stateless_call`)
        or else the outermost layer call's context (TF, eager loops).
        """
        marker = get_stateless_scope()
        if marker is None:
            get_context = getattr(self, "_get_call_context", None)
            marker = get_context() if get_context is not None else None
        if marker is None:
            return True
        key = f"_spruce_stepped_{id(self)}"
        if getattr(marker, key, False):
            return False
        setattr(marker, key, True)
        return True

    def call(self, inputs, training=None, **kwargs):
        if training and self.pruning_vars and self._first_call_in_step():
            self._update_masks()
        if getattr(self.layer, "_call_has_training_arg", False):
            kwargs["training"] = training
        return self._call_masked(inputs, kwargs)

    def _call_masked(self, inputs, kwargs):
        """Run the wrapped layer with each pruned weight read as weight * mask."""
        masks = {id(w): m for w, m, _ in self.pruning_vars}
        mapping = []
        for variable in self.layer.variables:
            value = variable.value
            if id(variable) in masks:
                value = ops.multiply(value, masks[id(variable)].value)
            mapping.append((variable, value))
        scope = keras.StatelessScope(
            state_mapping=mapping, collect_losses=True, initialize_variables=False
        )
        before = dict(scope.state_mapping)
        with scope:
            outputs = self.layer(inputs, **kwargs)
        # Forward what the layer changed (its own state, not the masked weights).
        for variable in self.layer.variables:
            key = id(variable)
            if key not in masks and scope.state_mapping.get(key) is not before.get(key):
                variable.assign(scope.state_mapping[key])
        for loss in scope.losses:
            self.add_loss(loss)
        return outputs

    def compute_output_spec(self, inputs, training=None, **kwargs):
        return self.layer.compute_output_spec(inputs, **kwargs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    # -- weights and config ---------------------------------------------------

    def apply_masks(self):
        """Multiply each pruned weight variable by its mask (outside a train step)."""
        for weight, mask, _ in self.pruning_vars:
            weight.assign(ops.multiply(weight.value, mask.value))

    def masked_weights(self):
        """The wrapped layer's weights as NumPy arrays, pruned ones multiplied by masks."""
        masks = {id(w): m for w, m, _ in self.pruning_vars}
        values = []
        for variable in self.layer.weights:
            value = ops.convert_to_numpy(variable)
            if id(variable) in masks:
                value = value * ops.convert_to_numpy(masks[id(variable)])
            values.append(value)
        return values

    def get_config(self):
        config = super().get_config()
        config.update(
            pruning_schedule=serialize(self.pruning_schedule),
            block_size=list(self.block_size),
            block_pooling_type=self.block_pooling_type,
            sparsity_m_by_n=list(self.sparsity_m_by_n) if self.sparsity_m_by_n else None,
        )
        return config


def collect_prunable_layers(model):
    """Every PruneLowMagnitude in `model`, nested models included, in layer order."""
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, PruneLowMagnitude):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(collect_prunable_layers(layer))
    return found
