"""The bottleneck's width and cardinality: only valid pairs are ever sampled.

``bottleneck_width`` is the 3x3 conv's width at stage width 64
(``base_width * groups``); ``groups`` is declared once per width, holding
only the values that divide it and leave every stage's inner width at least
``groups``.
"""
import contextlib
import dataclasses

from resnet_keras.tuning import hyperparameters as hp_lib

DEFAULT_WIDTH = 64


@dataclasses.dataclass(frozen=True)
class BottleneckSpace:
    """Widths and groups to search; ``min_width`` is the narrowest stage
    width of the searched base rows."""

    widths: tuple
    groups: tuple
    min_width: int

    def valid(self, width, groups):
        """Groups divides the width; every stage's inner width is >= groups."""
        return width % groups == 0 and groups * 64 <= self.min_width * width

    def declare(self, hp):
        """Declare bottleneck_width and groups (under ``block == "bottleneck"``);
        their values in ``hp``."""
        user_groups = hp_lib.user_choices(hp, "groups")
        user_widths = hp_lib.user_choices(hp, "bottleneck_width")
        if user_widths is not None:
            width = hp.get("bottleneck_width")
            widths, scopes = user_widths, []
        else:
            widths = [w for w in self.widths if self._groups_for(w, user_groups)]
            if not widths:
                raise ValueError(
                    f"no bottleneck width in {self.widths} fits groups "
                    f"{user_groups or self.groups} (groups must divide the width and be "
                    f"<= width * {self.min_width} / 64)")
            default = DEFAULT_WIDTH if DEFAULT_WIDTH in widths else widths[len(widths) // 2]
            with hp.conditional_scope("block", ["bottleneck"]):
                width = hp.Choice("bottleneck_width", widths, default=default)
            scopes = [("block", ["bottleneck"])]
        if user_groups is not None:
            self._check_user_groups(widths, user_groups)
            return width, hp.get("groups")
        return width, self._declare_groups(hp, widths, scopes)

    def _groups_for(self, width, user_groups=None):
        candidates = user_groups if user_groups is not None else self.groups
        valid = [g for g in candidates if self.valid(width, g)]
        if user_groups is not None and len(valid) < len(user_groups):
            return []
        return valid

    def _check_user_groups(self, widths, user_groups):
        for width in widths:
            for groups in user_groups:
                if not self.valid(width, groups):
                    raise ValueError(
                        f"groups={groups} does not fit bottleneck_width={width}: groups must "
                        f"divide the width and be <= width * {self.min_width} / 64")

    def _declare_groups(self, hp, widths, scopes):
        """One ``groups`` choice per bottleneck width, holding only valid values."""
        active = None
        for width in widths:
            choices = self._groups_for(width)
            if not choices:
                raise ValueError(f"bottleneck_width={width} admits none of groups "
                                 f"{self.groups}; choose other widths or groups")
            with contextlib.ExitStack() as stack:
                for parent, values in scopes + [("bottleneck_width", [width])]:
                    stack.enter_context(hp.conditional_scope(parent, values))
                value = hp_lib.choice_or_fixed(hp, "groups", choices, min(choices))
            if value is not None:
                active = value
        return active
