"""The reports `spruce.check_xnnpack` and `spruce.check_spruce` return: per layer, and overall.

A broken XNNPACK rule is an `xnnpack_rules.Violation`, the same object `spruce inspect`
reports for a `.tflite` file.
"""

from dataclasses import asdict, dataclass, field

# What to do about a refusal no rewrite fixes (squeeze-and-excite gates, concatenations, ...):
# spruce's engine has none of XNNPACK's region rules, so the same model runs sparse there.
NO_REWRITE_ALTERNATIVE = (
    "No rewrite fixes the rest for XNNPACK. Either change the architecture as each fix says, "
    "or prune for x86 with spruce.PruneForLatencyOnSpruce() (`spruce run --target x86`): "
    "spruce's engine runs the 1x1 convolutions sparse wherever they sit, squeeze-and-excite "
    "blocks and any padding included.")


@dataclass
class LayerVerdict:
    """What XNNPACK's sparse path does with one layer call."""

    name: str
    type: str
    role: str  # "before", "entry", "sparse", "exit", "fused", "breaks", "after"
    in_sparse_region: bool  # inside the NCHW region (runs sparse once the model is accepted)
    sparse_path: bool  # runs on the sparse path as the model stands
    pruned: bool  # the policy wraps it for pruning
    macs: int
    reason: str


@dataclass
class XnnpackReport:
    model: str
    policy: str
    layers: list = field(default_factory=list)
    refusals: list = field(default_factory=list)  # [Violation], each located at a layer
    total_macs: int = 0
    region_macs: int = 0  # MACs inside the sparse region
    pruned_macs: int = 0  # MACs of the pruned 1x1 convolutions inside the region

    @property
    def ok(self):
        """True when the model is accepted: XNNPACK can run its sparse path."""
        return not self.refusals

    @property
    def sparse_mac_share(self):
        """Share of the model's MACs the sparse path runs (0 while the model is refused)."""
        return self.region_macs / self.total_macs if self.ok and self.total_macs else 0.0

    @property
    def region_mac_share(self):
        """Share of MACs inside the sparse region, whether or not the model is accepted."""
        return self.region_macs / self.total_macs if self.total_macs else 0.0

    @property
    def pruned_mac_share(self):
        return self.pruned_macs / self.total_macs if self.total_macs else 0.0

    @property
    def pruned_layers(self):
        return [v.name for v in self.layers if v.pruned]

    def to_dict(self):
        return {
            "model": self.model,
            "policy": self.policy,
            "ok": self.ok,
            "total_macs": self.total_macs,
            "region_macs": self.region_macs,
            "pruned_macs": self.pruned_macs,
            "sparse_mac_share": self.sparse_mac_share,
            "region_mac_share": self.region_mac_share,
            "pruned_mac_share": self.pruned_mac_share,
            "pruned_layers": self.pruned_layers,
            "layers": [asdict(v) for v in self.layers],
            "refusals": [r.to_dict() for r in self.refusals],
        }

    def __str__(self):
        header = ("layer", "type", "sparse path", "pruned", "MACs", "why")
        rows = [header]
        for v in self.layers:
            if v.sparse_path:
                path = "yes"
            elif v.in_sparse_region:
                path = "blocked"
            else:
                path = "no"
            rows.append((v.name, v.type, path, "yes" if v.pruned else "-",
                         f"{v.macs:,}" if v.macs else "-", v.reason))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
        lines = [f"XNNPACK sparse-path check of '{self.model}' ({self.policy})", ""]
        for row in rows:
            cells = [c.ljust(w) for c, w in zip(row[:-1], widths)]
            lines.append("  ".join(cells + [row[-1]]).rstrip())
        lines.append("")
        share = f"{self.region_mac_share:.1%} of {self.total_macs:,} MACs"
        if self.ok:
            lines.append(f"Accepted: the sparse path runs {share}; the pruned 1x1 convolutions "
                         f"hold {self.pruned_mac_share:.1%}.")
        else:
            lines.append(f"Refused: {len(self.refusals)} rule(s) broken. Once all are fixed, "
                         f"the sparse path would run {share}.")
            for r in self.refusals:
                if r.auto_fix:
                    tag = " [make_xnnpack_compatible fixes this]"
                elif r.auto_fix_inexact:
                    tag = " [make_xnnpack_compatible(exact=False) fixes this, changing outputs]"
                else:
                    tag = ""
                lines.append(f"  - {r}{tag}")
            if any(not (r.auto_fix or r.auto_fix_inexact) for r in self.refusals):
                lines.append(NO_REWRITE_ALTERNATIVE)
        return "\n".join(lines)


def _table(header, rows):
    """Left-aligned columns; the last one is free text."""
    rows = [header] + rows
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return ["  ".join([c.ljust(w) for c, w in zip(row[:-1], widths)] + [row[-1]]).rstrip()
            for row in rows]


@dataclass
class EngineLayerVerdict:
    """What spruce's engine does with one layer call."""

    name: str
    type: str
    runs_sparse: bool  # the engine runs it on a sparse kernel once its weights are sparse enough
    pruned: bool  # the policy wraps it for pruning
    zeros: float | None  # fraction of zeros in its prunable weights now (layers run sparse only)
    macs: int
    reason: str


@dataclass
class SpruceReport:
    """Which layers spruce's engine (x86) runs from sparse weights, and why the others not."""

    model: str
    policy: str
    layers: list = field(default_factory=list)  # [EngineLayerVerdict]
    total_macs: int = 0
    sparse_macs: int = 0  # MACs of the layers (parts) the engine runs sparse
    sparse_threshold: float = 0.0  # zeros a layer needs for the engine to pick its sparse kernel
    sparse_kinds: str = ""  # the convolutions the engine runs sparse, in words

    @property
    def ok(self):
        """True when the engine runs at least one layer of the model sparse."""
        return any(v.runs_sparse for v in self.layers)

    @property
    def sparse_layers(self):
        return [v.name for v in self.layers if v.runs_sparse]

    @property
    def pruned_layers(self):
        return [v.name for v in self.layers if v.pruned]

    @property
    def ready_layers(self):
        """The layers whose weights are already sparse enough for the engine's sparse kernel."""
        return [v.name for v in self.layers
                if v.runs_sparse and v.zeros is not None and v.zeros >= self.sparse_threshold]

    @property
    def sparse_mac_share(self):
        return self.sparse_macs / self.total_macs if self.total_macs else 0.0

    def to_dict(self):
        return {
            "model": self.model,
            "policy": self.policy,
            "target": "spruce engine (x86)",
            "ok": self.ok,
            "sparse_threshold": self.sparse_threshold,
            "sparse_kinds": self.sparse_kinds,
            "total_macs": self.total_macs,
            "sparse_macs": self.sparse_macs,
            "sparse_mac_share": self.sparse_mac_share,
            "sparse_layers": self.sparse_layers,
            "pruned_layers": self.pruned_layers,
            "ready_layers": self.ready_layers,
            "layers": [asdict(v) for v in self.layers],
        }

    def __str__(self):
        rows = [(v.name, v.type, "yes" if v.runs_sparse else "no", "yes" if v.pruned else "-",
                 f"{v.zeros:.1%}" if v.zeros is not None else "-",
                 f"{v.macs:,}" if v.macs else "-", v.reason) for v in self.layers]
        lines = [f"spruce engine (x86) check of '{self.model}' ({self.policy})", ""]
        lines += _table(("layer", "type", "sparse", "pruned", "zeros", "MACs", "why"), rows)
        lines.append("")
        if not self.ok:
            lines.append(f"No layer runs sparse on spruce's engine: its sparse kernels run "
                         f"{self.sparse_kinds}.")
            return "\n".join(lines)
        share = f"{self.sparse_mac_share:.1%} of {self.total_macs:,} MACs"
        lines.append(f"spruce's engine runs {len(self.sparse_layers)} layer(s) sparse ({share}) "
                     f"once each is at least {self.sparse_threshold:.0%} zeros; "
                     f"{len(self.ready_layers)} of them are now.")
        return "\n".join(lines)
