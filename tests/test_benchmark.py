"""The benchmark command, on tiny budgets: every contender runs in its own process."""
import json

import pytest

from resnet_keras import benchmark, cli


def test_matmul_peak_is_a_plausible_rate():
    flops = benchmark.matmul_peak("float32", size=256, repeats=3)
    assert 1e8 < flops < 1e14


def test_median_seconds_counts_calls():
    calls = []
    benchmark.median_seconds(lambda: calls.append(1), warmup=2, repeats=3, calls=4)
    assert len(calls) == 2 + 3 * 4


@pytest.mark.slow
def test_train_suite_reports_every_contender(cifar_subset, tmp_path, capsys):
    output = tmp_path / "bench.json"
    code = cli.main(["benchmark", "train", "--model", "resnet20", "--image-size", "32",
                     "--batch-size", "16", "--steps", "6", "--warmup", "2",
                     "--data", cifar_subset, "--output", str(output)])
    assert code == 0
    rows = json.loads(output.read_text())["rows"]
    assert [r["label"] for r in rows] == [
        "keras.applications.ResNet50 fit (float32)", "resnet20 fit (float32)",
        "resnet20 resnet-keras train (float32)", "resnet20 resnet-keras train (default)"]
    assert rows[0]["ratio"] == 1.0
    for row in rows:
        assert row["images_per_second"] > 0 and row["peak_memory_mib"] > 100
        assert 0 < row["efficiency"] < 1.5
    assert rows[2]["precision"] == "float32"
    out = capsys.readouterr().out
    assert "x1.00" in out and "matmul peak" in out and "MiB" in out


@pytest.mark.slow
def test_serve_and_pipeline_suites(cifar_subset, capsys):
    rows = benchmark.serve_suite("resnet20", 32, classes=10, batch_size=8, warmup=1,
                                 repeats=2, calls=8)
    assert [r["label"] for r in rows] == ["keras model.predict", "SavedModel serving_default"]
    assert all(r["latency_ms"] > 0 and r["throughput"] > 0 for r in rows)
    assert rows[0]["latency_ratio"] == rows[0]["throughput_ratio"] == 1.0
    (row,) = benchmark.pipeline_suite(32, batch_size=20, images=100, folder=cifar_subset,
                                      warmup=1)
    assert row["images_per_second"] > 0
    forward = benchmark.forward_suite(("resnet20",), 32, 4, warmup=1, repeats=2)
    assert [r["label"] for r in forward] == ["keras.applications.ResNet50", "resnet20"]
    assert forward[1]["ms_per_batch"] > 0 and forward[0]["ratio"] == 1.0
    lines = benchmark.format_rows(rows + [row] + forward, consumption={32: 10.0})
    assert "batch 1:" in lines[1] and "what training consumes" in lines[2]
    assert row["headroom"] == pytest.approx(row["images_per_second"] / 10.0)
    assert "resnet20 forward" in lines[4] and "ms/batch" in lines[4]


def test_bad_steps_is_a_one_line_error(capsys):
    assert cli.main(["benchmark", "train", "--steps", "3", "--warmup", "4"]) == 2
    assert "steps (3) must exceed warmup + 1 (5)" in capsys.readouterr().err
