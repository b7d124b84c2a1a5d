"""Random search (``"random"``): fresh random candidates of the space at every ``ask``.

:class:`RandomSearch` learns nothing: it is the baseline the evolutionary strategies must beat
at equal budget.

* tree spaces: :func:`~lossforge.expr.variation.random_expr` (ramped half-and-half, depth
  ``min_depth``..``max_depth``);
* DAG spaces (NLFS): :func:`~lossforge.expr.dag.random_dag`;
* parametric spaces (TaylorGLO): ``θ ~ N(0, sigma²)`` per parameter through
  ``lossforge.zoo.taylorglo``;
* product spaces: one tree per loss slot (a joint search).
"""
from __future__ import annotations

from typing import Any

from lossforge.expr import dag as D
from lossforge.expr import variation as V
from lossforge.expr.expr import Expr
from lossforge.expr.spaces import SearchSpace
from lossforge.search.seeded import SeededStrategy, sig_round, taylor_expr
from lossforge.search.strategy import Fitness


class RandomSearch(SeededStrategy):
    """Fresh random candidates from the space at every ``ask``; ``tell`` only counts.

    Options: ``batch_size=10``; tree spaces: ``min_depth=2``, ``max_depth=6`` (capped by the
    space); parametric spaces: ``sigma=1.2`` (θ ~ N(0, σ²), TaylorGLO's initial σ).
    """

    name = "random"
    default_space = "autoloss-zero"
    space_kinds = ("tree", "dag", "parametric", "product")
    defaults = {"batch_size": 10, "min_depth": 2, "max_depth": 6, "sigma": 1.2}

    def __init__(self, space: SearchSpace | str | None = None, seed: int = 0, **options):
        super().__init__(space, seed, **options)
        self.n_asked = 0
        self.n_told = 0

    def _one(self) -> Expr:
        sp, c = self.space, self.config
        if sp.kind in ("tree", "product"):  # product: one expression per slot (joint search)
            return V.random_expr(sp, self.rng, min_depth=c["min_depth"], max_depth=c["max_depth"])
        if sp.kind == "dag":
            return D.dag_to_expr(D.random_dag(sp, self.rng))
        theta = self.rng.normal(0.0, float(c["sigma"]), size=sp.n_params)
        return taylor_expr([sig_round(t, 6) for t in theta], sp)

    def ask(self, n: int) -> list[Expr]:
        out = [self._one() for _ in range(int(n))]
        self.n_asked += len(out)
        return out

    def tell(self, results: list[tuple[Expr, Fitness]]) -> None:
        self.n_told += len(results)

    def state_dict(self) -> dict[str, Any]:
        return {**self.base_state(), "n_asked": self.n_asked, "n_told": self.n_told}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_base_state(state)
        self.n_asked = int(state["n_asked"])
        self.n_told = int(state["n_told"])


__all__ = ["RandomSearch"]
