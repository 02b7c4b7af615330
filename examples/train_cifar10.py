"""Train a CIFAR ResNet on real CIFAR-10 JPEGs and export it for TF Serving.

    python examples/train_cifar10.py                          # ResNet-20, 30 epochs
    python examples/train_cifar10.py --model drn_d_22 --epochs 5
    python examples/train_cifar10.py --epochs 1 --steps-per-epoch 3 --tiny   # seconds

The data is the offline CIFAR-10 copy (extracted once into
~/.cache/resnet_keras), or any image folder given with --data
(DATA/{train,test}/<class>/*.jpg). Rerunning the same command resumes from
the last checkpoint in --model-dir. Watch it with
``tensorboard --logdir runs/cifar10/logs``.
"""
import argparse

from resnet_keras import data, train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="image folder (default: offline CIFAR-10)")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--model-dir", default="runs/cifar10")
    parser.add_argument("--export-dir", default="runs/cifar10_export")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="one block per stage, batch 16")
    args = parser.parse_args(argv)

    dataset = f"folder:{args.data}" if args.data else data.local_cifar10()
    result = train.train(
        args.model, dataset, epochs=args.epochs,
        batch_size=16 if args.tiny else args.batch_size,
        steps_per_epoch=args.steps_per_epoch, model_dir=args.model_dir,
        export_dir=args.export_dir, seed=args.seed, label_smoothing=0.1,
        model_kwargs={"depths": (1, 1, 1)} if args.tiny else None)
    for record in result.history:
        print(f"epoch {record['epoch']}: val top-1 {record['val_accuracy']:.4f}")
    print(train.summary_line(result))


if __name__ == "__main__":
    main()
