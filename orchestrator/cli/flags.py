"""How a command shows the library's errors: the settings a message names (num_processes) as the flags the user
typed (--num-processes). The library names settings because sweeps and the benchmark call it too."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from orchestrator.common.errors import MedsynthError


def settings_as_flags(**flags: str) -> Callable[[Callable], Callable]:
    """Decorate a command's callback (innermost, under the options): a MedsynthError leaving it names each
    setting of `flags` (setting=flag) by its flag. A setting inside a longer name or path (tokenizer_cache_dir,
    --offline, runs/offline/, 'quoted') is left alone."""
    pattern = re.compile(r"(?<![\w'./\\-])(" + "|".join(map(re.escape, flags)) + r")(?![\w'/\\-])")

    def decorate(callback: Callable) -> Callable:
        @functools.wraps(callback)
        def command(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except MedsynthError as exc:
                raise MedsynthError(pattern.sub(lambda m: flags[m[1]], exc.message)) from None
        return command
    return decorate
