"""`check_arm64`: does XNNPACK's sparse path engage for this .tflite on an ARM CPU?

The check runs the real aarch64 LiteRT under user-mode emulation (see
`spruce.arm64.environment`) on a clean A/B: the file as exported (A) and the same
weights re-written with dense storage (B, `spruce.tflite.densify`). LiteRT's XNNPACK
delegate only asks XNNPACK for sparse inference when weights are stored sparse, so
B always runs XNNPACK's dense NHWC kernels. Two observations decide:

- outputs: when the sparse path did not engage, A runs exactly B's kernels on exactly
  B's weights, and the outputs are bitwise identical. When it engaged, A ran other
  kernels (NCHW, sparse 1x1) and the float sums differ in their last bits.
- time: A must also be faster than B. A different kernel path that is *slower* means
  the weights were not handed to XNNPACK as static (the DENSIFY was not delegated).

A softmax or sigmoid at the end of the model can round both variants' outputs to the same
bits (an untrained network's large logits give probabilities of exactly 0 and 1), so both
copies expose their logits as extra outputs for the comparison (`spruce.arm64.probes`).
Should the outputs still be bitwise identical while A runs clearly faster in every
repetition (STRONG_RATIO, medians and best-of alike), the time decides: the dense kernels
on the same weights cannot run that much faster, so other kernels ran.

The time ratio alone is not a reliable verdict: it depends on how much of the model's
compute sits in its pruned 1x1 convolutions (the TFMOT guide's small model gains ~1.3x,
MobileNet-sized nets 2-3x), and on an emulator sharing a busy host it is noisy.

A file with float16 weights (`export_litert(..., fp16=True)`), or one that asks for fp16
arithmetic, also runs in the other arithmetic. LiteRT computes it in fp32 unless the model's metadata (or the app) asks for
fp16 (`spruce.arm64.precision`); then, on a CPU with ARMv8.2 FP16 arithmetic, XNNPACK runs
its fp16 kernels, the sparse 1x1 ones included. The same A/B, with the request written
into both copies, decides whether that path engaged; one more observation says whether
fp16 ran at all: the dense-stored copy's outputs change when fp16 is requested, and stay
bitwise the same when XNNPACK ignores the request. LiteRT may crash on a variant; the
dense-stored copy then runs alone and the crash is the verdict.
"""

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

from spruce._deps import SpruceEnvironmentError
from spruce.arm64 import environment, precision, probes

# A time ratio at or above this, with differing outputs, is an unambiguous engagement;
# below it the report says the gain is modest for this model.
STRONG_RATIO = 1.5
# Differing outputs with the sparse-stored file clearly slower (below this ratio) mean
# LiteRT's reference kernels ran. Between it and 1.0 lies emulation noise on a busy host.
SLOWER_RATIO = 0.9
DEFAULT_REPETITIONS = 15
# Sparse- and dense-stored outputs agree within float rounding: relative to the outputs'
# scale, fp32 kernels differ by ~1e-7, fp16 kernels (11-bit mantissas) by ~1e-3.
AGREE_RTOL = {"fp32": 1e-4, "fp16": 1e-2}
CAVEAT = (
    "Emulated ratios overstate real-device speedups: emulation changes the relative cost of "
    "the kernels. On a real phone expect less (the TFMOT guide measured 1.4x at 75% sparsity on a "
    "Pixel 4; Fast Sparse ConvNets report 1.3-2.4x). Measure on a device with `spruce bench --adb` "
    "before promising a speedup.")
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner.py")


class EmulationError(SpruceEnvironmentError, RuntimeError):
    """The aarch64 LiteRT failed or timed out under emulation; the message has its last words."""

    def __init__(self, message, returncode=None):
        super().__init__(message)
        self.returncode = returncode  # None for a timeout


@dataclasses.dataclass
class Fp16Report:
    """The sparse path with fp16 arithmetic, for a file whose weights are float16."""

    requested_by_file: bool             # reduced_precision_support asks for fp16 arithmetic
    cpu_fp16_arithmetic: bool           # the emulated CPU reports ARMv8.2 FP16 arithmetic
    fp16_arithmetic_ran: bool           # the dense-stored copy's outputs changed with the request
    sparse_path_engaged: bool
    reason: str
    time_ratio: float = None            # median dense-stored / median sparse-stored, both fp16
    time_ratio_best: float = None
    seconds: dict = None
    outputs_identical: bool = None      # sparse- vs dense-stored, both with fp16 requested
    max_abs_diff: float = None          # None when an output is NaN
    outputs_agree: bool = None
    nan_outputs: bool = None            # the sparse-stored file gave NaN, the dense-stored did not
    crashed: str = None                 # LiteRT's last words when it failed on the sparse-stored file
    max_abs_diff_vs_fp32: float = None  # dense-stored copy, fp16 vs fp32 arithmetic

    def lines(self):
        ran = "ran" if self.fp16_arithmetic_ran else "did NOT run"
        cpu = "has" if self.cpu_fp16_arithmetic else "lacks"
        out = [f"fp16 arithmetic (requested {'by the file' if self.requested_by_file else 'for this check'}): "
               f"XNNPACK's fp16 kernels {ran} (the emulated CPU {cpu} ARMv8.2 FP16 arithmetic); "
               f"sparse path {'ENGAGED' if self.sparse_path_engaged else 'NOT engaged'}",
               f"  {self.reason}"]
        if self.time_ratio is not None:
            out.append(f"  emulated fp16 time: stored sparse {self.seconds['sparse']['median'] * 1e3:.2f} ms, "
                       f"stored dense {self.seconds['dense']['median'] * 1e3:.2f} ms (median); ratio "
                       f"{self.time_ratio:.2f}x (best-of: {self.time_ratio_best:.2f}x). The emulator has "
                       "no fast path for fp16 arithmetic, so these times say nothing about a phone.")
        return out


@dataclasses.dataclass
class Arm64Report:
    """Verdict of `check_arm64`, with the measurements behind it: `to_dict()` for JSON,
    `str()` for people."""

    model: str
    sparse_path_engaged: bool
    reason: str
    time_ratio: float = None            # median dense-stored / median sparse-stored seconds
    time_ratio_best: float = None       # the same with each variant's fastest repetition
    seconds: dict = None                # variant -> {"median", "min", "runs"}
    outputs_identical: bool = None
    max_abs_diff: float = None
    outputs_agree: bool = None
    inspector: dict = None              # {"xnnpack_sparse": bool, "reasons": [...]} when available
    inspector_agrees: bool = None       # spruce inspect's prediction matches the measurement
    densify: dict = None                # what the dense-storage rewrite changed
    emulator: dict = None
    repetitions: int = None
    caveat: str = CAVEAT
    weights: str = "float32"            # "float16" when the file dequantizes float16 constants
    arithmetic: str = "fp32"            # what the file asks LiteRT for; the verdict is for it
    nan_outputs: bool = None            # the sparse-stored file gave NaN, the dense-stored did not
    crashed: str = None                 # LiteRT's last words when it failed on the sparse-stored file
    fp16: Fp16Report = None             # the other arithmetic, for float16 weights
    logit_outputs: int = None           # logits exposed as extra outputs for the comparison

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        lines = [f"model: {self.model}",
                 f"XNNPACK sparse path on aarch64: {'ENGAGED' if self.sparse_path_engaged else 'NOT engaged'}",
                 f"  {self.reason}"]
        if self.weights != "float32":
            lines.append(f"weights stored {self.weights}; the file asks for {self.arithmetic} arithmetic "
                         "(the verdict above)")
        if self.time_ratio is not None:
            s = self.seconds
            lines.append(
                f"emulated time, 1 thread, {self.repetitions} interleaved repetitions: "
                f"stored sparse {s['sparse']['median'] * 1e3:.2f} ms, stored dense "
                f"{s['dense']['median'] * 1e3:.2f} ms (median); ratio {self.time_ratio:.2f}x "
                f"(best-of: {self.time_ratio_best:.2f}x)")
        if self.outputs_identical is not None:
            diff = "NaN" if self.max_abs_diff is None else f"{self.max_abs_diff:.3g}"
            match = ("bitwise identical" if self.outputs_identical
                     else "agree" if self.outputs_agree else "DISAGREE")
            probed = (f", with the logits of its {self.logit_outputs} softmax/sigmoid output(s)"
                      if self.logit_outputs else "")
            lines.append(f"outputs sparse vs dense storage{probed}: max |diff| {diff} ({match})")
        if self.fp16 is not None:
            lines.extend(self.fp16.lines())
        if self.inspector is not None:
            verdict = self.inspector.get("xnnpack_sparse")
            agree = "" if self.inspector_agrees is None else (
                " (agrees with the measurement)" if self.inspector_agrees else " (DISAGREES with the measurement)")
            lines.append(f"spruce inspect predicts: {'sparse path' if verdict else 'no sparse path'}{agree}")
            for r in self.inspector.get("reasons", [])[:8]:
                lines.append(f"  - {r}")
        if self.emulator:
            lines.append("emulator: " + ", ".join(f"{k} {v}" for k, v in self.emulator.items()))
        lines.append(self.caveat)
        return "\n".join(lines)


def _inspect(path):
    """spruce's own prediction (verdict and reasons), or None if the inspector is unavailable."""
    try:
        from spruce.tflite import inspect_tflite
        report = inspect_tflite(path)
    except (ImportError, AttributeError):
        return None
    d = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    return {"xnnpack_sparse": d.get("xnnpack_sparse"), "reasons": _reasons(d)}


def _reasons(d):
    """The inspector's findings (model-wide, else per region) as readable strings."""
    findings = list(d.get("findings") or [])
    if not findings:
        for region in d.get("regions") or []:
            findings += [f for f in region.get("findings") or [] if f not in findings]
    out = []
    for f in findings:
        where = f"{f.get('opcode', 'operator')} #{f['operator']}: " if f.get("operator") is not None else ""
        out.append(f"{where}{f.get('message', f)}")
    return out


def _densify_summary(report):
    d = report.to_dict()
    return {k: d[k] for k in ("decoded_tensors", "removed_densify_ops", "size_before", "size_after")}


def verdict(ratio, identical, inspector=None, outputs_agree=True, best_ratio=None, nan_outputs=False):
    """(engaged, reason) from the A/B observations; see the module docstring.

    `ratio` compares medians; `best_ratio`, if given, each variant's fastest repetition.
    The reference kernels are slower in every repetition, so "not faster" needs both
    below SLOWER_RATIO: one busy stretch of the host cannot turn a working sparse path
    into a refusal. `nan_outputs`: the sparse-stored file gave NaN where the dense-stored
    copy did not.
    """
    why = ""
    if inspector is not None and inspector.get("reasons") and not inspector.get("xnnpack_sparse"):
        why = " spruce inspect: " + "; ".join(inspector["reasons"][:3])
    if nan_outputs:
        return False, ("the sparse-stored file ran other kernels and its outputs are NaN where the "
                       "dense-stored copy's are finite: the sparse path ran and computed garbage. "
                       "Do not ship this model with this arithmetic." + why)
    if not identical and not outputs_agree:
        return False, ("the sparse-stored file ran other kernels and its outputs DISAGREE with the "
                       "dense-stored copy beyond float rounding: XNNPACK switched part of the model to "
                       "its NCHW layout without a working sparse path (seen with a stride-2 'same' "
                       "depthwise). Do not ship this model as is." + why)
    if identical and ratio >= STRONG_RATIO and best_ratio is not None and best_ratio >= STRONG_RATIO:
        return True, (f"XNNPACK ran other kernels than for the same weights stored dense: {ratio:.2f}x "
                      f"faster (best-of {best_ratio:.2f}x), which the same kernels on the same weights "
                      "cannot be, although the outputs are bitwise identical (they saturate).")
    if identical:
        return False, ("the sparse-stored file ran exactly the dense kernels (outputs bitwise "
                       "identical to the dense-stored copy), so XNNPACK did not take its sparse "
                       "path." + why)
    if ratio < SLOWER_RATIO and (best_ratio is None or best_ratio < SLOWER_RATIO):
        return False, (f"the sparse-stored file ran other kernels (outputs differ) but was not faster "
                       f"({ratio:.2f}x): the sparse weights did not reach XNNPACK as static weights, "
                       "so LiteRT's reference kernels ran instead." + why)
    if ratio >= STRONG_RATIO:
        return True, (f"XNNPACK ran the sparse kernels: {ratio:.2f}x faster than the same weights "
                      "stored dense, and its outputs come from different (NCHW) kernels.")
    return True, (f"XNNPACK ran the sparse kernels (outputs come from different kernels than the "
                  f"dense-stored copy), but the emulated gain is modest here ({ratio:.2f}x): the "
                  "pruned 1x1 convolutions carry a small share of this model's compute.")


def _emulate(env, models, repetitions, target_seconds, timeout, outputs):
    """Runs `runner.py` on `models` under emulation; its JSON, with the outputs in `outputs`."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"site": env.site, "models": models, "threads": 1, "repetitions": repetitions,
                   "target_seconds": target_seconds, "seed": 0, "outputs": outputs}, f)
        spec = f.name
    try:
        proc = subprocess.run(env.command(RUNNER, spec), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EmulationError(f"the emulated A/B did not finish within {timeout} s; the model is too "
                             "large for emulation at this setting. Pass fewer repetitions.") from None
    finally:
        os.unlink(spec)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise EmulationError(f"the aarch64 LiteRT failed on this model under emulation:\n{tail}",
                             proc.returncode)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclasses.dataclass
class _Pair:
    """One emulated A/B: the sparse-stored file and its dense-stored copy, same arithmetic."""

    outputs: dict           # "sparse"/"dense" -> list of arrays; "sparse" is None after a crash
    seconds: dict = None    # variant -> {"median", "min", "runs"}; None after a crash
    crash: str = None       # LiteRT's last words when it failed on the sparse-stored file
    info: dict = None       # the runner's JSON


def _run_pair(env, sparse, dense, repetitions, target_seconds, timeout, outputs):
    try:
        info = _emulate(env, {"sparse": sparse, "dense": dense}, repetitions, target_seconds,
                        timeout, outputs)
    except EmulationError as e:
        if e.returncode is None:
            raise
        # Did LiteRT die on the sparse-stored file? The dense-stored copy alone tells;
        # when it fails too, the emulation itself is broken and that error stands.
        info = _emulate(env, {"dense": dense}, 1, 0.0, timeout, outputs)
        with np.load(outputs) as saved:
            dense_outputs = [saved[f"dense:{i}"] for i in range(len(saved.files))]
        return _Pair({"sparse": None, "dense": dense_outputs}, crash=str(e).splitlines()[-1], info=info)
    with np.load(outputs) as saved:
        got = {name: [saved[k] for k in sorted((k for k in saved.files if k.startswith(name + ":")),
                                               key=lambda k: int(k.split(":")[1]))]
               for name in ("sparse", "dense")}
    seconds = {name: {"median": statistics.median(t), "min": min(t), "runs": t}
               for name, t in info["seconds"].items()}
    return _Pair(got, seconds, info=info)


def _identical(a, b):
    return all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b))


def _max_abs_diff(a, b):
    """Largest |a - b| over all outputs; None when either holds NaN or infinity."""
    diff = max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) for x, y in zip(a, b))
    return diff if np.isfinite(diff) else None


def _has_nan(outputs):
    return any(np.isnan(x).any() for x in outputs if np.issubdtype(x.dtype, np.floating))


def _compare(pair, rtol, inspector):
    """The A/B observations of `pair` and the verdict they give, as keyword arguments."""
    if pair.crash is not None:
        return {"engaged": False, "crashed": pair.crash, "reason": (
            f"LiteRT failed on the sparse-stored file under emulation ({pair.crash}) while the "
            "dense-stored copy ran: the sparse path is broken for this model in this LiteRT. "
            "Do not ship this model with this arithmetic.")}
    sparse, dense = pair.outputs["sparse"], pair.outputs["dense"]
    identical = _identical(sparse, dense)
    nan = _has_nan(sparse) and not _has_nan(dense)
    diff = _max_abs_diff(sparse, dense)
    finite = [np.abs(x[np.isfinite(x)]).astype(np.float64) for x in sparse]
    scale = max((float(x.max()) for x in finite if x.size), default=0.0)
    agree = diff is not None and diff <= rtol * max(scale, 1.0)
    ratio = pair.seconds["dense"]["median"] / pair.seconds["sparse"]["median"]
    best = pair.seconds["dense"]["min"] / pair.seconds["sparse"]["min"]
    engaged, reason = verdict(ratio, identical, inspector, agree, best_ratio=best, nan_outputs=nan)
    return {"engaged": engaged, "reason": reason, "time_ratio": ratio, "time_ratio_best": best,
            "seconds": pair.seconds, "outputs_identical": identical, "max_abs_diff": diff,
            "outputs_agree": agree, "nan_outputs": nan}


def _fp16_report(pairs, requested, inspector):
    fp16, fp32 = pairs["fp16"], pairs["fp32"]
    cpu = bool(fp16.info.get("cpu_fp16_arithmetic"))
    ran = not _identical(fp16.outputs["dense"], fp32.outputs["dense"])
    found = _compare(fp16, AGREE_RTOL["fp16"], inspector)
    engaged, reason = found.pop("engaged"), found.pop("reason")
    if not ran and found.get("crashed") is None:
        engaged = False
        reason = ("XNNPACK ignored the request for fp16 arithmetic: the dense-stored copy gave bitwise "
                  "the same outputs with and without it. " + (
                      "It runs fp16 only on CPUs with ARMv8.2 FP16 arithmetic, which the emulated CPU lacks."
                      if not cpu else "The emulated CPU reports ARMv8.2 FP16 arithmetic, so this LiteRT "
                      "does not act on the request."))
    return Fp16Report(requested_by_file=requested, cpu_fp16_arithmetic=cpu, fp16_arithmetic_ran=ran,
                      sparse_path_engaged=engaged, reason=reason,
                      max_abs_diff_vs_fp32=_max_abs_diff(fp16.outputs["dense"], fp32.outputs["dense"]),
                      **found)


def _with_logits(sparse, dense, folder):
    """Both files with their logits as extra outputs (in `folder`), and how many; as they are if none."""
    copies = []
    for name, source in (("sparse", sparse), ("dense", dense)):
        with open(source, "rb") as f:
            data, added = probes.with_logit_outputs(f.read())
        if not added:
            return sparse, dense, 0
        copies.append(os.path.join(folder, f"{name}_logits.tflite"))
        with open(copies[-1], "wb") as out:
            out.write(data)
    return *copies, added


def check_arm64(path, *, repetitions=DEFAULT_REPETITIONS, target_seconds=0.2, progress=True,
                timeout=1800):
    """Check under aarch64 emulation whether XNNPACK's sparse path engages for `path`.

    Prepares the emulation environment on first use (cached). Returns an `Arm64Report`
    whose `sparse_path_engaged` is the verdict for the file as it is (in the arithmetic it
    asks for). `repetitions` interleaved measurements of about `target_seconds` each are
    taken per variant, single-threaded. For float16 weights, or a file that asks for fp16
    arithmetic, the report's `fp16` holds the verdict with fp16 arithmetic requested (the
    other arithmetic costs a second A/B).
    """
    path = model_path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"expected a .tflite file. Received: {path!r}, which does not exist.")
    if isinstance(repetitions, bool) or not isinstance(repetitions, int) or repetitions < 3:
        raise ValueError(f"repetitions must be an integer >= 3 for a robust median. "
                         f"Received: repetitions={repetitions!r}")
    from spruce.tflite.densify import densify_tflite
    from spruce.tflite.reader import read_tflite

    inspector = _inspect(path)
    with tempfile.TemporaryDirectory(prefix="spruce-arm64-") as tmp:
        dense_path = os.path.join(tmp, "dense.tflite")
        densified = densify_tflite(path, dense_path)
        model = read_tflite(path)
        fp16_weights = precision.has_fp16_weights(model)
        wants_fp16 = precision.requests_fp16_arithmetic(model)
        arithmetic = "fp16" if wants_fp16 else "fp32"
        kinds = {"weights": "float16" if fp16_weights else "float32", "arithmetic": arithmetic}
        if not densified.changed:
            reason = ("the file stores every weight dense (no sparse tensor, no DENSIFY operator), so "
                      "there is nothing to compare: LiteRT's XNNPACK delegate only enables sparse "
                      "inference for weights stored sparse. Export with spruce.export_litert(..., "
                      "sparse=True).")
            if inspector and inspector.get("reasons"):
                reason = ("stored dense, nothing to emulate. spruce inspect: "
                          + "; ".join(inspector["reasons"][:3]))
            agrees = None if inspector is None else not inspector.get("xnnpack_sparse")
            return Arm64Report(model=path, sparse_path_engaged=False, reason=reason, inspector=inspector,
                               inspector_agrees=agrees, densify=_densify_summary(densified), **kinds)
        env = environment.prepare(progress=progress)
        path, dense_path, logits = _with_logits(path, dense_path, tmp)
        if progress:
            print(f"[spruce check-arm64] timing stored-sparse vs stored-dense under emulation "
                  f"({repetitions} interleaved repetitions, 1 thread) ...", file=sys.stderr,
                  flush=True)
        files = {arithmetic: (path, dense_path)}
        if fp16_weights or wants_fp16:
            other = "fp32" if wants_fp16 else "fp16"
            value = precision.FP32_ARITHMETIC if wants_fp16 else precision.FP16_ARITHMETIC
            files[other] = tuple(os.path.join(tmp, f"{name}_{other}.tflite") for name in ("sparse", "dense"))
            for source, target in zip(files[arithmetic], files[other]):
                with open(source, "rb") as f, open(target, "wb") as out:
                    out.write(precision.with_precision(f.read(), value))
        pairs = {}
        for kind, (sparse, dense) in files.items():
            if progress and kind != arithmetic:
                print(f"[spruce check-arm64] ... and again with {kind} arithmetic requested",
                      file=sys.stderr, flush=True)
            pairs[kind] = _run_pair(env, sparse, dense, repetitions, target_seconds, timeout,
                                    os.path.join(tmp, f"outputs_{kind}.npz"))

    main = pairs[arithmetic]
    found = _compare(main, AGREE_RTOL[arithmetic], inspector)
    engaged, reason = found.pop("engaged"), found.pop("reason")
    agrees = None if inspector is None else bool(inspector.get("xnnpack_sparse")) == engaged
    fp16 = _fp16_report(pairs, wants_fp16, inspector) if len(pairs) == 2 else None
    return Arm64Report(
        model=model_path, sparse_path_engaged=engaged, logit_outputs=logits, reason=reason, inspector=inspector,
        inspector_agrees=agrees, densify=_densify_summary(densified), repetitions=repetitions,
        emulator={**env.versions, "invokes_per_repetition": main.info["invokes_per_repetition"],
                  "cpu_fp16_arithmetic": main.info.get("cpu_fp16_arithmetic")},
        fp16=fp16, **kinds, **found)
