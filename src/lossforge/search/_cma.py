"""CMA-ES plumbing shared by GLO and TaylorGLO (not a strategy): a pycma ES with a JSON state, and
the bookkeeping of a generation's entries.

*CMA-ES state.* ``cma`` (pycma) objects only pickle, which state files forbid. :class:`CMAReplay`
draws its normal samples from its own seeded ``numpy`` generator (pycma's ``randn`` option,
so no global RNG is touched), and its JSON state is the configuration plus the history of
asked solutions and told values; loading re-creates the ES and replays every ask/tell, checking
that each replayed generation equals the stored one. pycma minimises: callers tell it
``-fitness``, and :data:`PENALTY` for a rejected candidate.

*Entries.* GLO and TaylorGLO hand out a generation as a list of JSON entries
(``{"expr", "status": new|asked|done, "fitness", ...}``); :func:`take_new`, :func:`record` and
:class:`EntryTell` keep them, so a generation survives a restart half-way. In a strategy's state
they are stored under ``"entries"`` (``"slots"`` in states written before; :func:`stored_entries`
reads both).
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import numpy as np

from lossforge.expr.expr import Expr
from lossforge.search.seeded import clean_fitness
from lossforge.search.strategy import Fitness

#: What CMA-ES (a minimiser) is told for a candidate without fitness.
PENALTY = 1e9


# ---- CMA-ES with a JSON state --------------------------------------------------------------------
class CMAReplay:
    """A pycma ``CMAEvolutionStrategy`` whose state is JSON: config + told history, restored by
    replay. One generation at a time: :meth:`ask` then :meth:`tell`."""

    def __init__(self, x0: list[float], sigma0: float, seed: int, popsize: int | None = None):
        import cma  # lazy: only GLO's second phase and TaylorGLO need it

        self._cma = cma
        self.x0 = [float(v) for v in x0]
        self.sigma0 = float(sigma0)
        self.seed = int(seed)
        self.popsize_option = None if popsize is None else int(popsize)
        self.history: list[dict[str, list]] = []
        self.replay_mismatch = False
        self._asked: list[np.ndarray] | None = None
        self.es = self._make()

    def _make(self):
        gen = np.random.default_rng(self.seed)

        def randn(*shape):
            return gen.standard_normal(size=shape)

        opts: dict[str, Any] = {
            "randn": randn, "verbose": -9,
            # the study's budget ends the search, not pycma's convergence tests
            "tolfun": 0, "tolfunhist": 0, "tolx": 0, "tolflatfitness": 10**9,
            "tolstagnation": 10**9,
        }
        if self.popsize_option is not None:
            opts["popsize"] = self.popsize_option
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._cma.CMAEvolutionStrategy(self.x0, self.sigma0, opts)

    @property
    def popsize(self) -> int:
        return int(self.es.popsize)

    @property
    def asked(self) -> list[list[float]] | None:
        return None if self._asked is None else [[float(v) for v in x] for x in self._asked]

    def ask(self) -> list[list[float]]:
        """Sample the next generation (``popsize`` vectors)."""
        if self._asked is not None:
            raise RuntimeError("CMA-ES: tell the previous generation before asking again")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._asked = [np.asarray(x, dtype=float) for x in self.es.ask()]
        return self.asked

    def tell(self, values: list[float]) -> None:
        """Objective values (minimised) of the asked generation, in order."""
        if self._asked is None:
            raise RuntimeError("CMA-ES: nothing asked")
        f = [float(v) for v in values]
        if len(f) != len(self._asked):
            raise ValueError(f"CMA-ES: expected {len(self._asked)} values, got {len(f)}")
        X = self.asked
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.es.tell(self._asked, f)
        self.history.append({"X": X, "f": f})
        self._asked = None

    def stop(self) -> bool:
        """Whether pycma's remaining termination criteria fire."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(self.es.stop())

    @property
    def mean(self) -> list[float]:
        return [float(v) for v in self.es.mean]

    def state_dict(self) -> dict[str, Any]:
        return {"x0": list(self.x0), "sigma0": self.sigma0, "seed": self.seed,
                "popsize": self.popsize_option, "history": copy.deepcopy(self.history),
                "asked": self.asked}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "CMAReplay":
        """Re-create the ES and replay its history (exact on the same numpy/pycma versions; on a
        mismatch the stored solutions are told and :attr:`replay_mismatch` is set)."""
        obj = cls(state["x0"], state["sigma0"], state["seed"], state["popsize"])
        for rec in state["history"]:
            obj.ask()
            obj._check(rec["X"])
            obj.tell(rec["f"])
        if state.get("asked") is not None:
            obj.ask()
            obj._check(state["asked"])
        return obj

    def _check(self, stored: list[list[float]]) -> None:
        got = np.asarray([x for x in self._asked])
        want = np.asarray(stored, dtype=float)
        if got.shape != want.shape or not np.array_equal(got, want):
            if not self.replay_mismatch:
                warnings.warn("CMA-ES replay differs from the stored history (different numpy "
                              "or pycma?); continuing from the stored solutions", RuntimeWarning)
            self.replay_mismatch = True
            self._asked = [np.asarray(x, dtype=float) for x in stored]


# ---- generation bookkeeping ----------------------------------------------------------------------
def take_new(entries: list[dict], n: int) -> list[dict]:
    """Mark up to ``n`` entries with status ``new`` as ``asked`` and return them, in order."""
    out = []
    for e in entries:
        if len(out) >= n:
            break
        if e["status"] == "new":
            e["status"] = "asked"
            out.append(e)
    return out


def record(entries: list[dict], results: list[tuple[Expr, Fitness]]) -> int:
    """Store each result in the first ``asked`` entry with the same expression text; returns how
    many results matched an entry."""
    matched = 0
    for expr, fitness in results:
        text = str(expr)
        for e in entries:
            if e["status"] == "asked" and e["expr"] == text:
                e["fitness"] = clean_fitness(fitness)
                e["status"] = "done"
                matched += 1
                break
    return matched


def stored_entries(state: dict[str, Any]) -> list[dict]:
    """A copy of the generation's entries from a strategy state (key ``"entries"``, or
    ``"slots"`` in states written before the rename)."""
    return copy.deepcopy(state["entries"] if "entries" in state else state["slots"])


def rank_key(f: float | None) -> float:
    """A fitness as a sort key: ``None`` (rejected) ranks below every number."""
    return -math.inf if f is None else f


class EntryTell:
    """``tell`` shared by the strategies that hand out a generation as entries (GLO, TaylorGLO):
    record the results, and close the generation once every entry is done."""

    def tell(self, results: list[tuple[Expr, Fitness]]) -> None:
        self.n_told += len(results)
        record(self.entries, results)
        if self.entries and all(e["status"] == "done" for e in self.entries):
            self._close_generation()
