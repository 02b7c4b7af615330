"""The replica step functions: one training step and one evaluation step per
batch, for any ``tf.distribute`` strategy (``strategy.run`` + gradient
all-reduce inside a ``tf.function``), and the weight average (EMA).

Each step returns :class:`Sums` (loss, top-1 hits, top-5 hits and images,
summed over the replicas); :meth:`Sums.metrics` turns them into means.
"""
import contextlib
from typing import NamedTuple

import keras
import tensorflow as tf

from resnet_keras.training.recipe import no_decay_variables

FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")


class Metrics(NamedTuple):
    """Means over ``count`` images."""

    loss: float
    accuracy: float
    top5: float
    count: int


class Sums(NamedTuple):
    """Sums over a number of images: loss, top-1 hits, top-5 hits, images."""

    loss: float = 0.0
    hits: float = 0.0
    top5: float = 0.0
    count: float = 0.0

    def plus(self, other):
        return Sums(*(float(a) + float(b) for a, b in zip(self, other)))

    def metrics(self):
        n = max(float(self.count), 1.0)
        return Metrics(float(self.loss) / n, float(self.hits) / n, float(self.top5) / n,
                       int(self.count))

    @staticmethod
    def of(per_example_loss, probabilities, labels, k):
        """Per-replica sums of a batch (tensors); top-k hits with K."""
        probabilities = tf.cast(probabilities, tf.float32)
        labels = tf.cast(labels, tf.int64)
        hits = tf.cast(tf.equal(tf.argmax(probabilities, axis=-1), labels), tf.float32)
        topk = tf.cast(tf.math.in_top_k(labels, probabilities, k), tf.float32)
        count = tf.cast(tf.size(labels), tf.float32)
        return Sums(tf.reduce_sum(per_example_loss), tf.reduce_sum(hits), tf.reduce_sum(topk),
                    count)


class Ema:
    """Exponential moving average of a model's float weights (the trainable
    ones and the BatchNorm statistics).

    Each replica updates its own copy after each step, without communication;
    reading the average (evaluation, saving, checkpoints) takes the mean over
    the replicas. The decay warms up as ``min(decay, (1 + t) / (10 + t))`` at
    step ``t``, so the first averages are not held at the initial weights.
    Create it inside the strategy's scope.
    """

    def __init__(self, model, decay):
        self.decay = float(decay)
        self.targets = [v for v in model.weights if v.dtype in FLOAT_DTYPES]
        self.averages = [
            tf.Variable(tf.identity(v.value), trainable=False, name=f"ema_{i}",
                        synchronization=tf.VariableSynchronization.ON_READ,
                        aggregation=tf.VariableAggregation.MEAN)
            for i, v in enumerate(self.targets)]

    def update(self, step):
        """In replica context, after the optimizer step number STEP."""
        t = tf.cast(step, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + t) / (10.0 + t))
        for average, target in zip(self.averages, self.targets):
            value = tf.cast(target.value, average.dtype)
            average.assign(decay * average + (1.0 - decay) * value)

    def copy_to_model(self):
        """Set the model's weights to the averages (cross-replica context)."""
        for average, target in zip(self.averages, self.targets):
            target.value.assign(average.read_value())

    @contextlib.contextmanager
    def swapped_in(self):
        """The model holds the averaged weights inside the block."""
        live = [tf.identity(v.value) for v in self.targets]
        self.copy_to_model()
        try:
            yield
        finally:
            for value, target in zip(live, self.targets):
                target.value.assign(value)


def weights_finite(model):
    """Whether every float weight of MODEL is finite."""
    return all(bool(tf.reduce_all(tf.math.is_finite(v.value)))
               for v in model.weights if v.dtype.startswith(("float", "bfloat")))


class ReplicaSteps:
    """The training and evaluation steps of one model on one strategy.

    ``optimizer`` may be None for evaluation only. The recipe gives the
    label smoothing, SGD's L2 weight decay (added to the loss; the optimizer
    sums gradients over replicas), XLA, the EMA and mirror-image evaluation.
    """

    def __init__(self, strategy, model, optimizer, recipe, global_batch, num_classes):
        self.strategy, self.model, self.optimizer = strategy, model, optimizer
        self.recipe, self.global_batch, self.num_classes = recipe, global_batch, num_classes
        self.loss_fn = keras.losses.CategoricalCrossentropy(
            label_smoothing=recipe.label_smoothing, reduction=None)
        decay = (recipe.weight_decay or 0.0) if recipe.optimizer == "sgd" else 0.0
        no_decay = {id(v) for v in no_decay_variables(model)}
        self.l2 = decay / strategy.num_replicas_in_sync  # per replica
        self.decayed = [v for v in model.trainable_variables
                        if decay and id(v) not in no_decay]
        self.averaged = [v for v in model.non_trainable_variables if v.dtype in FLOAT_DTYPES]
        self.ema = Ema(model, recipe.ema_decay) if recipe.ema_decay else None
        self._grads_fn = tf.function(self._gradients, jit_compile=True) \
            if recipe.jit_compile else self._gradients
        self.train_step = tf.function(self._train_step)
        self.eval_step = tf.function(self._eval_step)
        self.sync = tf.function(self._sync)

    def _loss(self, labels, probabilities):
        onehot = tf.one_hot(labels, self.num_classes)
        return self.loss_fn(onehot, tf.cast(probabilities, tf.float32))

    def _gradients(self, images, labels):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            probabilities = self.model(images, training=True)
            per_example = self._loss(labels, probabilities)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        if self.decayed:
            # The gradient of the L2 term 0.5 * l2 * sum(w ** 2), added to that of
            # the loss without taping the term: l2 * w, scaled as the loss is.
            # A weight the loss does not reach (gradient None) still decays.
            decayed = {id(v) for v in self.decayed}
            grads = [self._with_l2(g, v) if id(v) in decayed else g
                     for g, v in zip(grads, variables)]
        return grads, per_example, probabilities

    def _with_l2(self, grad, variable):
        l2 = self.optimizer.scale_loss(self.l2 * variable.value)
        return l2 if grad is None else grad + l2

    # No tensor-dependent Python control flow: AutoGraph need not convert it
    # (its conversion of bound methods inside strategy.run has dropped `self`).
    @tf.autograph.experimental.do_not_convert
    def _replica_train(self, images, labels, stop):
        grads, per_example, probabilities = self._grads_fn(images, labels)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        if self.ema is not None:
            self.ema.update(self.optimizer.iterations)
        return Sums.of(per_example, probabilities, labels, 1), tf.identity(stop)

    def _reduce(self, per_replica):
        return tf.nest.map_structure(
            lambda value: self.strategy.reduce("SUM", value, axis=None), per_replica)

    def _train_step(self, batch, stop):
        """One step: (:class:`Sums`, the sum of the replicas' STOP requests), so
        every worker of a cluster sees a stop request at the same step."""
        return self._reduce(self.strategy.run(self._replica_train, args=(*batch, stop)))

    @tf.autograph.experimental.do_not_convert  # as _replica_train
    def _replica_eval(self, images, labels):
        # The last evaluation step can leave a replica with an empty batch,
        # which convolutions and batch norm reject: it contributes zeros.
        def run():
            probabilities = self.model(images, training=False)
            if self.recipe.eval_flip:  # the mean over each image and its mirror
                mirrored = self.model(tf.reverse(images, axis=[2]), training=False)
                probabilities = 0.5 * (tf.cast(probabilities, tf.float32)
                                       + tf.cast(mirrored, tf.float32))
            return Sums.of(self._loss(labels, probabilities), probabilities, labels,
                           min(5, self.num_classes))

        return tf.cond(tf.shape(images)[0] > 0, run, lambda: Sums(*(tf.constant(0.0),) * 4))

    def _eval_step(self, batch):
        return self._reduce(self.strategy.run(self._replica_eval, args=batch))

    def _sync(self):
        def average():
            context = tf.distribute.get_replica_context()
            for variable in self.averaged:
                value = variable.value
                value.assign(context.all_reduce("MEAN", tf.identity(value)))

        self.strategy.run(average)

    def sync_replicas(self):
        """Average per-replica state (BN moving statistics) across replicas."""
        if self.averaged and self.strategy.num_replicas_in_sync > 1:
            self.sync()

    def evaluate(self, dist_dataset):
        """:class:`Metrics` on a distributed evaluation dataset."""
        self.sync_replicas()
        return self.evaluation_totals(dist_dataset).metrics()

    def evaluation_totals(self, dist_dataset):
        """:class:`Sums` over the dataset."""
        totals = Sums()
        for batch in dist_dataset:
            totals = totals.plus(self.eval_step(batch))
        return totals

    def averaged_weights(self):
        """A context in which the model holds the EMA weights (if the recipe has
        an EMA; otherwise nothing changes)."""
        return self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()

    def weights_finite(self):
        return weights_finite(self.model)
