"""A Keras 3 model as a flat dataflow graph of layer calls.

Policies reason about what feeds what (a residual Add has two producers, a
tensor can have several consumers), so a list of layers is not enough. This
module walks a Sequential or Functional model through its nodes, descends into
nested models, and returns every leaf layer call with the tensors it reads and
writes. Tensors are identified by integers; a nested model's inputs and outputs
are aliased to the outer tensors so the graph is one piece.
"""

from dataclasses import dataclass, field

import keras


@dataclass
class Call:
    """One call of a leaf layer (or a bare Keras operation) in the model."""

    layer: object  # the layer as the user built it (a pruning wrapper stays a wrapper)
    name: str  # path-qualified name, e.g. "block_1/conv2d"
    inputs: list  # tensor ids read
    outputs: list  # tensor ids written
    input_shapes: list  # shapes of `inputs`, batch dimension included
    output_shapes: list

    @property
    def core(self):
        """The layer that does the computation: a `keras.layers.Wrapper` is unwrapped."""
        layer = self.layer
        while isinstance(layer, keras.layers.Wrapper):
            layer = layer.layer
        return layer


@dataclass
class Graph:
    calls: list = field(default_factory=list)  # topological order
    inputs: list = field(default_factory=list)  # model input tensor ids
    outputs: list = field(default_factory=list)  # model output tensor ids
    producer: dict = field(default_factory=dict)  # tensor id -> Call
    consumers: dict = field(default_factory=dict)  # tensor id -> [Call]
    shapes: dict = field(default_factory=dict)  # tensor id -> shape

    def producers_of(self, call):
        return [self.producer[t] for t in call.inputs if t in self.producer]

    def consumers_of(self, call):
        seen, out = set(), []
        for t in call.outputs:
            for c in self.consumers.get(t, []):
                if id(c) not in seen:
                    seen.add(id(c))
                    out.append(c)
        return out


def ensure_graph_model(model):
    """Raise ValueError unless `model` is a built Sequential or Functional Keras model."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Expected a Keras 3 `keras.Model` (Sequential or Functional). "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    if not _is_graph_model(model):
        if isinstance(model, keras.Sequential):
            raise ValueError(
                f"Sequential model '{model.name}' is not built, so its layers have no "
                "input shapes to check. Build it first: start it with "
                "keras.Input(shape=...) or call model.build(input_shape)."
            )
        raise ValueError(
            f"Model '{model.name}' is a subclassed model ({type(model).__name__}): its "
            "layer graph is hidden inside `call()`, so it cannot be checked. Rebuild it "
            "with the Functional API (keras.Model(inputs, outputs)) or as a Sequential."
        )


def _is_graph_model(model):
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None) is not None
    return hasattr(model, "_nodes_by_depth") and hasattr(model, "inputs") and bool(
        getattr(model, "_operations", None)
    )


def _functional_of(model):
    return model._functional if isinstance(model, keras.Sequential) else model


def build_graph(model):
    """Flatten `model` (nested models included) into a `Graph` of leaf calls."""
    ensure_graph_model(model)
    graph = Graph()
    alias = {}

    def resolve(tid):
        while tid in alias:
            tid = alias[tid]
        return tid

    fn = _functional_of(model)
    graph.inputs = [id(t) for t in fn.inputs]
    for t in fn.inputs:
        graph.shapes[id(t)] = tuple(t.shape)
    _walk(fn, prefix="", graph=graph, alias=alias, resolve=resolve)
    graph.outputs = [resolve(id(t)) for t in fn.outputs]
    for call in graph.calls:
        for t in call.outputs:
            graph.producer[t] = call
        for t in call.inputs:
            graph.consumers.setdefault(t, [])
            if call not in graph.consumers[t]:
                graph.consumers[t].append(call)
    return graph


def _walk(fn, prefix, graph, alias, resolve):
    for depth in sorted(fn._nodes_by_depth, reverse=True):
        for node in fn._nodes_by_depth[depth]:
            op = node.operation
            if op is None or node.is_input:
                continue
            in_ids = [resolve(id(t)) for t in node.input_tensors]
            out_ids = [id(t) for t in node.outputs]
            if isinstance(op, keras.Model) and _is_graph_model(op):
                inner = _functional_of(op)
                for inner_in, outer in zip(inner.inputs, in_ids):
                    alias[id(inner_in)] = outer
                _walk(inner, f"{prefix}{op.name}/", graph, alias, resolve)
                for outer_out, inner_out in zip(out_ids, inner.outputs):
                    alias[outer_out] = resolve(id(inner_out))
                continue
            if isinstance(op, keras.Model):
                ensure_graph_model(op)  # raises with the reason
            for t in node.outputs:
                graph.shapes[id(t)] = tuple(t.shape)
            graph.calls.append(
                Call(
                    layer=op,
                    name=f"{prefix}{op.name}",
                    inputs=in_ids,
                    outputs=out_ids,
                    input_shapes=[graph.shapes.get(i, tuple(t.shape))
                                  for i, t in zip(in_ids, node.input_tensors)],
                    output_shapes=[tuple(t.shape) for t in node.outputs],
                )
            )
