"""`make_xnnpack_compatible`: rewrite a model so XNNPACK's sparse path can run it.

By default only rewrites that leave the model's outputs unchanged are made, with
the weights carried over:

- `GlobalAveragePooling2D(keepdims=False)` -> `keepdims=True` + Flatten;
- Dense applied to a 4-D tensor -> the equivalent Conv2D(units, 1).

(A stride-2 'same' convolution on an odd-sized input has no such rewrite: there
ZeroPadding2D(k // 2) + 'valid' computes the same, and the TFLite converter merges
it back into 'same', which XNNPACK refuses. On even sizes TF pads 0 before and 1
after, which no symmetric padding reproduces.)

With `exact=False` it also makes asymmetric padding symmetric where that keeps
every output shape: stride-2 'same' on even sizes becomes ZeroPadding2D(k // 2) +
'valid', and an asymmetric ZeroPadding2D before a 'valid' convolution (Keras
applications' `correct_pad`, MobileNet's `((0, 1), (0, 1))`) becomes
ZeroPadding2D(k // 2). The window then starts one pixel earlier, so the outputs
change and the model needs fine-tuning; the result marks these rewrites.

Everything else the policy refuses is reported, with its fix, in the result.
"""

from dataclasses import asdict, dataclass, field

import keras

from spruce import xnnpack_rules as rules
from spruce.policies import nchw
from spruce.policies.graph import build_graph
from spruce.policies.region import analyze
from spruce.policies.report import NO_REWRITE_ALTERNATIVE
from spruce.policies.xnnpack import PruneForLatencyOnXNNPack

L = keras.layers


@dataclass
class Rewrite:
    layer: str
    change: str
    exact: bool = True  # False: same shapes, but the outputs change (fine-tune afterwards)


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

    @property
    def outputs_changed(self):
        """The rewrites that keep the shapes but change the outputs (`exact=False` only)."""
        return [r for r in self.fixed if not r.exact]

    def to_dict(self):
        return {
            "model": self.model.name,
            "ok": self.ok,
            "outputs_unchanged": not self.outputs_changed,
            "fixed": [asdict(r) for r in self.fixed],
            "outputs_changed_by": [r.layer for r in self.outputs_changed],
            "not_fixed": [r.to_dict() for r in self.not_fixed],
            "alternative": self._alternative(),
            "report": self.report.to_dict(),
        }

    def _alternative(self):
        """What to do about refusals no rewrite fixes, or None."""
        if any(not (r.auto_fix or r.auto_fix_inexact) for r in self.not_fixed):
            return NO_REWRITE_ALTERNATIVE
        return None

    def __str__(self):
        changed = self.outputs_changed
        if changed:
            head = (f"{len(self.fixed)} rewrite(s), {len(changed)} of them changing outputs "
                    "(same shapes)")
        else:
            head = f"{len(self.fixed)} rewrite(s), outputs unchanged"
        lines = [f"make_xnnpack_compatible('{self.model.name}'): {head}"]
        lines += [f"  fixed: {r.layer}: {r.change}" for r in self.fixed if r.exact]
        lines += [f"  fixed, changes outputs: {r.layer}: {r.change}" for r in changed]
        if changed:
            lines.append("The rewrites that change outputs move the sampling grid by one pixel: "
                         "fine-tune (or train) the rewritten model before you use it.")
        if self.ok:
            lines.append("The rewritten model is accepted by the XNNPACK policy.")
            return "\n".join(lines)
        lines.append("Still refused (needs an architectural change):")
        lines += [f"  - {r}" for r in self.not_fixed]
        inexact = [r.layer for r in self.not_fixed if r.auto_fix_inexact]
        if inexact:
            lines.append(f"make_xnnpack_compatible(model, exact=False) fixes {', '.join(inexact)}, "
                         "changing outputs (same shapes).")
        if self._alternative():
            lines.append(self._alternative())
        return "\n".join(lines)


def make_xnnpack_compatible(model, policy=None, *, exact=True):
    """Return a `CompatibilityResult`: a rewritten copy of `model` and a report.

    With `exact=True` the copy computes the same outputs with the same weights;
    `result.fixed` lists the rewrites, `result.not_fixed` the refusals that
    remain (each with the architectural change that would fix it), `result.report`
    the full `check_xnnpack` report of the copy. The input model is not modified.

    Args:
      model: a built, unpruned Sequential or Functional Keras 3 model.
      policy: the `PruneForLatencyOnXNNPack` to satisfy; default
        `PruneForLatencyOnXNNPack()`. With `allow_keepdims_false=True` the
        global pooling is left as it is.
      exact: False also pads symmetrically the convolutions the policy refuses
        for asymmetric padding, where that keeps the output shapes (stride-2
        'same' on even sizes, `correct_pad`-style ZeroPadding2D). Those rewrites
        change the outputs (`Rewrite.exact` is False): fine-tune the result.
    """
    if not isinstance(exact, bool):
        raise ValueError(f"exact must be True or False. Received: exact={exact!r}")
    if policy is None:
        policy = PruneForLatencyOnXNNPack()
    graph = build_graph(model)
    for call in graph.calls:
        if isinstance(call.layer, keras.layers.Wrapper):
            raise ValueError(
                f"Layer '{call.name}' is wrapped ({type(call.layer).__name__}): "
                "make_xnnpack_compatible rewrites plain models. Call it before "
                "prune_low_magnitude, or on strip_pruning(model).")
    refused = None if exact else analyze(model, policy).refusals
    plan = _plan(graph, policy, refused)
    rebuilder = _Rebuilder(plan)
    new_model = rebuilder.rebuild(model)
    rebuilder.copy_weights()
    fixed = [Rewrite(name, change, kind[-1]) for kind, change, name in plan.values()]
    return CompatibilityResult(model=new_model, fixed=fixed, report=analyze(new_model, policy))


def _plan(graph, policy, refused=None):
    """{id(layer): (kind, description, name)} for every layer to rewrite; its calls must agree.

    A kind is a tuple whose last item says whether the rewrite keeps the outputs.
    `refused`: the policy's refusals of the model, to pad symmetrically those that allow it.
    """
    kinds = {}  # id(call) -> kind
    for call in graph.calls:
        kind = _rewrite_kind(call, policy)
        if kind is not None:
            kinds[id(call)] = kind
    notes = {}  # id(call) -> description of an inexact rewrite
    calls = {c.name: c for c in graph.calls}
    for violation in refused or ():
        call = calls.get(violation.layer)
        if violation.auto_fix_inexact and call is not None and id(call) not in kinds:
            target, kind, note = _symmetric_padding(call, graph)
            if target is not None and id(target) not in kinds:
                kinds[id(target)], notes[id(target)] = kind, note
    by_layer = {}
    for call in graph.calls:
        by_layer.setdefault(id(call.layer), []).append(call)
    plan = {}
    for layer_calls in by_layer.values():
        found = {kinds.get(id(c)) for c in layer_calls}
        kind = found.pop() if len(found) == 1 else None
        if kind is not None:
            first = layer_calls[0]
            note = notes.get(id(first)) or _describe(kind, first.layer)
            plan[id(first.layer)] = (kind, note, first.name)
    return plan


def _rewrite_kind(call, policy):
    layer = call.layer
    if (isinstance(layer, L.GlobalAveragePooling2D) and not layer.keepdims
            and layer.data_format == "channels_last" and not policy.allow_keepdims_false):
        return ("keepdims", True)
    if type(layer) is L.Dense and len(call.input_shapes[0]) == 4:
        return ("dense_to_conv", True)
    return None


def _symmetric_padding(call, graph):
    """(call to rewrite, kind, description) that pads convolution `call` k // 2 on every side.

    The policy found that this keeps the output shape. A 'same' convolution gets a
    ZeroPadding2D in front and becomes 'valid'; a 'valid' one behind its own
    ZeroPadding2D gets that padding made symmetric. (None, None, None) otherwise.
    """
    layer = call.layer
    if type(layer) not in (L.Conv2D, L.DepthwiseConv2D):
        return None, None, None
    k = nchw.pair(layer.kernel_size)[0]
    pad = nchw.fused_padding(call, graph)
    hw = rules.spatial(call.input_shapes[0])
    if layer.padding == "same" and pad is None:
        s = nchw.pair(layer.strides)
        (t, b), (l, r) = (rules.same_padding(hw[i], k, s[i]) for i in (0, 1))
        note = (f"padding='same' (stride {s[0]}, {hw[0]}x{hw[1]} input: TF pads (top, bottom, "
                f"left, right)=({t}, {b}, {l}, {r})) -> ZeroPadding2D({k // 2}) + padding='valid'; "
                "same output shape, the sampling grid moves by one pixel")
        return call, ("pad_valid", False), note
    if layer.padding == "valid" and pad is not None and isinstance(pad.layer, L.ZeroPadding2D):
        note = (f"ZeroPadding2D({pad.layer.padding}) before {call.name} ({k}x{k}, "
                f"'valid') -> ZeroPadding2D({k // 2}); same output shape, the sampling grid "
                "moves by one pixel")
        return pad, ("sym_pad", k // 2, False), note
    return None, None, None


def _describe(kind, layer):
    if kind[0] == "keepdims":
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
            kind = self.plan[id(layer)][0] if id(layer) in self.plan else None
            stack = self._make(layer, kind)
        self.clones[id(layer)] = stack
        return stack

    def _make(self, layer, kind):
        config = _checked(layer, layer.get_config)
        self.names.add(config["name"])
        kind, *args = kind or (None,)
        if kind == "sym_pad":
            p = args[0]
            return [L.ZeroPadding2D.from_config(config | {"padding": ((p, p), (p, p))})]
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
