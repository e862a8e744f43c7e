"""The model of a run: the guide's net, or a user's .keras file made XNNPACK-compatible."""

import dataclasses
import os


class ModelError(ValueError):
    """The user's model cannot be used; the message says why and what to change."""


@dataclasses.dataclass
class ModelChoice:
    model: object
    source: str  # "guide" or the path
    compatibility: dict  # what make_xnnpack_compatible changed / could not change


def build_model(config, data):
    """A fresh model for `data`: the guide's net, or `config.model` made compatible."""
    from spruce.zoo import guide_model

    if not config.model:
        model = guide_model(input_shape=data.input_shape, num_classes=data.num_classes, keepdims=True)
        return ModelChoice(model, "guide", {})
    return load_user_model(config.model, data)


def load_user_model(path, data):
    import keras

    import spruce

    if not os.path.exists(path):
        raise ModelError(f"--model {path} does not exist. Pass a model saved with model.save('x.keras'), "
                         "or drop --model to use the guide's network.")
    if not str(path).endswith(".keras"):
        raise ModelError(f"--model expects a Keras 3 `.keras` file. Received: {path}. "
                         "Save your model with model.save('model.keras').")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:
        raise ModelError(f"--model {path} could not be loaded by keras.models.load_model ({e}).") from e
    in_shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if in_shape != tuple(data.input_shape):
        raise ModelError(f"--model {path} takes inputs of shape {in_shape}, but the {data.name} images "
                         f"are {tuple(data.input_shape)}. Rebuild the model with "
                         f"keras.Input(shape={tuple(data.input_shape)}).")
    out_dim = model.outputs[0].shape[-1]
    if out_dim != data.num_classes:
        raise ModelError(f"--model {path} has {out_dim} outputs, but {data.name} has "
                         f"{data.num_classes} classes. End the model with Dense({data.num_classes}).")
    report = spruce.check_xnnpack(model)
    if report.ok:
        return ModelChoice(model, path, {"fixed": [], "not_fixed": [], "summary": "already compatible"})
    try:
        result = spruce.make_xnnpack_compatible(model)
    except ValueError as e:
        raise ModelError(f"--model {path}: {e}") from e
    if not result.ok:
        raise ModelError(
            f"--model {path} cannot run on XNNPACK's sparse path, and spruce can rewrite only part "
            f"of it automatically.\n{result}\nChange the model as listed, or drop --model to use "
            "the guide's network.")
    info = result.to_dict()
    info.pop("report", None)
    info["summary"] = f"{len(result.fixed)} rewrite(s) by make_xnnpack_compatible, outputs unchanged"
    return ModelChoice(result.model, path, info)
