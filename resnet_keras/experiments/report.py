"""The report of an accuracy protocol: results.md, .csv, .json and two plots.

``results.md`` holds the table, the mean and spread of the models trained
with several seeds (rows of one ``group``), each published anchor beside what
the run measured for the same pair of models (their means over seeds, and
whether one is ahead at every seed), the command that made it and the
protocol's prose; the plots need matplotlib (the ``results`` extra).
"""
import csv
import json
import os
import statistics

from resnet_keras.atomic import write_atomic
from resnet_keras.experiments.measure import machine_line


def write_json(path, value):
    """Write VALUE to PATH as JSON, atomically (a temporary file, then a rename)."""
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True))


COLUMNS = ("label", "model", "params", "flops", "epochs", "wall_time", "top1", "top5")


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.2f}"


def median_epoch_seconds(curve):
    """The median wall time of one epoch (its evaluation included) along CURVE,
    the per-epoch points with cumulative ``seconds``; None without points.

    Unlike the total, it does not count an epoch that a paused or crowded run
    stretched."""
    ends = [point["seconds"] for point in curve]
    if not ends:
        return None
    return statistics.median(b - a for a, b in zip([0.0] + ends, ends))


def _seconds(value):
    return "n/a" if value is None else f"{value:,.0f} s"


def table_markdown(rows):
    lines = ["| model | builder | precision | params | MFLOPs/image | epochs | wall time | "
             "median epoch | train img/s | top-1 % | top-5 % |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        builder = r["model"] + "".join(f", {k}={v}" for k, v in r["overrides"].items())
        lines.append(f"| {r['label']} | `{builder}` | {r['precision']} | {r['params']:,} | "
                     f"{r['flops'] / 1e6:,.1f} | {r['epochs']} | "
                     f"{r['wall_time'] / 60:.1f} min | "
                     f"{_seconds(median_epoch_seconds(r.get('curve', ())))} | "
                     f"{r['images_per_second']:,.0f} | "
                     f"{_pct(r['top1'])} | {_pct(r['top5'])} |")
    return "\n".join(lines)


def group_of(row):
    """The name of the group whose seeds ROW is averaged with (its label by default)."""
    return row.get("group") or row["label"]


def seed_groups(rows):
    """ROWS pooled by group, in the order the groups first appear: for each, its
    ``group`` name, ``labels``, ``seeds``, ``top1s`` (one per row), ``mean``,
    ``low``, ``high``, ``std`` (the sample standard deviation; None for one
    seed) and the ``epochs`` of its rows."""
    pooled = {}
    for r in rows:
        pooled.setdefault(group_of(r), []).append(r)
    groups = []
    for name, members in pooled.items():
        top1s = [m["top1"] for m in members]
        groups.append({
            "group": name, "labels": [m["label"] for m in members],
            "seeds": [m.get("seed") for m in members], "top1s": top1s,
            "mean": statistics.fmean(top1s), "low": min(top1s), "high": max(top1s),
            "std": statistics.stdev(top1s) if len(top1s) > 1 else None,
            "epochs": sorted({m["epochs"] for m in members})})
    return groups


def _epochs(group):
    return "/".join(str(e) for e in group["epochs"])


def _top1(group):
    """A group's top-1 for a sentence: the value of its one row, or the mean
    of its seeds with their range."""
    if len(group["top1s"]) == 1:
        return f"{_pct(group['mean'])} %"
    return (f"{_pct(group['mean'])} % (mean of {len(group['top1s'])} seeds, "
            f"{_pct(group['low'])}-{_pct(group['high'])})")


def _against_published(anchor, group):
    if group is None:
        return "  - Measured here: not run."
    gap = 100 * group["mean"] - anchor.published_top1
    reached = "reached" if gap >= 0 else "not reached"
    return (f"  - Measured here: {group['group']} {_top1(group)} top-1 after "
            f"{_epochs(group)} epoch(s), against the published {anchor.published_top1:.2f} % "
            f"({gap:+.2f} points): {reached}.")


def seed_verdict(base, other):
    """Whether OTHER beats BASE beyond the spread of their seeds, in one sentence."""
    if len(base["top1s"]) < 2 or len(other["top1s"]) < 2:
        return "One seed each side: no spread to judge the gap by yet."
    if other["low"] > base["high"]:
        return f"{other['group']} is ahead at every seed: it wins."
    if other["high"] < base["low"]:
        return f"{base['group']} is ahead at every seed: it wins."
    return "The seeds overlap: neither wins beyond the spread between seeds."


def anchor_lines(spec, rows):
    """Each anchor, with what this run measured for the same pair (its groups:
    the mean over seeds where a model has several)."""
    by_group = {g["group"]: g for g in seed_groups(rows)}
    lines = []
    for anchor in spec.anchors:
        lines.append(f"- {anchor.text}")
        if anchor.published_top1 is not None:  # one model against its published top-1
            lines.append(_against_published(anchor, by_group.get(anchor.labels[0])))
            continue
        base, other = (by_group.get(label) for label in anchor.labels)
        if base is None or other is None:
            lines.append("  - Measured here: not run.")
            continue
        gain = 100 * (other["mean"] - base["mean"])
        verdict = ""
        if anchor.published_gain is not None:  # a published gap exists
            agrees = (gain > 0) == (anchor.published_gain > 0)
            verdict = (" The sign agrees with the published gap." if agrees else
                       " The sign disagrees with the published gap.")
        lines.append(f"  - Measured here: {anchor.labels[1]} {_top1(other)} vs "
                     f"{anchor.labels[0]} {_top1(base)} top-1 "
                     f"({gain:+.2f} points) after {_epochs(other)} and {_epochs(base)} "
                     f"epoch(s).{verdict} {seed_verdict(base, other)}")
    return lines


def seed_lines(rows):
    """The table of the groups trained with more than one seed: mean, range,
    standard deviation and each seed's top-1 (nothing when every group has one)."""
    groups = [g for g in seed_groups(rows) if len(g["top1s"]) > 1]
    if not groups:
        return []
    lines = ["", "## Over seeds", "",
             "| model | seeds | top-1 % mean | range | std | each seed |",
             "|---|---:|---:|---:|---:|---|"]
    for g in groups:
        each = ", ".join(f"{_pct(t)} ({label})" for t, label in zip(g["top1s"], g["labels"]))
        lines.append(f"| {g['group']} | {len(g['top1s'])} | {_pct(g['mean'])} | "
                     f"{_pct(g['low'])}-{_pct(g['high'])} | {_pct(g['std'])} | {each} |")
    return lines


def machines_text(rows):
    """Where the rows were trained: "Machine: M." when one machine ran them all,
    else each machine with the labels of its rows. A row without a recorded
    machine is taken to be this one's."""
    here, labels = machine_line(), {}
    for r in rows:
        labels.setdefault(r.get("machine") or here, []).append(r["label"])
    if len(labels) <= 1:
        return f"Machine: {next(iter(labels), here)}."
    return "Machines: " + "; ".join(
        f"{machine} ({', '.join(names)})" for machine, names in labels.items()) + "."


def evaluation_text(rows):
    """Which images the top-1 of ROWS is measured on, when that is not the test
    set: the held-out slices of the training set, named with their split."""
    held = sorted({(r["holdout"], r.get("eval_split") or "?") for r in rows if r.get("holdout")})
    if not held:
        return []
    slices = " and ".join(f"`{split}` (the last {n:,} training images)" for n, split in held)
    return ["", f"Top-1 and top-5 are measured on the held-out slice {slices}, which "
                "no model trains on, not on the test set."]


def recipe_lines(rows):
    """The recipe options each row changes from the protocol's recipe."""
    changed = [r for r in rows if r.get("recipe_changes")]
    if not changed:
        return []
    return ["", "Recipe of each row beyond the protocol's: " + "; ".join(
        f"{r['label']}: " + ", ".join(f"{k}={v}" for k, v in r["recipe_changes"].items())
        for r in changed) + "."]


def averaging_lines(rows):
    """What the weight average (EMA) and flip averaging gave each row that has
    them: its reported top-1 against the same model without each."""
    lines = []
    for r in rows:
        parts = []
        if "top1_live" in r:
            parts.append(f"without the weight average {_pct(r['top1_live'])} % "
                         f"(EMA {100 * (r['top1'] - r['top1_live']):+.2f} points)")
        if "top1_no_flip" in r:
            parts.append(f"without flip averaging {_pct(r['top1_no_flip'])} % "
                         f"(flip {100 * (r['top1'] - r['top1_no_flip']):+.2f} points)")
        if parts:
            lines.append(f"- {r['label']}: {_pct(r['top1'])} % top-1 as reported; "
                         + "; ".join(parts) + ".")
    return (["", "## What the averaging gives", ""] + lines) if lines else []


def write_report(out_dir, spec, rows, dataset, command):
    """results.{md,csv,json} and the PNG plots for the finished rows."""
    write_json(os.path.join(out_dir, "results.json"),
               {"protocol": spec.name, "dataset": dataset, "command": command, "rows": rows,
                "groups": seed_groups(rows)})
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS + ("precision", "best_top1", "images_per_second", "overrides",
                                   "recipe_changes"))
        for r in rows:
            writer.writerow([r[c] for c in COLUMNS] + [
                r["precision"], r["best_top1"], round(r["images_per_second"], 1),
                json.dumps(r["overrides"]), json.dumps(r.get("recipe_changes", {}))])
    plots = write_plots(out_dir, rows)
    text = [f"# Results: protocol `{spec.name}`", "", spec.description, "",
            f"Data: `{dataset}`. {machines_text(rows)}", "",
            "Made with (rerunning it skips the finished models; `--models LABEL ...` "
            "runs some of them):", "", f"    {command}", "", table_markdown(rows)]
    text += evaluation_text(rows) + recipe_lines(rows)
    text += ["", "FLOPs are 2 x multiply-adds of one forward pass at "
             f"{spec.image_size}x{spec.image_size}; wall time includes evaluation after "
             "every epoch and any time the run was paused or shared the machine; the "
             "median epoch (its evaluation included) does not count such stretches."]
    text += seed_lines(rows)
    text += ["", "## Against the published anchors", ""]
    text += anchor_lines(spec, rows)
    text += averaging_lines(rows)
    text += ["", "## With a full schedule", "", spec.full_schedule, ""]
    text += [f"![{name}]({name})" for name in plots]
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write("\n".join(text) + "\n")


def pyplot():
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
    """accuracy_vs_epochs.png and, when the rows differ in compute,
    accuracy_vs_flops.png; the names of the files written."""
    plt, ticker = pyplot()
    names = ("accuracy_vs_epochs.png", "accuracy_vs_flops.png")
    held = [bool(r.get("holdout")) for r in rows]
    split = "held-out" if all(held) else "validation" if any(held) else "test"
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for r in rows:
        ax.plot([p["epoch"] for p in r["curve"]], [100 * p["top1"] for p in r["curve"]],
                marker="o", label=r["label"])
    ax.set(xlabel="epoch", ylabel=f"{split} top-1 (%)", title="Top-1 after each epoch")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, names[0]))
    plt.close(fig)
    if len({r["flops"] for r in rows}) < 2:  # one compute: nothing to plot against it
        return names[:1]

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    # One point per model: the mean over its seeds, with a bar over their range.
    groups = seed_groups(rows)
    flops = {group_of(r): r["flops"] for r in rows}
    points = [(flops[g["group"]] / 1e6, 100 * g["mean"]) for g in groups]
    span = max(1.0, max(y for _, y in points) - min(y for _, y in points))
    for i, (g, (x, y)) in enumerate(zip(groups, points)):
        seeds = len(g["top1s"])
        if seeds > 1:
            ax.errorbar([x], [y], yerr=[[y - 100 * g["low"]], [100 * g["high"] - y]],
                        fmt="o", markersize=6, capsize=3)
        else:
            ax.scatter([x], [y], s=40)
        # A label beside an earlier point close to its own moves away from it: to
        # the left of its point when they all lie to the right, else below it.
        near = [x0 for x0, y0 in points[:i]
                if abs(y - y0) < 0.05 * span and 0.75 < x / x0 < 1.33]
        offset, align = ((6, 4), "left")
        if near:
            offset, align = ((-6, 4), "right") if min(near) > x else ((6, -11), "left")
        label = f"{g['group']} ({_epochs(g)} ep" + (f", {seeds} seeds)" if seeds > 1 else ")")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=offset,
                    horizontalalignment=align, fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.margins(x=0.25, y=0.1)
    ax.set(xlabel="forward MFLOPs per image (log)",
           ylabel=f"final {split} top-1 (%), mean over seeds",
           title="Top-1 against compute")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, names[1]))
    plt.close(fig)
    return names
