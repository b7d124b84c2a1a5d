"""GLO (``"glo"``): genetic programming over loss trees, then CMA-ES on their coefficients.

**Phase 1, GP** (GLO; settings of EvoMAL, its successor): a generational GP. Generation 0 is
``population_size`` random trees (ramped half-and-half, depth 2..5). Each next generation keeps
the ``elitism`` best members, and fills the rest DEAP-style (``varAnd``): tournament selection
(``tournament_size`` drawn with replacement), subtree crossover of consecutive pairs with
``crossover_prob``, then subtree mutation of each offspring with ``mutation_prob``. Offspring
that no variation changed, and elites, keep their known fitness and are not asked again.
Fitness ``None`` (rejected) ranks below every number.

**Phase 2, CMA-ES** after ``gp_generations`` generations: the best ``cma_trees`` trees not
tuned yet are tuned one after the other, ``cma_generations`` CMA-ES generations each, over the
constants of their *coefficient form* (:func:`coefficient_form`), from the tree itself
(coefficients 1, constants at their values) with step size ``cma_sigma``. The best tuned
expression then replaces the worst member of the GP population and a new GP cycle starts, so
the strategy never runs dry.

*Coefficient scheme.* GLO puts one coefficient on every tree node. Scaling the output of a
linear node (``+ - * / neg`` and aggregations) is the same as scaling its inputs, so we keep
only the coefficients that are not redundant that way: each constant leaf is itself a
coefficient, each variable leaf ``v`` becomes ``c * v``, and each non-linear node ``op(...)``
becomes ``c * op(...)``. Every node's output scale is then expressible, as in GLO, with fewer
dimensions for CMA-ES. Tuned values are rounded to ``digits`` significant digits in the
expression text (CMA-ES itself keeps the exact vectors).

*CMA-ES state* lives in :mod:`lossforge.search._cma` (:class:`CMAReplay`: JSON state
restored by replay; pycma minimises, so it is told ``-fitness``, or ``PENALTY`` when rejected).

``ask(n)`` returns at most the candidates left in the current generation (GP or CMA-ES), so it
can return fewer than ``n``; :attr:`batch_size` is the current generation's size.
"""
from __future__ import annotations

import copy
from typing import Any

from lossforge.expr import variation as V
from lossforge.expr.expr import Expr, apply, const
from lossforge.expr.spaces import LINEAR_OPS, SearchSpace
from lossforge.search._cma import (PENALTY, CMAReplay, EntryTell, rank_key, stored_entries,
                                   take_new)
from lossforge.search.seeded import SeededStrategy, parse_candidate, sig_round


# ---- coefficient form ----------------------------------------------------------------------------
def coefficient_form(expr: Expr) -> Expr:
    """``expr`` with a multiplicative coefficient (the constant 1) on every variable leaf and every
    non-linear node; constant leaves are coefficients already. ``constants()`` of the result is
    the vector CMA-ES tunes, and at that starting vector the result equals ``expr``."""
    def rec(node: Expr) -> Expr:
        if node.is_const:
            return node
        if node.is_var:
            return apply("mul", const(1.0), node)
        out = apply(node.op, *(rec(a) for a in node.args))
        return out if node.op in LINEAR_OPS else apply("mul", const(1.0), out)

    return rec(expr)


# ---- the strategy ----------------------------------------------------------------------------
class GLO(EntryTell, SeededStrategy):
    """GLO: GP over loss trees, then CMA-ES over the coefficients of the best trees.

    Options (defaults): ``population_size=25``, ``gp_generations=10`` (EvoMAL: 25 and 50),
    ``tournament_size=4``, ``crossover_prob=0.7``, ``mutation_prob=0.25``, ``elitism=1``,
    ``init_min_depth=2``, ``init_max_depth=5``, ``max_subtree_depth=4``; ``cma_trees=1``,
    ``cma_generations=10`` (0 disables phase 2), ``cma_sigma=0.5``, ``cma_popsize=None``
    (pycma's 4 + 3 ln d), ``digits=6``, ``archive_size=10``.
    """

    name = "glo"
    default_space = "glo"
    space_kinds = ("tree",)
    defaults = {
        "population_size": 25,
        "gp_generations": 10,
        "tournament_size": 4,
        "crossover_prob": 0.7,
        "mutation_prob": 0.25,
        "elitism": 1,
        "init_min_depth": 2,
        "init_max_depth": 5,
        "max_subtree_depth": 4,
        "cma_trees": 1,
        "cma_generations": 10,
        "cma_sigma": 0.5,
        "cma_popsize": None,
        "digits": 6,
        "archive_size": 10,
    }

    def __init__(self, space: SearchSpace | str | None = None, seed: int = 0, **options):
        super().__init__(space, seed, **options)
        if int(self.config["population_size"]) < 2:
            raise ValueError("population_size must be >= 2")
        self.phase = "gp"
        self.cycle = 0
        self.gp_generation = 0          # completed GP generations in this cycle
        self.population: list[tuple[Expr, float | None]] = []
        self.entries: list[dict] = []   # the generation being evaluated
        self.archive: list[list] = []   # best GP trees seen: [text, fitness]
        self.tuned: list[str] = []      # trees already given to CMA-ES
        self.queue: list[str] = []      # trees waiting for CMA-ES in this phase
        self.cma: dict[str, Any] | None = None
        self._replay: CMAReplay | None = None
        self.log: list[dict] = []       # one line per completed generation
        self.n_asked = 0
        self.n_told = 0
        self._exprs: dict[str, Expr] = {}  # this generation's expressions by text (not state)

    def _expr(self, text: str) -> Expr:
        e = self._exprs.get(text)
        return e if e is not None else parse_candidate(text)

    @property
    def batch_size(self) -> int:
        if self.phase == "cma" and self._replay is not None:
            return self._replay.popsize
        return int(self.config["population_size"])

    # ---- protocol --------------------------------------------------------------------------------
    def ask(self, n: int) -> list[Expr]:
        self._ensure_work()
        out = [self._expr(e["expr"]) for e in take_new(self.entries, int(n))]
        self.n_asked += len(out)
        return out

    @property
    def best(self) -> tuple[Expr, float] | None:
        """The best expression evaluated so far (GP archive and tuned ones)."""
        pool = [tuple(a) for a in self.archive]
        if self.cma and self.cma["best"]:
            pool.append(tuple(self.cma["best"]))
        pool += [(str(e), f) for e, f in self.population if f is not None]
        if not pool:
            return None
        t, f = max(pool, key=lambda m: m[1])
        return parse_candidate(t), f

    # ---- generations -----------------------------------------------------------------------------
    def _ensure_work(self) -> None:
        for _ in range(10_000):
            if any(e["status"] in ("new", "asked") for e in self.entries):
                return
            if self.entries:
                self._close_generation()
            self._open_generation()
        raise RuntimeError("GLO: no candidate to evaluate after 10,000 generations")

    def _open_generation(self) -> None:
        c = self.config
        if self.phase == "cma":
            if self._cma_finished():
                self._finish_tree()
                if not self._next_tree():
                    self._new_cycle()
                    return self._open_generation()
            form = parse_candidate(self.cma["form"])
            exprs = [form.with_constants([sig_round(v, int(c["digits"])) for v in x])
                     for x in self._replay.ask()]
            self._set_entries([(e, None, False) for e in exprs])
            return
        if not self.population:
            self._set_entries([(V.random_expr(self.space, self.rng, min_depth=c["init_min_depth"],
                                            max_depth=c["init_max_depth"]), None, False)
                             for _ in range(int(c["population_size"]))])
            return
        if self.gp_generation >= int(c["gp_generations"]):
            if int(c["cma_generations"]) > 0 and self._start_cma():
                return self._open_generation()
            self._new_cycle()
        self._set_entries(self._breed())

    def _set_entries(self, items: list[tuple[Expr, float | None, bool]]) -> None:
        """A new generation: ``(expr, fitness, known)``; known ones are not asked."""
        self._exprs = {str(e): e for e, _f, _k in items}
        self.entries = [{"expr": str(e), "fitness": f if known else None,
                         "status": "done" if known else "new"} for e, f, known in items]

    def _close_generation(self) -> None:
        entries, self.entries = self.entries, []
        fits = [e["fitness"] for e in entries if e["fitness"] is not None]
        line = {"phase": self.phase, "cycle": self.cycle, "size": len(entries),
                "best": max(fits) if fits else None}
        if self.phase == "cma":
            self._replay.tell([PENALTY if e["fitness"] is None else -e["fitness"] for e in entries])
            self.cma["generation"] += 1
            for e in entries:
                if e["fitness"] is not None and (self.cma["best"] is None
                                                 or e["fitness"] > self.cma["best"][1]):
                    self.cma["best"] = [e["expr"], e["fitness"]]
            line["generation"] = self.cma["generation"] - 1
            line["tree"] = self.cma["source"]
        else:
            self.population = [(self._expr(e["expr"]), e["fitness"]) for e in entries]
            self._archive([(e["expr"], e["fitness"]) for e in entries])
            line["generation"] = self.gp_generation
            self.gp_generation += 1
        self.log.append(line)

    def _archive(self, items: list[tuple[str, float | None]]) -> None:
        known = {t for t, _f in self.archive}
        for t, f in items:
            if f is not None and t not in known:
                self.archive.append([t, f])
                known.add(t)
        self.archive.sort(key=lambda m: -m[1])
        del self.archive[int(self.config["archive_size"]):]

    def _new_cycle(self) -> None:
        self.phase = "gp"
        self.gp_generation = 0
        self.cycle += 1

    # ---- GP ------------------------------------------------------------------------------------
    def _tournament(self, pop: list[tuple[Expr, float | None]]) -> tuple[Expr, float | None]:
        idx = self.rng.integers(len(pop), size=int(self.config["tournament_size"]))
        best = int(idx[0])
        for i in idx[1:]:
            if rank_key(pop[int(i)][1]) > rank_key(pop[best][1]):
                best = int(i)
        return pop[best]

    def _breed(self) -> list[tuple[Expr, float | None, bool]]:
        c, pop, sp, rng = self.config, self.population, self.space, self.rng
        size = int(c["population_size"])
        order = sorted(range(len(pop)), key=lambda i: (-rank_key(pop[i][1]), i))
        elites = [pop[i] for i in order[:min(int(c["elitism"]), size)] if pop[i][1] is not None]
        # offspring: [expr, fitness, known]
        off = [[*self._tournament(pop), True] for _ in range(size - len(elites))]
        for i in range(1, len(off), 2):
            if rng.random() < float(c["crossover_prob"]):
                a, b = off[i - 1], off[i]
                c1, c2 = V.subtree_crossover(a[0], b[0], sp, rng)
                off[i - 1] = self._child(c1, a, b)
                off[i] = self._child(c2, b, a)
        for i, o in enumerate(off):
            if rng.random() < float(c["mutation_prob"]):
                off[i] = [V.subtree_mutation(o[0], sp, rng, int(c["max_subtree_depth"])), None,
                          False]
        return [(e, f, True) for e, f in elites] + [(e, f, known) for e, f, known in off]

    @staticmethod
    def _child(child: Expr, a: list, b: list) -> list:
        for parent in (a, b):
            if child is parent[0] and parent[2]:
                return [child, parent[1], True]
        return [child, None, False]

    # ---- CMA-ES --------------------------------------------------------------------------------
    def _start_cma(self) -> bool:
        done = set(self.tuned)
        self.queue = [t for t, _f in self.archive if t not in done][:int(self.config["cma_trees"])]
        return self._next_tree()

    def _next_tree(self) -> bool:
        while self.queue:
            source = self.queue.pop(0)
            self.tuned.append(source)
            form = coefficient_form(parse_candidate(source))
            x0 = form.constants()
            if not x0:
                continue
            seed = int(self.rng.integers(1, 2**31 - 1))
            self._replay = CMAReplay(x0, float(self.config["cma_sigma"]), seed,
                                     self.config["cma_popsize"])
            self.cma = {"source": source, "form": str(form), "generation": 0, "best": None}
            self.phase = "cma"
            return True
        self.cma, self._replay = None, None
        return False

    def _cma_finished(self) -> bool:
        return (self.cma["generation"] >= int(self.config["cma_generations"])
                or self._replay.stop())

    def _finish_tree(self) -> None:
        best = self.cma["best"]
        if best is not None and self.population:
            worst = min(range(len(self.population)),
                        key=lambda i: (rank_key(self.population[i][1]), -i))
            self.population[worst] = (parse_candidate(best[0]), best[1])
        if best is not None:
            self.tuned.append(best[0])  # never tuned again
            self._archive([(best[0], best[1])])

    # ---- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        cma_state = None
        if self.cma is not None:
            cma_state = {**copy.deepcopy(self.cma), "replay": self._replay.state_dict()}
        return {
            **self.base_state(),
            "phase": self.phase,
            "cycle": self.cycle,
            "gp_generation": self.gp_generation,
            "population": [[str(e), f] for e, f in self.population],
            "entries": copy.deepcopy(self.entries),
            "archive": copy.deepcopy(self.archive),
            "tuned": list(self.tuned),
            "queue": list(self.queue),
            "cma": cma_state,
            "log": copy.deepcopy(self.log),
            "n_asked": self.n_asked,
            "n_told": self.n_told,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_base_state(state)
        self.phase = state["phase"]
        self.cycle = int(state["cycle"])
        self.gp_generation = int(state["gp_generation"])
        self.population = [(parse_candidate(t), f) for t, f in state["population"]]
        self.entries = stored_entries(state)
        self.archive = copy.deepcopy(state["archive"])
        self.tuned = list(state["tuned"])
        self.queue = list(state["queue"])
        cma_state = copy.deepcopy(state["cma"])
        self._replay = CMAReplay.from_state(cma_state.pop("replay")) if cma_state else None
        self.cma = cma_state
        self.log = copy.deepcopy(state["log"])
        self.n_asked = int(state["n_asked"])
        self.n_told = int(state["n_told"])


__all__ = ["GLO", "coefficient_form"]
