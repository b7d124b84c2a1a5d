"""NLFS regularised (aging) evolution (``"aging"``) over DAG-cell genomes.

Following NLFS (Morgan & Hougen 2024):

1. **Screening** — random cells of the DAG space are proposed until ``initial_size`` of them
   have a fitness (paper: 1,000; default 100). Rejected candidates (fitness ``None``) do not
   count. The best ``population_size`` (paper 100, default 20) become the population, aged in
   the order they were proposed.
2. **Cycles** — for each child: draw ``sample_size`` members *with replacement* (paper 20,
   default 10), the fittest is the parent, the child is one NLFS mutation of it (70 % change an
   op, 15 % rewire an input, 15 % switch unary/binary; see
   :func:`lossforge.expr.dag.mutate_dag`).
3. **Aging** — ``tell`` appends each evaluated child and removes the oldest member.

An ``ask`` during screening returns only random cells, so screening may overshoot
``initial_size`` by less than one batch. The loss of a genome is
``orientation * sum_c(root)``; choosing the orientation belongs to the NLFS integrity check.
Pass ``orient=`` (a callable ``Expr -> 1 | -1 | None`` given the loss with orientation +1,
not part of the JSON state) to set it on every new genome; without it genomes keep +1.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from lossforge.expr import dag as D
from lossforge.expr.expr import Expr
from lossforge.expr.spaces import SearchSpace
from lossforge.search.seeded import SeededStrategy, clean_fitness
from lossforge.search.strategy import Fitness

if TYPE_CHECKING:
    from lossforge.evaluation.funnel import FunnelConfig

Genome = dict[str, Any]
MAX_PENDING = 10_000


class AgingEvolution(SeededStrategy):
    """Regularised evolution of NLFS DAG cells.

    Options (defaults; NLFS paper values in brackets): ``initial_size=100`` [1,000],
    ``population_size=20`` [100], ``sample_size=10`` [20], ``batch_size=10``,
    ``mutation_probs=(0.7, 0.15, 0.15)``. Keyword ``orient``: optional orientation callable.
    """

    name = "aging"
    default_space = "nlfs"
    space_kinds = ("dag",)
    defaults = {
        "initial_size": 100,
        "population_size": 20,
        "sample_size": 10,
        "batch_size": 10,
        "mutation_probs": [0.7, 0.15, 0.15],
    }

    @classmethod
    def funnel_overrides(cls, config: "FunnelConfig", slot_kind: str | None) -> "FunnelConfig":
        """NLFS's integrity check: on a classification slot, the 2-class integrity check with
        automatic orientation of every candidate."""
        if slot_kind != "classification":
            return config
        return replace(config, checks=replace(config.checks, integrity=True))

    def __init__(self, space: SearchSpace | str | None = None, seed: int = 0,
                 orient: Callable[[Expr], int | None] | None = None, **options):
        super().__init__(space, seed, **options)
        if int(self.config["population_size"]) > int(self.config["initial_size"]):
            raise ValueError("population_size must not exceed initial_size (the population is "
                             "the best of the screened candidates)")
        self.orient = orient
        self.phase = "screen"
        self.screened: list[list] = []      # best screened so far: [text, genome, fitness, order]
        self.n_screened = 0                 # screened candidates with a fitness
        self.population: list[list] = []    # oldest first: [text, genome, fitness]
        self.pending: list[list] = []       # asked, not told: [text, genome]
        self.n_asked = 0
        self.n_told = 0

    # ---- genomes ---------------------------------------------------------------------------------
    def _oriented(self, genome: Genome) -> Genome:
        if self.orient is None:
            return genome
        genome["orientation"] = 1
        o = self.orient(D.dag_to_expr(genome))
        if o in (1, -1):
            genome["orientation"] = int(o)
        return genome

    def _parent(self) -> Genome:
        pop = self.population
        idx = self.rng.integers(len(pop), size=int(self.config["sample_size"]))
        best = int(idx[0])
        for i in idx[1:]:  # ties go to the first drawn
            if pop[int(i)][2] > pop[best][2]:
                best = int(i)
        return pop[best][1]

    # ---- protocol --------------------------------------------------------------------------------
    def ask(self, n: int) -> list[Expr]:
        out: list[Expr] = []
        for _ in range(int(n)):
            if self.phase == "screen":
                genome = D.random_dag(self.space, self.rng)
            else:
                genome = D.mutate_dag(self._parent(), self.space, self.rng,
                                      probs=tuple(self.config["mutation_probs"]))
            genome = self._oriented(genome)
            expr = D.dag_to_expr(genome)
            self.pending.append([str(expr), genome])
            out.append(expr)
        del self.pending[:-MAX_PENDING]  # asked but never told: forget the oldest
        self.n_asked += len(out)
        return out

    def tell(self, results: list[tuple[Expr, Fitness]]) -> None:
        keep = int(self.config["population_size"])
        for expr, fitness in results:
            self.n_told += 1
            text = str(expr)
            at = next((i for i, (t, _g) in enumerate(self.pending) if t == text), None)
            if at is None:
                continue  # not one of ours: no genome to insert
            _t, genome = self.pending.pop(at)
            f = clean_fitness(fitness)
            if f is None:
                continue
            if self.phase == "screen":
                self.screened.append([text, genome, f, self.n_screened])
                self.n_screened += 1
                self.screened.sort(key=lambda m: (-m[2], m[3]))
                del self.screened[keep:]
            else:
                self.population.append([text, genome, f])
                while len(self.population) > keep:
                    self.population.pop(0)
        if self.phase == "screen" and self.n_screened >= int(self.config["initial_size"]):
            self.population = [[t, g, f] for t, g, f, _o in sorted(self.screened,
                                                                  key=lambda m: m[3])]
            self.screened = []
            self.phase = "evolve"

    @property
    def best(self) -> tuple[Expr, float] | None:
        """The fittest member (or best screened candidate), ``None`` before any fitness."""
        pool = self.population or [m[:3] for m in self.screened]
        if not pool:
            return None
        t, g, f = max(pool, key=lambda m: m[2])
        return D.dag_to_expr(g), f

    # ---- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **self.base_state(),
            "phase": self.phase,
            "screened": copy.deepcopy(self.screened),
            "n_screened": self.n_screened,
            "population": copy.deepcopy(self.population),
            "pending": copy.deepcopy(self.pending),
            "n_asked": self.n_asked,
            "n_told": self.n_told,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_base_state(state)
        self.phase = state["phase"]
        self.screened = copy.deepcopy(state["screened"])
        self.n_screened = int(state["n_screened"])
        self.population = copy.deepcopy(state["population"])
        self.pending = copy.deepcopy(state["pending"])
        self.n_asked = int(state["n_asked"])
        self.n_told = int(state["n_told"])


__all__ = ["AgingEvolution"]
