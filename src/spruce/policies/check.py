"""`check_xnnpack`: which layers XNNPACK's sparse path runs, which it prunes, and why."""

from spruce.policies.region import analyze
from spruce.policies.xnnpack import PruneForLatencyOnXNNPack


def check_xnnpack(model, policy=None):
    """Report, per layer, whether XNNPACK's sparse path runs it and whether it is pruned.

    Does not raise on an incompatible model: the report lists every refusal with
    its fix (`report.ok`, `report.refusals`), the share of the model's
    multiply-adds the sparse path covers, `report.to_dict()` for JSON, and a
    readable table from `str(report)`. Raises ValueError only for models that
    cannot be analysed (subclassed, unbuilt, not a Keras model).

    Args:
      model: a built Sequential or Functional Keras 3 model (nested models and
        pruning-wrapped layers are fine).
      policy: the `PruneForLatencyOnXNNPack` whose options and `allow_pruning`
        to use; defaults to `PruneForLatencyOnXNNPack()`.
    """
    return analyze(model, policy if policy is not None else PruneForLatencyOnXNNPack())
