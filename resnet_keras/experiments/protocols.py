"""The accuracy protocols of ``resnet-keras results``, read from ``protocols.json``.

A protocol is data: its models (:class:`Entry` rows), the training settings
they share, the published results it is compared with (:class:`Anchor`) and
the prose of its report. ``protocols.json`` beside this module holds them;
this module gives them their types.
"""
import collections
import dataclasses
import importlib.resources
import json
from typing import Optional, Tuple

PROTOCOLS_FILE = "protocols.json"
DEFAULT_PROTOCOL = "cifar10-short"

# One model of a protocol: a registry name, its epochs, build overrides (pairs
# of keyword and value), the name of the pair it is compared within, and its
# mixed_precision (None: the device's default, see train.default_mixed_precision),
# its seed (None: the protocol's), the group its seeds are averaged in (None: the
# label) and its recipe: train() options (pairs) over the protocol's recipe.
Entry = collections.namedtuple(
    "Entry", "label model epochs overrides pair mixed_precision seed group recipe",
    defaults=((), "", None, None, None, ()))


@dataclasses.dataclass(frozen=True)
class Anchor:
    """A published result the protocol is compared with."""

    text: str
    labels: Tuple[str, ...]  # (baseline, contender) of the pair it speaks to, or one model
    published_gain: Optional[float]  # contender top-1 minus baseline top-1, in points
    published_top1: Optional[float] = None  # a one-model anchor's published top-1, in %


@dataclasses.dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    image_size: int
    batch_size: int
    seed: int
    entries: Tuple[Entry, ...]
    anchors: Tuple[Anchor, ...]
    full_schedule: str
    recipe: Tuple[Tuple[str, object], ...] = ()  # train() options beyond the defaults
    keep_models: bool = False  # copy each final model and run_config.json to OUT/<label>/
    holdout: Optional[int] = None  # validate on the last N training images, never the test set


def _protocol(fields):
    """A :class:`Protocol` from its JSON object (mappings become tuples of pairs)."""
    entries = tuple(Entry(**dict(entry, overrides=tuple(entry.get("overrides", {}).items()),
                                 recipe=tuple(entry.get("recipe", {}).items())))
                    for entry in fields["entries"])
    anchors = tuple(Anchor(anchor["text"], tuple(anchor["labels"]),
                           anchor.get("published_gain"), anchor.get("published_top1"))
                    for anchor in fields["anchors"])
    return Protocol(**dict(fields, entries=entries, anchors=anchors,
                           recipe=tuple(fields.get("recipe", {}).items())))


def load_protocols():
    """``{name: Protocol}`` of ``protocols.json``, in the file's order."""
    text = importlib.resources.files(__package__).joinpath(PROTOCOLS_FILE).read_text("utf-8")
    return {fields["name"]: _protocol(fields) for fields in json.loads(text)["protocols"]}


PROTOCOLS = load_protocols()


def get_protocol(name):
    """The protocol NAME; ValueError naming the choices for an unknown one."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choices: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
