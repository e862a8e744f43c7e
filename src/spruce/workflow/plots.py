"""The PNG plots of a run's report (matplotlib, Agg backend, written atomically)."""

from fractions import Fraction

from spruce._deps import require
from spruce.workflow.artifacts import atomic_path
from spruce.xnnpack_rules import XNNPACK_MIN_SPARSITY

DENSE, PRUNED, EXTRA = "#4C72B0", "#DD8452", "#55A868"
MAX_LINES = 6  # pruned layers drawn one line each; more are drawn as a band


def _plt():
    matplotlib = require("matplotlib")
    matplotlib.use("Agg", force=True)
    return require("matplotlib.pyplot")


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _plt().close(fig)


def training_curves(dense_history, pruned_history, path):
    """Accuracy and loss per epoch: dense training, then pruning fine-tuning after it."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    n_dense = len(dense_history.get("loss", []))
    for ax, metric, title in ((axes[0], "accuracy", "Accuracy (%)"), (axes[1], "loss", "Loss")):
        scale = 100.0 if metric == "accuracy" else 1.0
        for history, offset, color, label in ((dense_history, 0, DENSE, "dense"),
                                              (pruned_history, n_dense, PRUNED, "pruning")):
            for key, style, fill in ((metric, "--", "none"), (f"val_{metric}", "-", color)):
                values = history.get(key)
                if not values:
                    continue
                epochs = list(range(offset + 1, offset + len(values) + 1))
                split = "validation" if key.startswith("val_") else "train"
                ax.plot(epochs, [v * scale for v in values], style, color=color, marker="o", ms=4,
                        mfc=fill, label=f"{label} ({split})")
        if n_dense:
            ax.axvline(n_dense + 0.5, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("epoch (fine-tuning with pruning after the dotted line)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Training: dense, then fine-tuning with pruning")
    _save(fig, path)


def sparsity_over_steps(trace, path, target=None, engine="xnnpack"):
    """Fraction of zeros of each pruned kernel over fine-tuning steps (a `SparsityTrace`), the
    schedule's target (a `ScheduleTarget`), and the zeros `engine` ("xnnpack" or "x86") needs to
    run a layer sparse."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = list(trace.steps)
    layers = sorted(trace.layers.items())
    if len(layers) > MAX_LINES:
        _sparsity_band(ax, steps, layers)
    else:
        for i, (name, values) in enumerate(layers):
            # layers pruned alike overlap: thinner lines and other markers on top keep each visible
            ax.plot(steps[: len(values)], values, marker="osv^D"[i % 5], ms=6 - i, mfc="none",
                    lw=3.0 - 2.0 * i / max(1, len(layers)), label=name)
    if target:
        ax.step(target.steps, target.sparsity, where="post", color="black", ls="--", lw=1,
                label="schedule target (at its pruning steps)")
    if engine == "x86":
        from spruce.runtime.loader import DEFAULT_SPARSE_THRESHOLD as threshold

        label = f"spruce engine's sparse-kernel threshold ({threshold:.0%})"
    else:
        threshold = XNNPACK_MIN_SPARSITY
        label = f"XNNPACK sparse-path threshold ({Fraction(threshold).limit_denominator(100)})"
    ax.axhline(threshold, color="red", lw=0.8, ls=":", label=label)
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("fraction of zero weights")
    ax.set_ylim(0, 1)
    ax.set_title("Sparsity per pruned layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)


def _sparsity_band(ax, steps, layers):
    """Many pruned layers: their median and their range at each step, instead of a line each."""
    import numpy as np

    n = min(len(values) for _, values in layers)
    values = np.array([v[:n] for _, v in layers])
    ax.fill_between(steps[:n], values.min(axis=0), values.max(axis=0), color=PRUNED, alpha=0.3,
                    label=f"{len(layers)} pruned layers: min to max")
    ax.plot(steps[:n], np.median(values, axis=0), color=PRUNED, marker="o", ms=4, label="median")


def comparison(metrics, path):
    """Accuracy, file size and latency of the dense and the pruned model (a `RunMetrics`), side by side."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    d, p = metrics.dense, metrics.pruned

    def bars(ax, labels, dense_vals, pruned_vals, fmt, title, ylabel):
        xs = range(len(labels))
        w = 0.38
        for i, (vals, color, name) in enumerate(((dense_vals, DENSE, "dense"),
                                                 (pruned_vals, PRUNED, "pruned"))):
            pos = [x + (i - 0.5) * w for x in xs]
            shown = [v if v is not None else 0 for v in vals]
            rects = ax.bar(pos, shown, w, color=color, label=name)
            for r, v in zip(rects, vals):
                ax.annotate("n/a" if v is None else fmt(v), (r.get_x() + r.get_width() / 2, r.get_height()),
                            ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)

    acc_d = [d.keras_accuracy, d.tflite_accuracy]
    acc_p = [p.keras_accuracy, p.tflite_accuracy]
    bars(axes[0], ["Keras", ".tflite (LiteRT)"], [a * 100 for a in acc_d], [a * 100 for a in acc_p],
         lambda v: f"{v:.2f}", "Test accuracy", "%")
    lo = min(a for a in acc_d + acc_p) * 100
    axes[0].set_ylim(max(0, lo - 5), 100)
    axes[0].legend(fontsize=8, loc="lower right")

    kb = lambda v: None if v is None else v / 1024  # noqa: E731
    bars(axes[1], [".tflite", ".tflite gzipped"],
         [kb(d.tflite_bytes), kb(d.tflite_gzip_bytes)],
         [kb(p.tflite_bytes), kb(p.tflite_gzip_bytes)],
         lambda v: f"{v:.1f}", "Model size", "KiB")

    lat = metrics.latency
    labels, dv, pv = [], [], []
    for engine, name in (("litert", "LiteRT"), ("spruce", "spruce engine")):
        if engine in lat:
            labels.append(f"{name}\n{lat[engine].threads} thread(s)")
            dv.append(lat[engine].dense_ms)
            pv.append(lat[engine].pruned_ms)
    if labels:
        bars(axes[2], labels, [v * 1000 for v in dv], [v * 1000 for v in pv],
             lambda v: f"{v:.0f}", "Latency per image (median)", "µs")
    else:
        axes[2].set_axis_off()
        axes[2].text(0.5, 0.5, "latency not measured", ha="center")
    fig.suptitle(f"Dense vs {metrics.config.final_sparsity:.0%}-pruned: accuracy, size, latency")
    fig.tight_layout()
    _save(fig, path)
