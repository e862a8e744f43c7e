"""spruce.zoo's small ResNet: what its arguments build, what the engine's policy prunes in it, and
that, pruned that way and converted by the real TF converter, the engine gives LiteRT's outputs."""

from collections import Counter

import pytest

from tflite_models import convert, prune_pointwise, randomize_batchnorm

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")

import spruce  # noqa: E402
from helpers import assert_close_to_litert  # noqa: E402
from spruce.runtime import Engine  # noqa: E402
from spruce.zoo import resnet_small  # noqa: E402
from test_engine import sample  # noqa: E402

layers = keras.layers


def _convs(model):
    return [layer for layer in model.layers if type(layer) is layers.Conv2D]


def test_resnet_small_builds_bottleneck_stages_from_its_arguments():
    model = resnet_small((32, 32, 3), 7, width=8, blocks=[1, 2], expansion=3)
    assert tuple(model.outputs[0].shape) == (None, 7)
    assert model.get_layer("stem").filters == 16 and model.get_layer("stem").strides == (1, 1)
    assert [b.name for b in model.layers if isinstance(b, layers.Add)] == [
        "stage1_block1_add", "stage2_block1_add", "stage2_block2_add"]
    # a projection where the shape changes (16 stem channels -> 8 * 3, then the stride), none elsewhere
    assert [c.name for c in _convs(model) if c.name.endswith("_proj")] == [
        "stage1_block1_proj", "stage2_block1_proj"]
    assert model.get_layer("stage2_block1_conv").strides == (2, 2)
    assert model.get_layer("stage2_block1_proj").strides == (2, 2)
    assert tuple(model.get_layer("stage2_block2_out").output.shape) == (None, 16, 16, 48)
    strided = resnet_small(stem_stride=2)
    assert tuple(strided.get_layer("stage3_block2_out").output.shape) == (None, 4, 4, 256)


def test_the_engine_policy_prunes_every_conv_but_the_stem_nearly_all_the_work():
    model = resnet_small()
    report = spruce.check_spruce(model)
    assert sorted(report.sparse_layers) == sorted(c.name for c in _convs(model) if c.name != "stem")
    assert report.sparse_mac_share > 0.97
    pointwise = spruce.check_spruce(model, policy=spruce.PruneForLatencyOnSpruce(pointwise_only=True))
    # the 1x1 stride-1 convs: every reduce and expand, and the first stage's projection
    assert len(pointwise.sparse_layers) == 13 and "stage1_block1_proj" in pointwise.sparse_layers
    assert 0.4 < pointwise.sparse_mac_share < 0.5


@pytest.mark.parametrize("bad,match", [
    (dict(width=0), r"width must be a positive integer. Received: width=0"),
    (dict(blocks=()), r"blocks must be a non-empty list of positive integers.*Received: blocks=\(\)"),
    (dict(blocks=[2, 0]), r"Received: blocks=\[2, 0\]"),
    (dict(expansion=1.5), r"expansion must be a positive integer. Received: expansion=1.5"),
    (dict(stem_stride=3), r"stem_stride must be 1 or 2. Received: stem_stride=3"),
])
def test_bad_resnet_small_arguments_name_the_problem(bad, match):
    with pytest.raises(ValueError, match=match):
        resnet_small(**bad)


@pytest.mark.parametrize("stem_stride", [1, 2])
def test_resnet_small_pruned_under_the_engine_policy_matches_litert_on_the_engine(tmp_path, stem_stride):

    keras.utils.set_random_seed(stem_stride)
    model = randomize_batchnorm(resnet_small(stem_stride=stem_stride))
    policy = spruce.PruneForLatencyOnSpruce()
    policy.ensure_model_supports_pruning(model)
    prune_pointwise(model, 0.9, [layer for layer in model.layers if policy.allow_pruning(layer)])
    path = convert(model, tmp_path / "resnet_small.tflite", sparse=True)
    x = sample((1, 32, 32, 3), seed=stem_stride)
    for threads in (1, 2):
        engine = assert_close_to_litert(path, x, engine=Engine(path, num_threads=threads))
        kernels = Counter(layer["kernel"] for layer in engine.summary() if layer["opcode"] == "CONV_2D")
        # 1x1 stride-1 convs on the sparse 1x1 kernel, 3x3 and strided projections on the KxK one
        assert kernels == {"spmm": 13, "spconv": 8, "conv_hwc2chw": 1}
