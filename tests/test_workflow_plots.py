"""The run's plots: real PNG files from matplotlib; many pruned layers drawn as one band."""

import numpy as np
import pytest

from spruce.workflow import plots
from spruce.workflow.results import ScheduleTarget, SparsityTrace

pytest.importorskip("matplotlib")


def _trace(n_layers):
    steps = (1, 10, 20, 30)
    return SparsityTrace(steps=steps, layers={f"conv_{i}": [0.0, 0.5 + i / 100, 0.7, 0.75]
                                              for i in range(n_layers)})


@pytest.mark.parametrize("n_layers,engine", [(2, "xnnpack"), (42, "x86")])
def test_sparsity_plot_is_a_png_for_few_and_for_many_layers(tmp_path, n_layers, engine):
    path = tmp_path / "sparsity.png"
    plots.sparsity_over_steps(_trace(n_layers), str(path), ScheduleTarget((1, 10, 20, 30), (0, 0.5, 0.7, 0.75)),
                              engine)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_many_layers_are_drawn_as_their_median_and_range():
    plt = plots._plt()
    fig, ax = plt.subplots()
    trace = _trace(42)
    plots._sparsity_band(ax, list(trace.steps), sorted(trace.layers.items()))
    (median,) = ax.get_lines()
    np.testing.assert_allclose(median.get_ydata(), [0.0, 0.705, 0.7, 0.75])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == 0.0 and band.max() == pytest.approx(0.91)
    plt.close(fig)
