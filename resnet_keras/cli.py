"""The ``resnet-keras`` command line.

Every sub-command is a thin layer over the Python API. Exit status: 0 on
success; 2 on a usage or input error; 1 on any other failure; 130 after
Ctrl-C. An error is exactly one line on stderr, with no traceback and no
usage block: ``resnet-keras COMMAND: error: MESSAGE`` for usage and input
errors, ``resnet-keras COMMAND: internal error: TYPE: MESSAGE (set
RESNET_KERAS_VERBOSE=1 for the traceback)`` for other failures. Usage errors
(what argparse rejects, such as an unknown option or ``--epochs two``) end in
the same line with the hint ``(see 'resnet-keras COMMAND --help')``; input
errors (a value the command refuses) name the value and the valid choices.

While a command runs, TensorFlow's C++ log is quiet below FATAL
(``TF_CPP_MIN_LOG_LEVEL=3``, set when the package loads for the command
line, unless ``TF_CPP_MIN_LOG_LEVEL`` is already set) and Python-level
warnings (the ``warnings`` module, ``tf.get_logger()``, absl logging) are
off unless Python was given ``-W`` options or ``PYTHONWARNINGS``.
``RESNET_KERAS_VERBOSE=1`` keeps all of them and prints tracebacks of
internal errors.
"""
import argparse
import contextlib
import dataclasses
import logging
import math
import sys
import warnings

from resnet_keras._startup import import_module, verbose
from resnet_keras.training.config import keyword, option_fields

# The options of a tuner run that are TrainConfig options (the others are the tuner's).
TUNE_OPTIONS = ("image_size", "strategy", "num_cpu_replicas", "train_subset",
                "steps_per_epoch", "max_steps")
TUNERS = ("hyperband", "bayesian", "random")


class UsageError(Exception):
    """A command line argparse rejects (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that reports errors as one line, without its usage block."""

    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


def _number(text, kind, parse, check, expected):
    try:
        value = parse(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if kind == "float" and not math.isfinite(value) or not check(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _positive_int(text):
    return _number(text, "int", int, lambda v: v >= 1, "a positive integer")


def _int(text):
    return _number(text, "int", int, lambda v: True, "an integer")


def _positive_float(text):
    return _number(text, "float", float, lambda v: v > 0, "a finite positive number")


def _non_negative_float(text):
    return _number(text, "float", float, lambda v: v >= 0, "a finite number >= 0")


def _fraction(text):
    return _number(text, "float", float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _cmd_list(args):
    from resnet_keras import specs

    for name in specs.list_models():
        spec = specs.get_spec(name)
        print(f"{name:22s} {spec.description}")
    return 0


def _cmd_info(args):
    from resnet_keras import specs

    spec, facts = specs.get_spec(args.model), specs.get_facts(args.model)
    size = args.image_size or facts.image_size
    classes = args.classes or facts.classes
    if args.summary or (size, classes) != (facts.image_size, facts.classes):
        params, macs = _build_and_count(args.model, size, classes, args.summary)
    else:  # the pinned numbers: no model to build, Keras not even imported
        params, macs = facts.params, facts.macs
    print(f"model:        {args.model}")
    print(f"description:  {spec.description}")
    print(f"parameters:   {params:,}")
    print(f"input:        {size}x{size}x3")
    print(f"output:       {(None, classes)}")
    print(f"multiply-adds {macs / 1e9:.3f} G")
    return 0


def _build_and_count(model_name, size, classes, summary):
    """``(parameters, multiply-adds)`` of the model built for SIZE x SIZE images."""
    models = import_module("resnet_keras.models")
    model = models.build_model(model_name, classes=classes, input_shape=(size, size, 3))
    if summary:
        model.summary(line_length=110)
    return model.count_params(), models.count_macs(model)


def _lazy(module, function):
    def run(args):
        return getattr(import_module(f"resnet_keras.{module}"), function)(args)

    return run


# argparse types of the TrainConfig value kinds (see resnet_keras.training.config.option).
_KIND_TYPES = {"positive_int": _positive_int, "int": _int, "positive_float": _positive_float,
               "non_negative_float": _non_negative_float, "fraction": _fraction}


def _add_option(parser, field, **overrides):
    """The flag of one TrainConfig field, with its type, default and help."""
    meta = field.metadata
    kwargs = {"dest": keyword(field), "help": meta["help"].replace("%", "%%")}
    if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
        kwargs["required"] = True
    else:
        kwargs["default"] = field.default
    kind = meta["kind"]
    if kind == "switch":
        kwargs["action"] = "store_true"
    elif kind == "optional_bool":
        kwargs["action"] = argparse.BooleanOptionalAction
    elif kind == "choice":
        kwargs["choices"] = meta["choices"]
    else:
        kwargs["metavar"] = meta["flag"].lstrip("-").replace("-", "_").upper()
        if kind in _KIND_TYPES:
            kwargs["type"] = _KIND_TYPES[kind]
    kwargs.update(overrides)
    parser.add_argument(meta["flag"], **kwargs)


def _add_train_options(parser, names=None, **overrides):
    """The flags of the TrainConfig fields (only those whose keywords are in
    NAMES, if given); OVERRIDES maps a keyword to argparse settings to change."""
    groups = {}
    for section, field in option_fields():
        if field.metadata["flag"] and (names is None or keyword(field) in names):
            if names is None and section not in groups:  # all of them: grouped by section
                groups[section] = parser.add_argument_group(f"{section} options")
            _add_option(groups.get(section, parser), field, **overrides.get(keyword(field), {}))


def _add_data_args(parser):
    _add_train_options(parser, ("dataset", "data_dir"))


def build_parser():
    parser = _Parser(
        prog="resnet-keras",
        description="ResNet and Dilated Residual Network zoo for Keras 3.",
        epilog="Exit status: 0 success, 2 usage or input error (one line on stderr), "
               "1 other failure. RESNET_KERAS_VERBOSE=1 shows TensorFlow's logs and "
               "warnings, and tracebacks of internal errors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list the registered models")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="print a model's parameters and multiply-adds")
    p.add_argument("model")
    p.add_argument("--image-size", type=_positive_int, default=None,
                   help="default: 224 (CIFAR ResNets: 32)")
    p.add_argument("--classes", type=_positive_int, default=None,
                   help="default: 1000 (CIFAR ResNets: 10)")
    p.add_argument("--summary", action="store_true",
                   help="build the model and print its layer table")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("train", help="train a model and optionally export it")
    _add_train_options(p)  # one flag per TrainConfig option
    p.set_defaults(func=_lazy("train", "train_main"))

    p = sub.add_parser("evaluate", help="top-1 / top-5 of a trained model")
    p.add_argument("--model-dir", required=True)
    _add_data_args(p)
    p.add_argument("--split", default=None, help="default: test, else validation")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average each prediction with the mirror image's "
                        "(default: as the run was evaluated)")
    p.add_argument("--batch-size", type=_positive_int, default=128)
    p.set_defaults(func=_lazy("train", "evaluate_main"))

    p = sub.add_parser("export", help="export a trained model for TF Serving")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--export-dir", required=True)
    p.add_argument("--version", type=_positive_int, default=None)
    p.add_argument("--format", choices=("saved_model", "litert", "onnx"), default="saved_model",
                   help="saved_model: BASE/<version>/ for TF Serving; litert / onnx: "
                        "BASE/model*.tflite / BASE/model.onnx")
    p.add_argument("--quantize", choices=("none", "float16", "int8"), default="none",
                   help="LiteRT weights: float32 (none), float16, or full-integer int8 "
                        "calibrated on the run's training images")
    p.add_argument("--serving-config", action="store_true",
                   help="also write models.config and batching_parameters.txt for "
                        "tensorflow_model_server next to the versions")
    p.set_defaults(func=_lazy("export", "export_main"))

    p = sub.add_parser("predict", help="classify images with an exported model")
    p.add_argument("--export-dir", required=True,
                   help="an export base (newest version is used) or one version")
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=_positive_int, default=5)
    p.set_defaults(func=_lazy("predict", "predict_main"))

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
    _add_train_options(p, TUNE_OPTIONS,
                       strategy={"choices": ("auto", "mirrored", "one-device")})
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
    p.add_argument("--holdout", type=_positive_int, default=None, metavar="N",
                   help="validate on the last N training images, not the test split "
                        "(to choose a recipe; default: the protocol's, e.g. 5000 for "
                        "cifar10-recipe)")
    p.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 (CPU) / float16 (GPU) compute for new rows (default: the "
                        "precision of the protocol's finished rows, else the device's; a "
                        "resumed row keeps its own)")
    p.add_argument("--strategy", choices=("auto", "mirrored", "one-device"), default="auto")
    p.add_argument("--quiet", action="store_true", help="no per-epoch training output")
    p.set_defaults(func=_lazy("experiments.results", "results_main"))
    p = sub.add_parser("transfer", help="pretrain resnet20 on CIFAR-10's animals, fine-tune "
                                        "it on its vehicles; report and plot")
    p.add_argument("--out", required=True,
                   help="folder for transfer.md/.json/.png, the class subsets and the runs")
    p.add_argument("--dataset", default=None,
                   help="CIFAR-10 as folder:PATH (default: the offline CIFAR-10 copy)")
    for flag, what in (("--pretrain-per-class", "animal training images per class "
                                                "(default: 2500)"),
                       ("--pretrain-epochs", "pretraining epochs (default: 10)"),
                       ("--per-class", "vehicle training images per class (default: 100)"),
                       ("--epochs", "epochs of each fine-tune (default: 30)")):
        p.add_argument(flag, type=_positive_int, default=None, help=what)
    p.add_argument("--steps-per-epoch", type=_positive_int, default=None,
                   help="steps per epoch of every run (short trials)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch training output")
    p.set_defaults(func=_lazy("experiments.transfer", "transfer_main"))
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
    p.add_argument("--rounds", type=_positive_int, default=1,
                   help="run the training and forward contenders this many times, "
                        "each round in the reverse order of the one before, and report "
                        "the median over all rounds (steadier ratios on shared machines)")
    p.add_argument("--data", default=None,
                   help="image folder with train/<class>/ and test/<class>/ (default: a "
                        "subset of the offline CIFAR-10)")
    p.add_argument("--output", default=None, help="also write the results as JSON")
    p.set_defaults(func=_lazy("experiments.benchmark", "benchmark_main"))
    return parser


@contextlib.contextmanager
def _quiet_python_logs():
    """Python warnings, the ``tensorflow`` logger and absl logging off (restored after)."""
    if verbose():
        yield
        return
    loggers = [logging.getLogger("tensorflow"), logging.getLogger("absl")]
    levels = [logger.level for logger in loggers]
    absl_logging = sys.modules.get("absl.logging")
    absl_level = absl_logging.get_verbosity() if absl_logging else None
    with warnings.catch_warnings():
        if not sys.warnoptions:
            warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        if absl_logging:
            absl_logging.set_verbosity(absl_logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
            if absl_logging:
                absl_logging.set_verbosity(absl_level)


def main(argv=None):
    """Run the command line ARGV (default: sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            prog = f"resnet-keras {args.command}"
            raise UsageError(f"{prog}: error: unrecognized arguments: {' '.join(extras)} "
                             f"(see '{prog} --help')")
    except UsageError as err:
        print(err, file=sys.stderr)
        return 2
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else 0
    from resnet_keras.errors import MissingExtra, first_line

    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for the records
    command = f"resnet-keras {args.command}"
    try:
        with _quiet_python_logs():
            return int(args.func(args) or 0)
    except (ValueError, MissingExtra) as err:
        print(f"{command}: error: {first_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `resnet-keras list | head`
        sys.stderr.close()
        return 0
    except Exception as err:  # an internal failure: one line, exit status 1
        if verbose():
            import traceback

            traceback.print_exc()
        print(f"{command}: internal error: {type(err).__name__}: {first_line(err)}"
              + ("" if verbose() else " (set RESNET_KERAS_VERBOSE=1 for the traceback)"),
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
