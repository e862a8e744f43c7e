"""Walking a Keras model's layers, nested models opened up."""


def flatten_layers(model):
    """Yield every layer of `model` in order, with nested models replaced by their layers.

    A layer that holds `layers` but no `kernel` is a container (a Sequential or functional
    model used as a layer) and is opened up; every other layer, a pruning wrapper included,
    is yielded as it is.
    """
    if not hasattr(model, "layers"):
        raise ValueError(f"model must be a Keras model (an object with `layers`). Received: model={model!r}")
    for layer in model.layers:
        if hasattr(layer, "layers") and not hasattr(layer, "kernel"):
            yield from flatten_layers(layer)
        else:
            yield layer
