"""The ask/tell protocol every search strategy implements (DESIGN.md §6), and the traits a
strategy declares about itself.

A strategy proposes candidate expressions with :meth:`Strategy.ask` and learns their fitness with
:meth:`Strategy.tell`. Fitness is always *higher is better* (the study multiplies the metric by its
direction) and ``None`` for a candidate that was rejected or invalid. ``state_dict()`` returns
JSON-serialisable state, RNG included, so that ``load_state_dict`` continues a search exactly.

A strategy class also describes itself (as evosax's algorithms do), so that
:class:`~lossforge.study.LossSearch` needs no list of strategy names:
:attr:`Strategy.default_space`, :attr:`Strategy.space_kinds` (``"product"`` among them: it can
search several loss slots jointly, :meth:`Strategy.can_search_jointly`),
:attr:`Strategy.needs_label`, and the class methods :meth:`Strategy.funnel_overrides` and
:meth:`Strategy.task_options`. Register a new strategy with :func:`lossforge.search.register`.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from lossforge.expr import Expr

if TYPE_CHECKING:
    from lossforge.evaluation.funnel import FunnelConfig
    from lossforge.tasks import Task

Fitness = float | None


class Scored(float):
    """A fitness that also names its candidate's gradient-equivalence class: ``fingerprint`` (the
    GEC fingerprint; ``None`` when unknown). It is a ``float`` for every strategy; strategies that
    keep one member per class (``autoloss-zero``'s ``unique``) read ``fingerprint``."""

    fingerprint: str | None

    def __new__(cls, value: float, fingerprint: str | None = None) -> "Scored":
        obj = super().__new__(cls, value)
        obj.fingerprint = fingerprint
        return obj


def scored(fitness: float | None, fingerprint: str | None) -> Fitness:
    """``fitness`` with its equivalence class attached (``None`` stays ``None``)."""
    return None if fitness is None else Scored(fitness, fingerprint)


def parse_options(pairs: list[str], what: str = "option") -> dict[str, Any]:
    """``["remove=worst", "tournament_size=10"]`` -> strategy options; a VALUE that parses as JSON
    is read as JSON (numbers, true/false, lists), else kept as text. ``ValueError`` naming ``what``
    for an item that is not ``KEY=VALUE``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} {pair!r}: expected KEY=VALUE, e.g. remove=worst")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


class Strategy(ABC):
    """Base class of search strategies.

    Contract: after ``s2.load_state_dict(s1.state_dict())``, ``s2.ask(n)`` returns what
    ``s1.ask(n)`` would (same expressions, same order). ``tell`` receives the candidates of the last
    ``ask`` (same order), each with its fitness.

    Subclasses are built as ``cls(space, seed=seed, **options)`` (``space``: a
    :class:`~lossforge.expr.spaces.SearchSpace`, or ``None`` for :attr:`default_space`) and set
    the class attributes below.
    """

    #: The name it is registered and stored under (``LossSearch(strategy=name)``).
    name: str = "strategy"
    #: The search-space preset used when none is given.
    default_space: str = "autoloss-zero"
    #: The kinds of search space it can search; ``"product"``: bundles of one expression per loss
    #: slot, i.e. a joint search of every slot.
    space_kinds: tuple[str, ...] = ("tree",)
    #: Whether its losses need a label ``y`` (then it cannot search a box slot).
    needs_label: bool = False

    @classmethod
    def can_search_jointly(cls) -> bool:
        """Whether it can search several loss slots at once (its space kinds include
        ``"product"``)."""
        return "product" in cls.space_kinds

    @classmethod
    def funnel_overrides(cls, config: "FunnelConfig", slot_kind: str | None) -> "FunnelConfig":
        """The funnel configuration this strategy's search uses, given the requested ``config``
        and the kind of the searched slot (``None`` for a joint search). Default: unchanged."""
        return config

    @classmethod
    def task_options(cls, task: "Task") -> dict[str, Any]:
        """Options derived from the task, used unless the user passes them. Default: none."""
        return {}

    @abstractmethod
    def ask(self, n: int) -> list[Expr]:
        """Propose ``n`` candidate expressions."""

    @abstractmethod
    def tell(self, results: list[tuple[Expr, Fitness]]) -> None:
        """Report the fitness of the candidates of the last ``ask``."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (no pickle), RNG state included."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`."""

    @property
    def batch_size(self) -> int:
        """The natural number of candidates per ``ask`` (a generation)."""
        return 32
