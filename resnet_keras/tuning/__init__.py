"""Architecture and hyperparameter search over the registered ResNets and DRNs.

    from resnet_keras import tuning

    hypermodel = tuning.HyperResNet(10, input_shape=(32, 32, 3), max_params=500_000)
    tuner = tuning.make_tuner("random", hypermodel, "runs/search", max_trials=20)
    tuner.search("folder:~/.cache/resnet_keras/cifar10_jpeg", epochs=5, batch_size=128)
    tuner.report()                        # table on stdout, runs/search/results.csv
    tuner.export_best("runs/search_export")

The same from the command line::

    resnet-keras tune --dataset folder:~/.cache/resnet_keras/cifar10_jpeg \\
        --directory runs/search --max-trials 20 --tuner random --epochs 5 \\
        --max-params 500000 --export-dir runs/search_export

Search space (:class:`HyperResNet`; every range is a constructor argument,
a user's ``hp.Fixed``/``hp.Choice`` of the same name replaces it):

- ``family``: resnet, drn_c, drn_d. The resnet base is the CIFAR ResNet-20 row
  for small images (<= 64 px), ResNet-18 (basic) / ResNet-50 (bottleneck) for
  larger ones; the DRN bases are the drn_c_26 and drn_d_22 rows.
- ``block``: basic or bottleneck.
- ``depth_1`` .. ``depth_N``: blocks per residual stage (the DRNs' levels 3-6;
  their other levels keep one block). Default: the base row.
- ``bottleneck_width`` (bottleneck only): the 3x3 conv's width at stage width
  64, i.e. ``base_width * groups``. Default 64.
- ``groups`` (bottleneck only): grouped-conv cardinality; one choice per
  bottleneck width holding only the valid values (groups divides the width
  and every stage's inner width is at least ``groups``), so an invalid pair is
  never sampled. Default 1.
- ``output_stride``: the family's allowed values (CIFAR ResNet 1/2/4, ImageNet
  ResNet 8/16/32, DRN 8). Default: the native one.
- ``attention`` ("none", "se", "eca"), ``stem`` (per family, the stems it
  allows: "imagenet", "deep", "cifar"), ``shortcut`` ("projection",
  "avgpool", "pad") and ``drop_path_rate``: searched when the constructor's
  ``attentions`` / ``stems`` / ``shortcuts`` / ``drop_path_rates`` give more
  than one value (default: the base row's own, not searched). A stem of
  another stride keeps the sampled output stride relative to the base row
  (the CIFAR stem on ResNet-18 at ``output_stride`` 32 gives 8).
- ``learning_rate`` (SGD peak, log scale, default 0.1) and ``weight_decay``
  (log scale, default 5e-4).

Budget: with ``max_params`` / ``max_flops`` (multiply-adds per image at the
input size, as :func:`resnet_keras.count_macs`), the oracles of
:func:`make_tuner` build each sampled candidate (no training) and resample
the ones above the limit; they are never proposed again. A candidate that
still arrives over budget (e.g. from a user's fixed values) fails with
``keras_tuner.errors.FailedTrialError`` before training. If even the smallest
candidate of the space is over the limit, ``search`` raises ValueError.
Multiply-adds are not CPU time: TensorFlow's grouped convolutions are several
times slower per multiply-add on CPUs, so a CPU-only search is best run with
``groups=(1,)`` (``--groups 1``).

Each trial is one :func:`resnet_keras.train.train` run in
``DIRECTORY/<project>/trial_<id>/`` (run_config.json, resumable backup/
checkpoints, logs/, best.keras) reporting ``val_accuracy`` (best top-1), the
objective. Hyperband trials train for their ``tuner/epochs`` and continue
from the checkpoint of the trial they were promoted from.

Resume: rerun the same command (or a new tuner on the same directory):
keras-tuner reloads its oracle, reruns the trial that was interrupted, whose
training resumes from its checkpoint, and runs only the remaining trials.

TensorBoard: ``tensorboard --logdir DIRECTORY/tensorboard`` shows every trial
in the HParams dashboard (hyperparameters, val_accuracy, params, flops,
wall_time); each trial's training curves are in its ``logs/``.

Distributed search uses keras-tuner's chief/worker protocol (gRPC, grpcio
comes with TensorFlow). Run the same command on every machine, with a
``--directory`` all of them can reach and these environment variables::

    export KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000
    KERASTUNER_TUNER_ID=chief  resnet-keras tune ...   # the oracle; trains nothing
    KERASTUNER_TUNER_ID=tuner0 resnet-keras tune ...   # a worker: runs trials
    KERASTUNER_TUNER_ID=tuner1 resnet-keras tune ...   # another worker

The chief samples candidates (and applies the budget), the workers train
them; when all trials are done the chief prints the table, writes
results.csv and exports the best model.

``HyperResNet.build(hp)`` returns the candidate's model, not compiled (the
trials compile their own recipe in ``train``); with keras-tuner's own tuners
(``keras_tuner.RandomSearch(hypermodel, ...)``) its ``fit`` compiles the
candidate's SGD recipe (momentum 0.9, the sampled learning rate and weight
decay) and calls ``model.fit``.

keras-tuner: tested with ``keras-tuner>=1.4.7,<1.5``, the range the package
requires; with another version importing this package raises an ImportError
naming the installed version and that range.

Modules: ``space`` (:class:`HyperResNet`, hyperparameters to a
:class:`Candidate`), ``bottleneck`` (the valid width / groups pairs),
``budget`` (the parameter and multiply-add limits, the cost cache),
``oracles`` (budget-aware oracles), ``tuner`` (:class:`ResNetTuner`,
:func:`make_tuner`), ``report`` (the results table and CSV), ``hparams``
(TensorBoard HParams), ``command`` (``resnet-keras tune``) and
``_keras_tuner_compat`` (every use of keras-tuner internals).
"""
# First: keras-tuner must be installed ([tune] extra), then its version is checked
# (by _keras_tuner_compat), which the modules below rely on.
from resnet_keras import errors

errors.require("keras_tuner", "tune", "architecture search (resnet_keras.tuning)")

from resnet_keras.tuning._keras_tuner_compat import ensure_active_values  # noqa: E402
from resnet_keras.tuning.budget import Budget
from resnet_keras.tuning.command import tune_main
from resnet_keras.tuning.hparams import write_hparams_config, write_session
from resnet_keras.tuning.oracles import (MAX_RESAMPLES, BayesianOracle, HyperbandOracle,
                                         RandomOracle)
from resnet_keras.tuning.report import METRICS, RESULT_COLUMNS, format_table, write_csv
from resnet_keras.tuning.space import (ATTENTIONS, BLOCKS, DEFAULT_BOTTLENECK_WIDTHS,
                                       DEFAULT_DEPTH_RANGES, DEFAULT_GROUPS,
                                       DEFAULT_LEARNING_RATE, DEFAULT_WEIGHT_DECAY, FAMILIES,
                                       SHORTCUTS, STEMS, Candidate, HyperResNet,
                                       base_model_name, searched_stages)
from resnet_keras.tuning.tuner import (OBJECTIVE, RESULTS_FILE, TENSORBOARD_DIR, TUNERS,
                                       ResNetTuner, distributed_role, make_tuner)

__all__ = [
    "ATTENTIONS", "BLOCKS", "DEFAULT_BOTTLENECK_WIDTHS", "DEFAULT_DEPTH_RANGES",
    "DEFAULT_GROUPS", "DEFAULT_LEARNING_RATE", "DEFAULT_WEIGHT_DECAY", "FAMILIES",
    "MAX_RESAMPLES", "METRICS", "OBJECTIVE", "RESULTS_FILE", "RESULT_COLUMNS", "SHORTCUTS",
    "STEMS", "TENSORBOARD_DIR", "TUNERS", "BayesianOracle", "Budget", "Candidate",
    "HyperResNet", "HyperbandOracle", "RandomOracle", "ResNetTuner", "base_model_name",
    "distributed_role", "ensure_active_values", "format_table", "make_tuner",
    "searched_stages", "tune_main", "write_csv", "write_hparams_config", "write_session"]
