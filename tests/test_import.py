"""`import spruce` stays light, and the JAX pruning path needs no TensorFlow."""

import json
import os
import subprocess
import sys
import textwrap

import pytest


SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

BLOCK_TENSORFLOW = """
import sys
class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, _NoTensorFlow())
"""


def run_python(code, backend="jax", timeout=600):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_spruce_loads_neither_keras_nor_tensorflow():
    loaded = run_python("""
        import json, sys
        import spruce
        names = spruce.__all__
        heavy = sorted({m.split(".")[0] for m in sys.modules} & {"keras", "tensorflow", "jax"})
        print(json.dumps({"heavy": heavy, "names": names}))
    """)
    assert loaded["heavy"] == []
    for name in ("prune_low_magnitude", "strip_pruning", "ConstantSparsity", "PolynomialDecay",
                 "PruningSchedule", "UpdatePruningStep", "PruningSummaries", "PrunableLayer"):
        assert name in loaded["names"]


def test_public_pruning_names_resolve_to_the_core_modules():
    loaded = run_python("""
        import json, spruce
        names = ["prune_low_magnitude", "strip_pruning", "ConstantSparsity", "PolynomialDecay",
                 "PruningSchedule", "UpdatePruningStep", "PruningSummaries", "PrunableLayer"]
        print(json.dumps({n: getattr(spruce, n).__module__ for n in names}))
    """)
    assert loaded == {
        "prune_low_magnitude": "spruce.prune", "strip_pruning": "spruce.prune",
        "ConstantSparsity": "spruce.schedules", "PolynomialDecay": "spruce.schedules",
        "PruningSchedule": "spruce.schedules", "UpdatePruningStep": "spruce.callbacks",
        "PruningSummaries": "spruce.callbacks", "PrunableLayer": "spruce.registry",
    }


def test_schedules_need_no_keras_at_all():
    loaded = run_python("""
        import json, sys
        from spruce.schedules import PolynomialDecay
        s = PolynomialDecay(0.25, 0.75, 0, 100)
        print(json.dumps({"value": s(50)[1], "keras": "keras" in sys.modules}))
    """)
    assert loaded["keras"] is False and 0.25 < loaded["value"] < 0.75


@pytest.mark.slow
def test_pruning_core_under_jax_imports_no_tensorflow_of_its_own():
    loaded = run_python("""
        import json, sys
        import numpy as np, keras
        import spruce
        layer = spruce.prune_low_magnitude(keras.layers.Dense(4))
        spruce.UpdatePruningStep, spruce.PruningSummaries
        out = layer(np.ones((2, 3), "float32"))
        from spruce.masking import compute_mask
        compute_mask(np.random.rand(8, 8).astype("float32"), 0.5, (2, 2))
        print(json.dumps({"tensorflow": "tensorflow" in sys.modules}))
    """)
    assert loaded == {"tensorflow": False}


@pytest.mark.slow
def test_whole_pruning_workflow_runs_under_jax_without_tensorflow_installed(tmp_path):
    """Keras itself imports TF when present (get_config); with TF absent all still works."""
    loaded = run_python(BLOCK_TENSORFLOW + f"""
import json, os, sys
import numpy as np, keras
import spruce
from spruce.prune import prune_scope
model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(2)])
pruned = spruce.prune_low_magnitude(model, spruce.ConstantSparsity(0.5, 0, frequency=1))
pruned.compile("adam", "mse")
x = np.random.rand(16, 6).astype("float32"); y = np.random.rand(16, 2).astype("float32")
log_dir = {str(tmp_path / "logs")!r}
pruned.fit(x, y, batch_size=4, verbose=0,
           callbacks=[spruce.UpdatePruningStep(), spruce.PruningSummaries(log_dir)])
path = {str(tmp_path / "p.keras")!r}
pruned.save(path)
with prune_scope():
    restored = keras.saving.load_model(path)
stripped = spruce.strip_pruning(restored)
zeros = [float(np.mean(w == 0)) for w in (l.get_weights()[0] for l in stripped.layers)]
print(json.dumps({{"tensorflow": "tensorflow" in sys.modules, "zeros": zeros,
                   "events": len(os.listdir(log_dir))}}))
""")
    assert loaded == {"tensorflow": False, "zeros": [0.5, 0.5], "events": 1}


@pytest.mark.slow
def test_loading_a_pruned_model_needs_the_pruning_module_loaded_first(tmp_path):
    """`import spruce` loads no Keras, so it cannot register PruneLowMagnitude with Keras;
    any use of the pruning API (or spruce.prune.prune_scope(), as in tfmot) does."""
    path = str(tmp_path / "p.keras")
    run_python(f"""
        import json, keras, spruce
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        spruce.prune_low_magnitude(model).save({path!r})
        print(json.dumps({{}}))
    """)
    loaded = run_python(f"""
        import json, keras, spruce
        try:
            keras.saving.load_model({path!r})
            plain = "loaded"
        except TypeError:
            plain = "refused"
        from spruce.prune import prune_scope
        with prune_scope():
            scoped = type(keras.saving.load_model({path!r}).layers[0]).__name__
        print(json.dumps({{"plain": plain, "scoped": scoped}}))
    """)
    assert loaded == {"plain": "refused", "scoped": "PruneLowMagnitude"}
