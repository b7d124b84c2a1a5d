"""The base every built-in strategy shares: :class:`SeededStrategy`, and its helpers.

:class:`SeededStrategy` holds the space, the seed, the options (``config``) and one
``numpy.random.Generator``; its :meth:`~SeededStrategy.base_state` /
:meth:`~SeededStrategy.load_base_state` write and restore them as JSON (the generator through
``rng.bit_generator.state``). Options are part of the state: loading a state restores them.

Helpers: :func:`clean_fitness` (a told fitness, or ``None`` for a rejected candidate),
:func:`resolve_space`, :func:`sig_round`, :func:`taylor_expr` and :func:`parse_candidate` (a
stored candidate text back as what a strategy of that space proposes).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from lossforge.expr import spaces as _spaces
from lossforge.expr.expr import Expr, var
from lossforge.expr.parse import parse
from lossforge.expr.spaces import SearchSpace
from lossforge.search.strategy import Strategy

STATE_VERSION = 1


def clean_fitness(f: Any) -> float | None:
    """``float(f)``, or ``None`` for ``None``, NaN and infinities (a rejected candidate)."""
    if f is None:
        return None
    try:
        v = float(f)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def resolve_space(space: SearchSpace | str | None, default: str) -> SearchSpace:
    """A :class:`SearchSpace` from a space, a preset name, or ``None`` (the ``default`` preset)."""
    if space is None:
        return _spaces.get(default)
    if isinstance(space, str):
        return _spaces.get(space)
    if not isinstance(space, SearchSpace) and getattr(space, "kind", None) != "product":
        raise TypeError(f"space must be a SearchSpace or a preset name, got {type(space).__name__}")
    return space


def sig_round(x: float, digits: int) -> float:
    """``x`` rounded to ``digits`` significant digits (``digits <= 0``: unchanged)."""
    if digits <= 0 or x == 0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.{digits}g}")


def parse_candidate(text: str, space: SearchSpace | None = None) -> Expr:
    """A stored candidate text back as what a strategy of ``space`` proposes (a bundle in a
    product space, else a non-strict :func:`~lossforge.expr.parse.parse`)."""
    if getattr(space, "kind", None) == "product":
        return space.parse(text)
    return parse(text, strict=False)


def taylor_expr(theta: list[float], space: SearchSpace) -> Expr:
    """``lossforge.zoo.taylorglo(theta)`` with ``p`` renamed to the space's prediction variable."""
    from lossforge.zoo import taylorglo  # lazy: the zoo imports much of the package

    expr = taylorglo([float(t) for t in theta])
    pred = space.prediction_variables[0]
    return expr if pred == "p" else expr.replace(var("p"), var(pred))


class SeededStrategy(Strategy):
    """A strategy with a space, a seed, JSON options and one seeded ``numpy`` generator.

    Subclasses set :attr:`name`, :attr:`default_space`, :attr:`space_kinds` and
    :attr:`defaults` (the options and their default values), then read options from
    ``self.config``.
    """

    name = "seeded"
    default_space = "autoloss-zero"
    space_kinds: tuple[str, ...] = ("tree", "dag", "parametric")
    defaults: dict[str, Any] = {}

    def __init__(self, space: SearchSpace | str | None = None, seed: int = 0, **options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise TypeError(f"{self.name}: unknown option(s) {', '.join(unknown)}; options are "
                            f"{', '.join(f'{k}={v!r}' for k, v in self.defaults.items())}")
        self.space = resolve_space(space, self.default_space)
        if self.space.kind not in self.space_kinds:
            raise ValueError(
                f"strategy {self.name!r} needs a search space of kind "
                f"{' or '.join(self.space_kinds)}, got {self.space.name!r} (kind "
                f"{self.space.kind!r}); try space={self.default_space!r}")
        self.seed = int(seed)
        self.config: dict[str, Any] = {**self.defaults, **options}
        self.rng = np.random.default_rng(self.seed)

    @property
    def batch_size(self) -> int:
        return int(self.config.get("batch_size", 10))

    # ---- state helpers ---------------------------------------------------------------------------
    def base_state(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "version": STATE_VERSION,
            "seed": self.seed,
            "config": dict(self.config),
            "space": {"name": self.space.name, "variables": list(self.space.variables)},
            "rng": self.rng.bit_generator.state,
        }

    def load_base_state(self, state: dict[str, Any]) -> None:
        if state.get("strategy") != self.name:
            raise ValueError(f"this state belongs to strategy {state.get('strategy')!r}, "
                             f"not {self.name!r}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported {self.name} state version {state.get('version')!r}")
        sp = state["space"]
        if sp["name"] != self.space.name or tuple(sp["variables"]) != self.space.variables:
            raise ValueError(
                f"this state was written for space {sp['name']!r} with variables "
                f"{sp['variables']}, but the strategy has space {self.space.name!r} with "
                f"variables {list(self.space.variables)}: create the strategy with that space")
        self.seed = int(state["seed"])
        self.config = {**self.defaults, **state["config"]}
        self.rng = np.random.default_rng(self.seed)
        self.rng.bit_generator.state = state["rng"]


__all__ = ["SeededStrategy", "clean_fitness", "parse_candidate", "resolve_space", "sig_round",
           "taylor_expr"]
