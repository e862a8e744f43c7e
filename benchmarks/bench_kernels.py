"""Kernel throughput on MobileNetV1-224's layer shapes; prints one JSON document.

For every 1x1 conv of MobileNetV1 (alpha=1, 224x224) it times the dense GEMM
kernel and the sparse kernel at 75% and 90% (random unstructured) sparsity,
interleaved round by round in one process, with the timing loop in native code.
Sparse GFLOP/s count useful FLOPs only (2 * nnz * pixels). Depthwise and entry
conv layers are timed too. Fractions of peak are of the core's FMA throughput
measured in the same run with the vectors of the ISA the kernels ran
(independent FMA chains, _bench.fma_peak_gflops: 512-bit under AVX-512, 256-bit
under AVX2); the nominal figure from /proc/cpuinfo's clock is reported beside it. The timing
loops live in spruce.runtime._bench, built beside the engine.

    PYTHONPATH=src python benchmarks/bench_kernels.py [--rounds 5] [--repeats 20] [--isa auto]
"""

import argparse
import json
import statistics
import sys

import numpy as np

from common import RunRecord, cpu_info, nominal_peak_gflops
from spruce.runtime import _bench, _engine

K = _engine.kernels

# (in_channels, out_channels, height=width) of the 13 pointwise convs.
POINTWISE = [
    (32, 64, 112), (64, 128, 56), (128, 128, 56), (128, 256, 28), (256, 256, 28), (256, 512, 14),
    (512, 512, 14), (512, 512, 14), (512, 512, 14), (512, 512, 14), (512, 512, 14),
    (512, 1024, 7), (1024, 1024, 7),
]
# (channels, input height=width, stride, padding top/left/bottom/right) of the 13 depthwise convs.
DEPTHWISE = [
    (32, 112, 1, (1, 1, 1, 1)), (64, 112, 2, (0, 0, 1, 1)), (128, 56, 1, (1, 1, 1, 1)),
    (128, 56, 2, (0, 0, 1, 1)), (256, 28, 1, (1, 1, 1, 1)), (256, 28, 2, (0, 0, 1, 1)),
    *[(512, 14, 1, (1, 1, 1, 1))] * 5, (512, 14, 2, (0, 0, 1, 1)), (1024, 7, 1, (1, 1, 1, 1)),
]
SPARSITIES = [0.75, 0.9]


def median_ms(samples):
    return 1e3 * statistics.median(samples)


def bench_pointwise(rng, rounds, repeats, isa):
    rows = []
    for cin, cout, hw in POINTWISE:
        p = hw * hw
        x = rng.standard_normal((cin, p)).astype(np.float32)
        bias = rng.standard_normal(cout).astype(np.float32)
        w = rng.standard_normal((cout, cin)).astype(np.float32)
        sparse = {}
        for s in SPARSITIES:
            ws = w.copy()
            ws[rng.random(w.shape) < s] = 0.0
            sparse[s] = ws
        times = {"dense": [], **{s: [] for s in SPARSITIES}}
        for _ in range(rounds):  # A/B interleaved
            times["dense"].extend(_bench.time_gemm(w, x, bias, repeats=repeats, warmup=2, isa=isa))
            for s in SPARSITIES:
                times[s].extend(_bench.time_spmm(sparse[s], x, bias, repeats=repeats, warmup=2, isa=isa))
        dense_ms = median_ms(times["dense"])
        row = {
            "shape": f"{cin}->{cout} @ {hw}x{hw}",
            "macs_dense": cin * cout * p,
            "dense": {"ms": dense_ms, "gflops": 2 * cin * cout * p / dense_ms / 1e6},
        }
        for s in SPARSITIES:
            ms, nnz = median_ms(times[s]), int(np.count_nonzero(sparse[s]))
            row[f"sparse_{int(s * 100)}"] = {
                "ms": ms,
                "nnz": nnz,
                "useful_gflops": 2 * nnz * p / ms / 1e6,
                "speedup_vs_dense": dense_ms / ms,
                "spread_ms": [1e3 * min(times[s]), 1e3 * max(times[s])],
            }
        rows.append(row)
    return rows


def bench_depthwise(rng, rounds, repeats, isa):
    rows = []
    for c, hw, stride, pad in DEPTHWISE:
        w = rng.standard_normal((c, 3, 3)).astype(np.float32)
        x = rng.standard_normal((c, hw, hw)).astype(np.float32)
        samples = []
        for _ in range(rounds):
            samples.extend(_bench.time_dwconv_chw(w, x, stride=stride, padding=list(pad), repeats=repeats, warmup=2, isa=isa))
        out = (hw + pad[0] + pad[2] - 3) // stride + 1
        ms = median_ms(samples)
        rows.append({"shape": f"dw3x3/{stride} {c} @ {hw}x{hw}", "ms": ms, "gflops": 2 * 9 * c * out * out / ms / 1e6})
    return rows


def bench_entry(rng, rounds, repeats, isa):
    w = rng.standard_normal((32, 3, 3, 3)).astype(np.float32)
    x = rng.random((224, 224, 3)).astype(np.float32)
    samples = []
    for _ in range(rounds):
        samples.extend(_bench.time_conv_hwc2chw(w, x, stride=2, padding=[0, 0, 1, 1], repeats=repeats, warmup=2, isa=isa))
    ms = median_ms(samples)
    return {"shape": "conv3x3/2 3->32 @ 224x224 HWC->CHW", "ms": ms, "gflops": 2 * 27 * 32 * 112 * 112 / ms / 1e6}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per round (default 10)")
    parser.add_argument("--isa", default="auto", choices=["auto", "avx512", "avx2", "portable"])
    args = parser.parse_args(argv)
    record = RunRecord("bench_kernels")
    rng = np.random.default_rng(0)
    model, mhz = cpu_info()
    isa = K.default_isa() if args.isa == "auto" else args.isa
    nominal_peak = nominal_peak_gflops(mhz, isa)
    peak = _bench.fma_peak_gflops(0.5, isa)

    pointwise = bench_pointwise(rng, args.rounds, args.repeats, args.isa)
    depthwise = bench_depthwise(rng, args.rounds, args.repeats, args.isa)
    entry = bench_entry(rng, args.rounds, args.repeats, args.isa)

    totals = {"dense_ms": sum(r["dense"]["ms"] for r in pointwise)}
    for s in SPARSITIES:
        key = f"sparse_{int(s * 100)}"
        totals[f"{key}_ms"] = sum(r[key]["ms"] for r in pointwise)
        totals[f"{key}_speedup"] = totals["dense_ms"] / totals[f"{key}_ms"]
    totals["depthwise_ms"] = sum(r["ms"] for r in depthwise)
    totals["entry_ms"] = entry["ms"]
    if peak:
        for r in pointwise:
            r["dense"]["fraction_of_peak"] = r["dense"]["gflops"] / peak
            for s in SPARSITIES:
                r[f"sparse_{int(s * 100)}"]["fraction_of_peak"] = r[f"sparse_{int(s * 100)}"]["useful_gflops"] / peak

    record.timing_ended()
    report = {
        "benchmark": "spruce kernels, MobileNetV1-224 layer shapes, batch 1, 1 thread",
        **record.facts(isa=isa),
        "cpu": model,
        "isa": isa,
        "clock_mhz_nominal": mhz,
        "peak_gflops_measured": peak,
        "peak_gflops_nominal": nominal_peak,
        "peak_note": "fractions are of the measured peak of this ISA's vectors (independent FMA chains "
                     "on one core); nominal = 2 FMA units x lanes (8 AVX2, 16 AVX-512) x 2 FLOPs x "
                     "nominal clock, which turbo exceeds",
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "rounds": args.rounds,
        "repeats_per_round": args.repeats,
        "pointwise": pointwise,
        "depthwise": depthwise,
        "entry_conv": entry,
        "totals": totals,
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
