"""`check_xnnpack` and `check_spruce`: which layers run sparse, which are pruned, and why."""

from spruce.policies.region import analyze
from spruce.policies.spruce_engine import PruneForLatencyOnSpruce, analyze_engine
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


def check_spruce(model, policy=None):
    """Report, per layer, whether spruce's engine (x86) runs it sparse and whether it is pruned.

    Unlike XNNPACK, the engine has no region rules: each layer is judged alone (see
    `spruce.policies.spruce_engine.ENGINE_SPARSE_CONVS`). The report gives, for each
    layer, the reason it runs dense, and for those it runs sparse the share of zeros
    their weights hold now (`report.ready_layers` are sparse enough already);
    `report.ok` is True when at least one layer runs sparse. `report.to_dict()` for
    JSON, `str(report)` for a table. Raises ValueError only for models that cannot be
    analysed (subclassed, unbuilt, not a Keras model).

    Args:
      model: a built Sequential or Functional Keras 3 model (nested models and
        pruning-wrapped layers are fine).
      policy: the `PruneForLatencyOnSpruce` whose `allow_pruning` to use; defaults
        to a new one.
    """
    return analyze_engine(model, policy if policy is not None else PruneForLatencyOnSpruce())
