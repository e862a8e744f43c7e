"""The `spruce` command: one report protocol."""

import json
import os

import pytest

from _pruned_guide import export, pruned_guide
from tflite_models import prune_pointwise, sparse_path_net


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    model = pruned_guide(0.75)
    keras_path = folder / "model.keras"
    prune_pointwise(sparse_path_net(), 0.75).save(keras_path)
    return {"sparse": export(model, folder / "sparse.tflite", sparse=True),
            "dense": export(model, folder / "dense.tflite", sparse=False),
            "keras": str(keras_path)}


# ---- one report protocol -----------------------------------------------------------------

def test_every_report_is_a_json_document_and_a_readable_text(files, tmp_path):
    import keras

    from spruce.arm64 import check_arm64
    from spruce.bench import benchmark, parse_benchmark_output, profile
    from spruce.export import export_litert

    data = os.path.join(os.path.dirname(__file__), "data", "benchmark_model")
    with open(os.path.join(data, "xiaomi_mi11_yolov5s_fp32_adb.txt")) as f:
        reports = {
            "bench": benchmark([files["sparse"]], runs=2, warmup=0),
            "arm64": check_arm64(files["dense"], progress=False),
            "export": export_litert(keras.saving.load_model(files["keras"]), tmp_path / "m.tflite"),
            "benchmark_model": parse_benchmark_output(f.read()),
        }
    try:
        reports["profile"] = profile([files["sparse"]], runs=2, warmup=0)
    except ImportError:
        pass  # no native engine in this install: its report cannot be made
    for name, report in reports.items():
        assert json.loads(json.dumps(report.to_dict())), name
        text = str(report)
        assert text.strip() and "object at 0x" not in text and f"{type(report).__name__}(" not in text, name
        assert not hasattr(report, "format") and not hasattr(report, "to_text"), name
    assert str(reports["export"]).startswith(f"wrote {tmp_path / 'm.tflite'}: ")
    assert "249684 us" in str(reports["benchmark_model"])
