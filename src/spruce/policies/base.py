"""`PruningPolicy`: decides which layers `prune_low_magnitude` wraps, and vets the model."""

import abc


class PruningPolicy(abc.ABC):
    """Controls, layer by layer, where `prune_low_magnitude` applies pruning.

    `prune_low_magnitude(model, pruning_policy=policy, ...)` first calls
    `policy.ensure_model_supports_pruning(model)` (which raises ValueError to
    refuse the model), then `policy.check_schedule(pruning_schedule)`, then wraps
    exactly the layers for which `policy.allow_pruning(layer)` is True.

    Subclass it to write your own policy; `PruneForLatencyOnXNNPack` is the one
    spruce ships (same names as `tfmot.sparsity.keras`).
    """

    @abc.abstractmethod
    def allow_pruning(self, layer):
        """Return True if `layer` should be wrapped for pruning."""

    @abc.abstractmethod
    def ensure_model_supports_pruning(self, model):
        """Raise ValueError, naming the layer, the rule and the fix, if `model` is unsuitable."""

    def check_schedule(self, schedule):
        """Warn (`warnings.warn`) if `schedule` cannot deliver what the policy targets.

        The default accepts every schedule.
        """
        return None

    def __repr__(self):
        return f"{type(self).__name__}()"


def final_sparsity(schedule):
    """The sparsity `schedule` ends at (PolynomialDecay's final, ConstantSparsity's target), or
    None for a schedule that names neither."""
    final = getattr(schedule, "final_sparsity", None)
    if final is None:
        final = getattr(schedule, "target_sparsity", None)
    return None if final is None else float(final)
