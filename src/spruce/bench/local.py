"""`benchmark`: time .tflite models on this machine, interleaved in one process."""

import os

from spruce.bench.report import BenchReport
from spruce.bench.runners import RUNNERS
from spruce.bench.stats import summarize
from spruce.bench.sysinfo import system_info


def check_positive(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}. Received: {name}={value!r}")


def check_paths(paths):
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("benchmark needs at least one .tflite file. Received none.")
    for p in paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"expected a .tflite file. Received: {p!r}, which does not exist.")
    return paths


def with_ratios(models):
    first = models[0]["median"]
    for m in models:
        m["ratio_to_first"] = m["median"] / first
    return models


def check_engines(engine):
    """Engine names from "litert", "litert,spruce" or a list of names; a clear error otherwise."""
    names = engine.split(",") if isinstance(engine, str) else list(engine)
    names = [n.strip() if isinstance(n, str) else n for n in names]
    if not names or any(n not in RUNNERS for n in names) or len(set(names)) != len(names):
        raise ValueError(f"engine must be one of {sorted(RUNNERS)}, or several of them without repeats "
                         f"(\"litert,spruce\"). Received: engine={engine!r}")
    return names


def benchmark(paths, threads=1, runs=50, warmup=5, engine="litert"):
    """Time each model `runs` times after `warmup` runs, interleaved run by run.

    `engine` is one engine or several ("litert,spruce"): then every model runs on each,
    as one entry per (engine, model), engines in the order given. Round i runs every
    entry once (in alternating order, so slow drift of the machine hits all alike).
    Returns a `BenchReport` with per-entry median, quartiles, IQR, min and the ratio
    of each median to the first entry's (the first model on the first engine).
    """
    paths = check_paths(paths)
    check_positive("threads", threads)
    check_positive("runs", runs)
    check_positive("warmup", warmup, 0)
    engines = check_engines(engine)
    entries = [(e, p) for e in engines for p in paths]
    runners = [RUNNERS[e](p, threads) for e, p in entries]
    for r in runners:
        r.time(warmup + 1)  # the first run plans and packs weights: never timed
    times = [[] for _ in runners]
    for i in range(runs):
        order = range(len(runners)) if i % 2 == 0 else reversed(range(len(runners)))
        for k in order:
            times[k].extend(runners[k].time(1))
    models = with_ratios([{"path": p, "engine": e, **summarize(t)} for (e, p), t in zip(entries, times)])
    settings = {"threads": threads, "runs": runs, "warmup": warmup,
                "interleaving": "one run of each model per round, order alternating",
                "timing": "each run timed around one call from Python, on every engine"}
    return BenchReport(engine="+".join(engines), system=system_info(threads), models=models, settings=settings)
