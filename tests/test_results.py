"""The results command: one protocol, real CIFAR-10 images, table and plots."""
import csv
import json
import os

import pytest

from resnet_keras import cli, train
from resnet_keras.experiments import report as report_lib
from resnet_keras.experiments import results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(cifar_subset, tmp_path_factory):
    """The resnet20 variants, 2 epochs of 3 steps each on real CIFAR-10 images."""
    out = str(tmp_path_factory.mktemp("results"))
    rows = results.run_protocol(
        out, dataset=f"folder:{cifar_subset}",
        labels=["resnet20", "resnet20-os2", "resnet20-fp32"],
        epochs=2, steps_per_epoch=3, verbose=0)
    return out, rows


def test_rows_have_the_measured_columns(report):
    out, rows = report
    assert [r["label"] for r in rows] == ["resnet20", "resnet20-os2", "resnet20-fp32"]
    strided, dilated, fp32 = rows
    default = train.precision_policy(train.default_mixed_precision())
    assert [r["precision"] for r in rows] == [default, default, "float32"]
    assert fp32["params"] == strided["params"] and fp32["flops"] == strided["flops"]
    # Same weights (dilation changes no parameter), more compute at output stride 2.
    assert strided["params"] == dilated["params"] == 271_098
    assert dilated["flops"] > 1.5 * strided["flops"]
    for row in rows:
        assert row["epochs"] == 2 and row["steps"] == 6
        assert [p["epoch"] for p in row["curve"]] == [1, 2]
        assert 0.0 <= row["top1"] <= row["top5"] <= 1.0
        assert row["wall_time"] > 0 and row["curve"][0]["seconds"] < row["wall_time"] + 1e-9
        assert row["top1"] == row["curve"][-1]["top1"]


def test_table_csv_json_and_plots_are_written(report):
    out, rows = report
    with open(os.path.join(out, "results.csv")) as f:
        table = list(csv.DictReader(f))
    assert [r["label"] for r in table] == ["resnet20", "resnet20-os2", "resnet20-fp32"]
    assert int(table[0]["params"]) == rows[0]["params"]
    with open(os.path.join(out, "results.json")) as f:
        stored = json.load(f)
    command = (f"resnet-keras results --out {out} --dataset {stored['dataset']} --epochs 2 "
               "--steps-per-epoch 3")
    assert stored["command"] == command
    assert stored["rows"][1]["overrides"] == {"output_stride": 2}
    assert [g["group"] for g in stored["groups"]] == ["resnet20", "resnet20-os2", "resnet20-fp32"]
    assert stored["groups"][0]["top1s"] == [rows[0]["top1"]]
    text = open(os.path.join(out, "results.md")).read()
    assert f"| resnet20-os2 | `resnet20, output_stride=2` | {rows[1]['precision']} | 271,098 |" in text
    assert "8.75 %" in text and f"    {command}\n" in text
    assert "DRN-C-26" in text and "Measured here: not run." in text
    assert "## Over seeds" not in text  # one seed per model
    for name in ("accuracy_vs_epochs.png", "accuracy_vs_flops.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == PNG_MAGIC
        assert f"![{name}]({name})" in text
        from matplotlib import image

        assert image.imread(os.path.join(out, name)).shape[:2] == (480, 720)


def test_finished_models_are_not_trained_again(report, capsys):
    out, rows = report
    before = os.path.getmtime(os.path.join(out, "runs", "resnet20", "result.json"))
    again = results.run_protocol(
        out, dataset=rows[0]["identity"]["dataset"], labels=["resnet20"], epochs=2,
        steps_per_epoch=3, verbose=1)
    assert "finished earlier" in capsys.readouterr().out
    assert again[0]["top1"] == rows[0]["top1"]
    assert os.path.getmtime(os.path.join(out, "runs", "resnet20", "result.json")) == before
    # The report still covers the models finished in the earlier sitting.
    with open(os.path.join(out, "results.json")) as f:
        stored = json.load(f)
    assert [r["label"] for r in stored["rows"]] == ["resnet20", "resnet20-os2", "resnet20-fp32"]
    assert stored["command"].endswith("--epochs 2 --steps-per-epoch 3")


def test_anchor_verdict_compares_signs():
    spec = results.get_protocol("cifar10-short")
    rows = [{"label": "resnet18", "top1": 0.60, "epochs": 3},
            {"label": "drn_c_26", "top1": 0.65, "epochs": 3}]
    lines = "\n".join(report_lib.anchor_lines(spec, rows))
    assert "+5.00 points" in lines and "sign agrees" in lines
    rows[1]["top1"] = 0.55
    assert "sign disagrees" in "\n".join(report_lib.anchor_lines(spec, rows))


def test_averaging_gains_are_reported_against_the_same_model_without_them():
    rows = [{"label": "resnet20", "top1": 0.8905, "top1_live": 0.8912, "top1_no_flip": 0.8817},
            {"label": "resnet18", "top1": 0.60}]
    lines = report_lib.averaging_lines(rows)
    assert lines[:3] == ["", "## What the averaging gives", ""] and len(lines) == 4
    assert lines[3] == ("- resnet20: 89.05 % top-1 as reported; without the weight average "
                        "89.12 % (EMA -0.07 points); without flip averaging 88.17 % "
                        "(flip +0.88 points).")
    assert report_lib.averaging_lines(rows[1:]) == []


def test_one_model_anchor_meets_its_published_top1():
    spec = results.get_protocol("cifar10-full")
    rows = [{"label": "resnet20", "top1": 0.8905, "epochs": 60}]
    line = report_lib.anchor_lines(spec, rows)[1]
    assert line == ("  - Measured here: resnet20 89.05 % top-1 after 60 epoch(s), against "
                    "the published 91.25 % (-2.20 points): not reached.")
    rows[0]["top1"] = 0.9130
    assert "(+0.05 points): reached." in report_lib.anchor_lines(spec, rows)[1]
    assert report_lib.anchor_lines(spec, [])[1] == "  - Measured here: not run."


def _seeded(label, group, seed, top1):
    return {"label": label, "group": group, "seed": seed, "top1": top1, "epochs": 60}


def test_seeds_are_pooled_by_group_with_mean_range_and_spread():
    rows = [_seeded("resnet20", "resnet20", 0, 0.8905),
            _seeded("resnet20-os2", "resnet20-os2", 0, 0.8985),
            _seeded("resnet20-seed1", "resnet20", 1, 0.8931),
            {"label": "resnet18", "top1": 0.60, "epochs": 3}]  # no group: its own
    groups = report_lib.seed_groups(rows)
    assert [g["group"] for g in groups] == ["resnet20", "resnet20-os2", "resnet18"]
    pooled = groups[0]
    assert pooled["labels"] == ["resnet20", "resnet20-seed1"] and pooled["seeds"] == [0, 1]
    assert pooled["mean"] == pytest.approx(0.8918)
    assert (pooled["low"], pooled["high"]) == (0.8905, 0.8931)
    assert pooled["std"] == pytest.approx(0.0026 / 2 ** 0.5)
    assert groups[1]["std"] is None and groups[1]["mean"] == 0.8985
    assert report_lib.seed_lines(rows) == [
        "", "## Over seeds", "",
        "| model | seeds | top-1 % mean | range | std | each seed |",
        "|---|---:|---:|---:|---:|---|",
        "| resnet20 | 2 | 89.18 | 89.05-89.31 | 0.18 | 89.05 (resnet20), 89.31 (resnet20-seed1) |"]
    assert report_lib.seed_lines(rows[:2]) == []


def test_anchors_compare_the_mean_over_seeds_and_say_who_wins():
    spec = results.get_protocol("cifar10-full")
    rows = [_seeded("resnet20", "resnet20", 0, 0.8905),
            _seeded("resnet20-os2", "resnet20-os2", 0, 0.8985)]
    pair = report_lib.anchor_lines(spec, rows)[3]
    assert pair == ("  - Measured here: resnet20-os2 89.85 % vs resnet20 89.05 % top-1 "
                    "(+0.80 points) after 60 and 60 epoch(s). One seed each side: no spread "
                    "to judge the gap by yet.")
    rows += [_seeded("resnet20-seed1", "resnet20", 1, 0.8931),
             _seeded("resnet20-os2-seed1", "resnet20-os2", 1, 0.8951)]
    lines = report_lib.anchor_lines(spec, rows)
    assert lines[1] == ("  - Measured here: resnet20 89.18 % (mean of 2 seeds, 89.05-89.31) "
                        "top-1 after 60 epoch(s), against the published 91.25 % "
                        "(-2.07 points): not reached.")
    assert lines[3] == ("  - Measured here: resnet20-os2 89.68 % (mean of 2 seeds, "
                        "89.51-89.85) vs resnet20 89.18 % (mean of 2 seeds, 89.05-89.31) "
                        "top-1 (+0.50 points) after 60 and 60 epoch(s). "
                        "resnet20-os2 is ahead at every seed: it wins.")
    rows[3]["top1"] = 0.8920  # now below resnet20's better seed
    assert report_lib.anchor_lines(spec, rows)[3].endswith(
        "The seeds overlap: neither wins beyond the spread between seeds.")
    rows[1]["top1"], rows[3]["top1"] = 0.8801, 0.8899
    assert report_lib.anchor_lines(spec, rows)[3].endswith(
        "resnet20 is ahead at every seed: it wins.")


def test_report_of_two_seeds_gives_their_table_and_groups(tmp_path):
    spec = results.get_protocol("cifar10-full")
    rows = []
    for label, seed, top1 in (("resnet20", 0, 0.8905), ("resnet20-seed1", 1, 0.8931)):
        rows.append(dict(_seeded(label, "resnet20", seed, top1), model="resnet20",
                         overrides={}, precision="float32", params=271098, flops=81.1e6,
                         wall_time=3600.0, images_per_second=1000.0, top5=0.99,
                         best_top1=top1, curve=[{"epoch": 60, "seconds": 3600.0, "top1": top1}],
                         machine=f"2 CPU cores (CPU {seed})"))
    report_lib.write_report(str(tmp_path), spec, rows, "folder:cifar", "resnet-keras results")
    text = (tmp_path / "results.md").read_text()
    assert ("Data: `folder:cifar`. Machines: 2 CPU cores (CPU 0) (resnet20); "
            "2 CPU cores (CPU 1) (resnet20-seed1).") in text
    assert "| resnet20 | 2 | 89.18 | 89.05-89.31 | 0.18 |" in text
    assert text.index("## Over seeds") < text.index("## Against the published anchors")
    assert "resnet20 89.18 % (mean of 2 seeds, 89.05-89.31) top-1" in text
    stored = json.loads((tmp_path / "results.json").read_text())
    assert [(g["group"], g["labels"]) for g in stored["groups"]] == [
        ("resnet20", ["resnet20", "resnet20-seed1"])]


def test_report_names_the_machine_of_each_row(monkeypatch):
    monkeypatch.setattr(report_lib, "machine_line", lambda: "2 CPU cores (here)")
    amd = "2 CPU cores (AMD EPYC; avx2 fma avx512f avx512_bf16), TF 2.21.0, Keras 3.15.1"
    intel = "2 CPU cores (Intel(R) Xeon(R) Processor; avx2 amx_bf16), TF 2.21.0, Keras 3.15.1"
    rows = [{"label": "resnet20", "machine": amd}, {"label": "resnet32", "machine": amd}]
    assert report_lib.machines_text(rows) == f"Machine: {amd}."
    rows.append({"label": "resnet20-seed1", "machine": intel})
    rows.append({"label": "resnet20-old"})
    assert report_lib.machines_text(rows) == (
        f"Machines: {amd} (resnet20, resnet32); {intel} (resnet20-seed1); "
        "2 CPU cores (here) (resnet20-old).")
    assert report_lib.machines_text([]) == "Machine: 2 CPU cores (here)."


def test_table_gives_the_median_epoch_beside_the_total_wall_time():
    # Epochs of 60, 62 and 61 s, then one stretched by a pause to 6,000 s.
    curve = [{"epoch": 1, "seconds": 60.0}, {"epoch": 2, "seconds": 122.0},
             {"epoch": 3, "seconds": 183.0}, {"epoch": 4, "seconds": 6183.0}]
    assert report_lib.median_epoch_seconds(curve) == 61.5
    assert report_lib.median_epoch_seconds([]) is None
    row = {"label": "resnet20", "model": "resnet20", "overrides": {}, "precision": "float32",
           "params": 271098, "flops": 81.1e6, "epochs": 4, "wall_time": 6183.0,
           "images_per_second": 1000.0, "top1": 0.9, "top5": 0.99, "curve": curve}
    line = report_lib.table_markdown([row]).splitlines()[2]
    assert "| 103.0 min | 62 s | 1,000 |" in line
    del row["curve"]
    assert "| 103.0 min | n/a | 1,000 |" in report_lib.table_markdown([row])


@pytest.mark.parametrize("argv, expected", [
    (["--protocol", "imagenet-full"], "unknown protocol 'imagenet-full'; choices: cifar10-short"),
    (["--models", "resnet21"], "unknown model label 'resnet21'"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, argv, expected):
    code = cli.main(["results", "--out", str(tmp_path), "--dataset", "folder:/nonexistent",
                     *argv])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1


def test_reproduce_command_names_only_what_changes_the_results():
    assert (results.reproduce_command("results/cifar10", "cifar10-short")
            == "resnet-keras results --out results/cifar10")
    assert (results.reproduce_command("out dir", "cifar10-short", "folder:/d", epochs=1)
            == "resnet-keras results --out 'out dir' --dataset folder:/d --epochs 1")
    assert (results.reproduce_command("r", "cifar10-full", mixed_precision=False)
            == "resnet-keras results --out r --protocol cifar10-full --no-mixed-precision")
    assert results.reproduce_command("r", "cifar10-short", mixed_precision=True).endswith(
        " --mixed-precision")


def _finished(precision, pinned=False):
    identity = {"mixed_precision": precision != "float32"} if pinned else {}
    return {"precision": precision, "identity": identity}


@pytest.mark.parametrize("entry_pin, requested, resuming, finished, expected", [
    (None, None, False, [], None),  # nothing finished: the device's default
    (None, None, False, [_finished("mixed_bfloat16")] * 2, True),
    (None, None, False, [_finished("float32")], False),
    (None, None, False, [_finished("float32"), _finished("mixed_bfloat16")], None),
    # A row that pins its precision says nothing of the protocol's.
    (None, None, False, [_finished("mixed_bfloat16"), _finished("float32", pinned=True)],
     True),
    (None, False, False, [_finished("mixed_bfloat16")], False),  # --no-mixed-precision
    (None, True, True, [_finished("float32")], None),  # a resumed row keeps its own
    (False, True, False, [_finished("mixed_bfloat16")], False),  # the entry's own first
    (True, None, True, [], True),
])
def test_new_rows_train_at_the_precision_of_the_finished_ones(entry_pin, requested, resuming,
                                                              finished, expected):
    entry = results.get_protocol("cifar10-full").entries[0]._replace(
        mixed_precision=entry_pin)
    assert results.row_precision(entry, finished, requested, resuming) is expected


def test_plots_have_whole_epoch_ticks_and_apart_labels(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", figures.append)
    curve = [{"epoch": 1, "top1": 0.3}, {"epoch": 2, "top1": 0.5}]
    rows = [{"label": label, "epochs": 2, "flops": flops, "top1": top1, "curve": curve}
            for label, flops, top1 in [("a", 8.1e7, 0.761), ("b", 1.6e8, 0.776),
                                       ("c", 8.1e7, 0.758), ("d", 6.9e8, 0.56),
                                       ("e", 1.4e8, 0.776)]]
    report_lib.write_plots(str(tmp_path), rows)
    ticks = figures[0].axes[0].get_xticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)
    # Two models with nearly the same FLOPs and top-1: the second label goes below its
    # point; one close to the left of an earlier point puts its label on its left.
    offsets = {t.get_text(): t.xyann for t in figures[1].axes[0].texts}
    assert offsets == {"a (2 ep)": (6, 4), "b (2 ep)": (6, 4), "c (2 ep)": (6, -11),
                       "d (2 ep)": (6, 4), "e (2 ep)": (-6, 4)}
    assert figures[1].axes[0].texts[4].get_horizontalalignment() == "right"
    # Two more seeds of "a": one point at the mean of its three, with a bar over their range.
    rows += [dict(rows[0], label="a-seed1", group="a", top1=0.771),
             dict(rows[0], label="a-seed2", group="a", top1=0.772)]
    report_lib.write_plots(str(tmp_path), rows)
    ax = figures[3].axes[0]
    assert sorted(t.get_text() for t in ax.texts) == [
        "a (2 ep, 3 seeds)", "b (2 ep)", "c (2 ep)", "d (2 ep)", "e (2 ep)"]
    (a,) = [t for t in ax.texts if t.get_text().startswith("a ")]
    assert a.xy == pytest.approx((81.0, 76.8))
    from matplotlib.collections import LineCollection

    (bar,) = [c for c in ax.collections if isinstance(c, LineCollection)]  # 76.1 to 77.2 %
    assert bar.get_segments()[0][:, 1] == pytest.approx([76.1, 77.2])
    assert ax.get_ylabel() == "final test top-1 (%), mean over seeds"
    # Recipes of one model on a held-out slice: one compute, so no plot against it.
    held = [dict(r, holdout=5000, flops=8.1e7) for r in rows[:3]]
    assert report_lib.write_plots(str(tmp_path), held) == ("accuracy_vs_epochs.png",)
    assert len(figures) == 5 and figures[4].axes[0].get_ylabel() == "held-out top-1 (%)"
    for fig in figures:
        close(fig)


def test_full_protocol_keeps_models_and_measures_the_averaging_gains(cifar_subset, tmp_path,
                                                                     monkeypatch, capsys):
    spec = results.get_protocol("cifar10-full")
    assert [e.label for e in spec.entries] == [
        "resnet20", "resnet20-os2", "resnet32",
        "resnet20-seed1", "resnet20-os2-seed1", "resnet32-seed1"]
    assert all(e.epochs == 60 for e in spec.entries)
    assert dict(spec.recipe) == {"learning_rate": 0.1, "nesterov": True, "label_smoothing": 0.1,
                                 "ema_decay": 0.999, "eval_flip": True}
    out, dataset = str(tmp_path / "full"), f"folder:{cifar_subset}"
    (row,) = results.run_protocol(out, "cifar10-full", dataset, labels=["resnet20-seed1"],
                                  epochs=1, steps_per_epoch=2, verbose=0)
    assert row["seed"] == 1 and row["group"] == "resnet20" and row["eval_split"] == "test"
    assert row["identity"]["recipe"]["ema_decay"] == 0.999
    with open(os.path.join(out, "runs", "resnet20-seed1", "run_config.json")) as f:
        config = json.load(f)
    assert config["seed"] == 1 and config["recipe"]["nesterov"] is True
    assert config["recipe"]["learning_rate"] == 0.1 and config["recipe"]["eval_flip"] is True
    assert 0.0 <= row["top1_live"] <= 1.0 and 0.0 <= row["top1_no_flip"] <= 1.0
    assert "top1_live" in row["curve"][-1]
    # The kept copy reproduces the row with the evaluate command's function.
    kept = os.path.join(out, "resnet20-seed1")
    assert sorted(os.listdir(kept)) == ["model.keras", "result.json", "run_config.json"]
    metrics = train.evaluate(kept, dataset)
    assert metrics["top1"] == pytest.approx(row["top1"]) and metrics["flip"] is True
    assert train.evaluate(kept, dataset, flip=False)["top1"] == pytest.approx(row["top1_no_flip"])
    # A finished row is kept on a device whose default precision differs.
    monkeypatch.setattr(train, "default_mixed_precision",
                        lambda *a, **k: row["precision"] == "float32")
    again = results.run_protocol(out, "cifar10-full", dataset, labels=["resnet20-seed1"],
                                 epochs=1, steps_per_epoch=2, verbose=0)
    assert again[0]["top1"] == row["top1"] and again[0]["precision"] == row["precision"]
    # A new row trains at the finished row's precision there, and says so.
    from resnet_keras.training import recipe as recipe_lib

    monkeypatch.setattr(recipe_lib, "default_mixed_precision",
                        lambda *a, **k: row["precision"] == "float32")
    capsys.readouterr()
    (new,) = results.run_protocol(out, "cifar10-full", dataset, labels=["resnet20"],
                                  epochs=1, steps_per_epoch=2)
    assert new["precision"] == row["precision"] and new["label"] == "resnet20"
    other = "float32" if row["precision"] != "float32" else "mixed_bfloat16"
    printed = capsys.readouterr().out
    assert f"[resnet20] trains in {row['precision']}" in printed
    assert f"finished rows, not this device's default {other}; --" in printed
    # A fresh checkout holds the kept models but no runs/: nothing is trained again.
    import shutil

    shutil.rmtree(os.path.join(out, "runs"))
    again = results.run_protocol(out, "cifar10-full", dataset, labels=["resnet20-seed1"],
                                 epochs=1, steps_per_epoch=2, verbose=0)
    assert again[0]["top1"] == row["top1"] and not os.path.exists(os.path.join(out, "runs"))


def test_recipe_protocol_changes_one_option_per_row_on_the_held_out_slice(cifar_subset,
                                                                           tmp_path):
    spec = results.get_protocol("cifar10-recipe")
    assert spec.holdout == 5000 and all(e.epochs == 60 for e in spec.entries)
    assert dict(spec.recipe) == dict(results.get_protocol("cifar10-full").recipe)
    assert {e.label: dict(e.recipe) for e in spec.entries} == {
        "full-recipe": {}, "he-regularisation": {"weight_decay": 1e-4, "label_smoothing": 0.0},
        "no-smoothing": {"label_smoothing": 0.0}, "lr-0.2": {"learning_rate": 0.2}}
    out, dataset = str(tmp_path / "recipe"), f"folder:{cifar_subset}"
    # The protocol's own holdout applies unless another is given (100 images
    # here, so 5,000 leave none to train on).
    with pytest.raises(ValueError, match="holdout 5000 leaves no training image"):
        results.run_protocol(out, "cifar10-recipe", dataset, labels=["he-regularisation"],
                             epochs=1, steps_per_epoch=2, verbose=0)
    (row,) = results.run_protocol(out, "cifar10-recipe", dataset, labels=["he-regularisation"],
                                  epochs=1, steps_per_epoch=2, holdout=20, verbose=0)
    with open(os.path.join(out, "runs", "he-regularisation", "run_config.json")) as f:
        recipe = json.load(f)["recipe"]
    assert recipe["weight_decay"] == 1e-4 and recipe["label_smoothing"] == 0.0
    assert recipe["nesterov"] is True and recipe["ema_decay"] == 0.999
    assert row["eval_split"] == "train[80:]" and row["holdout"] == 20
    assert row["recipe_changes"] == {"weight_decay": 1e-4, "label_smoothing": 0.0}
    assert row["identity"]["recipe"]["learning_rate"] == 0.1
    assert row["identity"]["recipe"]["weight_decay"] == 1e-4
    assert "top1_no_flip" not in row  # flip is measured on the test set only
    text = open(os.path.join(out, "results.md")).read()
    assert ("Top-1 and top-5 are measured on the held-out slice `train[80:]` (the last 20 "
            "training images), which no model trains on, not on the test set.") in text
    assert ("Recipe of each row beyond the protocol's: he-regularisation: "
            "label_smoothing=0.0, weight_decay=0.0001.") in text
    assert os.path.isfile(os.path.join(out, "he-regularisation", "model.keras"))
    with open(os.path.join(out, "results.csv")) as f:
        (line,) = csv.DictReader(f)
    assert json.loads(line["recipe_changes"]) == {"weight_decay": 1e-4, "label_smoothing": 0.0}
