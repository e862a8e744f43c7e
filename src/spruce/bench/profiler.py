"""`profile`: where the time goes, operator by operator, on spruce's engine.

For each model: every engine operator's median time over many runs, its kernel, the share
of its TFLite operator's weights that are zero, its multiply-adds and the GFLOP/s they run
at, then the same per kernel family. It answers what a whole-model latency cannot: which
layers pruning made cheap, and which now dominate.
"""

import dataclasses
import os

from spruce.bench.local import check_paths, check_positive
from spruce.bench.sysinfo import system_info


@dataclasses.dataclass
class ProfileReport:
    """What `profile` measured: `to_dict()` for JSON, `str()` the tables."""

    system: dict      # spruce.bench.sysinfo.system_info()
    models: list      # per model: {"path", "threads", "runs", "run_median", "operators", "families"}

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        lines = []
        s = self.system
        if s.get("cpu"):
            lines.append(f"cpu: {s['cpu']} ({s.get('machine', '?')}, {s.get('cpu_count', '?')} logical CPUs)")
        for m in self.models:
            lines += ["", f"{m['path']}: spruce engine, {m['threads']} thread(s), per-operator medians of "
                          f"{m['runs']} runs (whole run: {m['run_median'] * 1e6:.1f} us median)"]
            lines += _table(m["operators"], "operator", per_operator=True)
            lines += [""] + _table(m["families"], "kernel family", per_operator=False)
        lines += ["", "MFLOP: 2 x the multiply-adds of nonzero weights; GFLOP/s: MFLOP over the median time; "
                      "zeros: the operator's weights that are zero."]
        return "\n".join(lines)


def _table(rows, first, per_operator):
    total = sum(r["seconds"] for r in rows)
    width = max([len(first), 5] + [len(r["name"]) for r in rows])
    head = f"{first:<{width}}  " + (f"{'kernel':<16} {'zeros':>6} " if per_operator else f"{'ops':>4} ")
    out = [head + f"{'MFLOP':>8} {'median us':>10} {'share':>6} {'GFLOP/s':>8}"]
    for r in rows:
        if per_operator:
            zeros = "" if r["weight_sparsity"] is None else f"{r['weight_sparsity']:.0%}"
            middle = f"{r['kernel']:<16} {zeros:>6} "
        else:
            middle = f"{r['ops']:>4} "
        gflops = "" if r["gflops_per_s"] is None else f"{r['gflops_per_s']:.1f}"
        share = r["seconds"] / total if total else 0.0
        out.append(f"{r['name']:<{width}}  {middle}{r['flops'] / 1e6:8.3f} {r['seconds'] * 1e6:10.2f} "
                   f"{share:6.1%} {gflops:>8}".rstrip())
    blank = f"{'':<16} {'':>6} " if per_operator else f"{'':>4} "
    out.append(f"{'total':<{width}}  {blank}{sum(r['flops'] for r in rows) / 1e6:8.3f} {total * 1e6:10.2f}")
    return out


def _gflops(flops, seconds):
    return flops / seconds / 1e9 if flops and seconds > 0 else None


def profile_model(path, threads=1, runs=100, warmup=5):
    """One model's per-operator profile (a dict, as in `ProfileReport.models`)."""
    from spruce.runtime import Engine
    from spruce.runtime.loader import operator_name

    engine = Engine(path, num_threads=threads)
    engine.benchmark(runs=max(warmup, 1), warmup=0)  # warms every operator before the profile
    layers = {operator_name(layer.opcode, layer.index): layer for layer in engine.layers}
    operators, families = [], {}
    for op in engine.profile(runs):
        # Helper ops an operator adds (a layout change before a classifier) are named
        # "<operator>/<what>" and count towards their operator's weights.
        layer = layers.get(op["name"].split("/")[0])
        operators.append({"name": op["name"], "kernel": op["family"],
                          "weight_sparsity": layer.sparsity if layer is not None else None,
                          "flops": op["flops"], "seconds": op["seconds"],
                          "gflops_per_s": _gflops(op["flops"], op["seconds"])})
        f = families.setdefault(op["family"], {"name": op["family"], "flops": 0.0, "seconds": 0.0, "ops": 0})
        f["flops"] += op["flops"]
        f["seconds"] += op["seconds"]
        f["ops"] += 1
    for f in families.values():
        f["gflops_per_s"] = _gflops(f["flops"], f["seconds"])
    run_median = engine.benchmark(runs=runs, warmup=0).median
    return {"path": os.fspath(path), "threads": threads, "runs": runs, "run_median": run_median,
            "operators": operators,
            "families": sorted(families.values(), key=lambda f: f["seconds"], reverse=True)}


def profile(paths, threads=1, runs=100, warmup=5):
    """Per-operator and per-kernel-family times of each model on spruce's engine.

    Each operator's time is its median over `runs` profiled runs (after `warmup` runs);
    the whole run's median is measured too, since the profile's timers add a little.
    Returns a `ProfileReport`.
    """
    paths = check_paths(paths)
    check_positive("threads", threads)
    check_positive("runs", runs)
    check_positive("warmup", warmup, 0)
    return ProfileReport(system=system_info(threads),
                         models=[profile_model(p, threads, runs, warmup) for p in paths])
