"""``resnet-keras tune``: the command line's search."""
from resnet_keras import data as data_lib
from resnet_keras import rundir
from resnet_keras import train as train_lib
from resnet_keras.tuning.space import BLOCKS, DEFAULT_GROUPS, FAMILIES, HyperResNet
from resnet_keras.tuning.tuner import make_tuner


def tune_main(args):
    """``resnet-keras tune``: search, print the table, write results.csv, export."""
    rundir.check_writable_dir(args.directory, "tuner directory")
    rundir.check_writable_dir(args.export_dir, "export dir")
    if args.num_cpu_replicas:  # logical CPU devices must exist before TF starts
        train_lib.make_strategy(args.strategy, args.num_cpu_replicas)
    dataset = data_lib.load_dataset(args.dataset, args.data_dir)
    size = args.image_size or dataset.default_image_size()
    hypermodel = HyperResNet(
        dataset.num_classes, (size, size, 3), families=args.family or FAMILIES,
        blocks=args.block or BLOCKS, max_params=args.max_params, max_flops=args.max_flops,
        depth_range=args.depth_range, groups=args.groups or DEFAULT_GROUPS)
    tuner = make_tuner(args.tuner, hypermodel, args.directory, args.max_trials,
                       max_epochs=args.epochs, seed=args.seed)
    tuner.search(args.dataset, data_dir=args.data_dir, epochs=args.epochs,
                 batch_size=args.batch_size, strategy=args.strategy,
                 num_cpu_replicas=args.num_cpu_replicas, seed=args.seed,
                 train_subset=args.train_subset, steps_per_epoch=args.steps_per_epoch,
                 max_steps=args.max_steps, verbose=0 if args.quiet else 1)
    if tuner.role == "worker":
        print(f"{tuner.tuner_id}: ran trial(s) {', '.join(tuner.trials_run) or 'none'}")
        return 0
    tuner.report()
    if args.export_dir:
        trial = tuner.best_trial()
        path = tuner.export_best(args.export_dir)
        print(f"exported trial {trial.trial_id} ({trial.score:.4f}) to {path}")
    return 0
