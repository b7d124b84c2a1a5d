"""Search strategies (DESIGN.md §6), selectable by name.

========================  =====================================================  ==============
name                      strategy                                               default space
========================  =====================================================  ==============
``autoloss-zero``         :class:`~lossforge.search.evolution.AutoLossZero`      autoloss-zero
``aging``                 :class:`~lossforge.search.aging.AgingEvolution` (NLFS)  nlfs
``glo``                   :class:`~lossforge.search.glo.GLO` (GP + CMA-ES)        glo
``taylor``                :class:`~lossforge.search.taylor.TaylorGLO`             taylor
``random``                :class:`~lossforge.search.random.RandomSearch`          autoloss-zero
========================  =====================================================  ==============

``get(name, space, seed=0, **options)`` builds one; ``space`` is a
:class:`~lossforge.expr.spaces.SearchSpace`, a preset name, or ``None`` for the strategy's
default space. Every strategy follows :class:`~lossforge.search.strategy.Strategy`.
"""
from __future__ import annotations

import difflib

from lossforge.expr.spaces import SearchSpace
from lossforge.search.aging import AgingEvolution
from lossforge.search.evolution import AutoLossZero
from lossforge.search.glo import GLO
from lossforge.search.random import RandomSearch
from lossforge.search.strategy import Fitness, Strategy
from lossforge.search.taylor import TaylorGLO

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (AutoLossZero, AgingEvolution, GLO, TaylorGLO, RandomSearch)
}


def names() -> list[str]:
    """Names of the built-in strategies."""
    return list(STRATEGIES)


def get(name: str, space: SearchSpace | str | None = None, seed: int = 0, **options) -> Strategy:
    """The built-in strategy ``name`` on ``space`` (default: the strategy's own preset).

    Unknown ``name``: ``KeyError`` listing the strategies, with a close match when there is one.
    Unknown options: ``TypeError`` listing the strategy's options and defaults.
    """
    try:
        cls = STRATEGIES[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(STRATEGIES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown strategy {name!r}{hint}; strategies: "
                       f"{', '.join(STRATEGIES)}") from None
    return cls(space, seed=seed, **options)


__all__ = ["AgingEvolution", "AutoLossZero", "Fitness", "GLO", "RandomSearch", "STRATEGIES",
           "Strategy", "TaylorGLO", "get", "names"]
