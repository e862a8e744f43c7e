"""The model of a run: the guide's net, a `spruce.zoo` or `keras.applications` architecture by
name, or a user's .keras file; trained weights or not; prepared for the run's target.

For `target="xnnpack"` the model is rewritten by `make_xnnpack_compatible` until XNNPACK's
sparse path accepts it: exactly (outputs unchanged) where it can, and, when the model is
trained or fine-tuned afterwards anyway, also where the rewrite moves a padding and so
changes the outputs. For `target="x86"` it is used as it is: spruce's engine has no layout
rules.
"""

import ast
import dataclasses
import os
import re

TARGETS = ("xnnpack", "x86")
PRETRAINED = ("auto", "yes", "no")

# Set by the run for every keras.applications model: the data decide the shapes, and
# trained weights come from --weights (nothing is downloaded).
_SET_BY_RUN = ("input_shape", "classes", "weights", "include_top", "input_tensor")
_SET_BY_RUN_ZOO = ("input_shape", "num_classes")
_SPEC = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::(.*))?", re.DOTALL)


class ModelError(ValueError):
    """The user's model cannot be used; the message says why and what to change."""


@dataclasses.dataclass
class ModelChoice:
    model: object  # what the run trains, or (trained already) what pruning starts from
    source: str  # "guide", the .keras path, or the keras.applications call
    compatibility: dict  # what make_xnnpack_compatible changed / could not change
    pretrained: str = ""  # why the model counts as trained (dense training skipped); "": it does not
    given: object = None  # trained and rewritten with changed outputs: the model as it arrived


def parse_model_spec(text):
    """`--model` text -> (model name, {argument: value}), or None for a file (or "").

    'MobileNetV2:alpha=0.35,include_preprocessing=False' -> ('MobileNetV2', {'alpha': 0.35, ...}).
    Values are Python literals (True, 0.35, None, 'text', [2, 2]); a bare word stays a string.
    Raises ValueError for malformed arguments.
    """
    text = (text or "").strip()
    if not text or text.endswith(".keras") or os.sep in text:
        return None
    match = _SPEC.fullmatch(text)
    if match is None:
        return None  # a file name without the .keras suffix: load_user_model says what it expects
    name, args = match[1], match[2]
    kwargs = {}
    for part in filter(None, (p.strip() for p in _split_arguments(args or ""))):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not key.isidentifier():
            raise ValueError(f"model arguments must be name=value pairs separated by commas, as in "
                             f"MobileNetV2:alpha=0.35,minimalistic=True; {part!r} is not one.")
        if key in kwargs:
            raise ValueError(f"model argument {key!r} is given twice.")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return name, kwargs


def _split_arguments(text):
    """`text` split at its commas outside brackets and quotes, so that blocks=[3,4,6] stays whole."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def model_label(text):
    """A file-name-safe label of `--model` for the run folder: the file's stem, or the name and arguments."""
    if parse_model_spec(text) is None:
        return os.path.splitext(os.path.basename(text))[0]
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text.strip()).strip("-")


def application_names():
    """The model builders of `keras.applications`, by name."""
    import keras

    return sorted(n for n in dir(keras.applications)
                  if n[:1].isupper() and callable(getattr(keras.applications, n)))


def zoo_names():
    """The model builders of `spruce.zoo` that `--model` reaches by name."""
    from spruce.zoo import NAMED

    return sorted(NAMED)


def build_model(config, data, exact=True):
    """The model of `config` for `data`, with its weights, prepared for `config.target`.

    `exact`: for XNNPACK, only make rewrites that keep the outputs; False allows those that
    change them too (the run trains or fine-tunes the model afterwards).
    """
    from spruce.zoo import guide_model

    spec = parse_model_spec(config.model)
    if not config.model:  # built for XNNPACK's sparse path, and run by spruce's engine as it is
        model = guide_model(input_shape=data.input_shape, num_classes=data.num_classes, keepdims=True)
        if config.weights:
            _load_weights(model, config.weights)
        return ModelChoice(model, "guide", {}, _pretrained(config, None))
    if spec is not None:
        model, source, steps = named_model(*spec, data), _call_text(*spec), None
    else:
        model, steps = _load_keras_file(config.model)
        _check_shapes(model, config.model, data)
        source = config.model
    if config.weights:
        _load_weights(model, config.weights)
    pretrained = _pretrained(config, steps)
    given = model
    model, compatibility = prepare_for_target(model, source, config.target, exact=exact)
    changed = bool(compatibility.get("outputs_changed_by"))
    return ModelChoice(model, source, compatibility, pretrained,
                       given=given if pretrained and changed else None)


def resolve_image_size(config, num_classes=10):
    """The side of the run's images: `config.image_size`, or when it is 0 the smallest that fits.

    The data sets come at 32x32, which the guide's network and spruce's engine take as they
    are. A .keras file takes what its input says. For XNNPACK, a keras.applications network
    that halves its input five times has 1x1 maps at 32x32, where the converter leaves its
    sparse region no exit: the size grows by 32 until `make_xnnpack_compatible` (with
    `exact=False`) accepts the model, and stays 32 when something else refuses it (the
    dense stage then says what).
    """
    from spruce.workflow.data import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

    if config.image_size:
        return config.image_size
    spec = parse_model_spec(config.model)
    if config.model and spec is None:  # a .keras file: the size of its input, when it is one
        if not os.path.exists(config.model) or not str(config.model).endswith(".keras"):
            return MIN_IMAGE_SIZE  # the dense stage says what is wrong with the file
        model, _ = _load_keras_file(config.model)
        shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else ()
        if len(shape) == 3 and shape[0] == shape[1] and MIN_IMAGE_SIZE <= (shape[0] or 0) <= MAX_IMAGE_SIZE:
            return int(shape[0])
        return MIN_IMAGE_SIZE
    if spec is None or config.target != "xnnpack":
        return MIN_IMAGE_SIZE
    import spruce
    from spruce.xnnpack_rules import LARGER_INPUT_FIX

    name, kwargs = spec
    for size in range(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE + 1, 32):
        shape = _Shape((size, size, 3), num_classes)
        try:
            model = named_model(name, kwargs, shape)
            result = spruce.make_xnnpack_compatible(model, exact=False)
        except (ModelError, ValueError):
            return MIN_IMAGE_SIZE
        if result.ok:
            return size
        if not all(LARGER_INPUT_FIX in v.fix for v in result.not_fixed):
            return MIN_IMAGE_SIZE
    return MIN_IMAGE_SIZE


@dataclasses.dataclass
class _Shape:
    """What `named_model` reads of a data set, for building a model before the data are loaded."""

    input_shape: tuple
    num_classes: int
    name: str = "the data"


def named_model(name, kwargs, data):
    """The model `name` (from `spruce.zoo`, else `keras.applications`) built for `data`, untrained.

    Both families share this resolver, so an unknown name is answered with one list of both.
    """
    import inspect

    import keras

    from spruce.zoo import NAMED

    zoo, apps = zoo_names(), application_names()
    label = _call_text(name, kwargs)
    if name in NAMED:
        builder, family, set_by_run = NAMED[name], "spruce.zoo", _SET_BY_RUN_ZOO
        shape_args = {"input_shape": tuple(data.input_shape), "num_classes": data.num_classes}
        fixed_why = "spruce run builds the model for the data's images and classes"
    elif name in apps:
        builder, family, set_by_run = getattr(keras.applications, name), "keras.applications", _SET_BY_RUN
        shape_args = {"input_shape": tuple(data.input_shape), "classes": data.num_classes, "weights": None}
        fixed_why = ("spruce run builds the model for the data's images and classes with "
                     "include_top=True and weights=None")
    else:
        import difflib

        close = difflib.get_close_matches(name, zoo + apps, n=3)
        raise ModelError(
            f"--model {name!r} is neither a .keras file nor a spruce.zoo or keras.applications model"
            + (f" (did you mean {' or '.join(close)}?)" if close else "")
            + f". Pass a model saved with model.save('x.keras'), or one of spruce.zoo's: "
            f"{', '.join(zoo)}; or of keras.applications': {', '.join(apps)}; with arguments as in "
            "MobileNetV2:alpha=0.35 or ResNetSmall:width=32.")
    params = [p for p in inspect.signature(builder).parameters if p not in set_by_run]
    fixed = [k for k in kwargs if k in set_by_run]
    if fixed:
        raise ModelError(
            f"--model {label}: {', '.join(fixed)} cannot be set: {fixed_why}. Pass trained "
            f"weights with --weights FILE. {name}'s other arguments: {', '.join(params)}.")
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise ModelError(f"--model {label}: {family}.{_builder_name(name)} has no argument "
                         f"{', '.join(unknown)}. Its arguments: {', '.join(params)}.")
    try:
        return builder(**shape_args, **kwargs)
    except (ValueError, TypeError) as e:
        raise ModelError(f"--model {label}: {family}.{_builder_name(name)} refused the arguments for "
                         f"{data.name}'s {'x'.join(map(str, data.input_shape))} images and "
                         f"{data.num_classes} classes: {e}") from e


def _builder_name(name):
    """The function `--model name` calls, as the user would import it."""
    from spruce.zoo import NAMED

    return NAMED[name].__name__ if name in NAMED else name


def _call_text(name, kwargs):
    from spruce.zoo import NAMED

    family = "spruce.zoo" if name in NAMED else "keras.applications"
    return f"{family}.{_builder_name(name)}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


def _load_keras_file(path):
    """(model, optimizer steps saved with it, or None when it holds no optimizer)."""
    import warnings

    import keras

    if not os.path.exists(path):
        raise ModelError(f"--model {path} does not exist. Pass a model saved with model.save('x.keras'), "
                         "or drop --model to use the guide's network.")
    if not str(path).endswith(".keras"):
        raise ModelError(f"--model expects a Keras 3 `.keras` file. Received: {path}. "
                         "Save your model with model.save('model.keras').")
    with warnings.catch_warnings():  # an untrained optimizer's variables are skipped, with a warning
        warnings.simplefilter("ignore")
        try:
            model = keras.models.load_model(path)
        except Exception:  # the compiled loss or optimizer may not load; the model alone may
            model = None
        if model is None:
            try:
                model = keras.models.load_model(path, compile=False)
            except Exception as e:
                raise ModelError(f"--model {path} could not be loaded by keras.models.load_model ({e}).") from e
    optimizer = getattr(model, "optimizer", None)
    steps = None
    if optimizer is not None and getattr(optimizer, "iterations", None) is not None:
        steps = int(keras.ops.convert_to_numpy(optimizer.iterations))
    return model, steps


def _check_shapes(model, path, data):
    in_shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if in_shape != tuple(data.input_shape):
        raise ModelError(f"--model {path} takes inputs of shape {in_shape}, but the {data.name} images "
                         f"are {tuple(data.input_shape)}. Rebuild the model with "
                         f"keras.Input(shape={tuple(data.input_shape)}), or resize the images to a "
                         "square N x N x 3 input of 32 to 128 with --image-size N (the default takes "
                         "the model's own size).")
    out_dim = model.outputs[0].shape[-1]
    if out_dim != data.num_classes:
        raise ModelError(f"--model {path} has {out_dim} outputs, but {data.name} has "
                         f"{data.num_classes} classes. End the model with Dense({data.num_classes}).")


def _load_weights(model, path):
    if not os.path.isfile(path):
        raise ModelError(f"--weights {path} does not exist. Pass the file model.save_weights() wrote "
                         "(.weights.h5) for this architecture.")
    try:
        model.load_weights(path)
    except Exception as e:
        raise ModelError(f"--weights {path} does not fit the model {model.name!r} ({e}). The weights must "
                         "come from the same architecture built for this data (same input shape and "
                         "classes), saved with model.save_weights('x.weights.h5').") from e


def _pretrained(config, steps):
    """Why the model counts as trained, or "" (see docs/workflow.md, "Models that arrive trained")."""
    if config.pretrained == "no":
        return ""
    if config.pretrained == "yes":
        return "--pretrained"
    if config.weights:
        return f"trained weights given (--weights {config.weights})"
    if steps:
        return f"{config.model} holds the state of {steps:,} training steps"
    return ""


def load_user_model(path, data, target="xnnpack", exact=True):
    """The .keras model at `path`, checked against `data` and prepared for `target` (a ModelChoice)."""
    model, _ = _load_keras_file(path)
    _check_shapes(model, path, data)
    model, compatibility = prepare_for_target(model, path, target, exact=exact)
    return ModelChoice(model, path, compatibility)


def prepare_for_target(model, label, target, exact=True):
    """(the model to prune for `target`, what was rewritten) -- ModelError when XNNPACK cannot run it."""
    import spruce

    if target == "x86":
        try:
            spruce.PruneForLatencyOnSpruce().ensure_model_supports_pruning(model)
        except ValueError as e:
            raise ModelError(f"--model {label} has nothing to prune for spruce's engine (--target x86).\n{e}\n"
                             "Choose a model with 1x1 convolutions.") from e
        report = spruce.check_spruce(model)
        return model, {"summary": f"used as it is (spruce's engine has no layout rules): it runs "
                                  f"{len(report.sparse_layers)} layer(s) sparse, {report.sparse_mac_share:.1%} "
                                  "of the MACs"}

    if spruce.check_xnnpack(model).ok:
        return model, {"fixed": [], "not_fixed": [], "summary": "already compatible"}
    try:
        result = spruce.make_xnnpack_compatible(model)
        if not result.ok and not exact and _fixable_inexactly(result):
            result = spruce.make_xnnpack_compatible(model, exact=False)
    except ValueError as e:
        raise ModelError(f"--model {label}: {e}") from e
    if not result.ok:
        from spruce.xnnpack_rules import LARGER_INPUT_FIX

        how = "make_xnnpack_compatible" + ("" if exact else "(exact=False)")
        broken = "\n".join(f"  - {v}" for v in result.not_fixed)
        if all(LARGER_INPUT_FIX in v.fix for v in result.not_fixed):
            advice = ("Its last feature maps are 1x1 at this image size: pass a larger --image-size "
                      "(image_size in [data]; 0, the default, picks the smallest that works, 64 for the "
                      "keras.applications MobileNets), or prune it for spruce's engine instead "
                      "(--target x86).")
        else:
            advice = ("Change the model as listed, prune it for spruce's engine instead (--target x86: it "
                      "runs the 1x1 convolutions sparse wherever they sit, squeeze-and-excite blocks "
                      "included), or choose another architecture (drop --model for the guide's network, "
                      "built for XNNPACK at this size).")
        raise ModelError(
            f"--model {label} cannot run on XNNPACK's sparse path, and spruce can rewrite only part "
            f"of it automatically: after {len(result.fixed)} rewrite(s) by {how}, "
            f"{len(result.not_fixed)} rule(s) are still broken:\n{broken}\n{advice}")
    info = result.to_dict()
    info.pop("report", None)
    changed = [r["layer"] for r in info["fixed"] if not r.get("exact", True)]
    info["outputs_changed_by"] = changed
    if changed:
        info["summary"] = (f"{len(result.fixed)} rewrite(s) by make_xnnpack_compatible(exact=False), "
                           f"{len(changed)} of them changing outputs (the model is trained afterwards)")
    else:
        info["summary"] = f"{len(result.fixed)} rewrite(s) by make_xnnpack_compatible, outputs unchanged"
    return result.model, info


def _fixable_inexactly(result):
    """True when some refusal left goes away with make_xnnpack_compatible(exact=False)."""
    return any(v.auto_fix_inexact for v in result.not_fixed)
