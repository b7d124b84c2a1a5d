"""The ask/tell protocol every search strategy implements (DESIGN.md §6).

A strategy proposes candidate expressions with :meth:`Strategy.ask` and learns their fitness with
:meth:`Strategy.tell`. Fitness is always *higher is better* (the study multiplies the metric by its
direction) and ``None`` for a candidate that was rejected or invalid. ``state_dict()`` returns
JSON-serialisable state, RNG included, so that ``load_state_dict`` continues a search exactly.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from lossforge.expr import Expr

Fitness = float | None


class Strategy(ABC):
    """Base class of search strategies.

    Contract: after ``s2.load_state_dict(s1.state_dict())``, ``s2.ask(n)`` returns what
    ``s1.ask(n)`` would (same expressions, same order). ``tell`` receives the candidates of the last
    ``ask`` (same order), each with its fitness.
    """

    name: str = "strategy"

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
