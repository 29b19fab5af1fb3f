"""'Did you mean' hints for unknown names (config keys, presets, formats)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# difflib's ratio: a typo or a missing word part (learning_rte, trian, max_epochs ~ max_train_epochs: 0.75-0.96)
# passes; below, long snake_case names match on their shared letters and '_' alone (train_script ~ random_crop:
# 0.61), an absurd hint
CUTOFF = 0.75


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate, None when none is reasonably close."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=CUTOFF)
    return close[0] if close else None


def did_you_mean(name: str, candidates: Iterable[str], *, fold_case: bool = False) -> str:
    """Return "; did you mean 'x'?" for the closest candidate, or "" when nothing is close; with fold_case the
    comparison ignores case but the hint keeps the candidate's own spelling."""
    spelled = {(c.lower() if fold_case else c): c for c in candidates}
    close = closest(name.lower() if fold_case else name, spelled)
    return f"; did you mean '{spelled[close]}'?" if close else ""
