"""The recipe of a run: defaults filled in, the learning-rate schedule, the
optimizer, and the numeric precision (per-device defaults, the dtype policy
the model is built under)."""
import dataclasses
import math

import keras
import tensorflow as tf

from resnet_keras import cpuinfo as cpuinfo_lib
from resnet_keras.training.config import Recipe

LARGE_DATASET = 100_000
DEFAULT_WARMUP_FRACTION = 0.03


def default_recipe(*, optimizer="sgd", learning_rate=None, weight_decay=None,
                   schedule="cosine", warmup_epochs=None, label_smoothing=0.0,
                   mixed_precision=False, jit_compile=False, nesterov=False,
                   ema_decay=0.0, eval_flip=False, batch_size,
                   num_train, steps_per_epoch, total_steps):
    """Fill in the defaults: lr 0.1 * B / 256 (SGD) or 1e-3 * B / 256 (AdamW),
    weight decay by dataset size, warm-up over 3 % of the steps."""
    recipe = Recipe(optimizer=optimizer, learning_rate=learning_rate,
                    weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs,
                    label_smoothing=label_smoothing, mixed_precision=mixed_precision,
                    jit_compile=jit_compile, nesterov=nesterov, ema_decay=ema_decay,
                    eval_flip=eval_flip)
    return resolve_recipe(recipe, batch_size=batch_size, num_train=num_train,
                          steps_per_epoch=steps_per_epoch, total_steps=total_steps)


def resolve_recipe(recipe, *, batch_size, num_train, steps_per_epoch, total_steps):
    """RECIPE (a :class:`Recipe`) with every default filled in, as
    :func:`default_recipe` describes; a warm-up already in steps is kept."""
    learning_rate, weight_decay = recipe.learning_rate, recipe.weight_decay
    if learning_rate is None:
        learning_rate = (0.1 if recipe.optimizer == "sgd" else 1e-3) * batch_size / 256
    if weight_decay is None:
        weight_decay = (0.05 if recipe.optimizer == "adamw"
                        else 1e-4 if num_train >= LARGE_DATASET else 5e-4)
    if recipe.warmup_steps is not None:
        warmup = recipe.warmup_steps
    elif recipe.warmup_epochs is None:
        warmup = int(round(DEFAULT_WARMUP_FRACTION * total_steps))
    else:
        warmup = int(round(recipe.warmup_epochs * steps_per_epoch))
    return dataclasses.replace(
        recipe, learning_rate=float(learning_rate), weight_decay=float(weight_decay),
        warmup_steps=min(warmup, total_steps), label_smoothing=float(recipe.label_smoothing),
        mixed_precision=bool(recipe.mixed_precision), jit_compile=bool(recipe.jit_compile),
        nesterov=bool(recipe.nesterov), ema_decay=float(recipe.ema_decay),
        eval_flip=bool(recipe.eval_flip))


@keras.saving.register_keras_serializable(package="resnet_keras")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``base``, then cosine decay to 0 or step decay (/10 at
    1/3 and 2/3 of the steps after warm-up)."""

    def __init__(self, base, total, warmup, kind="cosine"):
        self.base, self.total, self.warmup, self.kind = base, total, warmup, kind

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.base * (step + 1.0) / max(self.warmup, 1)
        progress = tf.clip_by_value(
            (step - self.warmup) / max(self.total - self.warmup, 1), 0.0, 1.0)
        if self.kind == "cosine":
            decayed = 0.5 * self.base * (1.0 + tf.cos(math.pi * progress))
        else:
            decayed = self.base * tf.pow(0.1, tf.floor(progress * 3.0))
            decayed = tf.where(progress >= 1.0, self.base * 0.01, decayed)
        return tf.where(step < self.warmup, warm, decayed)

    def get_config(self):
        return {"base": self.base, "total": self.total, "warmup": self.warmup,
                "kind": self.kind}


def learning_rate_schedule(recipe, total_steps):
    """The recipe's :class:`WarmupDecay` schedule over ``total_steps``."""
    return WarmupDecay(recipe.learning_rate, total_steps, recipe.warmup_steps, recipe.schedule)


def make_optimizer(recipe, schedule, model):
    """SGD (momentum 0.9, Nesterov's if the recipe says so) or AdamW
    (decoupled weight decay).

    For SGD the training loop adds the classic L2 term to the loss instead.
    Biases and normalisation parameters (rank <= 1) get no weight decay.
    """
    if recipe.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=schedule,
                                           weight_decay=recipe.weight_decay)
        optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    else:
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9,
                                         nesterov=recipe.nesterov)
    if recipe.mixed_precision and tf.config.list_physical_devices("GPU"):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


def no_decay_variables(model):
    """The trainable variables that get no weight decay: biases and
    normalisation parameters (rank <= 1)."""
    return [v for v in model.trainable_variables if len(v.shape) <= 1]


CPUINFO = cpuinfo_lib.CPUINFO
NATIVE_BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# oneDNN's ONEDNN_MAX_CPU_ISA values that keep its kernels below AVX-512 BF16:
# with such a cap, bfloat16 is emulated even on a CPU that has it.
ISA_CAPS_WITHOUT_BFLOAT16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2",
                                       "AVX512_CORE", "AVX512_CORE_VNNI"})


def cpu_has_native_bfloat16(cpuinfo=None, isa_cap=None):
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX).

    Reads the first ``flags`` line of ``cpuinfo`` (a path; :data:`CPUINFO`,
    Linux's /proc/cpuinfo, by default). False where it cannot be read, and
    where oneDNN's kernels are capped below AVX-512 BF16: ``isa_cap``, by
    default the ``ONEDNN_MAX_CPU_ISA`` environment variable (e.g. ``AVX2``).
    """
    cap = cpuinfo_lib.onednn_isa_cap(isa_cap)
    if cap in ISA_CAPS_WITHOUT_BFLOAT16:
        return False
    _, flags = cpuinfo_lib.read(cpuinfo or CPUINFO)
    return bool(NATIVE_BFLOAT16_FLAGS & flags)


def _has_gpu(has_gpu):
    return bool(tf.config.list_physical_devices("GPU")) if has_gpu is None else bool(has_gpu)


def default_mixed_precision(has_gpu=None, cpuinfo=None):
    """The per-device default of ``mixed_precision``, chosen from measurements.

    On CPUs with native bfloat16 (AVX-512 BF16, AMX), mixed bfloat16 trained
    faster than float32 with our trainer at the same accuracy per step (2
    cores, AVX-512 BF16: resnet50 at 224, batch 32: 11.7 against 6.7 images/s;
    resnet20 at 32, batch 128: 786 against 530; README, Benchmarks). Other
    CPUs emulate bfloat16 (as does any CPU with oneDNN capped below AVX-512
    BF16 by ``ONEDNN_MAX_CPU_ISA``), so they default to float32, as GPUs do until
    measured (pass ``mixed_precision=True`` for float16 there).
    ``has_gpu=None`` asks TensorFlow; ``cpuinfo`` is read as in
    :func:`cpu_has_native_bfloat16`.
    """
    return not _has_gpu(has_gpu) and cpu_has_native_bfloat16(cpuinfo)


def precision_policy(mixed_precision, has_gpu=None):
    """mixed_float16 on GPU, mixed_bfloat16 on CPU, float32 when off."""
    if not mixed_precision:
        return "float32"
    return "mixed_float16" if _has_gpu(has_gpu) else "mixed_bfloat16"


def build_classifier(model_name, model_kwargs, policy):
    """build_model under a dtype policy (restored afterwards); float32 outputs."""
    from resnet_keras import build_model

    kwargs = dict(model_kwargs)
    kwargs["input_shape"] = tuple(kwargs["input_shape"])
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = build_model(model_name, **kwargs)
    finally:
        keras.config.set_dtype_policy(previous)
    if model.output.dtype != "float32":
        raise ValueError(f"model {model_name!r} gives {model.output.dtype} outputs under "
                         f"{policy}; its 'predictions' layer must compute in float32")
    return model
