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

The time ratio alone is not a reliable verdict: it depends on how much of the model's
compute sits in its pruned 1x1 convolutions (the TFMOT guide's small model gains ~1.3x,
MobileNet-sized nets 2-3x), and on an emulator sharing a busy host it is noisy.
"""

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile

from spruce._deps import SpruceEnvironmentError
from spruce.arm64 import environment

# A time ratio at or above this, with differing outputs, is an unambiguous engagement;
# below it the report says the gain is modest for this model.
STRONG_RATIO = 1.5
# Differing outputs with the sparse-stored file clearly slower (below this ratio) mean
# LiteRT's reference kernels ran. Between it and 1.0 lies emulation noise on a busy host.
SLOWER_RATIO = 0.9
DEFAULT_REPETITIONS = 15
CAVEAT = (
    "Emulated ratios overstate real-device speedups: emulation changes the relative cost of "
    "the kernels. On a real phone expect less (the TFMOT guide measured 1.4x at 75% sparsity on a "
    "Pixel 4; Fast Sparse ConvNets report 1.3-2.4x). Measure on a device with `spruce bench --adb` "
    "before promising a speedup.")
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner.py")


class EmulationError(SpruceEnvironmentError, RuntimeError):
    """The aarch64 LiteRT failed or timed out under emulation; the message has its last words."""


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

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        lines = [f"model: {self.model}",
                 f"XNNPACK sparse path on aarch64: {'ENGAGED' if self.sparse_path_engaged else 'NOT engaged'}",
                 f"  {self.reason}"]
        if self.time_ratio is not None:
            s = self.seconds
            lines.append(
                f"emulated time, 1 thread, {self.repetitions} interleaved repetitions: "
                f"stored sparse {s['sparse']['median'] * 1e3:.2f} ms, stored dense "
                f"{s['dense']['median'] * 1e3:.2f} ms (median); ratio {self.time_ratio:.2f}x "
                f"(best-of: {self.time_ratio_best:.2f}x)")
            lines.append(f"outputs sparse vs dense storage: max |diff| {self.max_abs_diff:.3g} "
                         f"({'bitwise identical' if self.outputs_identical else 'agree' if self.outputs_agree else 'DISAGREE'})")
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


def _emulate(env, sparse, dense, repetitions, target_seconds, timeout):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"site": env.site, "models": {"sparse": sparse, "dense": dense}, "threads": 1,
                   "repetitions": repetitions, "target_seconds": target_seconds, "seed": 0}, f)
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
        raise EmulationError(f"the aarch64 LiteRT failed on this model under emulation:\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def verdict(ratio, identical, inspector=None, outputs_agree=True, best_ratio=None):
    """(engaged, reason) from the A/B observations; see the module docstring.

    `ratio` compares medians; `best_ratio`, if given, each variant's fastest repetition.
    The reference kernels are slower in every repetition, so "not faster" needs both
    below SLOWER_RATIO: one busy stretch of the host cannot turn a working sparse path
    into a refusal.
    """
    why = ""
    if inspector is not None and inspector.get("reasons") and not inspector.get("xnnpack_sparse"):
        why = " spruce inspect: " + "; ".join(inspector["reasons"][:3])
    if not identical and not outputs_agree:
        return False, ("the sparse-stored file ran other kernels and its outputs DISAGREE with the "
                       "dense-stored copy beyond float rounding: XNNPACK switched part of the model to "
                       "its NCHW layout without a working sparse path (seen with a stride-2 'same' "
                       "depthwise). Do not ship this model as is." + why)
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


def check_arm64(path, *, repetitions=DEFAULT_REPETITIONS, target_seconds=0.2, progress=True,
                timeout=1800):
    """Check under aarch64 emulation whether XNNPACK's sparse path engages for `path`.

    Prepares the emulation environment on first use (cached). Returns an `Arm64Report`
    whose `sparse_path_engaged` is the verdict. `repetitions` interleaved measurements
    of about `target_seconds` each are taken per variant, single-threaded.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"expected a .tflite file. Received: {path!r}, which does not exist.")
    if isinstance(repetitions, bool) or not isinstance(repetitions, int) or repetitions < 3:
        raise ValueError(f"repetitions must be an integer >= 3 for a robust median. "
                         f"Received: repetitions={repetitions!r}")
    from spruce.tflite.densify import densify_tflite

    inspector = _inspect(path)
    with tempfile.TemporaryDirectory(prefix="spruce-arm64-") as tmp:
        dense_path = os.path.join(tmp, "dense.tflite")
        densified = densify_tflite(path, dense_path)
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
                               inspector_agrees=agrees, densify=_densify_summary(densified))
        env = environment.prepare(progress=progress)
        if progress:
            print(f"[spruce check-arm64] timing stored-sparse vs stored-dense under emulation "
                  f"({repetitions} interleaved repetitions, 1 thread) ...", file=sys.stderr,
                  flush=True)
        result = _emulate(env, path, dense_path, repetitions, target_seconds, timeout)

    seconds = {name: {"median": statistics.median(t), "min": min(t), "runs": t}
               for name, t in result["seconds"].items()}
    ratio = seconds["dense"]["median"] / seconds["sparse"]["median"]
    best = seconds["dense"]["min"] / seconds["sparse"]["min"]
    diff, scale = result["max_abs_diff"], result["max_abs_output"]
    identical = bool(result["bitwise_identical"])
    outputs_agree = diff <= 1e-4 * max(scale, 1.0)
    engaged, reason = verdict(ratio, identical, inspector, outputs_agree, best_ratio=best)
    agrees = None if inspector is None else bool(inspector.get("xnnpack_sparse")) == engaged
    return Arm64Report(
        model=path, sparse_path_engaged=engaged, reason=reason, time_ratio=ratio, time_ratio_best=best,
        seconds=seconds, outputs_identical=identical, max_abs_diff=diff,
        outputs_agree=outputs_agree, inspector=inspector, inspector_agrees=agrees,
        densify=_densify_summary(densified), repetitions=repetitions,
        emulator={**env.versions, "invokes_per_repetition": result["invokes_per_repetition"]})
