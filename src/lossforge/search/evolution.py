"""AutoLoss-Zero's evolution (``"autoloss-zero"``): regularised evolution of loss graphs.

AutoLoss-Zero's search code was never released; this follows the paper and AutoML-Zero, which
it builds on:

1. **Initialisation** — random graphs of the space (ramped half-and-half, depth
   ``init_min_depth``..``init_max_depth``, 2..6 by default), until ``population_size`` of them
   have a fitness. Candidates the funnel rejects (fitness ``None``) are never inserted.
2. **Cycles** — each child of an ``ask`` comes from a tournament: ``tournament_size``
   distinct members drawn uniformly, the fittest is the parent; the child is the parent after
   exactly one mutation (insert a node, delete a node, replace an op by one of the same arity,
   replace a leaf; uniform). AutoML-Zero copies the parent unchanged with probability 0.1: we
   always mutate, since an unchanged copy would only re-spend budget on a known loss.
3. **Removal** — ``tell`` appends each evaluated child to the population and removes the
   *oldest* member while the population is too large (regularised / aging evolution, as in
   AutoML-Zero); ``remove="worst"`` removes the least fit instead.
4. **One member per equivalence class** (``unique=True``, our default; not in the paper) — a
   child in the same gradient-equivalence class as a member (the same GEC fingerprint: the
   study tells fitnesses as :class:`~lossforge.search.strategy.Scored`) takes that member's place
   (and age) when it is no larger, else it is dropped. Without it, neutral
   mutations (most mutations of a bloated graph: a label-only term, a double ``abs``...) fill a
   small population with copies of one loss, whose children are again mostly copies (measured on
   shapes-seg, population 10: 612 of the first 1,135 candidates were GEC hits and the final
   population was 10 variants of one loss). Tournament ties go to the smaller expression
   (lexicographic parsimony pressure, Luke & Panait 2002), then to the first drawn.

``tell`` accepts any evaluated expression of the space, not only proposed ones: telling known
losses (e.g. from the zoo) seeds the population with them.

Defaults are sized for small budgets: population 20, tournament 5. AutoML-Zero used population
100, tournament 10 (pass ``population_size=100, tournament_size=10``).

**Generation size vs population.** AutoML-Zero adds one child per cycle. Here a generation of
``batch_size`` children is evaluated together (vectorised screening) and then told: with
``remove="oldest"`` and a generation at least as large as the population, the children that passed
replace the *whole* population every generation, so no selection pressure accumulates (measured on
shapes-seg with population 10 and generations of 25: ~15 children with a fitness per generation;
evolution no better than random search). A warning says so; keep the population several times the
generation size, or use ``remove="worst"`` (elitist: the best ``population_size`` seen so far).
"""
from __future__ import annotations

import logging
from typing import Any

from lossforge.expr import variation as V
from lossforge.expr.expr import Expr
from lossforge.expr.spaces import SearchSpace
from lossforge.search.seeded import SeededStrategy, clean_fitness, parse_candidate
from lossforge.search.strategy import Fitness

log = logging.getLogger(__name__)


class AutoLossZero(SeededStrategy):
    """Regularised evolution with tournament selection and point mutations (AutoLoss-Zero).

    Options (defaults): ``population_size=20``, ``tournament_size=5``, ``batch_size=10``
    (children per ``ask`` once initialised), ``mutations=("insert", "delete", "replace",
    "leaf")``, ``remove="oldest"`` (or ``"worst"``), ``unique=True`` (one member per
    equivalence class: see the module docstring), ``init_min_depth=2``, ``init_max_depth=6``,
    ``initial=[]`` (formulas of the space proposed first, e.g. the task's baseline loss: each goes
    through the funnel like any candidate and joins the population only if it passes; once one
    has, children are mutations of the members, as after initialisation, while the population
    grows to ``population_size``, instead of random graphs: for spaces where random graphs rarely
    pass, such as regression's).
    """

    name = "autoloss-zero"
    default_space = "autoloss-zero"
    space_kinds = ("tree", "product")
    defaults = {
        "population_size": 20,
        "tournament_size": 5,
        "batch_size": 10,
        "mutations": list(V.MUTATIONS),
        "remove": "oldest",
        "unique": True,
        "init_min_depth": 2,
        "init_max_depth": 6,
        "initial": [],
    }

    def __init__(self, space: SearchSpace | str | None = None, seed: int = 0, **options):
        super().__init__(space, seed, **options)
        if self.config["remove"] not in ("oldest", "worst"):
            raise ValueError(f"remove must be 'oldest' or 'worst', got {self.config['remove']!r}")
        if int(self.config["population_size"]) < 1 or int(self.config["tournament_size"]) < 1:
            raise ValueError("population_size and tournament_size must be >= 1")
        pop, batch = int(self.config["population_size"]), int(self.config["batch_size"])
        if self.config["remove"] == "oldest" and batch >= pop:
            log.warning("autoloss-zero: generations of %d children with a population of %d and "
                        "remove='oldest' replace the whole population every generation, so "
                        "selection cannot accumulate; use a population several times the "
                        "generation size, or remove='worst'", batch, pop)
        #: evaluated members, oldest first: (expr, fitness)
        self.population: list[tuple[Expr, float]] = []
        #: each member's gradient-equivalence fingerprint (``None``: unknown), as ``population``
        self.classes: list[str | None] = []
        self.n_asked = 0
        self.n_told = 0
        if isinstance(self.config["initial"], str):  # one formula, e.g. --option initial=F
            self.config["initial"] = [self.config["initial"]]
        self._initial = [parse_candidate(str(t), self.space) for t in self.config["initial"]]
        for text, e in zip(self.config["initial"], self._initial):
            why = self.space.why_invalid(e)
            if why:
                raise ValueError(f"initial formula {text!r} is not a candidate of the space "
                                 f"{self.space.name!r}: {why}; write it with the space's "
                                 "primitives")

    # ---- protocol --------------------------------------------------------------------------------
    @property
    def initialised(self) -> bool:
        return len(self.population) >= int(self.config["population_size"])

    def ask(self, n: int) -> list[Expr]:
        c = self.config
        out: list[Expr] = []
        for _ in range(int(n)):
            if self.n_asked + len(out) < len(self._initial):
                out.append(self._initial[self.n_asked + len(out)])
            elif not self.initialised and not (self._initial and self.population):
                out.append(V.random_expr(self.space, self.rng, min_depth=c["init_min_depth"],
                                         max_depth=c["init_max_depth"]))
            else:
                parent = self._tournament()
                out.append(V.mutate(parent, self.space, self.rng, kinds=tuple(c["mutations"])))
        self.n_asked += len(out)
        return out

    def _tournament(self) -> Expr:
        pop = self.population
        k = min(int(self.config["tournament_size"]), len(pop))
        idx = [int(i) for i in self.rng.choice(len(pop), size=k, replace=False)]
        best = idx[0]
        for i in idx[1:]:  # ties go to the smaller expression, then to the first drawn
            if (pop[i][1], -pop[i][0].size()) > (pop[best][1], -pop[best][0].size()):
                best = i
        return pop[best][0]

    def tell(self, results: list[tuple[Expr, Fitness]]) -> None:
        size = int(self.config["population_size"])
        for expr, fitness in results:
            self.n_told += 1
            f = clean_fitness(fitness)
            if f is None:
                continue  # rejected by the funnel: never enters the population
            key = getattr(fitness, "fingerprint", None)
            if self.config["unique"] and key is not None and self._merge_equivalent(expr, f, key):
                continue
            self.population.append((expr, f))
            self.classes.append(key)
            while len(self.population) > size:
                if self.config["remove"] == "oldest":
                    drop = 0
                else:
                    drop = min(range(len(self.population)),
                               key=lambda i: (self.population[i][1], i))
                self.population.pop(drop)
                self.classes.pop(drop)

    def _merge_equivalent(self, expr: Expr, fitness: float, key: str) -> bool:
        """``unique``: if a member is in the equivalence class ``key``, ``expr`` takes its place
        (keeping its age) when no larger; True when ``expr`` was merged so (or dropped)."""
        for i, member_key in enumerate(self.classes):
            if member_key == key:
                if expr.size() <= self.population[i][0].size():
                    self.population[i] = (expr, fitness)
                return True
        return False

    @property
    def best(self) -> tuple[Expr, float] | None:
        """The fittest current member (``None`` before any evaluated candidate)."""
        return max(self.population, key=lambda m: m[1]) if self.population else None

    # ---- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **self.base_state(),
            "population": [[str(e), f, k] for (e, f), k in zip(self.population, self.classes)],
            "n_asked": self.n_asked,
            "n_told": self.n_told,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_base_state(state)
        members = state["population"]   # [text, fitness] (older states) or [text, fitness, key]
        self.population = [(parse_candidate(m[0], self.space), float(m[1])) for m in members]
        self.classes = [m[2] if len(m) > 2 else None for m in members]
        self.n_asked = int(state["n_asked"])
        self.n_told = int(state["n_told"])


__all__ = ["AutoLossZero"]
