"""The int8 stage of `spruce run --quantize int8`: both models as full-integer int8 files.

Post-training quantization: `spruce.export_litert(quantize="int8")` converts dense.keras and
pruned.keras, calibrated on `CALIBRATION_SAMPLES` training images (the pruned model's 1x1
filters stored sparse, int8), in a short-lived child process as the float export is (see
`export_stage`). The stage (recorded, so a re-run reuses it) also measures both files'
test accuracy on LiteRT; `measure` then times them on LiteRT beside the float files and,
when it loads them, on spruce's engine, or records the engine's refusal as it words it.
"""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from spruce.workflow.results import _optional, _Record

# Training images the int8 ranges are calibrated on. On the guide's net 100 to 2000 images
# give the same accuracy to a tenth of a point; 500 covers every class many times and takes
# a few seconds to run through the converter.
CALIBRATION_SAMPLES = 500

FILES = {
    "dense_int8.tflite": "dense model, full-integer int8 (float32 input and output)",
    "pruned_int8.tflite": "pruned model, full-integer int8, 1x1 filters stored sparse (int8 behind DENSIFY)",
}


MODES = ("", "int8")
# Bumped when this stage's code changes what it produces.
STAGE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Int8Model(_Record):
    """One int8 file: its test accuracy on LiteRT, its size, its export report."""

    tflite_accuracy: float
    tflite_bytes: int
    tflite_gzip_bytes: int
    weight_bytes: int  # the constants as stored (sparse ones with their indices)
    export: dict  # spruce.export_litert's report, as a dict


@dataclasses.dataclass(frozen=True)
class Int8Latency(_Record):
    """Median latency per image on one engine, all files in one interleaved run."""

    engine: str
    threads: int
    ms: dict  # "dense", "pruned", "dense_int8", "pruned_int8" -> milliseconds
    raw: dict  # the benchmark's report, as a dict


@dataclasses.dataclass(frozen=True)
class Int8Results(_Record):
    """What `spruce run --quantize int8` adds to the report."""

    mode: str
    calibration_samples: int
    dense: Int8Model
    pruned: Int8Model
    latency: dict = dataclasses.field(default_factory=dict)  # engine -> Int8Latency as a dict
    engine_refusal: str | None = None  # spruce's engine's own words for an int8 file it refuses
    # The quantization-aware fine-tune's (workflow/pqat.py), when qat_epochs > 0.
    pqat: Int8Model | None = _optional()

    @classmethod
    def from_dict(cls, d):
        from spruce.workflow.pqat import PqatModel

        d = dict(d)
        for name in ("dense", "pruned"):
            d[name] = Int8Model.from_dict(d[name])
        if d.get("pqat") is not None:
            d["pqat"] = PqatModel.from_dict(d["pqat"])
        return cls(**d)


def stage_key(config, export_key):
    """The int8 stage's key: the float export's (which holds the models'), the mode, the
    calibration size and this stage's version."""
    values = {"export": export_key, "quantize": config.quantize, "calibration": CALIBRATION_SAMPLES,
              "version": STAGE_VERSION}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def compute(state):
    """The recorded stage: export both models as int8, test accuracy on LiteRT.
    Returns (Int8Results without latency, the manifest record)."""
    from spruce.workflow import evaluate, measure
    from spruce.workflow.progress import log

    images = calibration_images(state.data.x_train, seed=state.config.seed)
    log(f"quantize: int8 post-training quantization of dense.keras and pruned.keras, calibrated on "
        f"{len(images)} training images ...", state.quiet)
    exports = export_calibrated(state, images, ("dense", "pruned"))
    models = {}
    for name in ("dense", "pruned"):
        path = state.path(f"{name}_int8.tflite")
        accuracy = evaluate.tflite_accuracy(path, state.data.x_test, state.data.y_test,
                                            label=f"test {name}_int8.tflite (LiteRT)", progress=state.progress)
        models[name] = Int8Model(tflite_accuracy=accuracy, tflite_bytes=os.path.getsize(path),
                                 tflite_gzip_bytes=measure.gzip_size(path),
                                 weight_bytes=weight_bytes(path), export=exports[name])
    result = Int8Results(mode=state.config.quantize, calibration_samples=len(images), **models)
    return result, {"result": result.to_dict()}


def reuse(entry):
    return Int8Results.from_dict(entry["result"])


def measure_latency(folder, result, config, progress=True, quiet=False):
    """`result` with the latency of the four files (float and int8, dense and pruned), and of the
    quantization-aware fine-tune's int8 file when there is one, on LiteRT and on spruce's engine,
    each engine's files in one interleaved run; when the engine refuses an int8 file, its message
    instead of its times."""
    from spruce.bench import benchmark
    from spruce.runtime.loader import UnsupportedModelError
    from spruce.workflow.progress import bar, log

    labels = ("dense", "pruned", "dense_int8", "pruned_int8") + (("pruned_pqat_int8",) if result.pqat else ())
    files = [os.path.join(folder, f"{label}.tflite") for label in labels]
    settings = {"threads": config.threads, "runs": config.bench_runs, "warmup": config.bench_warmup}
    engines, refusal = ["litert", "spruce"], None
    try:
        from spruce.runtime import Engine

        for path in files[2:]:
            Engine(path, num_threads=config.threads)
    except (ImportError, UnsupportedModelError) as e:  # not built here, or it refuses int8
        refusal = f"{os.path.basename(path)}: {e}" if isinstance(e, UnsupportedModelError) else str(e)
        log(f"bench: spruce's engine does not run the int8 files ({refusal.splitlines()[0]})", quiet)
        engines = ["litert"]
    latency = {}
    with bar(len(engines), "benchmark float vs int8", progress, "engine") as b:
        for engine in engines:
            rep = benchmark(files, engine=engine, **settings).to_dict()
            ms = {label: m["median"] * 1e3 for label, m in zip(labels, rep["models"])}
            latency[engine] = Int8Latency(engine=engine, threads=config.threads, ms=ms, raw=rep).to_dict()
            b.update(1)
    return dataclasses.replace(result, latency=latency, engine_refusal=refusal)


def summary_rows(int8):
    """(label, dense, pruned) rows of an `Int8Results` for the run's summary table."""
    from spruce.workflow.report import _kib, _ms, _pct

    d, p = int8.dense, int8.pruned
    rows = [("test accuracy, int8 .tflite (LiteRT)", _pct(d.tflite_accuracy), _pct(p.tflite_accuracy)),
            ("int8 .tflite size", _kib(d.tflite_bytes), _kib(p.tflite_bytes)),
            ("int8 .tflite size, gzipped", _kib(d.tflite_gzip_bytes), _kib(p.tflite_gzip_bytes))]
    for engine, name in (("litert", "LiteRT"), ("spruce", "spruce engine")):
        lat = int8.latency.get(engine)
        if lat:
            rows.append((f"latency, int8, {name}, {lat['threads']} thread(s)", _ms(lat["ms"]["dense_int8"]),
                         _ms(lat["ms"]["pruned_int8"])))
    if int8.engine_refusal:
        rows.append(("latency, int8, spruce engine", "refused (see int8 section)", "refused"))
    q = int8.pqat
    if q is not None:
        rows += [("test accuracy, int8 PQAT .tflite (LiteRT)", "", _pct(q.tflite_accuracy)),
                 ("int8 PQAT .tflite size", "", _kib(q.tflite_bytes))]
        for engine, name in (("litert", "LiteRT"), ("spruce", "spruce engine")):
            lat = int8.latency.get(engine)
            if lat and "pruned_pqat_int8" in lat["ms"]:
                rows.append((f"latency, int8 PQAT, {name}, {lat['threads']} thread(s)", "",
                             _ms(lat["ms"]["pruned_pqat_int8"])))
    return rows


def report_lines(int8, metrics):
    """The '## int8' section of report.md."""
    from spruce.workflow.report import _kib, _md_table, _ms, _pct

    d, p = int8.dense, int8.pruned
    cost = {name: 100 * (getattr(metrics, name).tflite_accuracy - getattr(int8, name).tflite_accuracy)
            for name in ("dense", "pruned")}
    out = ["## int8 (post-training quantization)", "",
           f"Both models converted to full-integer int8 (`spruce.export_litert(quantize=\"int8\")`: int8 "
           f"weights per output channel and int8 activations, float32 input and output), calibrated on "
           f"{int8.calibration_samples} training images; the pruned model's 1x1 filters are stored "
           f"sparse, as int8. Each file was checked against its Keras model on the calibration data, "
           f"in units of its output's quantization step: off by at most {_steps(d)} (dense) and "
           f"{_steps(p)} (pruned), tolerance {_tolerance_steps(p)}.", "",
           f"- Test accuracy on LiteRT: dense {_pct(d.tflite_accuracy)} (int8 costs {cost['dense']:.2f} points "
           f"against the float file), pruned {_pct(p.tflite_accuracy)} ({cost['pruned']:.2f} points).",
           f"- Size: dense {_kib(d.tflite_bytes)}, pruned {_kib(p.tflite_bytes)}; weights as stored "
           f"{d.weight_bytes:,} and {p.weight_bytes:,} bytes (float: {_kib(metrics.dense.tflite_bytes)} "
           f"and {_kib(metrics.pruned.tflite_bytes)} files).",
           ]
    if int8.engine_refusal:
        out.append(f"- spruce's engine does not run the int8 files yet; it refuses them with: "
                   f"\"{int8.engine_refusal}\"")
    out.append("")
    for engine, lat in int8.latency.items():
        name = {"litert": "LiteRT", "spruce": "spruce's engine"}[engine]
        count = {4: "four", 5: "five"}.get(len(lat["ms"]), len(lat["ms"]))
        out += [f"Latency on {name}, {lat['threads']} thread(s), median per image, the {count} files in one "
                "interleaved run:", "",
                _md_table([(f"{label}.tflite", _ms(ms)) for label, ms in lat["ms"].items()],
                          headers=("file", "median")), ""]
    if int8.pqat is not None:
        out += pqat_lines(int8, metrics)
    return out


def cost_sentence(int8, metrics):
    """The int8 files' accuracy cost against the float pruned .tflite, in one line for the terminal."""
    fp32 = metrics.pruned.tflite_accuracy
    text = f"int8 cost against the float pruned .tflite: post-training {100 * (fp32 - int8.pruned.tflite_accuracy):.2f}"
    if int8.pqat is not None:
        text += f", PQAT {100 * (fp32 - int8.pqat.tflite_accuracy):.2f}"
    return text + " points"


def pqat_lines(int8, metrics):
    """The pruned model's post-training quantization beside its quantization-aware fine-tune."""
    from spruce.workflow.report import _kib, _md_table, _ms, _pct

    p, q, fp32 = int8.pruned, int8.pqat, metrics.pruned

    def cost(model):
        return f"{100 * (fp32.tflite_accuracy - model.tflite_accuracy):.2f} points"

    rows = [("test accuracy, Keras (the float model converted)", _pct(fp32.keras_accuracy),
             _pct(fp32.keras_accuracy), _pct(q.keras_accuracy)),
            ("test accuracy, Keras, int8 rounding simulated", "", _pct(q.simulated_before),
             _pct(q.simulated_after)),
            ("test accuracy, .tflite (LiteRT)", _pct(fp32.tflite_accuracy), _pct(p.tflite_accuracy),
             _pct(q.tflite_accuracy)),
            ("cost against the float pruned .tflite", "", cost(p), cost(q)),
            ("zeros in 1x1 conv kernels", _pct(fp32.sparsity_1x1), _pct(fp32.sparsity_1x1), _pct(q.sparsity_1x1)),
            (".tflite size", _kib(fp32.tflite_bytes), _kib(p.tflite_bytes), _kib(q.tflite_bytes)),
            (".tflite size, gzipped", _kib(fp32.tflite_gzip_bytes), _kib(p.tflite_gzip_bytes),
             _kib(q.tflite_gzip_bytes))]
    for engine, name in (("litert", "LiteRT"), ("spruce", "spruce engine")):
        ms = int8.latency.get(engine, {}).get("ms", {})
        if "pruned_pqat_int8" in ms:
            threads = int8.latency[engine]["threads"]
            rows.append((f"latency, {name}, {threads} thread(s)", _ms(ms["pruned"]), _ms(ms["pruned_int8"]),
                         _ms(ms["pruned_pqat_int8"])))
    kept = ("every zero of pruned.keras is still zero and no other weight became zero" if q.zeros_kept
            else "**the zeros differ from pruned.keras's**")
    return ["### Post-training quantization against quantization-aware fine-tuning (PQAT)", "",
            f"Quantization-aware fine-tuning (`spruce.qat`, tfmot's PQAT): pruned.keras trained "
            f"{q.epochs} epoch(s) more at learning rate {q.learning_rate} ({metrics.config.lr_schedule}) "
            f"seeing int8 rounding (kernels per output channel, inputs per tensor over the ranges the "
            f"converter calibrates from the same {int8.calibration_samples} images), its zeros held by a "
            f"fixed mask ({kept}), then converted like the post-training file: `pruned_pqat_int8.tflite`, "
            f"checked against its Keras model: off by at most {_steps(q)} (tolerance {_tolerance_steps(q)}). "
            "The simulated row runs the int8 rounding in Keras; before the fine-tune it is post-training "
            "quantization as Keras sees it.", "",
            _md_table(rows, headers=("", "pruned, float", "pruned int8, post-training",
                                     "pruned int8, PQAT")), ""]


def _steps(model):
    e = model.export
    if e.get("max_abs_diff") is None or not e.get("output_step"):
        return "(not verified)"
    return f"{e['max_abs_diff'] / e['output_step']:.1f} steps"


def _tolerance_steps(model):
    e = model.export
    return "n/a" if not e.get("output_step") or e.get("tolerance") is None else (
        f"{e['tolerance'] / e['output_step']:.0f} steps")


def weight_bytes(path):
    from spruce.tflite.reader import read_tflite

    return sum(t.stored_bytes for t in read_tflite(path).main.tensors)


def calibration_images(x_train, count=CALIBRATION_SAMPLES, seed=0):
    """`count` training images picked with `seed`: the data int8 calibration sees."""
    if len(x_train) <= count:
        return x_train
    pick = np.sort(np.random.default_rng(seed).choice(len(x_train), count, replace=False))
    return x_train[pick]


def default_calibration(input_shape):
    """The images `spruce export --int8` calibrates on when no file is given: training images
    of `spruce run`'s default data set, Fashion-MNIST as the run feeds them (32x32x3 in [0, 1])."""
    from spruce.workflow.data import load_dataset

    if tuple(input_shape) != (32, 32, 3):
        raise ValueError(
            "without --representative, --int8 calibrates on Fashion-MNIST training images as `spruce "
            "run` feeds them, shaped (32, 32, 3), but the model takes inputs shaped "
            f"{tuple(input_shape)}. Received: no --representative. Pass --representative FILE.npy: "
            "a few hundred of its typical inputs, preprocessed as for the model, shaped (N, "
            f"{', '.join(map(str, input_shape))}).")
    images = calibration_images(load_dataset("fashion_mnist").x_train)
    return images, f"{len(images)} Fashion-MNIST training images"


def export_calibrated(state, images, names):
    """Export folder/{name}.keras as {name}_int8.tflite for each of `names`, calibrated on
    `images` (saved to a temporary file the child reads); returns {name: ExportReport dict}."""
    fd, calibration = tempfile.mkstemp(prefix=".calibration.", suffix=".part.npy", dir=state.folder)
    os.close(fd)
    try:
        np.save(calibration, images)
        return export_int8_in_child(state.folder, state.config.export_batch_size, calibration, names)
    finally:
        os.unlink(calibration)


def export_int8_in_child(folder, batch_size, calibration_path, names=("dense", "pruned")):
    """Export folder/{name}.keras as int8 for each of `names` ("dense" stored dense, the others
    sparse), calibrated on the .npy at `calibration_path`; returns {name: ExportReport dict}."""
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "spruce.workflow.quantize", folder, str(batch_size),
                           calibration_path, *names], env=env, stdout=subprocess.PIPE, stderr=None, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"exporting the int8 models of {folder} failed (exit status {done.returncode}); "
                           "the converter's messages are above.")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    folder, batch_size, calibration_path, *names = argv or sys.argv[1:]
    import keras

    import spruce

    images = np.load(calibration_path, allow_pickle=False)
    out = {}
    for name in names:
        sparse = name != "dense"
        print(f"quantize: {name}_int8.tflite (int8, {'sparse' if sparse else 'dense'} storage) ...",
              file=sys.stderr, flush=True)
        model = keras.models.load_model(os.path.join(folder, f"{name}.keras"))
        report = spruce.export_litert(model, os.path.join(folder, f"{name}_int8.tflite"), sparse=sparse,
                                      batch_size=int(batch_size), quantize="int8",
                                      representative_dataset=images)
        out[name] = report.to_dict()
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip the interpreter teardown the converter can crash; the files are in place


if __name__ == "__main__":
    main()
