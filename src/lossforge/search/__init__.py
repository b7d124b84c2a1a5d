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
default space. Every strategy follows :class:`~lossforge.search.strategy.Strategy`, and declares
what a search needs to know about it (default space, joint search, label, funnel overrides, task
options); ``register(cls)`` adds a strategy of your own, which ``LossSearch`` then runs by name.

Modules: ``strategy`` (the protocol and traits), ``seeded`` (:class:`SeededStrategy`, the base of
the built-ins), one module per strategy, and ``_cma`` (CMA-ES plumbing shared by GLO and TaylorGLO).
"""
from __future__ import annotations

from lossforge._hints import did_you_mean
from lossforge.expr.spaces import SearchSpace
from lossforge.search.aging import AgingEvolution
from lossforge.search.evolution import AutoLossZero
from lossforge.search.glo import GLO
from lossforge.search.random import RandomSearch
from lossforge.search.seeded import SeededStrategy
from lossforge.search.strategy import Fitness, Strategy
from lossforge.search.taylor import TaylorGLO

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (AutoLossZero, AgingEvolution, GLO, TaylorGLO, RandomSearch)
}


def register(cls: type[Strategy], name: str | None = None) -> type[Strategy]:
    """Make the strategy class ``cls`` available by ``name`` (default: its ``name`` attribute) to
    :func:`get` and ``LossSearch(strategy=name)``; a name already registered is replaced.

    Like :func:`lossforge.tasks.register` (``register(name, factory)``), but a strategy carries its
    own name, so the class comes first. Returns ``cls``: usable as a class decorator.
    """
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"register() needs a Strategy subclass, got {cls!r}")
    key = cls.name if name is None else name
    if not isinstance(key, str) or not key:
        raise ValueError(f"a strategy needs a non-empty name to be registered, got {key!r}")
    STRATEGIES[key] = cls
    return cls


def names() -> list[str]:
    """Names of the registered strategies (the built-ins first)."""
    return list(STRATEGIES)


def get_class(name: str) -> type[Strategy]:
    """The strategy class registered as ``name``; ``KeyError`` listing the strategies, with a
    close match when there is one."""
    try:
        return STRATEGIES[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown strategy {name!r}{did_you_mean(name, STRATEGIES)}; strategies: "
                       f"{', '.join(STRATEGIES)}") from None


def get(name: str, space: SearchSpace | str | None = None, seed: int = 0, **options) -> Strategy:
    """The registered strategy ``name`` on ``space`` (default: the strategy's own preset).

    Unknown ``name``: ``KeyError`` listing the strategies, with a close match when there is one.
    Unknown options: ``TypeError`` listing the strategy's options and defaults.
    """
    return get_class(name)(space, seed=seed, **options)


__all__ = ["AgingEvolution", "AutoLossZero", "Fitness", "GLO", "RandomSearch", "STRATEGIES",
           "SeededStrategy", "Strategy", "TaylorGLO", "get", "get_class", "names", "register"]
