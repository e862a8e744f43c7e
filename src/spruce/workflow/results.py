"""What `spruce run` measured, as frozen dataclasses.

`RunMetrics` holds every figure of a run's report; `to_dict()` gives the JSON of
``metrics.json`` and of ``spruce run --json`` (the keys are those runs have always written),
and `from_dict()` reads it back. The reports of other spruce components that a run embeds
(the export report, the inspector's, the policy check's, the benchmark's) stay their own
`to_dict()` documents.
"""

import dataclasses
import types
import typing

from spruce.workflow.config import RunConfig


def _optional():
    """A field left out of `to_dict()` while it is None (the key only some runs have)."""
    return dataclasses.field(default=None, metadata={"optional": True})


def _to_json(value):
    if hasattr(value, "to_dict"):
        return _to_json(value.to_dict())
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def _from_json(kind, value):
    if value is None:
        return None
    if isinstance(kind, types.UnionType):  # X | None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if typing.get_origin(kind) is dict:
        item = typing.get_args(kind)[1]
        return {k: _from_json(item, v) for k, v in value.items()}
    if isinstance(kind, type) and hasattr(kind, "from_dict"):
        return kind.from_dict(value)
    if kind is tuple:
        return tuple(value)
    return value


class _Record:
    """`to_dict()` in field order, JSON-ready; `from_dict()` rebuilds nested records."""

    def to_dict(self):
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            out[f.name] = _to_json(value)
        return out

    @classmethod
    def from_dict(cls, d):
        return cls(**{f.name: _from_json(f.type, d[f.name]) for f in dataclasses.fields(cls) if f.name in d})


@dataclasses.dataclass(frozen=True)
class DataSizes(_Record):
    dataset: str
    train: int
    val: int
    test: int


@dataclasses.dataclass(frozen=True)
class ModelSource(_Record):
    """Where the dense model came from: "guide", the user's .keras file, or a keras.applications call."""

    source: str | None = _optional()
    compatibility: dict | None = _optional()  # what make_xnnpack_compatible changed, or could not
    pretrained: str | None = _optional()  # why it counts as trained (no dense training); None: trained here
    weights: str | None = _optional()  # the --weights file loaded into it
    # Trained already, and rewritten with changed outputs: Keras test accuracy of the rewritten
    # model before the pruning fine-tune (the dense model's is the model as it arrived).
    rewritten_accuracy: float | None = _optional()


@dataclasses.dataclass(frozen=True)
class Schedule(_Record):
    """The pruning schedule as it ran, in optimizer steps."""

    initial_sparsity: float
    final_sparsity: float
    end_step: int
    frequency: int
    allocation: str
    block_size: tuple


@dataclasses.dataclass(frozen=True)
class ScheduleTarget(_Record):
    """The sparsity the schedule had set at each traced step."""

    steps: tuple
    sparsity: tuple


@dataclasses.dataclass(frozen=True)
class SparsityTrace(_Record):
    """The fraction of zeros of each pruned kernel, sampled during fine-tuning."""

    steps: tuple = ()
    layers: dict = dataclasses.field(default_factory=dict)  # layer name -> one value per step


@dataclasses.dataclass(frozen=True)
class Accuracy(_Record):
    """Test-set top-1 accuracy of one model, in Keras and as .tflite on LiteRT."""

    keras_accuracy: float
    tflite_accuracy: float


@dataclasses.dataclass(frozen=True)
class Blocks(_Record):
    """The pruned 1x1 kernels' blocks of `size` (in x out channels): all zero, partly zero."""

    size: tuple
    blocks: int
    zero: int
    partial: int


@dataclasses.dataclass(frozen=True)
class Inspection(_Record):
    """`spruce inspect` on one .tflite: why the sparse path does not qualify, and its report."""

    reason: str  # empty when the sparse path qualifies
    report: dict  # spruce.inspect_tflite(...).to_dict()


@dataclasses.dataclass(frozen=True)
class ModelMetrics(_Record):
    """The figures of one of the two models (dense or pruned)."""

    keras_accuracy: float
    tflite_accuracy: float
    final_val_accuracy: float | None
    keras_bytes: int
    tflite_bytes: int
    tflite_gzip_bytes: int
    layer_sparsity: dict  # name of each conv the policy prunes -> fraction of zeros
    sparsity_1x1: float | None  # zeros over all 1x1 conv weights
    export: dict  # spruce.export_litert's report, as a dict
    xnnpack_sparse: bool
    inspect: Inspection
    blocks: Blocks | None = _optional()  # the pruned model only


@dataclasses.dataclass(frozen=True)
class PolicyVerdict(_Record):
    """The XNNPACK policy check of the dense Keras model."""

    summary: str
    ok: bool | None = _optional()  # None: the check itself refused the model
    report: dict | None = _optional()  # spruce.check_xnnpack(...).to_dict()


@dataclasses.dataclass(frozen=True)
class EngineCheck(_Record):
    """Target x86: what spruce's engine does with the pruned model."""

    summary: str
    sparse_operators: tuple = ()  # operators the engine ran on its sparse kernels (its profile)
    report: dict | None = _optional()  # spruce.check_spruce(pruned model).to_dict()


@dataclasses.dataclass(frozen=True)
class Latency(_Record):
    """One engine's median latency per image of both models, from one interleaved run."""

    dense_ms: float
    pruned_ms: float
    threads: int
    speedup: float
    description: str
    raw: dict  # the benchmark's report, as a dict
    speedup_vs_litert_dense: float | None = _optional()  # spruce's engine: pruned here vs dense on LiteRT
    pruned_profile: dict | None = _optional()  # spruce's engine: the pruned model per operator


@dataclasses.dataclass(frozen=True)
class Arm64Check(_Record):
    """The emulated aarch64 check of pruned.tflite, or why it did not run."""

    reason: str | None
    sparse_path_engaged: bool | None = None
    ratio: float | None = None  # dense-stored over sparse-stored time
    report: dict | None = None  # spruce.check_arm64(...).to_dict(); None: the check did not run

    @property
    def ran(self):
        return self.report is not None

    def to_dict(self):
        if not self.ran:
            return {"reason": self.reason}
        return {"sparse_path_engaged": self.sparse_path_engaged, "ratio": self.ratio,
                "reason": self.reason, "report": self.report}


@dataclasses.dataclass(frozen=True, kw_only=True)  # keyword-only: the fields keep the JSON's key order
class TrainingDevices(_Record):
    """Where both trainings ran: one device, or all local ones through a data-parallel engine."""

    engine: str
    backend: str | None = _optional()
    replicas: int
    devices: tuple | None = _optional()
    global_batch: int
    per_replica_batch: int | None = _optional()
    synchronized_batchnorm: bool | None = _optional()
    dropped_images: int | None = _optional()  # JAX: images left out so that every device gets as many


@dataclasses.dataclass(frozen=True)
class RunMetrics(_Record):
    """Every figure of a run: what report.md, the plots, the terminal table and --json show."""

    name: str
    data: DataSizes
    model: ModelSource
    config: RunConfig
    schedule: Schedule
    schedule_target: ScheduleTarget | None
    dense: ModelMetrics
    pruned: ModelMetrics
    accuracy_drop_points: float  # Keras test accuracy lost to pruning, in points
    policy: PolicyVerdict
    latency: dict[str, Latency]  # engine ("litert", "spruce") -> its latencies
    cpu: dict  # spruce.bench's description of this machine
    arm64: Arm64Check
    files: dict  # file of the run folder -> what it holds
    training: TrainingDevices
    stage_seconds: dict  # stage -> seconds (a reused stage: when it ran)
    reused: tuple  # the stages reused from an earlier run
    wall_seconds: float
    engine: EngineCheck | None = _optional()  # target x86 only
    int8: dict | None = _optional()  # --quantize int8: spruce.workflow.quantize.Int8Results.to_dict()
