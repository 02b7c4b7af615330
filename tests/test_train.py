"""The trainer: strategies, checkpoints and resumption, logs, bad input, CLI.

Training runs use a ResNet-20 with one block per stage on the real CIFAR-10
subset for a few steps. Subprocess tests (resume after SIGKILL, two workers)
run the Python API through WORKER_SCRIPT.
"""
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from resnet_keras import cli, rundir
from resnet_keras import train as train_lib
from resnet_keras.training import checkpoints as checkpoints_lib
from resnet_keras.training import recipe as recipe_lib
from resnet_keras.training import record as record_lib
from resnet_keras.training import steps as steps_lib

TINY = {"depths": [1, 1, 1]}
BATCH = 8

# Runs resnet_keras.train.train(**json) in a fresh process; optional
# "sleep_per_step" slows it down, "weights_out" saves the final weights.
WORKER_SCRIPT = """
import json, sys, time
import numpy as np
from resnet_keras.train import train

args = json.loads(sys.argv[1])
pause = args.pop("sleep_per_step", 0)
out = args.pop("weights_out", None)

class Pause:
    def on_train_batch_end(self, step, logs):
        time.sleep(pause)

result = train(**args, callbacks=[Pause()] if pause else ())
if out:
    np.savez(out, *[np.asarray(v) for v in result.model.weights])
print("RESULT " + json.dumps({"initial_step": result.initial_step, "steps": result.steps,
                              "epochs": result.epochs, "history": result.history}))
"""


def _train(cifar_subset, model_dir, **kwargs):
    options = dict(epochs=1, batch_size=BATCH, steps_per_epoch=3, seed=0,
                   model_kwargs=TINY, strategy="one-device", verbose=0)
    options.update(kwargs)
    return train_lib.train("resnet20", f"folder:{cifar_subset}", model_dir=str(model_dir),
                           **options)


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _start_worker(args, **env):
    return subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, json.dumps(args)], cwd=REPO, env=_env(**env),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process, timeout=240):
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"worker timed out:\n{output[-3000:]}")
    assert process.returncode == 0, output[-3000:]
    line = [ln for ln in output.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _worker_args(cifar_subset, model_dir, **kwargs):
    args = dict(model_name="resnet20", dataset=f"folder:{cifar_subset}",
                model_dir=str(model_dir), epochs=1, batch_size=BATCH, steps_per_epoch=3,
                seed=0, model_kwargs=TINY, verbose=0)
    args.update(kwargs)
    return args


def _tensorboard_tags(log_dir):
    tags = {}
    for path in glob.glob(os.path.join(log_dir, "*", "events.out.tfevents.*")):
        run = os.path.basename(os.path.dirname(path))
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                tags.setdefault(run, set()).add(value.tag)
    return tags


def _cli(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def one_device_run(cifar_subset, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("run") / "one_device"
    result = _train(cifar_subset, model_dir, epochs=2, checkpoint_every=2)
    return result, str(model_dir)


# --------------------------------------------------------------------------
# Training runs


def test_one_device_training_writes_the_run(one_device_run):
    result, model_dir = one_device_run
    assert result.steps == 6 and result.initial_step == 0 and result.epochs == 2
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert all(np.isfinite(h["loss"]) and np.isfinite(h["val_loss"]) for h in result.history)
    assert 0.0 <= result.top1 <= 1.0 and result.top1 <= result.top5
    for name in (rundir.BEST_MODEL, rundir.FINAL_MODEL, rundir.CONFIG_FILE):
        assert os.path.isfile(rundir.path(model_dir, name))
    latest = tf.train.latest_checkpoint(rundir.path(model_dir, rundir.BACKUP_DIR))
    assert latest.endswith("ckpt-6")
    config = rundir.read_run_config(model_dir)
    assert config["model"] == "resnet20"
    assert config["model_kwargs"] == {
        "classes": 10, "input_shape": [32, 32, 3], "depths": [1, 1, 1]}
    assert config["class_names"][:2] == ["airplane", "automobile"]
    assert (config["num_classes"], config["image_size"], config["batch_size"]) == (10, 32, BATCH)
    assert (config["epochs"], config["seed"]) == (2, 0)
    assert config["recipe"]["optimizer"] == "sgd"
    assert config["recipe"]["learning_rate"] == pytest.approx(0.1 * BATCH / 256)
    assert config["result"]["top1"] == pytest.approx(result.top1)


def test_tensorboard_logs(one_device_run):
    _, model_dir = one_device_run
    tags = _tensorboard_tags(rundir.path(model_dir, rundir.LOG_DIR))
    assert {"loss", "accuracy", "learning_rate", "images_per_second", "input_images",
            "run_config", "_hparams_/session_start_info"} <= tags["train"]
    assert {"epoch_loss", "epoch_accuracy", "epoch_top5"} <= tags["validation"]


def test_saved_model_matches_and_evaluate_reports_it(one_device_run, cifar_subset):
    result, model_dir = one_device_run
    best = max(h["val_accuracy"] for h in result.history)
    metrics = train_lib.evaluate(model_dir, f"folder:{cifar_subset}")
    assert metrics["count"] == 40 and metrics["split"] == "test"
    assert metrics["top1"] == pytest.approx(best, abs=1e-6)
    done = subprocess.run(  # a fresh process: the saved model loads without the builders
        [sys.executable, "-m", "resnet_keras.cli", "evaluate", "--model-dir", model_dir,
         "--dataset", f"folder:{cifar_subset}"], env=_env(), capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"top-1 {best:.4f}" in done.stdout and "top-5" in done.stdout


def test_rerun_of_a_finished_run_trains_nothing(one_device_run, cifar_subset):
    _, model_dir = one_device_run
    again = _train(cifar_subset, model_dir, epochs=2, checkpoint_every=2)
    assert (again.initial_step, again.steps, again.history) == (6, 6, [])
    assert again.top1 is not None


def _replica_copies(model):
    """Per-replica values of the BN moving statistics: arrays [replicas, channels]."""
    return [np.stack([np.asarray(c) for c in v.value.values])
            for v in model.non_trainable_variables if "moving" in v.path]


def test_mirrored_two_cpu_replicas(cifar_subset, tmp_path, monkeypatch):
    """Each replica's batch-norm statistics follow its own images; before every
    evaluation and every checkpoint they are replaced by their mean."""
    events = []
    sync, totals, save = (steps_lib.ReplicaSteps.sync_replicas,
                          steps_lib.ReplicaSteps.evaluation_totals,
                          checkpoints_lib.Checkpoints.save)

    def recording_sync(loop):
        before = _replica_copies(loop.model)
        sync(loop)
        events.append(("sync", before))

    def recording_totals(loop, dist):
        events.append(("evaluate", _replica_copies(loop.model)))
        return totals(loop, dist)

    def recording_save(checkpoints, step, best):
        events.append(("checkpoint", _replica_copies(checkpoints.checkpoint.model)))
        return save(checkpoints, step, best)

    monkeypatch.setattr(steps_lib.ReplicaSteps, "sync_replicas", recording_sync)
    monkeypatch.setattr(steps_lib.ReplicaSteps, "evaluation_totals", recording_totals)
    monkeypatch.setattr(checkpoints_lib.Checkpoints, "save", recording_save)
    result = _train(cifar_subset, tmp_path, strategy="mirrored", num_cpu_replicas=2,
                    checkpoint_every=1)
    assert result.steps == 3 and np.isfinite(result.history[0]["loss"])
    assert rundir.read_run_config(str(tmp_path))["num_replicas"] == 2
    kinds = [kind for kind, _ in events if kind != "sync"]
    assert kinds.count("checkpoint") == 3 and kinds.count("evaluate") == 1
    # After each of the 3 steps the replicas, trained on different images, differ.
    differing = [kind == "sync" and any(not np.array_equal(v[0], v[1]) for v in values)
                 for kind, values in events]
    assert sum(differing) == 3
    before = None
    for kind, values in events:
        if kind == "sync":
            before = values
            continue
        assert before is not None, f"{kind} before any replica averaging"
        for value, unsynced in zip(values, before):
            np.testing.assert_allclose(value[0], unsynced.mean(axis=0), rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(value[0], value[1])
        before = values  # a later event without a sync in between must not differ
    moving = [v for v in result.model.non_trainable_variables if "moving_mean" in v.path]
    assert moving
    for variable in moving:  # per-replica copies were averaged before saving
        copies = [np.asarray(c) for c in variable.value.values]
        assert len(copies) == 2 and np.array_equal(copies[0], copies[1])


def test_mirrored_evaluation_with_an_empty_replica_batch(cifar_subset, tmp_path):
    # 40 test images in per-replica batches of 8: the last evaluation step
    # gives one replica 8 images and the other none.
    result = _train(cifar_subset, tmp_path, strategy="mirrored", num_cpu_replicas=2,
                    batch_size=16, steps_per_epoch=1)
    assert result.history[0]["val_accuracy"] >= 0.0
    metrics = train_lib.evaluate(str(tmp_path), f"folder:{cifar_subset}", batch_size=16)
    assert metrics["count"] == 40


def test_mixed_precision_and_step_schedule(cifar_subset, tmp_path):
    result = _train(cifar_subset, tmp_path, mixed_precision=True, schedule="step",
                    optimizer="adamw", label_smoothing=0.1, max_steps=2)
    assert result.steps == 2 and np.isfinite(result.history[0]["loss"])
    assert "float16" in str(result.model.get_layer("conv1_conv").dtype_policy)
    assert result.model.output.dtype == "float32"
    import keras

    assert keras.config.dtype_policy().name == "float32"  # restored after building


def test_weight_decay_skips_biases_and_batch_norm():
    from resnet_keras import build_model

    model = build_model("resnet20", classes=10, input_shape=(32, 32, 3), depths=(1, 1, 1))
    recipe = train_lib.default_recipe(batch_size=8, num_train=100, steps_per_epoch=3,
                                      total_steps=3)
    assert recipe.weight_decay == 5e-4
    loop = steps_lib.ReplicaSteps(tf.distribute.get_strategy(), model, None, recipe, 8, 10)
    kernels = [v for v in model.trainable_variables if len(v.shape) > 1]
    assert loop.decayed == kernels and len(kernels) < len(model.trainable_variables)


def test_weight_decay_adds_the_l2_gradient_to_the_kernels_only():
    """SGD's L2 term 0.5 * 5e-4 * sum(w ** 2) adds 5e-4 * w to each kernel's
    gradient and nothing to biases and BatchNorm parameters."""
    import keras

    from resnet_keras import build_model

    model = build_model("resnet20", classes=10, input_shape=(32, 32, 3), depths=(1, 1, 1))
    images = tf.random.stateless_uniform([4, 32, 32, 3], [1, 2])
    labels = tf.constant([0, 3, 5, 9], tf.int64)

    def gradients(weight_decay):
        recipe = train_lib.default_recipe(batch_size=4, num_train=100, steps_per_epoch=3,
                                          total_steps=3, weight_decay=weight_decay)
        optimizer = keras.optimizers.SGD(0.1)
        loop = steps_lib.ReplicaSteps(tf.distribute.get_strategy(), model, optimizer,
                                      recipe, 4, 10)
        grads, _, _ = loop._gradients(images, labels)  # BN in training: same batch
        return [g.numpy() for g in grads]

    plain, decayed = gradients(0.0), gradients(5e-4)
    for variable, g0, g1 in zip(model.trainable_variables, plain, decayed):
        expected = 5e-4 * variable.numpy() if len(variable.shape) > 1 else 0.0
        np.testing.assert_allclose(g1 - g0, expected, rtol=1e-3, atol=2e-8)


# /proc/cpuinfo "flags" lines (abridged) of real CPUs.
CPUINFO_HEAD = ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n"
                "model name\t: {model}\n")
CPUINFO_FLAGS = {
    "cooper lake (AVX-512 BF16)": (
        "Intel(R) Xeon(R) Platinum 8380H CPU @ 2.90GHz",
        "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush "
        "mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl "
        "xtopology nonstop_tsc cpuid pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic "
        "movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch fsgsbase "
        "bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap clflushopt clwb "
        "avx512cd avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx512_bf16 avx512_vnni "
        "arat pku ospke md_clear arch_capabilities"),
    "sapphire rapids (AMX)": (
        "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
        "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush "
        "mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl "
        "pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx "
        "f16c rdrand hypervisor lahf_lm abm bmi1 avx2 smep bmi2 erms avx512f avx512dq rdseed "
        "adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl avx512vbmi "
        "umip pku ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg "
        "avx512_vpopcntdq rdpid cldemote movdiri movdir64b fsrm md_clear serialize tsxldtrk "
        "amx_bf16 avx512_fp16 amx_tile amx_int8 arch_capabilities"),
    "broadwell (AVX2 only)": (
        "Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz",
        "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush "
        "mmx fxsr sse sse2 ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl "
        "xtopology nonstop_tsc cpuid aperfmperf pni pclmulqdq ssse3 fma cx16 pcid sse4_1 "
        "sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor "
        "lahf_lm abm 3dnowprefetch invpcid_single pti fsgsbase bmi1 hle avx2 smep bmi2 erms "
        "invpcid rtm rdseed adx xsaveopt"),
}


def _cpuinfo(tmp_path, cpu):
    model, flags = CPUINFO_FLAGS[cpu]
    path = tmp_path / "cpuinfo"
    block = CPUINFO_HEAD.format(model=model) + f"flags\t\t: {flags}\n" \
        "vmx flags\t: vnmi preemption_timer invvpid ept_x_only\nbugs\t\t: spectre_v1\n\n"
    path.write_text(block + block.replace("processor\t: 0", "processor\t: 1"))
    return str(path)


@pytest.mark.parametrize("cpu, native", [("cooper lake (AVX-512 BF16)", True),
                                         ("sapphire rapids (AMX)", True),
                                         ("broadwell (AVX2 only)", False)])
def test_precision_default_per_device(tmp_path, cpu, native):
    cpuinfo = _cpuinfo(tmp_path, cpu)
    assert train_lib.cpu_has_native_bfloat16(cpuinfo) is native
    default = train_lib.default_mixed_precision(has_gpu=False, cpuinfo=cpuinfo)
    assert train_lib.precision_policy(default, has_gpu=False) == (
        "mixed_bfloat16" if native else "float32")
    # GPUs default to float32 whatever the CPU; asked for, mixed precision is float16.
    assert train_lib.default_mixed_precision(has_gpu=True, cpuinfo=cpuinfo) is False
    assert train_lib.precision_policy(False, has_gpu=True) == "float32"
    assert train_lib.precision_policy(True, has_gpu=True) == "mixed_float16"
    assert train_lib.precision_policy(True, has_gpu=False) == "mixed_bfloat16"


@pytest.mark.parametrize("cap, native", [("AVX2", False), ("avx512_core", False),
                                         ("AVX512_CORE_VNNI", False), ("AVX512_CORE_BF16", True),
                                         ("AVX512_CORE_AMX", True), ("", True)])
def test_precision_default_under_a_onednn_isa_cap(tmp_path, monkeypatch, cap, native):
    # A cap below AVX-512 BF16 makes oneDNN emulate bfloat16 on a CPU that has it.
    cpuinfo = _cpuinfo(tmp_path, "sapphire rapids (AMX)")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert train_lib.cpu_has_native_bfloat16(cpuinfo) is native
    assert train_lib.default_mixed_precision(has_gpu=False, cpuinfo=cpuinfo) is native
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert train_lib.cpu_has_native_bfloat16(cpuinfo, isa_cap=cap) is native
    assert train_lib.cpu_has_native_bfloat16(cpuinfo) is True


def test_precision_default_without_cpuinfo(tmp_path):
    assert train_lib.cpu_has_native_bfloat16(str(tmp_path / "missing")) is False


@pytest.mark.parametrize("cpu, policy", [("broadwell (AVX2 only)", "float32"),
                                         ("cooper lake (AVX-512 BF16)", "mixed_bfloat16")])
def test_training_takes_the_devices_precision(cifar_subset, tmp_path, monkeypatch, cpu,
                                              policy):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("the CPU default applies without a GPU")
    monkeypatch.setattr(recipe_lib, "CPUINFO", _cpuinfo(tmp_path, cpu))
    result = _train(cifar_subset, tmp_path / "run", max_steps=1)
    assert result.config["recipe"]["mixed_precision"] is (policy != "float32")
    assert result.model.get_layer("conv1_conv").dtype_policy.name == policy


def test_learning_rate_schedule():
    cosine = train_lib.WarmupDecay(1.0, total=100, warmup=10, kind="cosine")
    values = [float(cosine(step)) for step in (0, 9, 10, 55, 99)]
    assert values[0] == pytest.approx(0.1) and values[1] == pytest.approx(1.0)
    assert values[2] == pytest.approx(1.0) and values[3] == pytest.approx(0.5, abs=0.01)
    assert values[4] < 0.01
    step = train_lib.WarmupDecay(1.0, total=90, warmup=0, kind="step")
    assert [float(step(s)) for s in (0, 29, 31, 61, 89)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.01, 0.01])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(cifar_subset, tmp_path):
    _train(cifar_subset, tmp_path, epochs=1, steps_per_epoch=2)
    backup = rundir.path(str(tmp_path), rundir.BACKUP_DIR)
    final = rundir.path(str(tmp_path), rundir.FINAL_MODEL)
    stamp = os.path.getmtime(final)
    with pytest.raises(train_lib.TrainingDiverged, match="last good checkpoint is kept"):
        _train(cifar_subset, tmp_path, epochs=3, steps_per_epoch=2, learning_rate=1e30,
               checkpoint_every=1)
    latest = tf.train.latest_checkpoint(backup)
    assert int(latest.rsplit("-", 1)[1]) < 6  # saved before the loss became NaN
    reader = tf.train.load_checkpoint(latest)
    for name, _ in tf.train.list_variables(latest):
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.isfinite(value).all(), name
    assert os.path.getmtime(final) == stamp


# --------------------------------------------------------------------------
# Fault tolerance and multi-worker training (subprocesses)


@pytest.mark.slow
def test_resume_after_sigkill(cifar_subset, tmp_path):
    model_dir = tmp_path / "run"
    args = _worker_args(cifar_subset, model_dir, epochs=3, steps_per_epoch=4,
                        checkpoint_every=2)
    process = _start_worker(dict(args, sleep_per_step=0.5))
    index = rundir.path(str(model_dir), os.path.join(rundir.BACKUP_DIR, "ckpt-6.index"))
    deadline = time.time() + 180
    while not os.path.exists(index):  # killed in epoch 2, after the step-6 checkpoint
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.time() < deadline, "no checkpoint at step 6"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    # The killed run's lock is left behind; it must not block the resume.
    assert os.path.exists(rundir.path(str(model_dir), rundir.LOCK_FILE))
    assert not os.path.exists(rundir.path(str(model_dir), rundir.FINAL_MODEL))

    resumed = _finish(_start_worker(dict(args, weights_out=str(tmp_path / "resumed.npz"))))
    assert 6 <= resumed["initial_step"] < 12
    assert resumed["steps"] == 12 and resumed["epochs"] == 3
    assert resumed["history"][-1]["epoch"] == 3
    assert os.path.isfile(rundir.path(str(model_dir), rundir.FINAL_MODEL))

    straight = _finish(_start_worker(dict(args, model_dir=str(tmp_path / "straight"),
                                          weights_out=str(tmp_path / "straight.npz"))))
    assert straight["initial_step"] == 0 and straight["steps"] == 12
    a, b = np.load(tmp_path / "resumed.npz"), np.load(tmp_path / "straight.npz")
    for key in a.files:  # the resumed run continued exactly where it stopped
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_matches_single_process_mirrored(cifar_subset, tmp_path):
    """Two workers (one replica each) end with the weights of one process with
    two replicas: same global batch, same seed, same per-replica slices, so
    even the per-replica batch-norm statistics agree."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    args = _worker_args(cifar_subset, tmp_path / "multi", steps_per_epoch=4,
                        strategy="multi-worker")
    workers = [
        _start_worker(dict(args, weights_out=str(tmp_path / f"worker{i}.npz")),
                      TF_CONFIG=json.dumps({"cluster": cluster,
                                            "task": {"type": "worker", "index": i}}))
        for i in range(2)]
    reference = _start_worker(dict(
        args, strategy="mirrored", num_cpu_replicas=2, model_dir=str(tmp_path / "single"),
        weights_out=str(tmp_path / "single.npz")))
    results = [_finish(p) for p in workers + [reference]]
    assert all(r["steps"] == 4 for r in results)
    weights = [np.load(tmp_path / f"{name}.npz") for name in ("worker0", "worker1", "single")]
    for key in weights[0].files:
        np.testing.assert_allclose(weights[0][key], weights[1][key], atol=1e-5, err_msg=key)
        np.testing.assert_allclose(weights[0][key], weights[2][key], atol=1e-5, err_msg=key)
    assert os.path.isfile(rundir.path(str(tmp_path / "multi"), rundir.FINAL_MODEL))
    assert rundir.read_run_config(str(tmp_path / "multi"))["num_replicas"] == 2


# --------------------------------------------------------------------------
# Command line and bad input


def test_cli_train_and_export(cifar_subset, tmp_path, capsys):
    model_dir, export_dir = tmp_path / "run", tmp_path / "export"
    status, out, err = _cli(
        capsys, "train", "--model", "resnet20", "--dataset", f"folder:{cifar_subset}",
        "--epochs", "1", "--batch-size", "8", "--max-steps", "2", "--seed", "1",
        "--model-dir", str(model_dir), "--export-dir", str(export_dir))
    assert status == 0, err
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("done: resnet20") and "top-1" in summary
    assert f"tensorboard --logdir {model_dir / 'logs'}" in out
    assert str(export_dir / "1") in summary
    assert os.path.isfile(export_dir / "1" / "saved_model.pb")


def test_example_script(cifar_subset, tmp_path):
    command = [sys.executable, os.path.join(REPO, "examples", "train_cifar10.py"),
               "--data", str(cifar_subset), "--tiny", "--epochs", "1", "--steps-per-epoch", "2",
               "--model-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "export")]
    done = subprocess.run(command, cwd=str(tmp_path), env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "val top-1" in done.stdout and "exported to" in done.stdout
    assert os.path.isdir(tmp_path / "export" / "1")


def _train_argv(cifar_subset, model_dir, *extra):
    return ["train", "--model", "resnet20", "--dataset", f"folder:{cifar_subset}",
            "--epochs", "1", "--batch-size", "8", "--model-dir", str(model_dir), *extra]


@pytest.mark.parametrize("extra, message", [
    (("--dataset", "no_such_dataset_xyz"), "unknown dataset 'no_such_dataset_xyz'"),
    (("--dataset", "folder:/no/such/folder"), "'/no/such/folder' does not exist"),
    (("--strategy", "mirrored", "--num-cpu-replicas", "2", "--batch-size", "3"),
     "batch size 3 is not divisible by the 2 replicas"),
    (("--model", "resnet999"), "resnet999"),
    (("--strategy", "multi-worker"), "needs TF_CONFIG"),
])
def test_bad_input_is_one_line_and_writes_nothing(cifar_subset, tmp_path, capsys, monkeypatch,
                                                  extra, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    model_dir = tmp_path / "run"
    status, _, err = _cli(capsys, *_train_argv(cifar_subset, model_dir), *extra)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not model_dir.exists()


def test_bad_tf_config(cifar_subset, tmp_path, capsys, monkeypatch):
    for config, message in (("{not json", "TF_CONFIG is not valid"),
                            ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", '
                             '"index": 3}}', "is not in the cluster")):
        monkeypatch.setenv("TF_CONFIG", config)
        status, _, err = _cli(capsys, *_train_argv(cifar_subset, tmp_path / "run"),
                              "--strategy", "multi-worker")
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_model_dir_of_another_model_is_refused(one_device_run, cifar_subset, capsys):
    _, model_dir = one_device_run
    before = {name: os.path.getmtime(os.path.join(model_dir, name))
              for name in os.listdir(model_dir)}
    status, _, err = _cli(capsys, *_train_argv(cifar_subset, model_dir)[:-2],
                          "--model-dir", model_dir, "--model", "resnet32")
    assert status == 2 and "holds a different run (model 'resnet20'" in err, err
    after = {name: os.path.getmtime(os.path.join(model_dir, name))
             for name in os.listdir(model_dir)}
    assert after == before


# --------------------------------------------------------------------------
# The config and run_config.json

CONFIG_BASE = dict(epochs=1, batch_size=8, model_dir="unused")


@pytest.mark.parametrize("options, message", [
    (dict(max_steps=2.5), "max steps must be a positive integer, got 2.5"),
    (dict(epochs=0), "epochs must be a positive integer, got 0"),
    (dict(label_smoothing=float("nan")),
     "label smoothing (--label-smoothing) must be a finite number in [0, 1), got nan"),
    (dict(optimizer="adam"), "unknown optimizer 'adam'; choices: sgd, adamw"),
    (dict(strategy="tpu"),
     "unknown strategy 'tpu'; choices: auto, mirrored, multi-worker, one-device"),
    (dict(seed="1"), "seed must be an integer, got '1'"),
    (dict(output_stride=8, model_kwargs={"output_stride": 16}),
     "output stride 8 (--output-stride) conflicts with model_kwargs output_stride 16; "
     "give it once"),
])
def test_config_checks_its_values_when_built(options, message):
    with pytest.raises(ValueError) as err:
        train_lib.TrainConfig.from_keywords("resnet20", "cifar10", **{**CONFIG_BASE, **options})
    assert str(err.value) == message


def test_config_keywords_and_the_one_route_of_output_stride():
    config = train_lib.TrainConfig.from_keywords(
        "resnet20", "cifar10", **CONFIG_BASE, model_kwargs={"output_stride": 2, "depths": [1]})
    assert config.model.output_stride == 2 and config.model.model_kwargs == {"depths": [1]}
    same = train_lib.TrainConfig.from_keywords(
        "resnet20", "cifar10", **CONFIG_BASE, output_stride=2,
        model_kwargs={"output_stride": 2, "depths": [1]})
    assert same == config
    assert config.replace(recipe={"nesterov": True}).recipe.nesterov is True
    assert config.recipe.nesterov is False  # frozen: replace made a copy
    with pytest.raises(TypeError, match="unexpected keyword argument 'learning_rat'"):
        train_lib.TrainConfig.from_keywords("resnet20", "cifar10", **CONFIG_BASE,
                                            learning_rat=0.1)


def test_run_record_round_trips_through_json():
    config = train_lib.TrainConfig.from_keywords(
        "resnet20", "folder:/data", epochs=2, batch_size=8, model_dir="/runs/r20",
        image_size=32, steps_per_epoch=3, seed=0, output_stride=2, holdout=10,
        model_kwargs={"depths": [1, 1, 1]}, learning_rate=0.1, weight_decay=0.0,
        warmup_epochs=1.0, mixed_precision=False)
    facts = record_lib.RunFacts(class_names=("cat", "dog"), num_classes=2, total_steps=6,
                                train_examples=90, eval_split="train[90:]", num_replicas=1)
    record = record_lib.RunRecord(config, facts)
    raw = json.loads(json.dumps(record.to_json()))
    assert raw["version"] == 3 and raw["model"] == "resnet20"
    assert (raw["weights"], raw["preprocessing"], raw["freeze_stages"], raw["freeze_bn"]) == \
        (None, None, 0, False)
    assert raw["model_kwargs"] == {"classes": 2, "input_shape": [32, 32, 3],
                                   "output_stride": 2, "depths": [1, 1, 1]}
    assert record_lib.RunRecord.from_json(raw) == record


# run_config.json as the trainer wrote it before the version field (as the
# runs under results/ hold it): no holdout, no version, a recipe without
# nesterov, ema_decay and eval_flip.
OLD_RUN_CONFIG = """{
  "batch_size": 8,
  "cache": false,
  "class_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                  "horse", "ship", "truck"],
  "data_dir": null,
  "dataset": "DATASET",
  "epochs": 2,
  "eval_split": "test",
  "image_size": 32,
  "model": "resnet20",
  "model_dir": "MODEL_DIR",
  "model_kwargs": {"classes": 10, "depths": [1, 1, 1], "input_shape": [32, 32, 3]},
  "num_classes": 10,
  "num_replicas": 1,
  "recipe": {
    "jit_compile": false,
    "label_smoothing": 0.0,
    "learning_rate": 0.003125,
    "mixed_precision": PRECISION,
    "optimizer": "sgd",
    "schedule": "cosine",
    "warmup_steps": 0,
    "weight_decay": 0.0005
  },
  "result": {"best_top1": 0.1, "export_path": null, "steps": 6, "top1": 0.1, "top5": 0.5},
  "seed": 0,
  "steps_per_epoch": 3,
  "strategy": "one-device",
  "total_steps": 6,
  "train_examples": 100
}"""


def test_a_model_dir_of_the_old_format_evaluates_exports_and_resumes(
        one_device_run, cifar_subset, tmp_path, capsys):
    result, finished = one_device_run
    old = tmp_path / "old"
    shutil.copytree(finished, old)
    precision = result.config["recipe"]["mixed_precision"]
    text = (OLD_RUN_CONFIG.replace("DATASET", result.config["dataset"])
            .replace("MODEL_DIR", str(old)).replace("PRECISION", json.dumps(precision)))
    (old / rundir.CONFIG_FILE).write_text(text)

    record = record_lib.read_record(str(old))
    recipe = record.config.recipe
    assert record.version == 3 and record.config.data.holdout is None
    model = record.config.model
    assert (model.weights, model.preprocessing, model.freeze_stages, model.freeze_bn) == \
        (None, "torch", 0, False)
    assert (recipe.nesterov, recipe.ema_decay, recipe.eval_flip) == (False, 0.0, False)
    assert record.config.model.model_kwargs == {"depths": [1, 1, 1]}
    assert record.build_kwargs == json.loads(text)["model_kwargs"]

    best = max(h["val_accuracy"] for h in result.history)
    metrics = train_lib.evaluate(str(old), f"folder:{cifar_subset}")
    assert metrics["flip"] is False and metrics["top1"] == pytest.approx(best, abs=1e-6)
    status, out, err = _cli(capsys, "export", "--model-dir", str(old), "--export-dir",
                            str(tmp_path / "export"))
    assert status == 0 and "exported resnet20 to" in out, err

    resumed = _train(cifar_subset, old, epochs=3, checkpoint_every=2)
    assert (resumed.initial_step, resumed.steps) == (6, 9)
    assert resumed.config["recipe"]["mixed_precision"] is precision
    written = rundir.read_run_config(str(old))
    assert written["version"] == 3 and written["recipe"]["nesterov"] is False
    assert written["preprocessing"] == "torch" and written["weights"] is None
    assert written["result"]["steps"] == 9
