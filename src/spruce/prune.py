"""`prune_low_magnitude` and `strip_pruning`: wrap prunable layers, and unwrap them.

Both return new models (clones with the same architecture and layer names and
copies of the weights); the model passed in is left as it was.
"""

import keras

from spruce import registry
from spruce.schedules import ConstantSparsity
from spruce.wrapper import PruneLowMagnitude, check_pruning_arguments, collect_prunable_layers


def _functional_class():
    from keras.src.models.functional import Functional

    return Functional


def _check_model(model, role="model"):
    """Refuse models clone_model cannot rebuild: subclassed or unbuilt ones."""
    if isinstance(model, keras.Sequential) and type(model) is keras.Sequential:
        if not model.built or not model.inputs:
            raise ValueError(
                f"Sequential {role} '{model.name}' is not built, so its input shape is unknown. "
                "Start it with keras.Input(shape=...) or call model.build(input_shape) first."
            )
        return
    if type(model) is _functional_class():
        return
    raise ValueError(
        f"{role.capitalize()} '{model.name}' is a subclassed model ({type(model).__name__}); "
        "spruce can prune Sequential and Functional models, whose layers it can rebuild. "
        "Rewrite it as a Functional model, or wrap its layers with "
        "spruce.prune_low_magnitude inside the model's own __init__."
    )


def _fresh(layer):
    return layer.__class__.from_config(layer.get_config())


def _by_original_name(model):
    """The model's layers keyed by the name of the layer they stand for (wrappers: inner)."""
    return {
        (layer.layer.name if isinstance(layer, PruneLowMagnitude) else layer.name): layer
        for layer in model.layers
    }


def _copy_weights(source, target):
    """Copy weights from `source` into its clone `target`, layer by layer, by name."""
    clones = _by_original_name(target)
    for layer in source.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        key = layer.layer.name if isinstance(layer, PruneLowMagnitude) else layer.name
        clone = clones[key]
        if isinstance(layer, keras.Model):
            _copy_weights(layer, clone)
        elif isinstance(layer, PruneLowMagnitude) or not isinstance(clone, PruneLowMagnitude):
            clone.set_weights(layer.get_weights())
        else:
            clone.layer.set_weights(layer.get_weights())


def prune_low_magnitude(to_prune, pruning_schedule=ConstantSparsity(0.5, 0), block_size=(1, 1),
                        block_pooling_type="AVG", pruning_policy=None, sparsity_m_by_n=None,
                        **kwargs):
    """Wrap the prunable layers of a layer, list of layers, or Sequential/Functional model.

    Returns a `PruneLowMagnitude` for a layer (the layer itself is wrapped, as in
    tfmot), a list for a list, and for a model a clone in which every prunable
    layer is wrapped (nested models too) and everything else is copied as is.
    Train it with `callbacks=[spruce.UpdatePruningStep()]`.

    Args:
        to_prune: a keras layer, a list of layers, or a Sequential/Functional model.
        pruning_schedule: a `PruningSchedule`; default `ConstantSparsity(0.5, 0)`.
        block_size: (height, width) blocks pruned together in 2-D weights.
        block_pooling_type: 'AVG' or 'MAX', how blocks are scored.
        pruning_policy: optional policy object: `ensure_model_supports_pruning(model)`
            may refuse the model (ValueError), `check_schedule(schedule)` may warn,
            and `allow_pruning(layer)` returning False leaves a layer unwrapped.
        sparsity_m_by_n: (m, n): m zeros in every n weights along the input channels.
        **kwargs: passed to `PruneLowMagnitude` when `to_prune` is a layer; ignored otherwise.
    """
    if pruning_schedule is None:
        pruning_schedule = ConstantSparsity(0.5, 0)
    params = dict(
        zip(
            ("pruning_schedule", "block_size", "block_pooling_type", "sparsity_m_by_n"),
            check_pruning_arguments(
                pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n
            ),
        )
    )
    if isinstance(to_prune, (list, tuple)):
        return [prune_low_magnitude(layer, pruning_policy=pruning_policy, **params, **kwargs)
                for layer in to_prune]

    if isinstance(to_prune, keras.Model):
        _check_model(to_prune)
        if pruning_policy is not None:
            pruning_policy.ensure_model_supports_pruning(to_prune)
            pruning_policy.check_schedule(params["pruning_schedule"])
        pruned = _clone(to_prune, params, pruning_policy)
        _copy_weights(to_prune, pruned)
        return pruned

    if isinstance(to_prune, keras.layers.Layer):
        if isinstance(to_prune, PruneLowMagnitude):
            return to_prune
        if pruning_policy is not None:
            pruning_policy.check_schedule(params["pruning_schedule"])
            if not pruning_policy.allow_pruning(to_prune):
                return to_prune
        if registry.nothing_to_prune(to_prune):
            raise ValueError(
                f"Layer '{to_prune.name}' ({type(to_prune).__name__}) has no weights to prune. "
                "Leave it unwrapped; prune_low_magnitude on a whole model skips such layers."
            )
        return PruneLowMagnitude(to_prune, **params, **kwargs)

    raise ValueError(
        "`to_prune` must be a keras layer, a list of layers, or a Sequential or Functional "
        f"keras.Model. Received: {to_prune!r}"
    )


def _clone(model, params, pruning_policy):
    def wrap(layer):
        if isinstance(layer, keras.Model):
            _check_model(layer, role="nested model")
            return _clone(layer, params, pruning_policy)
        if isinstance(layer, PruneLowMagnitude):
            return PruneLowMagnitude.from_config(layer.get_config())
        fresh = _fresh(layer)
        if pruning_policy is not None and not pruning_policy.allow_pruning(layer):
            return fresh
        if registry.nothing_to_prune(layer):
            return fresh
        if not registry.supports(layer):
            raise ValueError(registry.unsupported_message(layer))
        return PruneLowMagnitude(fresh, **params)

    return keras.models.clone_model(model, clone_function=wrap)


def strip_pruning(model):
    """A plain Keras model: same architecture and layer names, masked weights (exact zeros).

    Accepts a model or a single `PruneLowMagnitude` layer (which returns the
    wrapped layer's clone with masked weights).
    """
    if isinstance(model, PruneLowMagnitude):
        layer = _fresh(model.layer)
        layer.build_from_config(model.layer.get_build_config())
        layer.set_weights(model.masked_weights())
        return layer
    if not isinstance(model, keras.Model):
        raise ValueError(
            "strip_pruning expects a keras.Model (or a PruneLowMagnitude layer). "
            f"Received: {model!r}"
        )
    _check_model(model)

    def unwrap(layer):
        if isinstance(layer, keras.Model):
            _check_model(layer, role="nested model")
            return keras.models.clone_model(layer, clone_function=unwrap)
        if isinstance(layer, PruneLowMagnitude):
            return _fresh(layer.layer)
        return _fresh(layer)

    stripped = keras.models.clone_model(model, clone_function=unwrap)
    _copy_stripped(model, stripped)
    return stripped


def _copy_stripped(source, target):
    for layer in source.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, PruneLowMagnitude):
            target.get_layer(layer.layer.name).set_weights(layer.masked_weights())
        elif isinstance(layer, keras.Model):
            _copy_stripped(layer, target.get_layer(layer.name))
        else:
            target.get_layer(layer.name).set_weights(layer.get_weights())


def prune_scope():
    """A custom-object scope for `keras.saving.load_model` of pruned models (as in tfmot).

    Importing `spruce.wrapper` (which any use of the pruning API does) registers the
    classes too; this scope makes the dependency explicit and works on its own.
    """
    return keras.saving.custom_object_scope({"PruneLowMagnitude": PruneLowMagnitude})


__all__ = [
    "prune_low_magnitude",
    "strip_pruning",
    "prune_scope",
    "collect_prunable_layers",
]
