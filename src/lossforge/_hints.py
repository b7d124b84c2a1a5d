"""The "did you mean" hint every registry adds to its unknown-name errors."""
from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` to ``name``, or ``""`` if none is
    close (difflib's ratio ≥ 0.6)."""
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
