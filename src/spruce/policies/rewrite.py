"""`make_xnnpack_compatible`: rewrite a model so XNNPACK's sparse path can run it.

Only rewrites that leave the model's outputs unchanged are made, with the
weights carried over:

- stride-2 `padding="same"` DepthwiseConv2D / Conv2D on an odd-sized input ->
  ZeroPadding2D(k // 2) + `padding="valid"` (TF's 'same' pads (k-1)/2 on each
  side of an odd size, so the two agree exactly; on even sizes TF pads 0 before
  and 1 after, which no symmetric padding reproduces, so those are reported);
- `GlobalAveragePooling2D(keepdims=False)` -> `keepdims=True` + Flatten;
- Dense applied to a 4-D tensor -> the equivalent Conv2D(units, 1).

Everything else the policy refuses is reported, with its fix, in the result.
"""

from dataclasses import asdict, dataclass, field

import keras

from spruce import xnnpack_rules as rules
from spruce.policies import nchw
from spruce.policies.graph import build_graph
from spruce.policies.region import analyze
from spruce.policies.xnnpack import PruneForLatencyOnXNNPack

L = keras.layers


@dataclass
class Rewrite:
    layer: str
    change: str


@dataclass
class CompatibilityResult:
    """The rewritten model, what was rewritten, and what still keeps it off the sparse path."""

    model: object
    fixed: list = field(default_factory=list)  # [Rewrite]
    report: object = None  # XnnpackReport of the rewritten model

    @property
    def not_fixed(self):
        """The refusals left (`xnnpack_rules.Violation`), each with the change it needs."""
        return list(self.report.refusals)

    @property
    def ok(self):
        return self.report.ok

    def to_dict(self):
        return {
            "model": self.model.name,
            "ok": self.ok,
            "fixed": [asdict(r) for r in self.fixed],
            "not_fixed": [r.to_dict() for r in self.not_fixed],
            "report": self.report.to_dict(),
        }

    def __str__(self):
        lines = [f"make_xnnpack_compatible('{self.model.name}'): "
                 f"{len(self.fixed)} rewrite(s), outputs unchanged"]
        lines += [f"  fixed: {r.layer}: {r.change}" for r in self.fixed]
        if self.ok:
            lines.append("The rewritten model is accepted by the XNNPACK policy.")
        else:
            lines.append("Still refused (needs an architectural change):")
            lines += [f"  - {r}" for r in self.not_fixed]
        return "\n".join(lines)


def make_xnnpack_compatible(model, policy=None):
    """Return a `CompatibilityResult`: a rewritten copy of `model` and a report.

    The copy computes the same outputs with the same weights; `result.fixed`
    lists the rewrites, `result.not_fixed` the refusals that remain (each with
    the architectural change that would fix it), `result.report` the full
    `check_xnnpack` report of the copy. The input model is not modified.

    Args:
      model: a built, unpruned Sequential or Functional Keras 3 model.
      policy: the `PruneForLatencyOnXNNPack` to satisfy; default
        `PruneForLatencyOnXNNPack()`. With `allow_keepdims_false=True` the
        global pooling is left as it is.
    """
    if policy is None:
        policy = PruneForLatencyOnXNNPack()
    graph = build_graph(model)
    for call in graph.calls:
        if isinstance(call.layer, keras.layers.Wrapper):
            raise ValueError(
                f"Layer '{call.name}' is wrapped ({type(call.layer).__name__}): "
                "make_xnnpack_compatible rewrites plain models. Call it before "
                "prune_low_magnitude, or on strip_pruning(model).")
    plan = _plan(graph, policy)
    rebuilder = _Rebuilder(plan)
    new_model = rebuilder.rebuild(model)
    rebuilder.copy_weights()
    fixed = [Rewrite(name, change) for _, change, name in plan.values()]
    return CompatibilityResult(model=new_model, fixed=fixed, report=analyze(new_model, policy))


def _plan(graph, policy):
    """{id(layer): (kind, description, name)} for every layer to rewrite; its calls must agree."""
    by_layer = {}
    for call in graph.calls:
        by_layer.setdefault(id(call.layer), []).append(call)
    plan = {}
    for calls in by_layer.values():
        kinds = {_rewrite_kind(c, policy) for c in calls}
        kind = kinds.pop() if len(kinds) == 1 else None
        if kind is not None:
            plan[id(calls[0].layer)] = (kind, _describe(kind, calls[0].layer), calls[0].name)
    return plan


def _rewrite_kind(call, policy):
    layer = call.layer
    if type(layer) in (L.Conv2D, L.DepthwiseConv2D):
        k = nchw.pair(layer.kernel_size)
        if (layer.padding == "same" and nchw.pair(layer.strides) == (2, 2)
                and nchw.pair(layer.dilation_rate) == (1, 1) and k[0] == k[1] and k[0] % 2
                and layer.data_format == "channels_last"
                and rules.is_odd(rules.spatial(call.input_shapes[0]))):
            return "pad_valid"
    if (isinstance(layer, L.GlobalAveragePooling2D) and not layer.keepdims
            and layer.data_format == "channels_last" and not policy.allow_keepdims_false):
        return "keepdims"
    if type(layer) is L.Dense and len(call.input_shapes[0]) == 4:
        return "dense_to_conv"
    return None


def _describe(kind, layer):
    if kind == "pad_valid":
        k = nchw.pair(layer.kernel_size)[0]
        return (f"padding='same' (stride 2, odd input) -> ZeroPadding2D({k // 2}) + "
                "padding='valid'")
    if kind == "keepdims":
        return "GlobalAveragePooling2D(keepdims=False) -> keepdims=True + Flatten"
    return f"Dense({layer.units}) on a 4-D tensor -> Conv2D({layer.units}, 1)"


class _Rebuilder:
    def __init__(self, plan):
        self.plan = plan
        self.clones = {}  # id(original) -> callable replacement
        self.pairs = []  # (original layer, new layer, kind) for weight copying
        self.names = set()

    def rebuild(self, model):
        if isinstance(model, keras.Sequential):
            return self._rebuild_sequential(model)
        return self._rebuild_functional(model)

    def _unique(self, name):
        base, i = name, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def _input_like(self, tensor):
        op = tensor._keras_history.operation
        return keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype,
                           name=op.name if op is not None else None)

    def _rebuild_sequential(self, model):
        layers = [self._input_like(model.inputs[0])]
        for layer in model.layers:
            layers.extend(self._replacement(layer))
        return keras.Sequential(layers, name=model.name)

    def _rebuild_functional(self, model):
        inputs = [self._input_like(t) for t in model.inputs]
        tensors = {id(t): new for t, new in zip(model.inputs, inputs)}
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                op = node.operation
                if op is None or node.is_input:
                    continue
                args, kwargs = node.arguments.fill_in(tensors)
                if isinstance(op, keras.layers.Layer):
                    stack = self._replacement(op)
                    out = stack[0](*args, **kwargs)
                    for layer in stack[1:]:
                        out = layer(out)
                else:  # a bare keras.ops operation: stateless, reuse it
                    out = op(*args, **kwargs)
                for ref, new in zip(node.outputs, keras.tree.flatten(out)):
                    tensors[id(ref)] = new
        outputs = keras.tree.pack_sequence_as(
            model._outputs_struct, [tensors[id(t)] for t in model.outputs])
        inputs = keras.tree.pack_sequence_as(model._inputs_struct, inputs)
        return keras.Model(inputs, outputs, name=model.name)

    def _replacement(self, layer):
        """The list of new layers that stand in for `layer` (cached: shared layers stay shared)."""
        if id(layer) in self.clones:
            return self.clones[id(layer)]
        if isinstance(layer, keras.Model):
            stack = [self.rebuild(layer)]
        else:
            kind = self.plan.get(id(layer), (None,))[0]
            stack = self._make(layer, kind)
        self.clones[id(layer)] = stack
        return stack

    def _make(self, layer, kind):
        config = _checked(layer, layer.get_config)
        self.names.add(config["name"])
        if kind == "pad_valid":
            k = nchw.pair(layer.kernel_size)[0]
            pad = L.ZeroPadding2D(k // 2, name=self._unique(f"{layer.name}_pad"))
            new = type(layer).from_config(config | {"padding": "valid"})
            self.pairs.append((layer, new, None))
            return [pad, new]
        if kind == "keepdims":
            new = type(layer).from_config(config | {"keepdims": True})
            return [new, L.Flatten(name=self._unique(f"{layer.name}_flatten"))]
        if kind == "dense_to_conv":
            keep = ("kernel_initializer", "bias_initializer", "kernel_regularizer",
                    "bias_regularizer", "activity_regularizer", "kernel_constraint",
                    "bias_constraint", "activation", "use_bias", "name", "trainable", "dtype")
            conv = {k: config[k] for k in keep if k in config}
            new = L.Conv2D(layer.units, 1, **conv)
            self.pairs.append((layer, new, kind))
            return [new]
        new = _checked(layer, lambda: type(layer).from_config(config))
        self.pairs.append((layer, new, None))
        return [new]

    def copy_weights(self):
        for old, new, kind in self.pairs:
            weights = old.get_weights()
            if not weights:
                continue
            if kind == "dense_to_conv":
                weights[0] = weights[0].reshape((1, 1) + weights[0].shape)
            new.set_weights(weights)


def _checked(layer, copy):
    """Run `copy()` (get_config / from_config of `layer`); name the layer if it fails."""
    try:
        return copy()
    except Exception as e:
        raise ValueError(
            "make_xnnpack_compatible copies each layer through get_config() / "
            f"from_config(), which failed for layer '{layer.name}' "
            f"({type(layer).__name__}): {e}\nGive the layer a complete get_config()."
        ) from e
