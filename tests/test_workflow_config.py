"""spruce run's settings: defaults, the TOML file, flags, and clear errors."""

import os

import pytest

from spruce.workflow.config import ConfigError, RunConfig, load_config, parse_toml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_toml_matches_the_defaults():
    config = load_config(os.path.join(REPO, "configs", "default.toml"))
    assert config == RunConfig()


def test_flags_override_the_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[dense]\nepochs = 3\nlearning_rate = 0.01\n[prune]\nfinal_sparsity = 0.9\n')
    config = load_config(str(p), {"dense_epochs": 5, "seed": None})
    assert (config.dense_epochs, config.learning_rate, config.final_sparsity, config.seed) == (5, 0.01, 0.9, 0)


def test_unknown_key_names_the_section_and_the_choices():
    with pytest.raises(ConfigError, match=r"unknown key 'epoch' in \[dense\]. Expected one of: .*epochs"):
        parse_toml("[dense]\nepoch = 3\n", "c.toml")


def test_unknown_section_is_refused():
    with pytest.raises(ConfigError, match=r"unknown section \[training\]"):
        parse_toml("[training]\nepochs = 3\n")


def test_wrong_type_names_expected_and_received():
    with pytest.raises(ConfigError, match=r"\[dense\]: dense_epochs must be an integer. Received: dense_epochs='ten' \(str\)"):
        parse_toml('[dense]\nepochs = "ten"\n')


def test_invalid_toml_is_reported_with_the_file_name():
    with pytest.raises(ConfigError, match="c.toml is not valid TOML"):
        parse_toml("[dense\nepochs = 3", "c.toml")


def test_out_of_range_sparsity_is_refused_keras_style():
    with pytest.raises(ConfigError, match=r"final_sparsity must be in \[initial_sparsity=0.25, 1\). Received: final_sparsity=1.2"):
        load_config(None, {"final_sparsity": 1.2})


def test_missing_config_file_points_to_the_example(tmp_path):
    with pytest.raises(ConfigError, match="does not exist. Start from configs/default.toml"):
        load_config(str(tmp_path / "none.toml"))


def test_quick_shortens_only_what_was_not_set():
    assert load_config(None, {"quick": True}).dense_epochs == 3
    assert load_config(None, {"quick": True, "dense_epochs": 6}).dense_epochs == 6


def test_the_training_backend_is_part_of_every_training_stage_key():
    config = RunConfig()
    for stage in ("dense", "pruned", "export"):
        assert config.stage_key(stage, backend="jax") != config.stage_key(stage, backend="tensorflow")
    assert config.stage_key("data", backend="jax") == config.stage_key("data", backend="tensorflow")


def test_stage_keys_chain_so_later_changes_keep_earlier_stages():
    base = RunConfig()
    pruning_changed = RunConfig(final_sparsity=0.8)
    dense_changed = RunConfig(learning_rate=0.002)
    assert base.stage_key("dense") == pruning_changed.stage_key("dense")
    assert base.stage_key("pruned") != pruning_changed.stage_key("pruned")
    assert base.stage_key("pruned") != dense_changed.stage_key("pruned")
    assert base.stage_key("export") != dense_changed.stage_key("export")
    assert base.stage_key("export") == RunConfig(threads=2).stage_key("export")  # bench settings only


def test_cli_reports_a_bad_setting_and_exits_2(capsys):
    from spruce.cli import main

    assert main(["run", "--final-sparsity", "1.5", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "spruce run: error: final_sparsity must be in [initial_sparsity=0.25, 1). Received: final_sparsity=1.5" in err


def test_cli_reports_a_broken_config_file_and_exits_2(tmp_path, capsys):
    from spruce.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[prune]\nfinal = 0.9\n")
    assert main(["run", "--config", str(bad)]) == 2
    assert "unknown key 'final' in [prune]" in capsys.readouterr().err


def test_block_size_defaults_to_single_weights_and_reads_from_the_prune_section():
    assert RunConfig().block_size == (1, 1)
    assert parse_toml("[prune]\nblock_size = [1, 4]\n") == {"block_size": (1, 4)}


def test_block_size_flag_overrides_the_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[prune]\nblock_size = [2, 2]\n")
    assert load_config(str(p)).block_size == (2, 2)
    assert load_config(str(p), {"block_size": "1x4"}).block_size == (1, 4)
    assert load_config(str(p), {"block_size": None}).block_size == (2, 2)  # flag not given


@pytest.mark.parametrize("text", ["0x4", "4", "1x4x2", "1,4", "ax4", "-1x4", ""])
def test_bad_block_size_flag_names_the_format_and_the_fix(text):
    with pytest.raises(ConfigError, match=rf"--block-size must be HxW with two positive integers.*"
                                          rf"Received: --block-size '{text}'. Use e.g. --block-size 1x4"):
        load_config(None, {"block_size": text})


@pytest.mark.parametrize("value", ["[1, 0]", "[4]", "[1, 4, 1]", "[1.0, 4]", "[true, 4]"])
def test_bad_block_size_in_the_file_names_the_field_and_the_fix(tmp_path, value):
    p = tmp_path / "c.toml"
    p.write_text(f"[prune]\nblock_size = {value}\n")
    with pytest.raises(ConfigError, match=r"block_size must be two positive integers \[height, width\].*"
                                          r"Received: block_size=.*Use e.g. block_size = \[1, 4\] in \[prune\]"):
        load_config(str(p))


def test_block_size_that_is_not_a_list_is_refused_by_type():
    with pytest.raises(ConfigError, match=r"block_size must be a list of two integers, e.g. \[1, 4\]. "
                                          r"Received: block_size='1x4' \(str\)"):
        parse_toml('[prune]\nblock_size = "1x4"\n')


def test_block_size_redoes_pruning_but_reuses_the_dense_model():
    base, blocks = RunConfig(), RunConfig(block_size=(1, 4))
    assert base.stage_key("dense") == blocks.stage_key("dense")
    assert base.stage_key("pruned") != blocks.stage_key("pruned")
    assert base.stage_key("export") != blocks.stage_key("export")
    assert blocks.stage_key("pruned") != RunConfig(block_size=(4, 1)).stage_key("pruned")
    assert blocks.stage_key("pruned") == RunConfig(block_size=[1, 4]).stage_key("pruned")  # as from JSON


def test_unstructured_pruning_keeps_the_stage_keys_of_runs_made_before_block_size():
    # the keys of the default settings before block_size existed (c68f10a): those runs are reused
    config = RunConfig()
    assert config.stage_key("pruned") == "84df5f0aafc4507c"
    assert config.stage_key("export", backend="tensorflow") == "a530d4249c0e2d19"


def test_cli_reports_a_bad_block_size_and_exits_2(capsys):
    from spruce.cli import main

    assert main(["run", "--block-size", "1x0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "spruce run: error: --block-size must be HxW" in err and "--block-size 1x4" in err


def test_the_target_redoes_pruning_onwards_but_reuses_the_guides_dense_model():
    xnnpack, x86 = RunConfig(), RunConfig(target="x86")
    assert xnnpack.stage_key("dense") == x86.stage_key("dense")
    assert xnnpack.stage_key("pruned") != x86.stage_key("pruned")
    assert xnnpack.stage_key("export") != x86.stage_key("export")
    # a user's or a named model is rewritten for XNNPACK before training, and not for x86
    named = RunConfig(model="MobileNetV2:alpha=0.35")
    assert named.stage_key("dense") != RunConfig(model=named.model, target="x86").stage_key("dense")


def test_distillation_settings_count_only_while_distillation_is_on():
    base = RunConfig()
    assert base.stage_key("pruned") == RunConfig(distill_alpha=0.9).stage_key("pruned")
    on = RunConfig(distill=True)
    assert on.stage_key("dense") == base.stage_key("dense")
    assert on.stage_key("pruned") != base.stage_key("pruned")
    assert on.stage_key("pruned") != RunConfig(distill=True, distill_temperature=2.0).stage_key("pruned")


def test_new_model_and_prune_keys_read_from_their_sections():
    values = parse_toml('[model]\npath = "MobileNetV3Small:minimalistic=True"\nweights = "w.weights.h5"\n'
                        'pretrained = "no"\n[prune]\ntarget = "x86"\ndistill = true\ndistill_alpha = 0.7\n'
                        'distill_temperature = 2\n')
    assert values == {"model": "MobileNetV3Small:minimalistic=True", "weights": "w.weights.h5",
                      "pretrained": "no", "target": "x86", "distill": True, "distill_alpha": 0.7,
                      "distill_temperature": 2.0}


@pytest.mark.parametrize("overrides,match", [
    ({"target": "arm"}, r"target must be one of xnnpack, x86 .*Received: target='arm'"),
    ({"pretrained": "maybe"}, r"pretrained must be one of auto .*yes, no. Received: pretrained='maybe'"),
    ({"pretrained": "yes"}, r"pretrained='yes' needs a trained model.*Pass --weights FILE"),
    ({"distill_alpha": 1.5}, r"distill_alpha must be in \[0, 1\].*Received: distill_alpha=1.5"),
    ({"distill_temperature": 0.0}, r"distill_temperature must be a positive number. "
                                   r"Received: distill_temperature=0.0"),
    ({"model": "MobileNetV2:alpha"}, r"model arguments must be name=value pairs.*'alpha' is not one. "
                                     r"Received: model='MobileNetV2:alpha'"),
    ({"model": "MobileNetV2:alpha=1,alpha=2"}, r"model argument 'alpha' is given twice"),
])
def test_bad_target_pretrained_distill_or_model_arguments_are_refused_by_name(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_the_weights_file_contents_are_part_of_the_training_keys(tmp_path):
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"one")
    config = RunConfig(weights=str(weights))
    first = config.stage_key("dense")
    assert first != RunConfig().stage_key("dense") and config.stage_key("data") == RunConfig().stage_key("data")
    weights.write_bytes(b"two")  # the same path now holds other weights
    assert config.stage_key("dense") != first


def test_cli_target_and_distill_flags_reach_the_config(capsys):
    from spruce.cli import main

    assert main(["run", "--target", "phone", "--no-progress"]) == 2
    assert "target must be one of xnnpack, x86" in capsys.readouterr().err
    assert main(["run", "--distill", "--distill-alpha", "2", "--no-progress"]) == 2
    assert "distill_alpha must be in [0, 1]" in capsys.readouterr().err


def test_image_size_reads_from_the_data_section_and_the_flag(tmp_path, capsys):
    from spruce.cli import main

    p = tmp_path / "c.toml"
    p.write_text("[data]\nimage_size = 64\n")
    assert load_config(str(p)).image_size == 64
    assert load_config(str(p), {"image_size": 96}).image_size == 96
    assert RunConfig().image_size == 0  # the smallest size at which the target runs the model
    assert main(["run", "--image-size", "16", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "image_size must be 0" in err and "[32, 128]" in err and "Received: image_size=16" in err


def test_image_size_redoes_everything_but_32_keeps_the_keys_of_earlier_runs():
    base = RunConfig()
    assert RunConfig(image_size=32).stage_key("export") == base.stage_key("export")
    for stage in ("data", "dense", "pruned", "export"):
        assert RunConfig(image_size=64).stage_key(stage) != base.stage_key(stage)


def test_pointwise_only_redoes_pruning_and_keeps_the_keys_of_earlier_runs():
    base = RunConfig(target="x86")
    one_by_one = RunConfig(target="x86", pointwise_only=True)
    assert one_by_one.stage_key("dense") == base.stage_key("dense")
    assert one_by_one.stage_key("pruned") != base.stage_key("pruned")


def test_pointwise_only_picks_the_engines_1x1_policy_from_the_flag_or_the_prune_section(tmp_path):
    import argparse

    from spruce.cli.run import add_arguments
    from spruce.workflow.train import pruning_policy

    assert repr(pruning_policy("x86", pointwise_only=True)) == "PruneForLatencyOnSpruce(pointwise_only=True)"
    assert repr(pruning_policy("x86")) == "PruneForLatencyOnSpruce()"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--pointwise-only"]).pointwise_only is True
    assert parser.parse_args([]).pointwise_only is None
    path = tmp_path / "run.toml"
    path.write_text("[prune]\ntarget = 'x86'\npointwise_only = true\n")
    assert load_config(path).pointwise_only is True


def test_cli_pointwise_only_reaches_the_config_and_needs_the_x86_target(capsys):
    from spruce.cli import main

    assert main(["run", "--pointwise-only", "--no-progress"]) == 2
    assert "pointwise_only must be false unless target is x86" in capsys.readouterr().err


def test_end_fraction_flag_reaches_the_config_and_is_checked(capsys):
    import argparse

    from spruce.cli import main
    from spruce.cli.run import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--end-fraction", "0.25"]).pruning_end_fraction == 0.25
    assert parser.parse_args([]).pruning_end_fraction is None
    assert main(["run", "--end-fraction", "0", "--no-progress"]) == 2
    assert "pruning_end_fraction must be in (0, 1]" in capsys.readouterr().err
