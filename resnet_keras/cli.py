"""The ``resnet-keras`` command line.

Every sub-command is a thin layer over the Python API. Exit status: 0 on
success, 2 on a usage or input error (one line on stderr, no traceback),
1 on any other failure.
"""
import argparse
import sys

STRATEGIES = ("auto", "mirrored", "multi-worker", "one-device")
TUNERS = ("hyperband", "bayesian", "random")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _cmd_list(args):
    from resnet_keras import specs

    for name in specs.list_models():
        spec = specs.get_spec(name)
        print(f"{name:22s} {spec.description}")
    return 0


def _cmd_info(args):
    from resnet_keras import models, specs

    specs.get_spec(args.model)
    model = models.build_model(
        args.model, classes=args.classes,
        input_shape=(args.image_size, args.image_size, 3))
    if args.summary:
        model.summary(line_length=110)
    macs = models.count_macs(model)
    print(f"model:        {args.model}")
    print(f"description:  {specs.get_spec(args.model).description}")
    print(f"parameters:   {model.count_params():,}")
    print(f"input:        {args.image_size}x{args.image_size}x3")
    print(f"output:       {tuple(model.output.shape)}")
    print(f"multiply-adds {macs / 1e9:.3f} G")
    return 0


def _lazy(module, function):
    def run(args):
        import importlib

        return getattr(importlib.import_module(f"resnet_keras.{module}"), function)(args)

    return run


def _add_data_args(parser):
    parser.add_argument("--dataset", required=True,
                        help="TFDS name (e.g. cifar10) or folder:PATH")
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data directory (default: $TFDS_DATA_DIR)")


def _add_run_args(parser, strategies):
    """Training-budget and device arguments shared by train and tune."""
    parser.add_argument("--image-size", type=_positive_int, default=None,
                        help="training resolution (default: 32 for small images, else 224)")
    parser.add_argument("--strategy", choices=strategies, default="auto")
    parser.add_argument("--num-cpu-replicas", type=_positive_int, default=None,
                        help="with --strategy mirrored and no GPU: split the CPU into N devices")
    parser.add_argument("--train-subset", type=_positive_int, default=None,
                        help="train on the first N training images only")
    parser.add_argument("--steps-per-epoch", type=_positive_int, default=None)
    parser.add_argument("--max-steps", type=_positive_int, default=None,
                        help="stop a training run after this many steps in all")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="resnet-keras",
        description="ResNet and Dilated Residual Network zoo for Keras 3.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list the registered models")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="build a model and print its size and cost")
    p.add_argument("model")
    p.add_argument("--image-size", type=_positive_int, default=224)
    p.add_argument("--classes", type=_positive_int, default=1000)
    p.add_argument("--summary", action="store_true", help="print the layer table")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("train", help="train a model and optionally export it")
    p.add_argument("--model", required=True)
    _add_data_args(p)
    p.add_argument("--epochs", type=_positive_int, required=True)
    p.add_argument("--batch-size", type=_positive_int, required=True,
                   help="global batch size (split across replicas)")
    p.add_argument("--model-dir", required=True,
                   help="checkpoints, TensorBoard logs and the run config")
    p.add_argument("--export-dir", default=None,
                   help="export a SavedModel to EXPORT_DIR/<version> at the end")
    p.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 (CPU) / float16 (GPU) compute with float32 weights "
                        "(default: on for CPUs with native bfloat16, else off)")
    p.add_argument("--jit-compile", action="store_true", help="compile steps with XLA")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--learning-rate", type=_positive_float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", choices=("cosine", "step"), default="cosine")
    p.add_argument("--warmup-epochs", type=float, default=None)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--cache", action="store_true", help="cache decoded images in memory")
    p.add_argument("--output-stride", type=_positive_int, default=None)
    _add_run_args(p, STRATEGIES)
    p.add_argument("--checkpoint-every", type=_positive_int, default=None,
                   help="steps between checkpoints (default: min(steps per epoch, 500)) "
                        "besides each epoch end")
    p.set_defaults(func=_lazy("train", "train_main"))

    p = sub.add_parser("evaluate", help="top-1 / top-5 of a trained model")
    p.add_argument("--model-dir", required=True)
    _add_data_args(p)
    p.add_argument("--split", default=None, help="default: test, else validation")
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.set_defaults(func=_lazy("train", "evaluate_main"))

    p = sub.add_parser("export", help="export a trained model for TF Serving")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--export-dir", required=True)
    p.add_argument("--version", type=_positive_int, default=None)
    p.set_defaults(func=_lazy("export", "export_main"))

    p = sub.add_parser("predict", help="classify images with an exported model")
    p.add_argument("--export-dir", required=True,
                   help="an export base (newest version is used) or one version")
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=_positive_int, default=5)
    p.set_defaults(func=_lazy("export", "predict_main"))

    p = sub.add_parser("tune", help="search bottleneck width, depth and dilation")
    _add_data_args(p)
    p.add_argument("--directory", required=True)
    p.add_argument("--max-trials", type=_positive_int, required=True)
    p.add_argument("--tuner", choices=TUNERS, default="hyperband")
    p.add_argument("--export-dir", default=None,
                   help="export the best trial's model to EXPORT_DIR/<version>")
    p.add_argument("--epochs", type=_positive_int, default=3,
                   help="epochs per trial (hyperband: of its longest trials)")
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.add_argument("--family", nargs="+", choices=("resnet", "drn_c", "drn_d"), default=None,
                   help="families to search (default: all)")
    p.add_argument("--block", nargs="+", choices=("basic", "bottleneck"), default=None,
                   help="block types to search (default: both)")
    p.add_argument("--depth-range", nargs=2, type=_positive_int, default=None,
                   metavar=("MIN", "MAX"), help="blocks per searched stage")
    p.add_argument("--groups", nargs="+", type=_positive_int, default=None,
                   help="bottleneck cardinalities to search (default: 1 2 4 8 16 32)")
    p.add_argument("--max-params", type=_positive_float, default=None,
                   help="skip candidates with more parameters")
    p.add_argument("--max-flops", type=_positive_float, default=None,
                   help="skip candidates with more multiply-adds per image")
    p.add_argument("--seed", type=_positive_int, default=1,
                   help="seeds the sampling and every trial's training")
    p.add_argument("--quiet", action="store_true", help="no per-epoch training output")
    _add_run_args(p, ("auto", "mirrored", "one-device"))
    p.set_defaults(func=_lazy("tuning", "tune_main"))
    p = sub.add_parser("results", help="train ResNet and DRN under one protocol; table "
                                       "and plots")
    p.add_argument("--out", required=True,
                   help="folder for results.md/.csv/.json, the PNG plots and the runs")
    p.add_argument("--protocol", default="cifar10-short")
    p.add_argument("--dataset", default=None,
                   help="TFDS name or folder:PATH (default: the offline CIFAR-10 copy)")
    p.add_argument("--models", nargs="+", default=None, metavar="LABEL",
                   help="run only these models of the protocol")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="override every model's epochs (shorter trials)")
    p.add_argument("--train-subset", type=_positive_int, default=None,
                   help="train on the first N training images only")
    p.add_argument("--steps-per-epoch", type=_positive_int, default=None)
    p.add_argument("--strategy", choices=("auto", "mirrored", "one-device"), default="auto")
    p.add_argument("--quiet", action="store_true", help="no per-epoch training output")
    p.set_defaults(func=_lazy("results", "results_main"))
    p = sub.add_parser("benchmark", help="training, serving and input-pipeline speed "
                                         "against keras.applications and the hardware")
    p.add_argument("suite", choices=("train", "serve", "pipeline", "forward", "jax", "all"),
                   help="all: resnet50 at 224 and resnet20 at 32 training, resnet50 "
                        "serving, the CIFAR-10 pipeline; jax: training through Keras "
                        "fit on the JAX backend (GPUs), beside published figures")
    p.add_argument("--model", default="resnet50")
    p.add_argument("--image-size", type=_positive_int, default=224)
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--classes", type=_positive_int, default=1000,
                   help="classes of the served model (and of the jax suite's)")
    p.add_argument("--steps", type=_positive_int, default=12,
                   help="training steps per contender, warm-up included")
    p.add_argument("--warmup", type=_positive_int, default=4)
    p.add_argument("--repeats", type=_positive_int, default=5,
                   help="timed repetitions per serving path")
    p.add_argument("--data", default=None,
                   help="image folder with train/<class>/ and test/<class>/ (default: a "
                        "subset of the offline CIFAR-10)")
    p.add_argument("--output", default=None, help="also write the results as JSON")
    p.set_defaults(func=_lazy("benchmark", "benchmark_main"))
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as err:
        from resnet_keras.errors import first_line

        message = first_line(err)
        print(f"resnet-keras {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"resnet-keras {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `resnet-keras list | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
