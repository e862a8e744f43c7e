"""How much two cores of this machine give spruce's engine when nothing is shared.

Two processes, each with a one-thread engine on the same model, pinned to CPU 0
and CPU 1. Phases alternate: "solo" (the CPU 0 process runs alone) and "duo"
(both run). Per phase pair, the duo throughput over the solo one,
solo_time * (1 / duo_time_cpu0 + 1 / duo_time_cpu1), is the ceiling of any
2-thread speed-up on this machine: 2.0 when the cores do not slow each other,
less when they share caches, memory bandwidth or a busy neighbour. Compare it
with bench_engine.py's two_thread_scaling (one image split across 2 threads).
On a VM the host may slow or move one vCPU for seconds at a time, so the
ratio moves from one phase pair to the next: read the median over several
phases, not one (docs/benchmarks.md).
Prints one JSON document (Linux only: needs sched_setaffinity), with the CPU,
versions, git commit, date and load that benchmarks/render_results.py puts on
the results page. Usage:

    PYTHONPATH=src python benchmarks/bench_two_cores.py MODEL.tflite [--phases 8] [--seconds 4] \
        > benchmarks/results/bench_two_cores/run1.json
"""

import argparse
import json
import multiprocessing as mp
import os
import queue
import statistics
import sys
import time

from common import RunRecord


def worker(cpu, path, go, stop, results):
    os.sched_setaffinity(0, {cpu})
    from spruce.runtime import Engine

    engine = Engine(path, num_threads=1)
    engine.benchmark(5, 2)
    while not stop.is_set():
        if not go.is_set():
            time.sleep(0.01)
            continue
        results.put((cpu, time.time(), engine.benchmark(5, 0).median))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a .tflite the engine runs")
    parser.add_argument("--phases", type=int, default=8, help="solo/duo phase pairs")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each phase")
    args = parser.parse_args(argv)
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        print("bench_two_cores needs Linux and at least 2 CPUs", file=sys.stderr)
        return 2
    record = RunRecord("bench_two_cores")
    cpus = sorted(os.sched_getaffinity(0))[:2]
    ctx = mp.get_context("spawn")
    results, stop = ctx.Queue(), ctx.Event()
    go = [ctx.Event(), ctx.Event()]
    procs = [ctx.Process(target=worker, args=(cpu, args.model, go[i], stop, results)) for i, cpu in enumerate(cpus)]
    for p in procs:
        p.start()
    rows, windows = [], []
    try:
        time.sleep(8)  # both loaded and warm
        for _ in range(args.phases):
            for mode in ("solo", "duo"):
                go[0].set()
                (go[1].set if mode == "duo" else go[1].clear)()
                start = time.time()
                time.sleep(args.seconds)
                windows.append((mode, start + 0.5, time.time()))  # skip the first half second
    finally:
        stop.set()
        deadline = time.time() + 30
        while any(p.is_alive() for p in procs) and time.time() < deadline:
            try:
                rows.append(results.get(timeout=0.5))
            except queue.Empty:
                pass
        for p in procs:
            p.join(timeout=5)
    while True:
        try:
            rows.append(results.get_nowait())
        except queue.Empty:
            break

    def median_in(cpu, a, b):
        times = [t for c, stamp, t in rows if c == cpu and a <= stamp < b]
        return statistics.median(times) if times else None

    solo, duo0, duo1 = [], [], []
    for mode, a, b in windows:
        if mode == "solo":
            solo.append(median_in(cpus[0], a, b))
        else:
            duo0.append(median_in(cpus[0], a, b))
            duo1.append(median_in(cpus[1], a, b))
    record.timing_ended()
    ratios = [s * (1 / d0 + 1 / d1) for s, d0, d1 in zip(solo, duo0, duo1) if None not in (s, d0, d1)]
    print(json.dumps({
        "benchmark": "two one-thread spruce engines on two cores vs one alone",
        **record.facts(),
        "model": args.model, "cpus": cpus, "phases": args.phases, "seconds_per_phase": args.seconds,
        "solo_ms": [round(v * 1e3, 3) for v in solo if v],
        "duo_ms_cpu0": [round(v * 1e3, 3) for v in duo0 if v],
        "duo_ms_cpu1": [round(v * 1e3, 3) for v in duo1 if v],
        "duo_throughput_vs_solo": [round(v, 3) for v in ratios],
        "median_duo_throughput_vs_solo": round(statistics.median(ratios), 3) if ratios else None,
    }, indent=2))
    return 0 if ratios else 1


if __name__ == "__main__":
    sys.exit(main())
