"""The benchmark command, on tiny budgets: every contender runs in its own process."""
import json
import os

import pytest

import resnet_keras
from resnet_keras import cli
from resnet_keras.experiments import benchmark, measure


def test_matmul_peak_is_a_plausible_rate():
    import time

    import numpy as np

    flops = measure.matmul_peak("float32", size=512, repeats=3)
    # numpy's own BLAS on the same product, timed here: another library, the
    # same hardware, so within a few times of it.
    a = np.random.default_rng(0).normal(size=(512, 512)).astype(np.float32)
    a @ a
    start = time.perf_counter()
    for _ in range(20):
        a @ a
    reference = 20 * 2 * 512**3 / (time.perf_counter() - start)
    assert 0.25 < flops / reference < 4, (flops, reference)


@pytest.mark.parametrize("product_seconds, links", [
    (0.002, 10), (0.04, 6), (0.1, 2), (0.28, 1), (3.0, 1)])
def test_matrix_products_are_chained_to_a_quarter_second(product_seconds, links):
    assert measure.chain_length(product_seconds) == links


def test_machine_line_names_the_cpu_its_kernel_flags_and_a_onednn_cap(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B12\n"
                       "flags\t\t: fpu sse2 avx fma avx2 bmi2\n\n")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    line = measure.machine_line(str(cpuinfo))
    assert "(AMD EPYC 7B12; avx2 fma)" in line and "oneDNN" not in line
    assert "TF 2." in line and "Keras 3." in line
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert "(AMD EPYC 7B12; avx2 fma oneDNN capped at AVX2)" in measure.machine_line(str(cpuinfo))


def test_median_seconds_counts_calls():
    calls = []
    measure.median_seconds(lambda: calls.append(1), warmup=2, repeats=3, calls=4)
    assert len(calls) == 2 + 3 * 4


@pytest.mark.slow
def test_train_suite_reports_every_contender(cifar_subset, tmp_path, capsys):
    output = tmp_path / "bench.json"
    code = cli.main(["benchmark", "train", "--model", "resnet20", "--image-size", "32",
                     "--batch-size", "16", "--steps", "6", "--warmup", "2",
                     "--data", cifar_subset, "--output", str(output)])
    assert code == 0
    saved = json.loads(output.read_text())
    assert saved["command"] == ("resnet-keras benchmark train --model resnet20 --image-size 32 "
                                f"--batch-size 16 --steps 6 --warmup 2 --data {cifar_subset} "
                                f"--output {output}")
    assert saved["machine"].startswith(f"{os.cpu_count()} CPU cores (")
    rows = saved["rows"]
    default = rows[3]["precision"]
    assert [r["label"] for r in rows] == [
        "keras.applications.ResNet50 fit (float32)", "resnet20 fit (float32)",
        "resnet20 resnet-keras train (float32)", "resnet20 resnet-keras train (default)"] + (
        [] if default == "float32" else [f"resnet20 fit ({default})"])
    assert rows[-1]["precision"] == default
    assert rows[0]["ratio"] == 1.0
    for row in rows:
        assert row["images_per_second"] > 0 and row["peak_memory_mib"] > 100
        assert 0 < row["efficiency"] < 1.5
    assert rows[2]["precision"] == "float32"
    out = capsys.readouterr().out
    assert "x1.00" in out and "matmul peak" in out and "MiB" in out


@pytest.mark.parametrize("default", ["float32", "mixed_bfloat16"])
def test_train_suite_meets_the_trainers_default_with_fit_at_its_precision(monkeypatch,
                                                                          default):
    jobs = []

    def fake_child(job, env=None):
        jobs.append(job)
        precision = job.get("precision", "float32")
        if job["kind"] == "trainer":
            precision = default if job["mixed_precision"] is None else "float32"
        speed = {"keras-applications": 2.0, "fit": 4.0, "trainer": 5.0}[job["kind"]]
        return {"step_seconds": [8 / speed] * 3, "precision": precision, "macs": 1e6,
                "matmul_peak": 1e12, "matmul_dtype": "float32", "peak_memory_mib": 500.0}

    monkeypatch.setattr(benchmark, "run_in_child", fake_child)
    rows = benchmark._train_contenders("resnet20", 32, 8, 6, 2, "unused")
    labels = [r["label"] for r in rows]
    if default == "float32":
        assert len(rows) == 4 and all(j.get("precision", "float32") == "float32"
                                      for j in jobs)
    else:
        assert labels[-1] == "resnet20 fit (mixed_bfloat16)"
        assert jobs[-1] == dict(jobs[1], label=labels[-1], precision="mixed_bfloat16")
        assert rows[-1]["precision"] == "mixed_bfloat16" and rows[-1]["ratio"] == 2.0
    assert [r["ratio"] for r in rows[:4]] == [1.0, 2.0, 2.5, 2.5]


def test_step_timer_divides_each_gap_by_the_steps_it_spans(monkeypatch):
    clock = iter([0.0, 1.0, 1.5, 2.0, 5.0, 11.0, 12.0])
    monkeypatch.setattr(measure.time, "perf_counter", lambda: next(clock))
    timer = measure.StepTimer()
    for step in (1, 2, 3, 4, 7, 10, 11):  # a tick every step, then every third
        timer.on_train_batch_end(step)
    # Steps 1 and 2 are warm-up (warmup=1 drops warmup + 1 steps).
    assert timer.step_seconds(warmup=1) == [0.5, 0.5, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0]
    assert timer.step_seconds(warmup=4) == [2.0, 2.0, 2.0, 1.0]


def test_rounds_alternate_the_order_and_pool_every_rounds_steps(monkeypatch):
    import importlib.util

    ka32, ours32 = "keras.applications.ResNet50 jax fit (float32)", "resnet20 jax fit (float32)"
    speeds = {ka32: [2.0, 1.0, 1.0], ours32: [4.0, 4.0, 2.0]}
    jobs = []

    def fake_child(job, env=None):
        jobs.append(job["label"])
        speed = speeds.get(job["label"], [3.0] * 3)[sum(j == job["label"] for j in jobs) - 1]
        return {"step_seconds": [8 / speed] * 3, "seconds": 1 / speed, "precision": "float32",
                "macs": 1e6, "matmul_peak": 1e12, "matmul_dtype": "float32",
                "peak_memory_mib": 100.0 * len(jobs)}

    monkeypatch.setattr(benchmark, "run_in_child", fake_child)
    with monkeypatch.context() as patch:
        patch.setattr(importlib.util, "find_spec", lambda name, *a: object())
        rows = benchmark.jax_suite("resnet20", 32, 8, steps=6, warmup=2, rounds=3)
    assert jobs[:2] == [ka32, ours32] and len(jobs) == 12
    assert jobs[4:8] == jobs[:4][::-1] and jobs[8:] == jobs[:4]
    assert rows[0]["rounds"] == [2.0, 1.0, 1.0] and rows[1]["rounds"] == [4.0, 4.0, 2.0]
    # The median over all rounds' steps, not the first round's.
    assert rows[0]["images_per_second"] == 1.0 and rows[1]["ratio"] == 4.0
    assert rows[0]["peak_memory_mib"] == 900.0  # the largest of its rounds' (jobs 1, 8, 9)
    jobs.clear()
    folded = "keras.applications.ResNet50 (BatchNorm folded)"
    speeds.update({"keras.applications.ResNet50": [1.0, 4.0, 2.0], folded: [3.0, 2.0, 2.0]})
    forward = benchmark.forward_suite((), 32, 4, rounds=3)
    assert jobs == ["keras.applications.ResNet50", folded] * 3 or \
        jobs == ["keras.applications.ResNet50", folded, folded,
                 "keras.applications.ResNet50", "keras.applications.ResNet50", folded]
    assert [r["rounds_ms"] for r in forward] == [[1000.0, 250.0, 500.0],
                                                 [1000 / 3, 500.0, 500.0]]
    assert [r["ms_per_batch"] for r in forward] == [500.0, 500.0]
    assert forward[1]["ratio"] == 1.0


SERVE_LABELS = ["keras model.predict", "SavedModel serving_default", "LiteRT float32",
                "LiteRT int8 (full-integer)", "ONNX onnxruntime"]


@pytest.mark.slow
def test_serve_and_pipeline_suites(cifar_subset, capsys):
    rows = benchmark.serve_suite("resnet20", 32, classes=10, batch_size=8, warmup=1,
                                 repeats=2, calls=8, folder=cifar_subset, calibration_images=10)
    assert [r["label"] for r in rows][:2] == ["keras model.predict", "SavedModel serving_default"]
    assert [r["label"] for r in rows] == SERVE_LABELS
    assert all(r["latency_ms"] > 0 and r["throughput"] > 0 for r in rows)
    assert all(r["latency_p99_ms"] >= r["latency_ms"] and r["size_mb"] > 0 for r in rows)
    assert rows[0]["latency_ratio"] == rows[0]["throughput_ratio"] == 1.0
    by_label = {r["label"]: r for r in rows}
    # int8 weights: about a quarter of the float32 file.
    assert by_label["LiteRT int8 (full-integer)"]["size_mb"] < \
        0.5 * by_label["LiteRT float32"]["size_mb"]
    # The LiteRT and onnxruntime processes hold no TensorFlow.
    assert by_label["LiteRT float32"]["peak_memory_mib"] < \
        0.5 * by_label["SavedModel serving_default"]["peak_memory_mib"]
    (row,) = benchmark.pipeline_suite(32, batch_size=20, images=100, folder=cifar_subset,
                                      warmup=1)
    assert row["images_per_second"] > 0
    forward = benchmark.forward_suite(("resnet20",), 32, 4, warmup=1, repeats=2)
    assert [r["label"] for r in forward] == [
        "keras.applications.ResNet50", "keras.applications.ResNet50 (BatchNorm folded)",
        "resnet20", "resnet20 (BatchNorm folded)"]
    assert all(r["ms_per_batch"] > 0 for r in forward) and forward[0]["ratio"] == 1.0
    assert [r["batch_norms"] > 0 for r in forward] == [True, False, True, False]
    forward = forward[::2]
    lines = benchmark.format_rows(rows + [row] + forward, consumption={32: 10.0})
    serve = len(rows)
    assert "batch 1:" in lines[1] and "what training consumes" in lines[serve]
    assert "p99" in lines[2] and " MB " in lines[2]
    assert row["headroom"] == pytest.approx(row["images_per_second"] / 10.0)
    assert "resnet20 forward" in lines[serve + 2] and "ms/batch" in lines[serve + 2]


def test_serve_skips_a_format_whose_package_is_missing(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a))
    kept, skipped = benchmark.file_contenders()
    assert [label for label, _, _ in kept] == SERVE_LABELS[2:4]
    assert skipped == ["serve: ONNX rows skipped: onnxruntime not installed "
                       "(pip install 'resnet-keras[onnx]')"]


def test_serving_times_percentiles_and_throughput():
    calls = []
    times = measure.serving_times(lambda batch: lambda: calls.append(batch), batch_size=4,
                                  warmup=1, repeats=3, calls=8)
    assert calls == [1] * (1 + 3 * 8) + [4] * (1 + 3 * 2)
    assert 0 < times["latency_p50_ms"] <= times["latency_p99_ms"] and times["throughput"] > 0
    assert measure.percentile([4, 1, 3, 2], 50) == 2.5
    assert measure.percentile(range(101), 99) == 99
    assert measure.percentile([7.0], 99) == 7.0


@pytest.mark.slow
def test_jax_suite_trains_every_contender_on_the_jax_backend(tmp_path, capsys):
    pytest.importorskip("jax")
    output = tmp_path / "jax.json"
    code = cli.main(["benchmark", "jax", "--model", "resnet20", "--image-size", "32",
                     "--batch-size", "8", "--steps", "5", "--warmup", "2", "--classes", "10",
                     "--output", str(output)])
    assert code == 0
    rows = json.loads(output.read_text())["rows"]
    assert [r["label"] for r in rows] == [
        "keras.applications.ResNet50 jax fit (float32)", "resnet20 jax fit (float32)",
        "keras.applications.ResNet50 jax fit (bfloat16)", "resnet20 jax fit (bfloat16)"]
    assert [r["precision"] for r in rows] == ["float32"] * 2 + ["mixed_bfloat16"] * 2
    assert [r["matmul_dtype"] for r in rows] == ["float32"] * 2 + ["bfloat16"] * 2
    assert rows[0]["ratio"] == 1.0
    # The MACs counted on the JAX-built model are those of the TensorFlow-built one.
    macs = resnet_keras.count_macs(resnet_keras.build_model("resnet20", classes=10,
                                                            input_shape=(32, 32, 3)))
    assert rows[1]["train_flops_per_second"] == pytest.approx(
        6 * macs * rows[1]["images_per_second"], rel=1e-6)
    for row in rows:
        assert row["images_per_second"] > 0 and 0 < row["efficiency"] < 1.5
        assert row["device"].startswith("1 x ") and "jax" in row["device"]
    out = capsys.readouterr().out
    assert "device: 1 x " in out and "x1.00" in out


def test_published_gpu_figures_are_shown_for_the_gpu_class():
    (line,) = benchmark.published_gpu_lines("1 x NVIDIA A100-SXM4-80GB (gpu), jax 0.4.30")
    assert "A100" in line and "2470 img/s" in line and "938 img/s" in line
    (line,) = benchmark.published_gpu_lines("1 x NVIDIA H100 80GB HBM3 (gpu), jax 0.4.30")
    assert "other GPU classes" in line and "A100" in line and "V100" in line
    assert benchmark.published_gpu_lines("1 x cpu (cpu), jax 0.4.30") == []


def test_jax_suite_without_jax_is_a_one_line_error(monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "jax" else find_spec(name, *a))
    assert cli.main(["benchmark", "jax"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resnet-keras[jax]" in err[0]


def test_bad_steps_is_a_one_line_error(capsys):
    assert cli.main(["benchmark", "train", "--steps", "3", "--warmup", "4"]) == 2
    assert "steps (3) must exceed warmup + 1 (5)" in capsys.readouterr().err
