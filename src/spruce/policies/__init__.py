"""Pruning policies: which layers to prune, and whether the runtime will use the sparsity.

- `PruningPolicy`: the base class `prune_low_magnitude(..., pruning_policy=...)` calls.
- `PruneForLatencyOnXNNPack`: prune exactly what XNNPACK's sparse path accelerates.
- `check_xnnpack(model)`: a per-layer report of what runs sparse, and why not.
- `make_xnnpack_compatible(model, exact=True)`: rewrite what can be rewritten, outputs
  unchanged (with `exact=False`, also asymmetric padding, outputs changed).
- `PruneForLatencyOnSpruce`: prune exactly what spruce's own engine (x86) runs sparse.
- `check_spruce(model)`: the engine's per-layer report.
"""

from spruce.policies.base import PruningPolicy
from spruce.policies.check import check_spruce, check_xnnpack
from spruce.policies.rewrite import make_xnnpack_compatible
from spruce.policies.spruce_engine import PruneForLatencyOnSpruce
from spruce.policies.xnnpack import PruneForLatencyOnXNNPack

__all__ = ["PruningPolicy", "PruneForLatencyOnSpruce", "PruneForLatencyOnXNNPack",
           "check_spruce", "check_xnnpack", "make_xnnpack_compatible"]
