"""Pruning policies: which layers to prune, and whether the runtime will use the sparsity.

- `PruningPolicy`: the base class `prune_low_magnitude(..., pruning_policy=...)` calls.
- `PruneForLatencyOnXNNPack`: prune exactly what XNNPACK's sparse path accelerates.
- `check_xnnpack(model)`: a per-layer report of what runs sparse, and why not.
- `make_xnnpack_compatible(model)`: rewrite what can be rewritten, outputs unchanged.
"""

from spruce.policies.base import PruningPolicy
from spruce.policies.check import check_xnnpack
from spruce.policies.rewrite import make_xnnpack_compatible
from spruce.policies.xnnpack import PruneForLatencyOnXNNPack

__all__ = ["PruningPolicy", "PruneForLatencyOnXNNPack", "check_xnnpack",
           "make_xnnpack_compatible"]
