"""What this CPU offers its kernels: the model name and flags of Linux's
/proc/cpuinfo, and the cap that ``ONEDNN_MAX_CPU_ISA`` puts on oneDNN.

Both the per-device training defaults (:mod:`resnet_keras.training.recipe`)
and the benchmark's machine line (:mod:`resnet_keras.experiments.measure`)
read the CPU through here, so they always agree on what it is.
"""

import os

CPUINFO = "/proc/cpuinfo"
# oneDNN holds its kernels to this instruction set (e.g. AVX2) when it is set.
ONEDNN_ISA_CAP = "ONEDNN_MAX_CPU_ISA"


def read(path=CPUINFO):
    """``(model name, flags)`` of the first processor in ``path``:
    ``(None, frozenset())`` where the file cannot be read or lacks them."""
    model, flags = None, None
    try:
        with open(path) as f:
            for line in f:
                key, sep, value = line.partition(":")
                if not sep:
                    continue
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and flags is None:
                    flags = frozenset(value.split())
                if model is not None and flags is not None:
                    break
    except OSError:
        pass
    return model, flags or frozenset()


def onednn_isa_cap(value=None):
    """The instruction set oneDNN is capped at (upper case), or ``""``: VALUE
    where given (e.g. ``"avx2"``), else the ``ONEDNN_MAX_CPU_ISA`` variable."""
    return (os.environ.get(ONEDNN_ISA_CAP, "") if value is None else value).strip().upper()
