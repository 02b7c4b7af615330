"""Search a CIFAR ResNet's bottleneck (width, groups, depths) under a parameter budget.

    python examples/tune_bottleneck.py                                   # 10 trials
    python examples/tune_bottleneck.py --max-trials 2 --epochs 1 --steps-per-epoch 2 --tiny

The block is fixed to the bottleneck with ``hp.Fixed``; the tuner searches
its width (``base_width * groups`` at stage width 64), the ResNeXt
cardinality (only values that divide the width are ever sampled), the
depths, the output stride and the recipe, and resamples every candidate over
``--max-params``. Each trial is a full training run (checkpoints, TensorBoard)
in DIRECTORY/search/trial_<id>/; rerunning the same command resumes the
search. At the end the results table is printed and written to
DIRECTORY/results.csv, and the best model is exported for TF Serving.

On a CPU, grouped convolutions are slow: add ``--groups 1`` there.

The data is the offline CIFAR-10 copy (extracted once into
~/.cache/resnet_keras), or any image folder given with --data
(DATA/{train,test}/<class>/*.jpg).
"""
import argparse

import keras_tuner

from resnet_keras import data, tuning


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="image folder (default: offline CIFAR-10)")
    parser.add_argument("--directory", default="runs/tune_bottleneck")
    parser.add_argument("--export-dir", default="runs/tune_bottleneck_export")
    parser.add_argument("--tuner", choices=tuning.TUNERS, default="random")
    parser.add_argument("--max-trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--max-params", type=int, default=400_000)
    parser.add_argument("--groups", type=int, default=None, help="fix the cardinality")
    parser.add_argument("--tiny", action="store_true",
                        help="one or two blocks per stage, batch 8 (for a quick check)")
    args = parser.parse_args(argv)

    dataset = f"folder:{args.data}" if args.data else data.local_cifar10()
    hp = keras_tuner.HyperParameters()
    hp.Fixed("family", "resnet")
    hp.Fixed("block", "bottleneck")
    if args.groups:
        hp.Fixed("groups", args.groups)
    hypermodel = tuning.HyperResNet(
        10, input_shape=(32, 32, 3), families=("resnet",), blocks=("bottleneck",),
        max_params=args.max_params, depth_range=(1, 2) if args.tiny else None)
    tuner = tuning.make_tuner(args.tuner, hypermodel, args.directory, args.max_trials,
                              max_epochs=args.epochs, seed=1, hyperparameters=hp)
    tuner.search(dataset, epochs=args.epochs, batch_size=8 if args.tiny else args.batch_size,
                 steps_per_epoch=args.steps_per_epoch, train_subset=args.train_subset,
                 seed=1, verbose=0 if args.tiny else 1)
    tuner.report()
    print(f"best trial exported to {tuner.export_best(args.export_dir)}")


if __name__ == "__main__":
    main()
