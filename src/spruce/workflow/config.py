"""The settings of `spruce run`: defaults, a TOML file, command-line overrides.

One flat :class:`RunConfig`; the TOML file groups the same fields in sections
(``[data]``, ``[model]``, ``[dense]``, ``[prune]``, ``[export]``, ``[quantize]``, ``[bench]``,
``[run]``),
see ``configs/default.toml``. Precedence: defaults < TOML file < command line.
Each stage of the workflow hashes only the fields it depends on (plus the hash of the
stage before it), so changing the pruning schedule re-runs pruning but reuses the dense model.
"""

import dataclasses
import hashlib
import json
import re
import tomllib

from spruce.workflow.data import DATASETS, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from spruce.workflow.model import PRETRAINED, TARGETS, parse_model_spec


# Bumped when the training recipe's code changes what a stage produces, so that runs
# made with an older recipe are not reused as if they were current.
RECIPE_VERSION = 2


@dataclasses.dataclass
class RunConfig:
    # [data]
    dataset: str = "fashion_mnist"
    data_dir: str = ""
    val_fraction: float = 0.1
    image_size: int = 0  # side of the square images; 0: the smallest at which the target runs the model
    # [model]
    model: str = ""  # a .keras file, or a keras.applications name with arguments; empty: the guide's net
    weights: str = ""  # trained weights for the model (model.load_weights); implies pretrained
    pretrained: str = "auto"  # auto | yes | no: the model arrives trained (no dense training)
    # [dense]
    dense_epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 0.005
    lr_schedule: str = "cosine"  # cosine | exponential | constant
    # [prune]
    prune_epochs: int = 14
    prune_learning_rate: float = 0.005
    initial_sparsity: float = 0.25
    final_sparsity: float = 0.75
    pruning_frequency: int = 100
    pruning_end_fraction: float = 0.4  # sparsity reaches its final value at this share of the fine-tuning
    sparsity_allocation: str = "uniform"  # uniform | erk (same total, small layers denser)
    block_size: tuple = (1, 1)  # (in, out) channels of a 1x1 conv pruned together; (1, 1): unstructured
    target: str = "xnnpack"  # xnnpack (phones: XNNPACK's sparse path) | x86 (spruce's engine)
    pointwise_only: bool = False  # x86: prune the 1x1 convolutions only, not every convolution
    distill: bool = False  # fine-tune with knowledge distillation from the dense model
    distill_alpha: float = 0.5  # weight of the dense model's term in the distillation loss
    distill_temperature: float = 4.0  # softmax temperature of that term
    # [export]
    export_batch_size: int = 1
    quantize: str = ""  # "" | int8: also export both models as full-integer int8 (workflow/quantize.py)
    # [quantize]: with quantize = "int8", the pruned model's quantization-aware fine-tuning (workflow/pqat.py)
    qat_epochs: int = 1  # 0: post-training quantization only
    qat_learning_rate: float = 0.0001
    # [bench]
    bench_runs: int = 1000
    bench_warmup: int = 20
    threads: int = 1
    arm64_check: bool = True
    # [run]
    seed: int = 0
    quick: bool = False
    quick_train: int = 6000
    quick_test: int = 1000
    out_dir: str = "spruce-runs"
    name: str = ""
    distribute: bool = False  # train on all local devices (keras.distribution / tf.distribute)
    cpu_devices: int = 1  # split the host CPU into this many devices (1: no split)

    def __post_init__(self):
        if isinstance(self.block_size, list):  # as TOML and JSON give it
            self.block_size = tuple(self.block_size)

    def validate(self):
        """Raise ValueError naming the bad field, the value received and what is expected."""
        def bad(field, expected):
            raise ValueError(f"{field} must be {expected}. Received: {field}={getattr(self, field)!r}")

        if self.dataset.replace("-", "_").lower() not in DATASETS:
            bad("dataset", f"one of {', '.join(DATASETS)}")
        if not 0.0 < self.val_fraction < 0.5:
            bad("val_fraction", "in (0, 0.5)")
        if self.image_size != 0 and not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            bad("image_size", f"0 (the smallest size at which the target runs the model sparse) or a "
                              f"side in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] (the data sets come at 32x32 "
                              "and are resized bilinearly)")
        for f in ("dense_epochs", "prune_epochs", "batch_size", "pruning_frequency",
                  "export_batch_size", "bench_runs", "threads", "quick_train", "quick_test"):
            if getattr(self, f) < 1:
                bad(f, "a positive integer")
        if self.bench_warmup < 0:
            bad("bench_warmup", "0 or more")
        for f in ("learning_rate", "prune_learning_rate"):
            if not 0.0 < getattr(self, f) < 1.0:
                bad(f, "in (0, 1)")
        if self.lr_schedule not in ("cosine", "exponential", "constant"):
            bad("lr_schedule", "one of cosine, exponential, constant")
        if not 0.0 <= self.initial_sparsity < 1.0:
            bad("initial_sparsity", "in [0, 1)")
        if not self.initial_sparsity <= self.final_sparsity < 1.0:
            bad("final_sparsity", f"in [initial_sparsity={self.initial_sparsity}, 1)")
        if not 0.0 < self.pruning_end_fraction <= 1.0:
            bad("pruning_end_fraction", "in (0, 1]")
        if self.sparsity_allocation not in ("uniform", "erk"):
            bad("sparsity_allocation", "one of uniform, erk")
        if not _is_block_size(self.block_size):
            shown = list(self.block_size) if isinstance(self.block_size, tuple) else self.block_size
            raise ValueError(
                "block_size must be two positive integers [height, width]: the input x output "
                f"channels of a 1x1 convolution pruned together. Received: block_size={shown!r}. "
                "Use e.g. block_size = [1, 4] in [prune] or --block-size 1x4 (4 output channels "
                "per block); [1, 1] prunes single weights.")
        if self.target not in TARGETS:
            bad("target", f"one of {', '.join(TARGETS)} (xnnpack: XNNPACK's sparse path on ARM phones; "
                          "x86: spruce's engine)")
        if self.pretrained not in PRETRAINED:
            bad("pretrained", "one of auto (trained when --weights is given or the .keras file holds "
                              "a training state), yes, no")
        if self.pretrained == "yes" and not self.weights and not self.model.endswith(".keras"):
            raise ValueError("pretrained='yes' needs a trained model: a .keras file as model, or "
                             f"weights. Received: model={self.model!r}, weights=''. Pass --weights "
                             "FILE (model.load_weights), or drop --pretrained to train the model.")
        try:
            parse_model_spec(self.model)
        except ValueError as e:
            raise ValueError(f"{e} Received: model={self.model!r}") from None
        if not 0.0 <= self.distill_alpha <= 1.0:
            bad("distill_alpha", "in [0, 1] (0: labels only, 1: the dense model's outputs only)")
        if not self.distill_temperature > 0.0:
            bad("distill_temperature", "a positive number")
        if self.quantize not in ("", "int8"):
            bad("quantize", '"" (float models only) or int8 (adds post-training int8 models)')
        if self.qat_epochs < 0:
            bad("qat_epochs", "0 (post-training quantization only) or a positive number of epochs of "
                              "quantization-aware fine-tuning")
        if not 0.0 < self.qat_learning_rate < 1.0:
            bad("qat_learning_rate", "in (0, 1); a small rate, e.g. 0.0001, keeps the pruned model's "
                                     "accuracy while it learns the int8 rounding")
        if self.pointwise_only and self.target != "x86":
            bad("pointwise_only", "false unless target is x86 (XNNPACK's policy prunes only 1x1 "
                                  "convolutions anyway); add --target x86")
        if self.cpu_devices < 1:
            bad("cpu_devices", "a positive integer (the number of devices to split the host CPU "
                               "into; 1 = no split)")
        if self.cpu_devices > 1 and not self.distribute:
            raise ValueError(f"cpu_devices={self.cpu_devices} splits the host CPU into devices for "
                             "data-parallel training, which is off. Received: distribute=False. "
                             "Add --distribute (distribute = true), or drop --cpu-devices.")
        return self

    # ------------------------------------------------------------ stage keys

    _STAGE_FIELDS = {
        "data": ("dataset", "data_dir", "val_fraction", "image_size", "seed", "quick", "quick_train",
                 "quick_test"),
        "dense": ("model", "weights", "pretrained", "dense_epochs", "batch_size", "learning_rate",
                  "lr_schedule"),
        "pruned": ("target", "prune_epochs", "prune_learning_rate", "initial_sparsity", "final_sparsity",
                   "pruning_frequency", "pruning_end_fraction", "sparsity_allocation", "block_size",
                   "distill", "distill_alpha", "distill_temperature", "pointwise_only"),
        "export": ("export_batch_size",),
    }
    # Fields added after runs existed, at the value that reproduces those runs: left out of
    # the key there, so that a run made before the field existed is still reused.
    _KEY_SINCE = {"block_size": (1, 1), "weights": "", "pretrained": "auto", "target": "xnnpack",
                  "distill": False, "image_size": 32, "pointwise_only": False}

    def stage_key(self, stage, replicas=1, engine="", backend=""):
        """Hash of everything `stage` depends on, including the stages before it.

        A model trained on `replicas` > 1 devices differs from a 1-device one by the
        order of floating-point reductions, so the data-parallel engine and the number of
        replicas are part of the key of training and of every stage after it. (1 replica
        adds nothing: a 1-device run keeps the key it always had.) The Keras backend that
        trains is part of those keys too: a JAX-trained model is not a TensorFlow run's.
        """
        order = list(self._STAGE_FIELDS)
        if stage not in order:
            raise ValueError(f"stage must be one of {order}. Received: stage={stage!r}")
        fields = [f for s in order[: order.index(stage) + 1] for f in self._STAGE_FIELDS[s]]
        trains = order.index(stage) >= order.index("dense")
        if trains and self.model and "target" not in fields:
            # A user's or a named model is rewritten for XNNPACK before training, and not for x86:
            # its dense model depends on the target. The guide's net is the same for both.
            fields.append("target")
        if not self.distill:  # the distillation settings change nothing while it is off
            fields = [f for f in fields if f not in ("distill_alpha", "distill_temperature")]
        if self.image_size == 0:  # not resolved: the pipeline resolves it before taking keys
            fields = [f for f in fields if f != "image_size"]
        values = {"recipe": RECIPE_VERSION, **{f: getattr(self, f) for f in fields
                                                if f not in self._KEY_SINCE
                                                or getattr(self, f) != self._KEY_SINCE[f]}}
        if trains and self.weights:  # the same path may hold other weights later
            values["weights_sha256"] = _file_digest(self.weights)
        if replicas > 1 and trains:
            values["data_parallel"] = {"engine": engine, "replicas": int(replicas)}
        if backend and trains:
            values["backend"] = backend
        blob = json.dumps(values, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """The config `to_dict()` wrote; settings this version no longer has are left out."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _file_digest(path):
    """sha256 of the file at `path` (None when it cannot be read: the dense stage says why)."""
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


def _is_block_size(value):
    return (isinstance(value, tuple) and len(value) == 2
            and all(type(v) is int and v > 0 for v in value))


# TOML section -> fields it may hold
SECTIONS = {
    "data": ("dataset", "data_dir", "val_fraction", "image_size"),
    "model": ("model", "weights", "pretrained"),
    "dense": ("dense_epochs", "batch_size", "learning_rate", "lr_schedule"),
    "prune": ("prune_epochs", "prune_learning_rate", "initial_sparsity", "final_sparsity",
              "pruning_frequency", "pruning_end_fraction", "sparsity_allocation", "block_size",
              "target", "distill", "distill_alpha", "distill_temperature", "pointwise_only"),
    "export": ("export_batch_size", "quantize"),
    "quantize": ("qat_epochs", "qat_learning_rate"),
    "bench": ("bench_runs", "bench_warmup", "threads", "arm64_check"),
    "run": ("seed", "quick", "quick_train", "quick_test", "out_dir", "name", "distribute", "cpu_devices"),
}
# in the TOML file, [model] path = "..." reads better than [model] model = "..."
_TOML_ALIASES = {("model", "path"): "model", ("dense", "epochs"): "dense_epochs",
                 ("prune", "epochs"): "prune_epochs", ("prune", "learning_rate"): "prune_learning_rate",
                 ("prune", "frequency"): "pruning_frequency", ("prune", "end_fraction"): "pruning_end_fraction",
                 ("prune", "allocation"): "sparsity_allocation",
                 ("export", "batch_size"): "export_batch_size",
                 ("quantize", "epochs"): "qat_epochs", ("quantize", "learning_rate"): "qat_learning_rate",
                 ("bench", "runs"): "bench_runs",
                 ("bench", "warmup"): "bench_warmup"}
_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               tuple: "a list of two integers, e.g. [1, 4]"}
_FIELD_TYPES = {f.name: type(f.default) for f in dataclasses.fields(RunConfig)}


# the flag and the [quantize] key of each setting of the quantization-aware fine-tuning
_QAT_SETTINGS = {"qat_epochs": "--qat-epochs ([quantize] epochs)",
                 "qat_learning_rate": "--qat-lr ([quantize] learning_rate)"}

# --quick: these replace the defaults (not values given in the file or on the command line);
# a small batch gives BatchNorm's moving statistics enough steps to settle on the subset
QUICK = {"dense_epochs": 3, "prune_epochs": 2, "batch_size": 32, "bench_runs": 200}


class ConfigError(ValueError):
    """A config file or an override is invalid; the message names the key and the fix."""


def parse_block_size(text):
    """'HxW' (as --block-size takes it) -> (H, W); ConfigError naming the fix otherwise."""
    match = re.fullmatch(r"\s*([0-9]+)\s*[xX]\s*([0-9]+)\s*", str(text))
    if match is None or 0 in (int(match[1]), int(match[2])):
        raise ConfigError("--block-size must be HxW with two positive integers: the input x "
                          "output channels of a 1x1 convolution pruned together. "
                          f"Received: --block-size {text!r}. Use e.g. --block-size 1x4 "
                          "(4 output channels per block), or 1x1 to prune single weights.")
    return int(match[1]), int(match[2])


def _coerce(key, value, where):
    want = _FIELD_TYPES[key]
    if want is tuple and isinstance(value, list):  # a TOML array; validate() checks its items
        value = tuple(value)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not want:
        raise ConfigError(f"{where}: {key} must be {_TYPE_WORDS[want]}. "
                          f"Received: {key}={value!r} ({type(value).__name__}).")
    return value


def _toml_keys(section):
    """The key names a [section] documents: its aliases, and the fields without one."""
    aliased = {field for (s, _), field in _TOML_ALIASES.items() if s == section}
    keys = {k for (s, k) in _TOML_ALIASES if s == section}
    keys |= {f for f in SECTIONS[section] if f not in aliased}
    return sorted(keys)


def parse_toml(text, source="<config>"):
    """TOML text -> {field: value}, refusing unknown sections and keys by name."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source} is not valid TOML: {e}.") from e
    values = {}
    for section, table in doc.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section [{section}]. "
                              f"Expected one of: {', '.join(f'[{s}]' for s in SECTIONS)}.")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {section} must be a [section] table. Received: {section} = {table!r}.")
        for key, value in table.items():
            field = _TOML_ALIASES.get((section, key), key)
            if field not in SECTIONS[section]:
                raise ConfigError(f"{source}: unknown key {key!r} in [{section}]. "
                                  f"Expected one of: {', '.join(_toml_keys(section))}.")
            values[field] = _coerce(field, value, f"{source} [{section}]")
    return values


def load_config(path=None, overrides=None):
    """Defaults, then the TOML file at `path`, then `overrides` ({field: value}, None skipped).

    With quick = true, the settings in QUICK replace the defaults that were not set.
    """
    values = {}
    if path:
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist. Start from configs/default.toml "
                              "in spruce's repository, or drop --config to use the defaults.") from None
        values.update(parse_toml(text, source=path))
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in _FIELD_TYPES:
            raise ConfigError(f"unknown setting {key!r}. Expected one of: {', '.join(_FIELD_TYPES)}.")
        if key == "block_size" and isinstance(value, str):
            value = parse_block_size(value)
        values[key] = _coerce(key, value, "command line")
    if values.get("quick"):
        for key, value in QUICK.items():
            values.setdefault(key, value)
    config = RunConfig(**values)
    try:
        config.validate()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    given = [key for key in ("qat_epochs", "qat_learning_rate")
             if key in values and values[key] != getattr(RunConfig, key)]
    if given and config.quantize != "int8":
        # Only a value changed in the file or on the command line: a file that restates the
        # defaults (configs/default.toml) stays valid without int8.
        raise ConfigError(f"{given[0]} sets the quantization-aware fine-tuning of the int8 models, which "
                          f"this run does not make. Received: quantize={config.quantize!r}, "
                          f"{given[0]}={values[given[0]]!r}. Add --quantize int8 (quantize = \"int8\" in "
                          f"[export]), or drop {_QAT_SETTINGS[given[0]]}.")
    return config
