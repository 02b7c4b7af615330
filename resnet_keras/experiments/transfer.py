"""Transfer learning on CIFAR-10: pretrain on the animals, fine-tune on the vehicles.

``resnet-keras transfer --out results/transfer`` trains resnet20 on the six
animal classes of CIFAR-10 (bird, cat, deer, dog, frog, horse), then
fine-tunes on few images of the four vehicle classes (airplane, automobile,
ship, truck) three ways, with the same recipe and number of steps: from
scratch, from the pretrained model, and from the pretrained model with the
stem and the first two stages frozen. It writes:

    OUT/transfer.md     the table, the command and the machine
    OUT/transfer.json   every run's numbers and per-epoch curve
    OUT/transfer.png    vehicle test top-1 against the training step
    OUT/data/           the class subsets: folders of links into CIFAR-10
    OUT/runs/<label>/   each training run (resumable)

Rerunning the same command resumes an interrupted run from its last
checkpoint and skips the finished ones. The runs go through
:func:`~resnet_keras.experiments.results.run_entry`, the step of the
accuracy protocols.
"""
import dataclasses
import json
import os
import shlex
from typing import Optional

from resnet_keras import data as data_lib
from resnet_keras import rundir
from resnet_keras.experiments.measure import machine_line
from resnet_keras.experiments.protocols import Entry, Protocol
from resnet_keras.experiments.report import pyplot, write_json
from resnet_keras.experiments.results import run_entry

MODEL = "resnet20"
ANIMALS = ("bird", "cat", "deer", "dog", "frog", "horse")
VEHICLES = ("airplane", "automobile", "ship", "truck")
IMAGE_SIZE = 32
SEED = 0
PRETRAIN_BATCH_SIZE = 128
FINETUNE_BATCH_SIZE = 32
LABEL_SMOOTHING = 0.1
# One peak learning rate for the three fine-tunes: the default recipe's rate
# of the pretraining (0.1 x 128 / 256), not tuned on the vehicles.
FINETUNE_LEARNING_RATE = 0.05
FROZEN_STAGES = 2
PRETRAIN_LABEL = "pretrain"
BUDGET_FILE = "budget.json"


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much the experiment trains: images per class and epochs of each phase."""

    pretrain_per_class: int = 2500
    pretrain_epochs: int = 10
    per_class: int = 100
    epochs: int = 30
    steps_per_epoch: Optional[int] = None  # every run's, when set (short trials)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{field.name.replace('_', ' ')} must be a positive "
                                 f"integer, got {value!r}")


@dataclasses.dataclass(frozen=True)
class FineTune:
    """One fine-tune run: its label, what it starts from and what it keeps fixed."""

    label: str
    title: str
    pretrained: bool = False
    freeze_stages: int = 0


FINETUNES = (
    FineTune("scratch", "(a) from scratch"),
    FineTune("pretrained", "(b) from the pretrained model", pretrained=True),
    FineTune(f"pretrained-frozen{FROZEN_STAGES}",
             f"(c) pretrained, stem and stages 1-{FROZEN_STAGES} frozen",
             pretrained=True, freeze_stages=FROZEN_STAGES),
)


def subset_folder(source_root, dest, classes, per_class_train, what="images per class"):
    """``folder:`` spec of DEST: links to the first PER_CLASS_TRAIN training images
    (by file name) and every test image of each of CLASSES in the image folder
    SOURCE_ROOT. Links already there are kept, others replaced; no image is copied.
    WHAT names PER_CLASS_TRAIN in the error for a class with fewer images."""
    for split, count in (("train", per_class_train), ("test", None)):
        for name in classes:
            folder = os.path.join(source_root, split, name)
            if not os.path.isdir(folder):
                raise ValueError(f"dataset folder {source_root!r} has no {split}/{name}/ "
                                 f"class folder; the transfer experiment needs CIFAR-10's "
                                 f"classes {', '.join(sorted(ANIMALS + VEHICLES))}")
            images = sorted(f for f in os.listdir(folder) if not f.startswith(".")
                            and f.lower().endswith(data_lib.IMAGE_EXTENSIONS))
            if count is not None and len(images) < count:
                raise ValueError(f"{what} {count}: {folder!r} holds {len(images)} "
                                 f"images; use at most {len(images)}")
            _link_all(folder, images[:count], os.path.join(dest, split, name))
    return data_lib.FOLDER_PREFIX + dest


def _link_all(folder, names, dest):
    """DEST holds exactly a link to FOLDER/<name> for each of NAMES."""
    os.makedirs(dest, exist_ok=True)
    wanted = {name: os.path.abspath(os.path.join(folder, name)) for name in names}
    for name in os.listdir(dest):
        path = os.path.join(dest, name)
        if name not in wanted or not os.path.islink(path) or os.readlink(path) != wanted[name]:
            os.remove(path)
    for name, target in wanted.items():
        if not os.path.lexists(os.path.join(dest, name)):
            os.symlink(target, os.path.join(dest, name))


def _source_root(dataset):
    dataset = dataset or data_lib.local_cifar10()
    parsed = data_lib.parse_dataset_spec(dataset)
    if parsed.kind != "folder":
        raise ValueError(f"dataset {dataset!r}: the transfer experiment reads CIFAR-10 as "
                         "an image folder; give folder:PATH (default: the offline copy)")
    return parsed.name


def _protocol(name, batch_size, **recipe):
    return Protocol(name=name, description="", image_size=IMAGE_SIZE, batch_size=batch_size,
                    seed=SEED, entries=(), anchors=(), full_schedule="",
                    recipe=tuple(dict(label_smoothing=LABEL_SMOOTHING, **recipe).items()))


def _check_budget(out_dir, budget, source, write=False):
    """ValueError if OUT_DIR/runs holds runs of another BUDGET; with WRITE,
    record BUDGET there."""
    path = os.path.join(out_dir, "runs", BUDGET_FILE)
    wanted = dict(dataclasses.asdict(budget), dataset=source)
    if os.path.isfile(path):
        with open(path) as f:
            held = json.load(f)
        changed = [key for key in wanted if held.get(key) != wanted[key]]
        if changed:
            key = changed[0]
            raise ValueError(f"{out_dir!r} holds transfer runs with {key} {held.get(key)!r}, "
                             f"not {wanted[key]!r}; use another --out or the same options")
    if write:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json(path, wanted)


def reproduce_command(out_dir, budget, dataset=None):
    """The ``resnet-keras transfer`` command line of these runs."""
    parts = ["resnet-keras", "transfer", "--out", out_dir]
    default = Budget()
    if dataset is not None:
        parts += ["--dataset", dataset]
    for field in dataclasses.fields(budget):
        value = getattr(budget, field.name)
        if value != getattr(default, field.name):
            parts += ["--" + field.name.replace("_", "-"), str(value)]
    return shlex.join(parts)


def run_transfer(out_dir, budget=Budget(), dataset=None, *, verbose=1):
    """Pretrain, fine-tune three ways and write the report to OUT_DIR.

    ``dataset``: CIFAR-10 as ``folder:PATH`` (default: the offline copy,
    :func:`data.local_cifar10`). Returns ``{"pretrain": row, "finetune":
    [rows]}`` (rows as :func:`~resnet_keras.experiments.results.run_entry`
    gives them); the report is rewritten after each run.
    """
    command = reproduce_command(out_dir, budget, dataset)
    root = _source_root(dataset)
    _check_budget(out_dir, budget, root)
    data_dir = os.path.join(os.path.abspath(out_dir), "data")
    animals = subset_folder(root, os.path.join(data_dir, f"animals-{budget.pretrain_per_class}"),
                            ANIMALS, budget.pretrain_per_class, "pretrain per class")
    vehicles = subset_folder(root, os.path.join(data_dir, f"vehicles-{budget.per_class}"),
                             VEHICLES, budget.per_class, "per class")
    _check_budget(out_dir, budget, root, write=True)
    pretrain = run_entry(Entry(PRETRAIN_LABEL, MODEL, budget.pretrain_epochs),
                         _protocol("transfer-pretrain", PRETRAIN_BATCH_SIZE), animals,
                         out_dir, steps_per_epoch=budget.steps_per_epoch,
                         verbose=verbose)
    weights = os.path.join(os.path.abspath(out_dir), "runs", PRETRAIN_LABEL)
    rows = {"pretrain": pretrain, "finetune": []}
    for run in FINETUNES:
        recipe = {"learning_rate": FINETUNE_LEARNING_RATE}
        if run.pretrained:
            recipe.update(weights=weights, freeze_stages=run.freeze_stages)
        rows["finetune"].append(run_entry(
            Entry(run.label, MODEL, budget.epochs),
            _protocol("transfer-finetune", FINETUNE_BATCH_SIZE, **recipe), vehicles, out_dir,
            steps_per_epoch=budget.steps_per_epoch, verbose=verbose))
        write_report(out_dir, rows, budget, command)
    return rows


def _curve(row):
    """ROW's per-epoch curve, each point with its training step."""
    per_epoch = row["steps"] // row["epochs"]
    return [dict(point, step=point["epoch"] * per_epoch) for point in row["curve"]]


def _summary(out_dir, row, run=None):
    """ROW's numbers, with the run's batch, learning rate and image counts."""
    config = rundir.read_run_config(os.path.join(out_dir, "runs", row["label"]))
    return {"label": row["label"], "title": run.title if run else "pretraining",
            "weights": config["weights"], "freeze_stages": config["freeze_stages"],
            "train_images": config["train_examples"],
            "test_images": _count_images(config["dataset"], config["eval_split"]),
            "epochs": row["epochs"], "steps": row["steps"], "batch_size": config["batch_size"],
            "learning_rate": config["recipe"]["learning_rate"],
            "weight_decay": config["recipe"]["weight_decay"], "precision": row["precision"],
            "wall_time": row["wall_time"],
            "top1": row["top1"], "best_top1": row["best_top1"],
            "best_step": max(_curve(row), key=lambda p: p["top1"])["step"],
            "curve": _curve(row)}


def _table(runs):
    lines = ["| run | starts from | frozen | train images | steps | wall time | "
             "final top-1 % | best top-1 % (step) |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        start = "pretraining" if r["weights"] else "random init"
        frozen = f"stem + {r['freeze_stages']} stages" if r["freeze_stages"] else "none"
        lines.append(f"| {r['title']} | {start} | {frozen} | {r['train_images']:,} | "
                     f"{r['steps']} | {r['wall_time'] / 60:.1f} min | {100 * r['top1']:.2f} | "
                     f"{100 * r['best_top1']:.2f} ({r['best_step']}) |")
    return lines


def write_report(out_dir, rows, budget, command):
    """transfer.json, transfer.png and transfer.md of the finished ROWS."""
    pretrain = _summary(out_dir, rows["pretrain"])
    runs = [_summary(out_dir, row, run) for row, run in zip(rows["finetune"], FINETUNES)]
    machine = rows["pretrain"].get("machine") or machine_line()
    write_json(os.path.join(out_dir, "transfer.json"), {
        "command": command, "machine": machine, "budget": dataclasses.asdict(budget),
        "pretrain": pretrain, "finetune": runs})
    _plot(os.path.join(out_dir, "transfer.png"), runs)
    p = pretrain
    text = [
        "# Transfer: CIFAR-10 animals to vehicles", "",
        f"{MODEL} pretrained on the six animal classes ({', '.join(ANIMALS)}): "
        f"{budget.pretrain_per_class:,} training images per class, {p['epochs']} epoch(s) "
        f"of batch {PRETRAIN_BATCH_SIZE} ({p['steps']} steps), the default recipe (SGD "
        f"momentum 0.9, peak learning rate {p['learning_rate']:g} with warm-up and cosine "
        f"decay, weight decay {p['weight_decay']:g}, pad-crop and flip augmentation) plus "
        f"label smoothing {LABEL_SMOOTHING}, seed {SEED}, {p['precision']}.", "",
        f"Then fine-tuned on the four vehicle classes ({', '.join(VEHICLES)}) from "
        f"{budget.per_class} training images per class, three ways with the same recipe, "
        f"batch {FINETUNE_BATCH_SIZE}, {budget.epochs} epoch(s) and seed {SEED}: (a) from "
        f"scratch, (b) from the pretrained model (its best epoch's weights; the 6-class "
        f"classifier is replaced by a new 4-class one), (c) as (b) with the stem and the "
        f"first {FROZEN_STAGES} of 3 stages frozen (BatchNorm there in inference mode). One "
        f"peak learning rate, {FINETUNE_LEARNING_RATE:g}, chosen once for all three (the "
        "pretraining's) and not tuned. Top-1 is measured on every vehicle test image after "
        "every epoch; the reported top-1 is the last epoch's, the best is shown beside it.",
        "", f"Machine: {machine}.", "",
        "Made with (rerunning it resumes an interrupted run and skips the finished ones):",
        "", f"    {command}", "",
        f"Pretraining: top-1 {100 * p['top1']:.2f} % on the {p['test_images']:,}"
        f" animal test images (best epoch {100 * p['best_top1']:.2f} %), wall time "
        f"{p['wall_time'] / 60:.1f} min.", ""]
    text += _table(runs)
    text += ["", f"Each fine-tune is evaluated on the {runs[0]['test_images']:,} vehicle "
             "test images; wall time includes the evaluation after every epoch.", "",
             "![transfer](transfer.png)", ""]
    with open(os.path.join(out_dir, "transfer.md"), "w") as f:
        f.write("\n".join(text) + "\n")


def _count_images(dataset, split):
    root = data_lib.parse_dataset_spec(dataset).name
    return sum(len(files) for _, _, files in os.walk(os.path.join(root, split)))


def _plot(path, runs):
    plt, _ = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for r in runs:
        ax.plot([p["step"] for p in r["curve"]], [100 * p["top1"] for p in r["curve"]],
                marker="o", markersize=3, label=r["title"])
    ax.set(xlabel="training step", ylabel="vehicle test top-1 (%)",
           title="Fine-tuning on CIFAR-10 vehicles")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def transfer_main(args):
    """``resnet-keras transfer``: run the experiment, print where its report is."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Budget)
              if getattr(args, f.name) is not None}
    run_transfer(args.out, Budget(**values), args.dataset, verbose=0 if args.quiet else 1)
    print(f"report: {os.path.join(args.out, 'transfer.md')}")
    return 0
