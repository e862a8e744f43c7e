"""`spruce run`: the guide's whole workflow in one command (see spruce.workflow.pipeline)."""

HELP = "train, prune, export, evaluate and benchmark in one command, and write a report"

# command-line flag -> RunConfig field
_FLAGS = [
    ("--dataset", "dataset", str, "fashion_mnist (default, Debian package) or cifar10"),
    ("--data-dir", "data_dir", str, "dataset folder (CIFAR-10: the cifar-10-batches-py folder, or 'keras' to download)"),
    ("--image-size", "image_size", int, "side of the square images, 32 to 128, resized bilinearly (default: "
                                        "the smallest size at which the target runs the model sparse: 32, "
                                        "64 for keras.applications' MobileNets on --target xnnpack)"),
    ("--model", "model", str, "the model to prune instead of the guide's network: a .keras file, or a "
                              "spruce.zoo or keras.applications name with its arguments (ResNetSmall, "
                              "MobileNetV2:alpha=0.35, MobileNetV3Small:minimalistic=True, EfficientNetB0), "
                              "built for the data untrained (weights=None)"),
    ("--weights", "weights", str, "trained weights for the model (model.load_weights, e.g. a .weights.h5 "
                                  "file); the model then arrives trained: no dense training"),
    ("--target", "target", str, "what to prune for: xnnpack (default: XNNPACK's sparse path, LiteRT on "
                                "ARM phones) or x86 (spruce's engine)"),
    ("--epochs", "dense_epochs", int, "dense training epochs"),
    ("--prune-epochs", "prune_epochs", int, "fine-tuning epochs with pruning"),
    ("--batch-size", "batch_size", int, "batch size for both trainings"),
    ("--lr", "learning_rate", float, "initial learning rate of dense training"),
    ("--prune-lr", "prune_learning_rate", float, "initial learning rate of fine-tuning"),
    ("--lr-schedule", "lr_schedule", str, "cosine (default), exponential or constant"),
    ("--initial-sparsity", "initial_sparsity", float, "PolynomialDecay initial_sparsity"),
    ("--final-sparsity", "final_sparsity", float, "PolynomialDecay final_sparsity"),
    ("--pruning-frequency", "pruning_frequency", int, "steps between mask updates"),
    ("--end-fraction", "pruning_end_fraction", float, "share of the fine-tuning after which the final "
                                                      "sparsity is reached (default 0.4); the rest "
                                                      "fine-tunes at it"),
    ("--allocation", "sparsity_allocation", str, "uniform (every 1x1 conv at the final sparsity) or erk"),
    ("--distill-alpha", "distill_alpha", float, "with --distill: weight of the dense model's term (default 0.5)"),
    ("--distill-temperature", "distill_temperature", float, "with --distill: softmax temperature (default 4)"),
    ("--quantize", "quantize", str, "int8: also export both models as full-integer int8 (post-training "
                                    "quantization), and the pruned one fine-tuned int8-aware (see "
                                    "--qat-epochs), and report their accuracy, size and latency"),
    ("--qat-epochs", "qat_epochs", int, "with --quantize int8: epochs of quantization-aware fine-tuning of the "
                                        "pruned model, its zeros kept (PQAT), exported int8 and reported "
                                        "beside post-training quantization (default 1; 0: none)"),
    ("--qat-lr", "qat_learning_rate", float, "with --quantize int8: initial learning rate of that "
                                             "fine-tuning (default 0.0001)"),
    ("--threads", "threads", int, "threads for the latency benchmark"),
    ("--bench-runs", "bench_runs", int, "timed runs per model"),
    ("--seed", "seed", int, "random seed (data split, initialisation, shuffling)"),
    ("--out", "out_dir", str, "parent folder of run folders (default ./spruce-runs)"),
    ("--name", "name", str, "run folder name (default: the dataset, -quick for --quick)"),
]


def add_arguments(parser):
    parser.add_argument("--config", metavar="FILE.toml",
                        help="settings file (see configs/default.toml); flags override it")
    for flag, dest, kind, text in _FLAGS:
        metavar = {int: "N", float: "X"}.get(kind, flag.lstrip("-").split("-")[-1].upper())
        parser.add_argument(flag, dest=dest, type=kind, default=None, metavar=metavar, help=text)
    parser.add_argument("--block-size", dest="block_size", default=None, metavar="HxW",
                        help="prune the 1x1 convolutions in blocks of H input x W output channels, "
                             "e.g. 1x4 (default 1x1: single weights)")
    parser.add_argument("--pretrained", dest="pretrained", action="store_const", const="yes", default=None,
                        help="the model arrives trained: skip dense training, evaluate it as it is, "
                             "fine-tune it with pruning (default: detected, see docs/workflow.md)")
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_const", const="no",
                        help="train the model densely even though it arrives trained (from its weights)")
    parser.add_argument("--distill", dest="distill", action="store_const", const=True, default=None,
                        help="fine-tune with knowledge distillation from the dense model")
    parser.add_argument("--pointwise-only", dest="pointwise_only", action="store_const", const=True,
                        default=None, help="with --target x86: prune only the 1x1 convolutions "
                                           "(PruneForLatencyOnSpruce(pointwise_only=True))")
    parser.add_argument("--quick", dest="quick", action="store_const", const=True, default=None,
                        help="smoke run on a subset (6000 training, 1000 test images, 3 + 2 epochs)")
    parser.add_argument("--distribute", dest="distribute", action="store_const", const=True, default=None,
                        help="train on all local devices with the backend's data-parallel engine "
                             "(JAX: keras.distribution.DataParallel, TensorFlow: MirroredStrategy); "
                             "--batch-size is the global batch")
    parser.add_argument("--cpu-devices", dest="cpu_devices", type=int, default=None, metavar="N",
                        help="with --distribute on a CPU-only host: split the CPU into N devices")
    parser.add_argument("--no-arm64", dest="arm64_check", action="store_const", const=False, default=None,
                        help="skip the emulated aarch64 sparse-path check")
    parser.add_argument("--fresh", action="store_true", help="redo every stage instead of resuming")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args):
    import json
    import os

    from spruce.cli import exit_codes
    from spruce.workflow.config import ConfigError, load_config
    from spruce.workflow.data import DataError
    from spruce.workflow.model import ModelError

    overrides = {dest: getattr(args, dest) for _, dest, _, _ in _FLAGS}
    overrides["block_size"] = args.block_size  # "HxW": load_config parses and checks it
    overrides["quick"] = args.quick
    overrides["arm64_check"] = args.arm64_check
    overrides["distribute"] = args.distribute
    overrides["cpu_devices"] = args.cpu_devices
    overrides["pretrained"] = args.pretrained
    overrides["distill"] = args.distill
    overrides["pointwise_only"] = args.pointwise_only
    try:
        config = load_config(args.config, overrides)
    except ConfigError as e:
        return exit_codes.fail("run", e)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from spruce.workflow.pipeline import run

    try:
        result = run(config, fresh=args.fresh, progress=not args.no_progress, quiet=False)
    except (ConfigError, DataError, ModelError) as e:
        return exit_codes.fail("run", e)
    except ImportError as e:  # an optional dependency (matplotlib, ai-edge-litert, ...): the hint says which
        return exit_codes.fail("run", e, exit_codes.ENVIRONMENT)
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
    else:
        print()
        print(result)
    return exit_codes.OK
