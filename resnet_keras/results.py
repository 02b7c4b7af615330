"""Accuracy results: ResNet against DRN under one training protocol.

``resnet-keras results --out results/cifar10`` trains every model of a
protocol on the same data with the same recipe and seed, then writes:

    OUT/results.md                 the table, the published anchors, the command
    OUT/results.csv                one row per model
    OUT/results.json               rows plus per-epoch curves
    OUT/accuracy_vs_epochs.png     validation top-1 after each epoch
    OUT/accuracy_vs_flops.png      final top-1 against forward FLOPs per image
    OUT/runs/<label>/              each model's training run (resumable)

Finished models are kept: rerunning the same command resumes an interrupted
model from its last checkpoint and skips the finished ones, so a protocol
can be run in several sittings.
"""
import collections
import csv
import dataclasses
import json
import os
import shlex
import time
from typing import Tuple

from resnet_keras import data as data_lib
from resnet_keras import benchmark, models, train as train_lib

RESULT_FILE = "result.json"


# One model of a protocol: a registry name, its epochs, build overrides (pairs
# of keyword and value), the name of the pair it is compared within, and its
# mixed_precision (None: the device's default, see train.default_mixed_precision),
# its seed (None: the protocol's) and the group its seeds are averaged in (None: the label).
Entry = collections.namedtuple(
    "Entry", "label model epochs overrides pair mixed_precision seed group",
    defaults=((), "", None, None, None))


@dataclasses.dataclass(frozen=True)
class Anchor:
    """A published result the protocol is compared with."""

    text: str
    labels: Tuple[str, str]  # (baseline, contender) of the pair it speaks to
    published_gain: float  # contender top-1 minus baseline top-1, in points


@dataclasses.dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    image_size: int
    batch_size: int
    seed: int
    entries: Tuple[Entry, ...]
    anchors: Tuple[Anchor, ...]
    full_schedule: str
    recipe: Tuple[Tuple[str, object], ...] = ()  # train() options beyond the defaults
    keep_models: bool = False  # copy each final model and run_config.json to OUT/<label>/


# The training recipe every CIFAR-10 protocol shares (train.default_recipe's defaults).
RECIPE = ("SGD momentum 0.9, learning rate 0.1 x batch/256 with 3 % linear warm-up and "
          "cosine decay, weight decay 5e-4 (none on BN and biases), pad-4-crop and flip "
          "augmentation, batch 128, seed 0, the device's default precision")

CIFAR10_SHORT = Protocol(
    name="cifar10-short",
    description=(
        f"CIFAR-10 at 32x32, {RECIPE} (resnet20-fp32: float32 throughout); top-1 and "
        "top-5 on the 10,000 test images after every epoch. The resnet20 variants train "
        "5 epochs, "
        "the ImageNet-design pair (DRN-C-26 costs about 8x the multiply-adds of "
        "resnet20 at 32x32) 2 epochs: about 2 hours on 2 CPU cores."),
    image_size=32, batch_size=128, seed=0,
    entries=(
        Entry("resnet20", "resnet20", 5, pair="resnet20: strided vs dilated last stage"),
        Entry("resnet20-os2", "resnet20", 5, (("output_stride", 2),),
              pair="resnet20: strided vs dilated last stage"),
        Entry("resnet20-fp32", "resnet20", 5, pair="resnet20: default precision vs float32",
              mixed_precision=False),
        Entry("resnet18", "resnet18", 2, pair="ResNet-18 vs DRN-C-26"),
        Entry("drn_c_26", "drn_c_26", 2, pair="ResNet-18 vs DRN-C-26"),
    ),
    anchors=(
        Anchor("He et al. 2016: ResNet-20 reaches 8.75 % test error on CIFAR-10 "
               "(91.25 % top-1) after 64k iterations (182 epochs) of batch 128. The "
               "dilated resnet20-os2 has no published number; the DRN paper's claim is "
               "that keeping resolution in the last stage helps at equal parameters.",
               ("resnet20", "resnet20-os2"), float("nan")),
        Anchor("Yu et al. 2017 (fyu/drn, ImageNet, 224 crop, 90 epochs): ResNet-18 "
               "30.4 % top-1 error, DRN-C-26 24.9 %: DRN-C-26 is 5.5 points better, "
               "at 21.1M against 11.7M parameters and about 9x the multiply-adds.",
               ("resnet18", "drn_c_26"), 5.5),
        Anchor("Mixed precision should leave accuracy per step unchanged (Micikevicius "
               "et al. 2018 for float16, Kalamkar et al. 2019 for bfloat16): "
               "resnet20-fp32 repeats resnet20's run in float32; where the device "
               "default is mixed precision (bfloat16 on CPUs with native bfloat16), "
               "the two rows compare them.",
               ("resnet20-fp32", "resnet20"), float("nan")),
    ),
    full_schedule=(
        "With a full schedule on a GPU (He et al.: 182 epochs for the CIFAR ResNets; "
        "ImageNet at 224 for 90 epochs for the DRN pair, as in the DRN paper), the "
        "absolute accuracies rise to the anchors' range; the short schedule ranks "
        "models by how fast they learn, which favours the cheaper, lower-resolution "
        "networks. The ImageNet-stem models (resnet18, drn_c_26) see 32x32 images "
        "reduced 4x by their stem here, far from the 224x224 they were designed for."),
)

CIFAR10_REFINEMENTS = Protocol(
    name="cifar10-refinements",
    description=(
        f"The modern-ResNet refinements on CIFAR-10 at 32x32, {RECIPE}, the same 4 "
        "epochs for every model: resnet18 with the small-image "
        "stem (3x3 stride-1 conv, no max-pool: output stride 8 at 32x32) against resnet18 "
        "with its ImageNet stem (output stride 32) and resnet20; resnet20 with "
        "zero-initialised residual branches and with stochastic depth 0.1 against plain "
        "resnet20. The CIFAR-stem resnet18 costs about 14x resnet20's multiply-adds, so "
        "on 2 CPU cores the protocol is run on a training subset (--train-subset)."),
    image_size=32, batch_size=128, seed=0,
    # (label, registry name, build overrides, the comparison it belongs to), 4 epochs each
    entries=tuple(Entry(label, model, 4, overrides, pair) for label, model, overrides, pair in (
        ("resnet20", "resnet20", (), "resnet20: plain vs refinements"),
        ("resnet20-zero-init", "resnet20", (("zero_init_last", True),),
         "resnet20: plain vs refinements"),
        ("resnet20-drop-path", "resnet20", (("drop_path_rate", 0.1),),
         "resnet20: plain vs refinements"),
        ("resnet18", "resnet18", (), "resnet18: ImageNet stem vs CIFAR stem"),
        ("resnet18-cifar", "resnet18", (("stem", "cifar"),),
         "resnet18: ImageNet stem vs CIFAR stem"))),
    anchors=(
        Anchor("The CIFAR-style ResNet-18 (3x3 stem, no max-pool) is the common CIFAR-10 "
               "baseline at 93-95 % top-1 after 200 epochs; with the ImageNet stem a "
               "32x32 image is 8x8 after the stem and 1x1 in the last stage, so the "
               "small-image stem should win by a wide margin at any schedule.",
               ("resnet18", "resnet18-cifar"), float("nan")),
        Anchor("Zero-initialised last BatchNorm of each residual branch (Goyal et al. "
               "2017) starts every block as an identity, which eases large-batch ImageNet "
               "training over 90 epochs. Every branch then starts switched off, and its "
               "convolutions receive no gradient until that gamma has grown, so a "
               "schedule of a few hundred steps measures how fast the branches switch on "
               "rather than the final accuracy.",
               ("resnet20", "resnet20-zero-init"), float("nan")),
        Anchor("Stochastic depth (Huang et al. 2016) lowered ResNet-110's CIFAR-10 error "
               "from 6.41 % to 5.25 % after 500 epochs; it is a regulariser, so on a "
               "4-epoch schedule of a 20-layer network it is expected to cost accuracy.",
               ("resnet20", "resnet20-drop-path"), float("nan")),
    ),
    full_schedule=(
        "On a full schedule (200 epochs on the 50,000 training images) the regularisers "
        "(stochastic depth, zero-init) pay off only once the plain network overfits, "
        "which a 4-epoch run never reaches; the stem comparison is a resolution effect "
        "and holds at any schedule."),
)

FULL_RECIPE = (("learning_rate", 0.1), ("nesterov", True), ("label_smoothing", 0.1),
               ("ema_decay", 0.999), ("eval_flip", True))


def _seeds(label, model, overrides, seeds=(0, 1)):
    return tuple(Entry(label if seed == 0 else f"{label}-seed{seed}", model, 60, overrides,
                       "resnet20: strided vs dilated last stage vs deeper", seed=seed,
                       group=label) for seed in seeds)


CIFAR10_FULL = Protocol(
    name="cifar10-full",
    description=(
        "CIFAR-10 at 32x32 on the full schedule of this protocol: all 50,000 training "
        "images, 60 epochs, top-1 on all 10,000 test images after every epoch. Recipe: "
        "SGD with Nesterov momentum 0.9, learning rate 0.1 (batch 128) with 3 % linear "
        "warm-up and cosine decay, weight decay 5e-4 (none on BN and biases), label "
        "smoothing 0.1, an exponential moving average of the weights (decay 0.999, "
        "which is what is evaluated, saved and reported), predictions averaged over "
        "each test image and its mirror image, pad-4-crop and flip augmentation, the "
        "device's default precision. The recipe was fixed on a held-out slice of the "
        "training set (--holdout 5000: train on 45,000, validate on the other 5,000), "
        "never on the test set; the reported top-1 is the last epoch's, not the best. "
        "resnet20 (strided last stage), resnet20-os2 (the same weights' shapes with the "
        "last stage dilated: same parameters, 2x the multiply-adds) and resnet32 (a "
        "deeper strided network of about the dilated twin's cost), two seeds each."),
    image_size=32, batch_size=128, seed=0,
    entries=tuple(e for pair in zip(
        _seeds("resnet20", "resnet20", ()),
        _seeds("resnet20-os2", "resnet20", (("output_stride", 2),)),
        _seeds("resnet32", "resnet32", ())) for e in pair),
    anchors=(
        Anchor("He et al. 2016: ResNet-20 reaches 8.75 % test error on CIFAR-10 "
               "(91.25 % top-1) after 64k iterations (182 epochs) of batch 128; the "
               "target here is the same top-1 in at most 60 epochs.",
               ("resnet20", "resnet20"), float("nan")),
        Anchor("Yu et al. 2017 (DRN): keeping the resolution of the last stage (dilation "
               "instead of stride) improves a residual network at equal parameters. "
               "resnet20-os2 has resnet20's parameters at 2x its multiply-adds.",
               ("resnet20", "resnet20-os2"), float("nan")),
        Anchor("At equal compute, the strided network can spend the dilated twin's "
               "multiply-adds on depth instead: resnet32 (He et al.: 7.51 % error, "
               "92.49 % top-1, 182 epochs) costs about as much as resnet20-os2.",
               ("resnet32", "resnet20-os2"), float("nan")),
    ),
    full_schedule=(
        "This is the full schedule of the protocol; He et al. trained 3x longer "
        "(182 epochs, step decay) without label smoothing, weight averaging or "
        "flip averaging. The images are the shared JPEG copies of CIFAR-10 (quality "
        "75, about 30 dB PSNR), which cost some accuracy against the original pixels."),
    recipe=FULL_RECIPE, keep_models=True,
)

PROTOCOLS = {p.name: p for p in (CIFAR10_SHORT, CIFAR10_REFINEMENTS, CIFAR10_FULL)}


def get_protocol(name):
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choices: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


class _Curve:
    """Per-epoch test accuracy and elapsed seconds, kept in RUN_DIR/curve.json.

    A resumed run continues the curve (and the clock) where it stopped.
    """

    def __init__(self, run_dir):
        self.path = os.path.join(run_dir, "curve.json")
        self.points = []
        if os.path.isfile(self.path):
            with open(self.path) as f:
                self.points = json.load(f)
        self.offset = self.points[-1]["seconds"] if self.points else 0.0
        self.started = time.time()

    def on_epoch_end(self, epoch, logs):
        self.points = [p for p in self.points if p["epoch"] < logs["epoch"]]
        point = {"epoch": logs["epoch"], "top1": logs["val_accuracy"],
                 "top5": logs["val_top5"], "train_accuracy": logs["accuracy"],
                 "seconds": self.offset + time.time() - self.started}
        if "val_accuracy_live" in logs:  # without the weight average
            point["top1_live"] = logs["val_accuracy_live"]
        self.points.append(point)
        _write_json(self.path, self.points)


def _select(protocol, labels):
    entries = protocol.entries
    if not labels:
        return entries
    known = [e.label for e in entries]
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise ValueError(f"unknown model label {unknown[0]!r} in protocol "
                         f"{protocol.name!r}; choices: {', '.join(known)}")
    return tuple(e for e in entries if e.label in labels)


def _model_cost(entry, image_size, classes):
    model = models.build_model(entry.model, classes=classes,
                               input_shape=(image_size, image_size, 3),
                               **dict(entry.overrides))
    return model.count_params(), models.count_macs(model)


def _finished_row(out_dir, entry, identity):
    """ENTRY's row in OUT_DIR if it finished with IDENTITY (on any device: the row
    records its precision and machine)."""
    path = os.path.join(out_dir, "runs", entry.label, RESULT_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        row = json.load(f)
    return row if row.get("identity") == identity else None


def _identity(entry, protocol, dataset, epochs, train_subset, steps_per_epoch, holdout=None):
    identity = {"protocol": protocol.name, "model": entry.model,
                "overrides": dict(entry.overrides), "dataset": dataset,
                "epochs": epochs or entry.epochs, "train_subset": train_subset,
                "steps_per_epoch": steps_per_epoch}
    if entry.mixed_precision is not None:
        identity["mixed_precision"] = entry.mixed_precision
    if entry.seed is not None:
        identity["seed"] = entry.seed
    if protocol.recipe:
        identity["recipe"] = dict(protocol.recipe)
    if holdout:
        identity["holdout"] = holdout
    return identity


def _write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def run_entry(entry, protocol, dataset, out_dir, *, epochs=None, train_subset=None,
              steps_per_epoch=None, strategy="auto", holdout=None, verbose=1):
    """Train one entry (or reuse its finished result); its result row.

    An interrupted run resumes from its last checkpoint at the precision it
    started with, whatever this device's default.
    """
    epochs = epochs or entry.epochs
    run_dir = os.path.join(out_dir, "runs", entry.label)
    identity = _identity(entry, protocol, dataset, epochs, train_subset, steps_per_epoch,
                         holdout)
    done = _finished_row(out_dir, entry, identity)
    if done:
        if verbose:
            print(f"[{entry.label}] finished earlier: top-1 {done['top1']:.4f}", flush=True)
        return done
    if verbose:
        print(f"[{entry.label}] training {entry.model} {dict(entry.overrides) or ''} "
              f"for {epochs} epoch(s)", flush=True)
    os.makedirs(run_dir, exist_ok=True)
    curve = _Curve(run_dir)
    result = train_lib.train(
        entry.model, dataset, epochs=epochs, batch_size=protocol.batch_size,
        model_dir=run_dir, image_size=protocol.image_size, strategy=strategy,
        seed=protocol.seed if entry.seed is None else entry.seed, train_subset=train_subset,
        steps_per_epoch=steps_per_epoch, model_kwargs=dict(entry.overrides),
        mixed_precision=entry.mixed_precision, holdout=holdout, callbacks=[curve],
        verbose=verbose, **dict(protocol.recipe))
    params, macs = _model_cost(entry, protocol.image_size, result.config["num_classes"])
    gains = _gains(result, run_dir, dataset, holdout)
    row = {
        "label": entry.label, "model": entry.model, "overrides": dict(entry.overrides),
        "pair": entry.pair, "params": params, "macs": macs, "flops": 2 * macs,
        "epochs": epochs, "steps": result.steps,
        "wall_time": curve.points[-1]["seconds"] if curve.points else result.wall_time,
        "images_per_second": result.images_per_second, "top1": result.top1,
        "precision": train_lib.precision_policy(result.config["recipe"]["mixed_precision"]),
        "top5": result.top5, "best_top1": result.best_top1, "identity": identity,
        "curve": curve.points, "seed": result.config["seed"],
        "group": entry.group or entry.label, "holdout": holdout,
        "eval_split": result.config["eval_split"], "machine": benchmark.machine_line(),
        **gains}
    if protocol.keep_models:
        _keep_model(run_dir, os.path.join(out_dir, entry.label))
    _write_json(os.path.join(run_dir, RESULT_FILE), row)
    return row


def _gains(result, run_dir, dataset, holdout):
    """Top-1 without the weight average and without flip averaging, where the
    recipe has them (measured on the test split; not for holdout runs)."""
    recipe, gains = result.config["recipe"], {}
    last = result.history[-1] if result.history else {}
    if recipe.get("ema_decay") and "val_accuracy_live" in last:
        gains["top1_live"] = last["val_accuracy_live"]
    if recipe.get("eval_flip") and not holdout:
        gains["top1_no_flip"] = train_lib.evaluate(run_dir, dataset, flip=False)["top1"]
    return gains


def _keep_model(run_dir, target):
    """Copy RUN_DIR's final model and run_config.json to TARGET (small enough to
    commit; ``resnet-keras evaluate --model-dir TARGET`` reproduces the row)."""
    import shutil

    from resnet_keras import rundir

    os.makedirs(target, exist_ok=True)
    for name in (rundir.FINAL_MODEL, rundir.CONFIG_FILE):
        shutil.copyfile(os.path.join(run_dir, name), os.path.join(target, name + ".tmp"))
        os.replace(os.path.join(target, name + ".tmp"), os.path.join(target, name))


def reproduce_command(out_dir, protocol, dataset=None, epochs=None, train_subset=None,
                      steps_per_epoch=None, holdout=None):
    """The ``resnet-keras results`` command line that gives these results."""
    parts = ["resnet-keras", "results", "--out", out_dir]
    for flag, value in (("--protocol", None if protocol == CIFAR10_SHORT.name else protocol),
                        ("--dataset", dataset), ("--epochs", epochs),
                        ("--train-subset", train_subset),
                        ("--steps-per-epoch", steps_per_epoch), ("--holdout", holdout)):
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)


def run_protocol(out_dir, protocol="cifar10-short", dataset=None, *, labels=None,
                 epochs=None, train_subset=None, steps_per_epoch=None, strategy="auto",
                 holdout=None, verbose=1):
    """Train the protocol's models and write the table and plots to OUT_DIR.

    ``dataset`` defaults to the offline CIFAR-10 copy (:func:`data.local_cifar10`).
    ``labels`` picks a subset of the protocol's models; ``epochs``,
    ``train_subset`` and ``steps_per_epoch`` shorten every run (for trials);
    ``holdout=N`` validates on the last N training images instead of the test
    split (to choose a recipe).
    Returns the rows of the models run. The report covers every model of the
    protocol finished with these settings (also in earlier sittings) and is
    rewritten after each model, so a long protocol shows results as they come.
    """
    spec = get_protocol(protocol)
    entries = _select(spec, labels)
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    command = reproduce_command(out_dir, spec.name, dataset, epochs, train_subset,
                                steps_per_epoch, holdout)
    dataset = dataset or data_lib.local_cifar10()
    data_lib.parse_dataset_spec(dataset)
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for entry in entries:
        rows.append(run_entry(entry, spec, dataset, out_dir, epochs=epochs,
                              train_subset=train_subset, steps_per_epoch=steps_per_epoch,
                              strategy=strategy, holdout=holdout, verbose=verbose))
        finished = [_finished_row(out_dir, other, _identity(
            other, spec, dataset, epochs, train_subset, steps_per_epoch, holdout))
            for other in spec.entries]
        write_report(out_dir, spec, [row for row in finished if row], dataset, command)
    return rows


# --------------------------------------------------------------------------
# Report: table, anchors, plots


COLUMNS = ("label", "model", "params", "flops", "epochs", "wall_time", "top1", "top5")


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.2f}"


def table_markdown(rows):
    lines = ["| model | builder | precision | params | MFLOPs/image | epochs | wall time | "
             "train img/s | top-1 % | top-5 % |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        builder = r["model"] + "".join(f", {k}={v}" for k, v in r["overrides"].items())
        lines.append(f"| {r['label']} | `{builder}` | {r['precision']} | {r['params']:,} | "
                     f"{r['flops'] / 1e6:,.1f} | {r['epochs']} | "
                     f"{r['wall_time'] / 60:.1f} min | {r['images_per_second']:,.0f} | "
                     f"{_pct(r['top1'])} | {_pct(r['top5'])} |")
    return "\n".join(lines)


def anchor_lines(spec, rows):
    """Each anchor, with what this run measured for the same pair."""
    by_label = {r["label"]: r for r in rows}
    lines = []
    for anchor in spec.anchors:
        base, other = (by_label.get(label) for label in anchor.labels)
        lines.append(f"- {anchor.text}")
        if base is None or other is None:
            lines.append("  - Measured here: not run.")
            continue
        gain = 100 * (other["top1"] - base["top1"])
        verdict = ""
        if anchor.published_gain == anchor.published_gain:  # a published gap exists
            agrees = (gain > 0) == (anchor.published_gain > 0)
            verdict = (" The sign agrees with the published gap." if agrees else
                       " The sign disagrees with the published gap.")
        lines.append(f"  - Measured here: {anchor.labels[1]} {_pct(other['top1'])} % vs "
                     f"{anchor.labels[0]} {_pct(base['top1'])} % top-1 "
                     f"({gain:+.2f} points) after {other['epochs']} and {base['epochs']} "
                     f"epoch(s).{verdict}")
    return lines


def write_report(out_dir, spec, rows, dataset, command):
    """results.{md,csv,json} and the two PNG plots for the finished rows."""
    _write_json(os.path.join(out_dir, "results.json"),
                {"protocol": spec.name, "dataset": dataset, "command": command,
                 "rows": rows})
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS + ("precision", "best_top1", "images_per_second", "overrides"))
        for r in rows:
            writer.writerow([r[c] for c in COLUMNS] + [
                r["precision"], r["best_top1"], round(r["images_per_second"], 1),
                json.dumps(r["overrides"])])
    plots = write_plots(out_dir, rows)
    text = [f"# Results: protocol `{spec.name}`", "", spec.description, "",
            f"Data: `{dataset}`. Machine: {benchmark.machine_line()}.", "",
            "Made with (rerunning it skips the finished models; `--models LABEL ...` "
            "runs some of them):", "", f"    {command}", "", table_markdown(rows), "",
            "FLOPs are 2 x multiply-adds of one forward pass at "
            f"{spec.image_size}x{spec.image_size}; wall time includes evaluation after "
            "every epoch.", "", "## Against the published anchors", ""]
    text += anchor_lines(spec, rows)
    text += ["", "## With a full schedule", "", spec.full_schedule, ""]
    text += [f"![{name}]({name})" for name in plots]
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write("\n".join(text) + "\n")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ValueError("the results plots need matplotlib: "
                         "pip install 'resnet-keras[results]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    return plt, ticker


def write_plots(out_dir, rows):
    """accuracy_vs_epochs.png and accuracy_vs_flops.png; their file names."""
    plt, ticker = _pyplot()
    names = ("accuracy_vs_epochs.png", "accuracy_vs_flops.png")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for r in rows:
        ax.plot([p["epoch"] for p in r["curve"]], [100 * p["top1"] for p in r["curve"]],
                marker="o", label=r["label"])
    ax.set(xlabel="epoch", ylabel="test top-1 (%)", title="Top-1 after each epoch")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, names[0]))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    points = [(r["flops"] / 1e6, 100 * r["top1"]) for r in rows]
    span = max(1.0, max(y for _, y in points) - min(y for _, y in points))
    for i, (r, (x, y)) in enumerate(zip(rows, points)):
        ax.scatter([x], [y], s=40)
        # A label goes below its point when an earlier point sits close above or below.
        crowded = any(abs(y - y0) < 0.05 * span and 0.75 < x / x0 < 1.33
                      for x0, y0 in points[:i])
        ax.annotate(f"{r['label']} ({r['epochs']} ep)", (x, y), textcoords="offset points",
                    xytext=(6, -11 if crowded else 4), fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.margins(x=0.25, y=0.1)
    ax.set(xlabel="forward MFLOPs per image (log)", ylabel="final test top-1 (%)",
           title="Top-1 against compute")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, names[1]))
    plt.close(fig)
    return names


def results_main(args):
    """``resnet-keras results``: run a protocol, print where its report is."""
    rows = run_protocol(args.out, args.protocol, args.dataset, labels=args.models,
                        epochs=args.epochs, train_subset=args.train_subset,
                        steps_per_epoch=args.steps_per_epoch, strategy=args.strategy,
                        holdout=args.holdout, verbose=0 if args.quiet else 1)
    print(table_markdown(rows))
    print(f"report: {os.path.join(args.out, 'results.md')}")
    return 0
