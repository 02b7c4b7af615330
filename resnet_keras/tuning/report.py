"""The search's results: one row per trial, as a text table and as CSV."""
import csv
import io
import os

from resnet_keras.atomic import write_atomic

METRICS = ("val_accuracy", "params", "flops", "wall_time", "epochs")
RESULT_COLUMNS = ("trial", "status", "model", "family", "base", "block", "depths",
                  "bottleneck_width", "groups", "output_stride", "learning_rate",
                  "weight_decay", "epochs", "params", "flops", "val_accuracy", "time_s")


def result_row(hypermodel, trial):
    """The :data:`RESULT_COLUMNS` of a keras-tuner trial of ``hypermodel``."""
    candidate = hypermodel.candidate(trial.hyperparameters.copy())
    kw = candidate.model_kwargs
    metric = {name: _best(trial, name) for name in METRICS}
    return {
        "trial": trial.trial_id, "status": trial.status, "model": candidate.describe(),
        "family": candidate.family, "base": candidate.model_name, "block": kw["block"],
        "depths": "-".join(str(d) for d in kw["depths"]),
        "bottleneck_width": (kw["base_width"] * kw["groups"]
                             if kw["block"] == "bottleneck" else ""),
        "groups": kw.get("groups", ""), "output_stride": kw["output_stride"],
        "learning_rate": candidate.learning_rate, "weight_decay": candidate.weight_decay,
        "epochs": _int_or_blank(metric["epochs"]), "params": _int_or_blank(metric["params"]),
        "flops": _int_or_blank(metric["flops"]), "val_accuracy": metric["val_accuracy"],
        "time_s": metric["wall_time"]}


def _best(trial, name):
    if not trial.metrics.exists(name):
        return None
    return trial.metrics.get_best_value(name)


def _int_or_blank(value):
    return "" if value is None else int(value)


def write_csv(rows, path):
    """Write result rows as CSV (``flops`` is multiply-adds per image)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=RESULT_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in RESULT_COLUMNS})
    write_atomic(path, text.getvalue())


def format_table(rows, best=None):
    """The results as a fixed-width text table; ``*`` marks the best trial."""
    header = ("trial", "architecture", "lr", "wd", "epochs", "params", "MACs", "val top-1",
              "time")
    lines = [header]
    for row in rows:
        accuracy = ("-" if row["val_accuracy"] is None else f"{row['val_accuracy']:.4f}")
        lines.append((
            f"{row['trial']}{'*' if row['trial'] == best else ''}", row["model"],
            f"{row['learning_rate']:.3g}", f"{row['weight_decay']:.2g}", str(row["epochs"]),
            _fmt_count(row["params"], ","), _fmt_count(row["flops"], "M"),
            accuracy if row["status"] == "COMPLETED" else row["status"].lower(),
            "-" if row["time_s"] is None else f"{row['time_s']:.0f}s"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in lines)


def _fmt_count(value, style):
    if value in ("", None):
        return "-"
    return f"{value:,}" if style == "," else f"{value / 1e6:.1f}M"
