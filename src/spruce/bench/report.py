"""`BenchReport`: per-model timings, ratios to the first model, and what ran them."""

import dataclasses


@dataclasses.dataclass
class BenchReport:
    """What `benchmark` and `adb_benchmark` measured: `to_dict()` for JSON, `str()` the table."""

    engine: str                 # "litert", "spruce", both as "litert+spruce", or "adb"
    system: dict                # spruce.bench.sysinfo.system_info(), or the device's description
    models: list                # per model: {"path", "median", "q25", "q75", "iqr", "min", ..., "ratio_to_first"}
    settings: dict              # threads, runs, warmup, interleaving, timing

    def to_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        s = self.system
        lines = [f"engine: {self.engine}   threads: {self.settings.get('threads')}   "
                 f"runs: {self.settings.get('runs')} (after {self.settings.get('warmup')} warm-up, "
                 f"{self.settings.get('interleaving', 'interleaved')})"]
        if self.settings.get("timing"):
            lines.append(f"timing: {self.settings['timing']}")
        if s.get("cpu"):
            lines.append(f"cpu: {s['cpu']} ({s.get('machine', '?')}, AVX: {'yes' if s.get('avx') else 'no'}, "
                         f"{s.get('cpu_count', '?')} logical CPUs)")
        if s.get("versions"):
            lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in s["versions"].items()))
        if s.get("device"):
            lines.append(f"device: {s['device']}")
        # Several engines: each entry is labelled "path [engine]".
        several = len({m.get("engine") for m in self.models}) > 1
        labels = [f"{m['path']} [{m['engine']}]" if several else m["path"] for m in self.models]
        width = max(len(label) for label in labels)
        unit, scale = ("ms", 1e3) if self.models[0]["median"] >= 1e-3 else ("us", 1e6)
        lines.append(f"{'model':<{width}}  {'median ' + unit:>10}  {'IQR ' + unit:>8}  {'min ' + unit:>8}  "
                     f"{'vs first':>9}")
        for m, label in zip(self.models, labels):
            iqr = "" if m.get("iqr") is None else f"{m['iqr'] * scale:8.3f}"
            mn = "" if m.get("min") is None else f"{m['min'] * scale:8.3f}"
            ratio = m["ratio_to_first"]
            speed = "" if m is self.models[0] else (
                f" ({1 / ratio:.2f}x faster)" if ratio < 1 else f" ({ratio:.2f}x slower)")
            lines.append(f"{label:<{width}}  {m['median'] * scale:10.3f}  {iqr:>8}  {mn:>8}  "
                         f"{ratio:8.2f}x{speed}")
        if s.get("note") and "litert" in self.engine.split("+"):
            lines.append(s["note"])
        return "\n".join(lines)
