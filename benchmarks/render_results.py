"""Render the JSON documents a benchmark printed into a results page, and the README's table.

Each benchmark script prints one JSON document per run. Given one or more of them
(say five runs of bench_engine.py), this writes `benchmarks/results/<script>.md`:
what the figures were measured on (CPU, ISA, threads, library versions, the
compiler of the engine, the spruce commit, the dates, the machine's load), the run
parameters, and each figure's median across the runs with its range. With
`--readme`, it also replaces the block between `<!-- results:<script> -->` and
`<!-- /results -->` in that file with the headline table, so no table is kept by
hand. Usage:

    PYTHONPATH=src python benchmarks/bench_engine.py > benchmarks/results/bench_engine/run1.json
    python benchmarks/render_results.py benchmarks/results/bench_engine/*.json [--readme README.md]

Runs taken on different commits, CPUs or parameters are refused: a median across
them would describe none of them. Files are written to a temporary path and renamed.
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
README_END = "<!-- /results -->"

# bench_engine's exports: name in its JSON keys -> how the pages call it.
ENGINE_MODELS = {"0": "dense (0% zeros)", "75": "75% sparse", "90": "90% sparse",
                 "90_blocks": "90% sparse in 1x4 blocks"}


class ResultsError(ValueError):
    """The JSON documents cannot be rendered as given; the message says why and what to do."""


# ---- reading -------------------------------------------------------------------------

def load_runs(paths):
    """The JSON documents in `paths`, each with the file it came from under "_file"."""
    if not paths:
        raise ResultsError("no JSON file given. Pass the files a benchmark printed, e.g. "
                           "benchmarks/results/bench_engine/*.json")
    runs = []
    for path in paths:
        try:
            with open(path) as f:
                document = json.load(f)
        except FileNotFoundError:
            raise ResultsError(f"{path} does not exist. Pass the JSON files a benchmark printed.") from None
        except json.JSONDecodeError as e:
            raise ResultsError(f"{path} is not one JSON document ({e}). Save only the benchmark's "
                               "stdout to it (its progress goes to stderr).") from None
        if not isinstance(document, dict):
            raise ResultsError(f"{path} holds a JSON {type(document).__name__}; expected the object "
                               "a benchmark prints.")
        document["_file"] = os.path.basename(path)
        runs.append(document)
    return runs


def script_of(run):
    """Which benchmark printed `run`: its "script" key, or the shape of older documents."""
    if run.get("script"):
        return run["script"]
    if "speedups" in run and "times" in run:
        return "bench_engine"
    if "median_duo_throughput_vs_solo" in run:
        return "bench_two_cores"
    raise ResultsError(f"{run['_file']}: no \"script\" key and not the shape of a known benchmark. "
                       f"Known: {', '.join(sorted(RENDERERS))}.")


def _commit(run):
    git = run.get("git") or {}
    return git.get("commit")


def check_same_setting(runs, parameters):
    """Raise unless every run has the same script, commit, CPU and `parameters` (a function
    of one run): medians are only taken over repeats of one measurement."""
    facets = {"script": script_of, "commit": _commit, "cpu": lambda r: r.get("cpu"),
              "parameters": parameters}
    for facet, read in facets.items():
        values = {json.dumps(read(r), sort_keys=True) for r in runs}
        if len(values) > 1:
            by_file = ", ".join(f"{r['_file']}: {json.dumps(read(r), sort_keys=True)}" for r in runs)
            raise ResultsError(
                f"the runs differ in their {facet} ({by_file}). Render the runs of one setting at a "
                "time: move the others out of the folder.")


# ---- formatting ----------------------------------------------------------------------

def spread(values, digits=2, unit=""):
    """"median (min-max)" across runs; just the value for one run; "-" for none."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    median = f"{statistics.median(values):.{digits}f}{unit}"
    if len(values) == 1 or min(values) == max(values):
        return median
    return f"{median} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _count(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _short(commit):
    return commit[:7] if commit else "unknown"


def commit_text(runs):
    commit = _commit(runs[0])
    if not commit:
        return "unknown (the JSON has no \"git\" key)"
    dirty = sum(bool((r.get("git") or {}).get("dirty")) for r in runs)
    if dirty:
        return f"{_short(commit)}, with uncommitted changes in {dirty} of {len(runs)} runs"
    return _short(commit)


def dates_text(runs):
    dates = sorted(r["date"] for r in runs if r.get("date"))
    if not dates:
        return "unknown (the JSON has no \"date\" key)"
    first, last = dates[0][:16].replace("T", " "), dates[-1][:16].replace("T", " ")
    return f"{first} UTC" if first == last else f"{first} to {last} UTC"


def versions_text(runs):
    versions = runs[0].get("versions", {})
    names = {"tensorflow": "TensorFlow", "keras": "Keras", "ai_edge_litert": "ai-edge-litert (LiteRT)",
             "ai-edge-litert": "ai-edge-litert (LiteRT)", "numpy": "numpy", "python": "Python",
             "spruce": "spruce"}
    parts = [f"{label} {versions[key]}" for key, label in names.items() if versions.get(key)]
    if versions.get("engine_compiler"):
        gcc = re.fullmatch(r"GCC: \((.*)\) (\S+)", versions["engine_compiler"])
        compiler = f"GCC {gcc.group(2)} ({gcc.group(1)})" if gcc else versions["engine_compiler"]
        parts.append(f"engine built with {compiler}")
    return ", ".join(parts) or "unknown"


def load_text(runs):
    loads = [v for r in runs for v in (r.get("load_average_1min") or {}).values() if v is not None]
    if not loads:
        return None
    text = spread(loads, 1)
    return f"{text} on {runs[0].get('cores', '?')} cores" + (" (median, range)" if "(" in text else "")


def busy_text(runs):
    """A warning when the 1-minute load average exceeded the core count during any run: other
    processes then took CPU time from the benchmark, so its figures understate a quiet machine."""
    cores = runs[0].get("cores")
    loads = [v for r in runs for v in (r.get("load_average_1min") or {}).values() if v is not None]
    if not cores or not loads or max(loads) <= cores:
        return None
    return (f"The machine was busy: its load average reached {max(loads):.1f} on {cores} cores while "
            "these runs were timed, so other processes took CPU time from them. Re-run on a quiet "
            "machine before quoting these figures.")


def _write(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _values(runs, *keys):
    """The value at `keys` in each run (None where missing)."""
    out = []
    for run in runs:
        value = run
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        out.append(value)
    return out


def _run_cells(run):
    """The first cells of a run's row on a page: its file, date (UTC) and load at start / end."""
    load = " / ".join(f"{v:.1f}" for v in (run.get("load_average_1min") or {}).values() if v is not None)
    return [run["_file"], (run.get("date") or "-")[:19].replace("T", " "), load or "-"]


def _goal_runs_table(runs):
    """One line per run: file, date, load and whether it met every goal."""
    rows = [[*_run_cells(r), "yes" if r.get("all_goals_met") else "no"] for r in runs]
    return table(["file", "date (UTC)", "load start / end", "every goal met"], rows)


def _page_head(title, script, runs, setting, more=""):
    """A results page's title, provenance, setting table, the benchmark's own notes, the
    busy-machine warning and how to read the figures (`more` adds to that)."""
    first = runs[0]
    page = [
        f"# {title}",
        "",
        "Generated by `benchmarks/render_results.py` from "
        + ", ".join(f"`{r['_file']}`" for r in runs)
        + f" (beside this page, in `{script}/`). Do not edit: re-run the benchmark and re-render. "
          "`docs/benchmarks.md` says how to read these figures.",
        "",
        table(["", ""], setting),
        "",
    ]
    if first.get("timing"):
        page += [f"Timing: {first['timing']}.", ""]
    if first.get("note"):
        page += [f"Note from the benchmark: {first['note']}.", ""]
    if busy_text(runs):
        page += [f"**{busy_text(runs)}**", ""]
    return page + ["Each figure is the median across runs of that run's figure (itself from medians over "
                   "its timed runs); the range across runs follows in brackets." + more, ""]


# ---- bench_engine --------------------------------------------------------------------

def _engine_parameters(run):
    return {"model": run.get("model"), "rounds": run.get("rounds"), "runs": run.get("runs_per_round")}


def _engine_models(runs):
    """The exports a run timed, in ENGINE_MODELS' order, then any others."""
    names = [re.fullmatch(r"spruce_(.+)_vs_litert_dense", key).group(1) for key in runs[0].get("speedups", {})]
    return [n for n in ENGINE_MODELS if n in names] + sorted(n for n in names if n not in ENGINE_MODELS)


def _two_thread_rows(runs):
    """(figure, model, values) for one image split across 2 threads and for batches."""
    rows = []
    for key in sorted(runs[0].get("two_thread_scaling", {})):
        name = re.fullmatch(r"spruce_(.+)_2threads_vs_1thread", key).group(1)
        rows.append(("one image split across the threads (latency)", name,
                     _values(runs, "two_thread_scaling", key)))
    batches = runs[0].get("two_thread_throughput_on_batches", {})

    def order(key):
        name, size = re.fullmatch(r"spruce_(.+)_batch(\d+)_2threads_vs_1thread", key).groups()
        return int(size), name

    for key in sorted(batches, key=order):
        size, name = order(key)
        rows.append((f"batches of {size} images, one per thread at a time (throughput)", name,
                     _values(runs, "two_thread_throughput_on_batches", key)))
    return rows


def render_engine(runs):
    """(results page, README block) for bench_engine runs."""
    check_same_setting(runs, _engine_parameters)
    first = runs[0]
    model = first.get("model", {})
    size = (model.get("input") or [None, "?", "?"])[1:3]
    quick = any(bool((r.get("arguments") or {}).get("quick")) for r in runs)
    models = _engine_models(runs)
    label = lambda name: ENGINE_MODELS.get(name, name)  # noqa: E731
    litert = _values(runs, "times", "litert_dense", "median_ms")

    setting = [
        ("CPU", f"{first.get('cpu', 'unknown')}, {first.get('cores', '?')} cores, engine kernels "
                f"{first.get('isa', '?')}"),
        ("core's FMA peak, measured", spread(_values(runs, "peak_gflops_per_core_measured"), 1, " GFLOP/s")),
        ("threads", "1, except the two-thread figures"),
        ("versions", versions_text(runs)),
        ("spruce commit", commit_text(runs)),
        ("date", dates_text(runs)),
        ("model", f"MobileNetV1 {size[0]}x{size[1]}x3, alpha {model.get('alpha', '?')}, "
                  f"{model.get('padding', '?')} padding, 1x1 convolutions pruned by magnitude, batch 1"
                  + (" (a --quick smoke run, not a measurement)" if quick else "")),
        ("runs", f"{_count(len(runs), 'run')} of the script, each {first.get('rounds', '?')} interleaved rounds x "
                 f"{first.get('runs_per_round', '?')} timed runs per engine"),
    ]
    load = load_text(runs)
    if load:
        setting.append(("load average (1 min) while timing", load))
    page = _page_head("bench_engine: spruce's engine against LiteRT on MobileNetV1", "bench_engine", runs, setting)

    page += ["## One thread: spruce's engine against LiteRT (XNNPACK) on the dense export", ""]
    rows = [[label(n), spread(litert), spread(_values(runs, "times", f"spruce_{n}", "median_ms")),
             spread(_values(runs, "speedups", f"spruce_{n}_vs_litert_dense"), unit="x"),
             spread(_values(runs, "speedups_from_fastest_runs", f"spruce_{n}_vs_litert_dense"), unit="x")]
            for n in models]
    page += [table(["model", "LiteRT dense, ms", "spruce, ms", "speed-up (medians)",
                    "speed-up (fastest runs)"], rows), ""]

    page += ["## Two threads against one (spruce's engine)", ""]
    rows = [[figure, label(name), spread(values, unit="x")] for figure, name, values in _two_thread_rows(runs)]
    page += [table(["figure", "model", "2 threads / 1 thread"], rows), ""]

    goals = sorted(first.get("goals", {}))
    if goals:
        page += ["## The benchmark's goals", "",
                 table(["goal", "runs that met it"],
                       [[g.replace("_", " "), f"{sum(bool(v) for v in _values(runs, 'goals', g))} of {len(runs)}"]
                        for g in goals]), ""]

    if first.get("kernel_families"):
        page += ["## Time per kernel family, 1 thread", "",
                 "`ms` sums the family's per-operator medians, `best ms` their fastest times; GFLOP/s "
                 "count useful work (a sparse layer's nonzeros only) against the measured FMA peak.", ""]
    for name in models:
        families = first.get("kernel_families", {}).get(f"spruce_{name}")
        if not families:
            continue
        page += [f"### {label(name)}", ""]
        rows = []
        for family in families:
            key = ("kernel_families", f"spruce_{name}", family)
            rows.append([family, families[family].get("ops", "-"),
                         spread(_values(runs, *key, "ms"), 3), spread(_values(runs, *key, "best_ms"), 3),
                         spread([v or None for v in _values(runs, *key, "gflops_per_s")], 1),
                         spread([None if v is None else 100 * v for v in _values(runs, *key, "fraction_of_peak")],
                                0, "%")])
        page += [table(["family", "operators", "ms", "best ms", "GFLOP/s", "of peak"], rows), ""]
    fractions = [f.get("fraction_of_peak") or 0 for r in runs for fam in r.get("kernel_families", {}).values()
                 for f in fam.values()]
    if fractions and max(fractions) > 1:
        page += ["Fractions above 100% mean that the FMA peak was measured while other processes took "
                 "the core (see its range above): read the GFLOP/s instead.", ""]

    page += ["## Runs", ""]
    rows = [[*_run_cells(r),
             f"{r['times']['litert_dense']['median_ms']:.2f}",
             *(f"{r['speedups'][f'spruce_{n}_vs_litert_dense']:.2f}x" for n in models)]
            for r in runs]
    page += [table(["file", "date (UTC)", "load before / after", "LiteRT dense, ms",
                    *(label(n) for n in models)], rows), ""]

    versions = first.get("versions", {})
    compiler = re.search(r"(GCC|clang)\S* .*?(\d+\.\d+(\.\d+)?)\s*$", versions.get("engine_compiler") or "")
    facts = [f"{first.get('cpu', 'unknown CPU')} ({first.get('isa', '?')} kernels, {first.get('cores', '?')} cores)",
             *(f"{label_} {versions[key]}" for key, label_ in
               (("tensorflow", "TensorFlow"), ("ai_edge_litert", "LiteRT"), ("numpy", "numpy"))
               if versions.get(key)),
             *([f"{compiler.group(1)} {compiler.group(2)}"] if compiler else []),
             f"spruce {commit_text(runs)}", dates_text(runs).split(" ")[0] if first.get("date") else "date unknown",
             f"median of {_count(len(runs), 'run')}" + (" (range)" if len(runs) > 1 else "")
             + (", a --quick smoke run" if quick else "")]
    rows = [[label(n), spread(litert), spread(_values(runs, "times", f"spruce_{n}", "median_ms")),
             spread(_values(runs, "speedups", f"spruce_{n}_vs_litert_dense"), unit="x")] for n in models]
    throughput = [(f, n, v) for f, n, v in _two_thread_rows(runs) if n == "90" and "batches" in f]
    if throughput:
        figure, _, values = throughput[-1]
        images = re.search(r"batches of (\d+)", figure).group(1)
        rows.append([f"90% sparse, 2 threads, batches of {images}", "", "",
                     f"{spread(values, unit='x')} the 1-thread throughput"])
    readme = [
        f"MobileNetV1 at {size[0]}x{size[1]}, batch 1, one thread, its 1x1 convolutions pruned by magnitude: "
        "spruce's engine on each export against LiteRT (XNNPACK) on the dense export.",
        "",
        table(["model", "LiteRT, ms", "spruce, ms", "speed-up"], rows),
        "",
        " · ".join(facts) + " · [all figures](benchmarks/results/bench_engine.md)",
    ]
    if busy_text(runs):
        readme += ["", busy_text(runs)]
    return "\n".join(page), "\n".join(readme)


# ---- bench_two_cores -----------------------------------------------------------------

def _two_cores_parameters(run):
    return {"model": os.path.basename(run.get("model", "")), "phases": run.get("phases"),
            "seconds_per_phase": run.get("seconds_per_phase")}


def render_two_cores(runs):
    """(results page, README block) for bench_two_cores runs."""
    check_same_setting(runs, _two_cores_parameters)
    first = runs[0]
    setting = [
        ("CPU", f"{first.get('cpu', 'unknown')}, CPUs {first.get('cpus', '?')}"),
        ("versions", versions_text(runs)),
        ("spruce commit", commit_text(runs)),
        ("date", dates_text(runs)),
        ("model", f"`{os.path.basename(first.get('model', '?'))}`"),
        ("runs", f"{_count(len(runs), 'run')} of the script, each {first.get('phases', '?')} solo/duo phase pairs of "
                 f"{first.get('seconds_per_phase', '?')} s"),
    ]
    load = load_text(runs)
    if load:
        setting.append(("load average (1 min)", load))
    phases = [v for r in runs for v in r.get("duo_throughput_vs_solo", [])]
    busy = busy_text(runs)
    page = [
        "# bench_two_cores: two one-thread engines on two cores against one alone",
        "",
        "Generated by `benchmarks/render_results.py` from "
        + ", ".join(f"`{r['_file']}`" for r in runs)
        + " (beside this page, in `bench_two_cores/`). Do not edit: re-run the benchmark and re-render.",
        "",
        table(["", ""], setting),
        "",
        *([f"**{busy}**", ""] if busy else []),
        "The duo throughput over the solo one is the ceiling of any two-thread speed-up on this "
        "machine (2.0 when the cores do not slow each other).",
        "",
        table(["figure", "value"], [
            ["median over phases, per run: median across runs (range)",
             spread(_values(runs, "median_duo_throughput_vs_solo"), unit="x")],
            ["single phases: median (range)", spread(phases, unit="x")],
            ["phases", str(len(phases))],
        ]),
        "",
    ]
    ceiling = spread(_values(runs, "median_duo_throughput_vs_solo"), unit="x")
    readme = (f"Two one-thread engines on two cores: {ceiling} "
              f"the throughput of one ({first.get('cpu', 'unknown CPU')}, spruce {commit_text(runs)}, "
              f"{dates_text(runs)}; [details](benchmarks/results/bench_two_cores.md)).")
    return "\n".join(page), readme


# ---- bench_apps ----------------------------------------------------------------------

# bench_apps' exports: name in its JSON keys -> how the pages call it.
APPS_EXPORTS = {"dense": "dense (0% zeros)", "90": "1x1 convs 90% sparse",
                "all90": "every conv but the stem 90% sparse", "all75": "every conv but the stem 75% sparse"}
# The headline table's column of each export, and the line that explains them.
APPS_COLUMNS = {"dense": "spruce dense", "90": "1x1 90%", "all90": "all 90%", "all75": "all 75%"}
APPS_LEGEND = ("Speed-ups of spruce's engine over LiteRT on the dense export. 1x1 90%: every 1x1 convolution "
               "zeroed to 90% by magnitude; all: every convolution but the stem (what "
               "`PruneForLatencyOnSpruce()` prunes); where that is exactly the 1x1 convolutions, all 90% is "
               "the 1x1 file. - : not exported for this net.")


def _apps_parameters(run):
    return {"model": run.get("model"), "rounds": run.get("rounds"), "runs": run.get("runs_per_round"),
            "nets": sorted(run.get("nets", {}))}


def _apps_exports(runs, net):
    """The exports of `net` with a speed-up, in APPS_EXPORTS' order, then any others."""
    keys = runs[0]["nets"][net].get("speedups", {})
    names = [re.fullmatch(r"spruce_(.+)_vs_litert_dense", key).group(1) for key in keys]
    return [n for n in APPS_EXPORTS if n in names] + sorted(n for n in names if n not in APPS_EXPORTS)


def _apps_label(net_result, name):
    label = APPS_EXPORTS.get(name, name)
    if name == "all90" and net_result.get("policy_prunes_only_1x1"):
        return f"{label} (the 1x1 export: the policy prunes only the 1x1 convs)"
    return label


def _goals_met(runs, *keys):
    """"n of N" per goal under `keys` (the goals dict of each run), or [] when there are none."""
    goals = _values(runs[:1], *keys)[0] or {}
    return [[goal.replace("_", " "), f"{sum(bool(v) for v in _values(runs, *keys, goal))} of {len(runs)}"]
            for goal in goals]


def _worst(errors):
    """The largest of the runs' errors, in scientific notation ("-" for none)."""
    errors = [e for e in errors if e is not None]
    return f"{max(errors):.1e}" if errors else "-"


def _apps_net_section(runs, net):
    first = runs[0]["nets"][net]
    lines = [f"### {net}", ""]
    if first.get("refused"):
        operators = ", ".join(f"{op} x{n}" for op, n in first.get("operators", {}).items())
        return lines + [f"spruce's engine refused this net: {first['refused']}", "",
                        f"Operators of its dense export: {operators or 'unknown'}.", ""]
    litert = _values(runs, "nets", net, "times", "litert_dense", "median_ms")
    rows = []
    for name in _apps_exports(runs, net):
        # Where the policy prunes only the 1x1 convs, "all90" is the "90" file, timed once.
        timed = name if f"spruce_{name}" in first.get("times", {}) else "90"
        rows.append([_apps_label(first, name), spread(litert),
                     spread(_values(runs, "nets", net, "times", f"spruce_{timed}", "median_ms")),
                     spread(_values(runs, "nets", net, "speedups", f"spruce_{name}_vs_litert_dense"), unit="x"),
                     spread(_values(runs, "nets", net, "speedups_from_fastest_runs",
                                    f"spruce_{timed}_vs_litert_dense"), unit="x"),
                     _worst(_values(runs, "nets", net, "max_relative_error_vs_litert", timed))])
    lines += [table(["export", "LiteRT dense, ms", "spruce, ms", "speed-up (medians)", "speed-up (fastest runs)",
                     "max relative error vs LiteRT (worst run)"], rows), ""]
    goals = _goals_met(runs, "nets", net, "goals")
    if goals:
        lines += [table(["goal", "runs that met it"], goals), ""]
    return lines


def _apps_headline(runs, nets):
    """Per net: LiteRT dense in ms, then spruce's speed-up on each export (medians across runs)."""
    rows = []
    for net in nets:
        first = runs[0]["nets"][net]
        if first.get("refused"):
            rows.append([net, "refused", *[""] * len(APPS_COLUMNS), ""])
            continue
        ratios = [spread(_values(runs, "nets", net, "speedups", f"spruce_{name}_vs_litert_dense"), unit="x")
                  for name in APPS_COLUMNS]
        goals = first.get("goals", {})
        met = sum(all(_values(runs, "nets", net, "goals", g)) for g in goals)
        rows.append([net, spread(_values(runs, "nets", net, "times", "litert_dense", "median_ms")), *ratios,
                     f"{met} of {len(goals)}"])
    return table(["net", "LiteRT dense, ms", *APPS_COLUMNS.values(), "goals met in every run"], rows)


def render_apps(runs):
    """(results page, README block) for bench_apps runs."""
    check_same_setting(runs, _apps_parameters)
    first = runs[0]
    model = first.get("model", {})
    size = (model.get("input") or [None, "?", "?"])[1:3]
    quick = any(bool((r.get("arguments") or {}).get("quick")) for r in runs)
    nets = list(first.get("nets", {}))
    setting = [
        ("CPU", f"{first.get('cpu', 'unknown')}, {first.get('cores', '?')} cores, engine kernels "
                f"{first.get('isa', '?')}"),
        ("threads", str(first.get("threads", 1))),
        ("versions", versions_text(runs)),
        ("spruce commit", commit_text(runs)),
        ("date", dates_text(runs)),
        ("models", f"keras.applications {', '.join(nets)} at {size[0]}x{size[1]}x3, batch 1, "
                   f"{model.get('weights', 'random weights')}"
                   + (" (a --quick smoke run, not a measurement)" if quick else "")),
        ("pruned", model.get("pruned", "?")),
        ("runs", f"{_count(len(runs), 'run')} of the script, each {first.get('rounds', '?')} interleaved rounds x "
                 f"{first.get('runs_per_round', '?')} timed runs per engine"),
    ]
    load = load_text(runs)
    if load:
        setting.append(("load average (1 min), start and end", load))
    busy = busy_text(runs)
    page = _page_head("bench_apps: spruce's engine against LiteRT on the Keras application CNNs", "bench_apps",
                      runs, setting, " Speed-ups are LiteRT's time (XNNPACK, dense export) over spruce's, one "
                                     "thread each.")
    page += ["## Speed-ups against LiteRT on the dense export", "", _apps_headline(runs, nets), "",
             APPS_LEGEND, ""]
    page += ["## Per net", ""]
    for net in nets:
        page += _apps_net_section(runs, net)
    page += ["## Runs", ""]
    page += [_goal_runs_table(runs), ""]

    facts = [f"{first.get('cpu', 'unknown CPU')} ({first.get('isa', '?')} kernels)", versions_text(runs),
             f"spruce {commit_text(runs)}", dates_text(runs).split(" ")[0] if first.get("date") else "date unknown",
             f"median of {_count(len(runs), 'run')}" + (" (range)" if len(runs) > 1 else "")
             + (", a --quick smoke run" if quick else "")]
    readme = [
        f"Keras applications at {size[0]}x{size[1]}, batch 1, one thread: spruce's engine on each export "
        "against LiteRT (XNNPACK) on the dense export (speed-ups).",
        "",
        _apps_headline(runs, nets),
        "",
        APPS_LEGEND,
        "",
        " · ".join(facts) + " · [all figures](benchmarks/results/bench_apps.md)",
    ]
    if busy:
        readme += ["", busy]
    return "\n".join(page), "\n".join(readme)


# ---- bench_int8 ----------------------------------------------------------------------

INT8_EXPORTS = {"dense": "int8 dense", "75": "int8, 1x1 convs 75%", "90": "int8, 1x1 convs 90%",
                "75_blocks": "int8, 1x1 convs 75% in blocks of 4 input channels",
                "90_blocks": "int8, 1x1 convs 90% in blocks of 4 input channels"}


def _int8_parameters(run):
    return {"model": run.get("model"), "rounds": run.get("rounds"), "runs": run.get("runs_per_round"),
            "nets": sorted(run.get("nets", {})), "goals": run.get("goals_definition")}


def _int8_net_section(runs, net):
    first = runs[0]["nets"][net]
    names = [n for n in INT8_EXPORTS if n in first.get("speedups_vs_litert_int8_dense", {})]
    litert = _values(runs, "nets", net, "times", "litert_int8_dense", "median_ms")
    rows = [[INT8_EXPORTS[name], spread(litert),
             spread(_values(runs, "nets", net, "times", f"spruce_int8_{name}", "median_ms")),
             spread(_values(runs, "nets", net, "speedups_vs_litert_int8_dense", name), unit="x"),
             f"{max(v for v in _values(runs, 'nets', net, 'max_steps_from_litert', name) if v is not None):g}",
             f"{first.get('file_bytes', {}).get(name, 0) / 1e6:.2f}"]
            for name in names]
    lines = [f"### {net}", "",
             table(["export", "LiteRT int8 dense, ms", "spruce, ms", "speed-up", "max steps from LiteRT (worst run)",
                    "file, MB"], rows), ""]
    goals = _goals_met(runs, "nets", net, "goals")
    if goals:
        lines += [table(["goal", "runs that met it"], goals), ""]
    return lines


def render_int8(runs):
    """(results page, README block) for bench_int8 runs."""
    check_same_setting(runs, _int8_parameters)
    first = runs[0]
    nets = list(first.get("nets", {}))
    size = (first.get("model") or {}).get("input") or [None, "?", "?"]
    quick = any(bool((r.get("arguments") or {}).get("quick")) for r in runs)
    setting = [
        ("CPU", f"{first.get('cpu', 'unknown')}, {first.get('cores', '?')} cores, engine kernels "
                f"{first.get('isa', '?')}, AVX-512 VNNI {'yes' if first.get('avx512_vnni') else 'no'}"),
        ("threads", str(first.get("threads", 1))),
        ("versions", versions_text(runs)),
        ("spruce commit", commit_text(runs)),
        ("date", dates_text(runs)),
        ("models", f"keras.applications {', '.join(nets)} at {size[1]}x{size[2]}x3, batch 1, "
                   f"{(first.get('model') or {}).get('weights', 'random weights')}, full-integer int8"
                   + (" (a --quick smoke run, not a measurement)" if quick else "")),
        ("pruned", (first.get("model") or {}).get("pruned", "?")),
        ("runs", f"{_count(len(runs), 'run')} of the script, each {first.get('rounds', '?')} interleaved rounds x "
                 f"{first.get('runs_per_round', '?')} timed runs per engine"),
    ]
    load = load_text(runs)
    if load:
        setting.append(("load average (1 min), start and end", load))
    page = _page_head("bench_int8: spruce's int8 engine against LiteRT's int8 kernels", "bench_int8", runs, setting,
                      " Speed-ups are LiteRT's time on the int8 dense export (XNNPACK's qs8 kernels) over "
                      "spruce's on each export, one thread each; steps are int8 output quantization steps.")
    page += ["## Per net", ""]
    for net in nets:
        page += _int8_net_section(runs, net)
    page += ["## Runs", "", _goal_runs_table(runs), ""]
    return "\n".join(page), ""


RENDERERS = {"bench_engine": render_engine, "bench_two_cores": render_two_cores, "bench_apps": render_apps,
             "bench_int8": render_int8}


# ---- README --------------------------------------------------------------------------

def replace_readme_block(text, script, block, readme_name="README.md"):
    """`text` with the lines between `<!-- results:SCRIPT -->` and `<!-- /results -->` replaced."""
    start = f"<!-- results:{script} -->"
    pattern = re.compile(re.escape(start) + r"\n.*?" + re.escape(README_END), re.S)
    if len(pattern.findall(text)) != 1:
        raise ResultsError(
            f"{readme_name} must hold exactly one block from a line `{start}` to a line `{README_END}`; "
            f"found {len(pattern.findall(text))}. Add the two marker lines where the table belongs.")
    return pattern.sub(lambda _: f"{start}\n{block}\n{README_END}", text)


def render(paths, out_dir=RESULTS_DIR, readme=None):
    """Writes OUT_DIR/<script>.md from the JSON files in `paths` (and refreshes `readme`'s
    block when given); returns the page's path."""
    runs = load_runs(paths)
    script = script_of(runs[0])
    if script not in RENDERERS:
        raise ResultsError(f"no renderer for {script!r}. Known: {', '.join(sorted(RENDERERS))}.")
    runs.sort(key=lambda r: (r.get("date") or "", r["_file"]))
    page, block = RENDERERS[script](runs)
    path = os.path.join(out_dir, f"{script}.md")
    if readme:
        with open(readme) as f:
            text = f.read()
        new_text = replace_readme_block(text, script, block, os.path.basename(readme))
    _write(path, page.rstrip("\n") + "\n")
    if readme and new_text != text:
        _write(readme, new_text)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", help="JSON documents printed by one benchmark, one per run")
    parser.add_argument("--out", default=RESULTS_DIR, help="folder of the results pages (default: %(default)s)")
    parser.add_argument("--readme", help="also refresh this file's <!-- results:SCRIPT --> block")
    args = parser.parse_args(argv)
    try:
        path = render(args.files, args.out, args.readme)
    except ResultsError as e:
        print(f"render_results: error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
