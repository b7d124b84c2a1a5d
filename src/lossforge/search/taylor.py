"""TaylorGLO (``"taylor"``): CMA-ES over the 8 parameters of a third-order Taylor loss.

Each CMA-ES solution ``θ`` (rounded to ``digits`` significant digits) becomes the loss
``lossforge.zoo.taylorglo(θ)``: ``L = -(1/B) Σ_b Σ_i f(y_bi, p_bi)`` with
``f = θ2(p-θ1) + θ3(p-θ1)² + θ4(p-θ1)³ + θ5(y-θ0)(p-θ1) + θ6(y-θ0)(p-θ1)² + θ7(y-θ0)²(p-θ1)``.
CMA-ES starts from the zero vector with σ = 1.2 (the paper's settings); population 8 by default
(paper: 20-28 on MNIST). pycma minimises ``-fitness``; see :class:`~lossforge.search._cma.CMAReplay`
for the JSON state (replayed history).

**Invariant check** (TaylorGLO's code, optional there, on by default here): with
``∂f/∂p = c1 + ch·p + chh·p² + chy·y·p + cy·y + cyy·y²`` (:func:`taylor_coefficients`; the loss
is ``-Σ f``), a solution is rejected when ``cy + cyy + chy/n < (n-2)(c1 + ch/n + chh/n²)``, ``n`` =
``num_classes`` (pass the task's number of classes). Checked against the authors' code
(``TaylorGLOGenerationStarter.swift`` in cognizant-ai-labs/TaylorGLO): the same coefficients and
inequality, with its genome storing the six coefficients before the two centres (θ0, θ1); there a
violating solution scores fitness 0. Caution: at a uniform prediction ``p = 1/n`` the true logit's
gradient through the softmax is proportional to ``∂f/∂p(1, 1/n) − ∂f/∂p(0, 1/n) = cy + cyy +
chy/n`` alone; the right-hand side does not enter it, and in our MNIST reproduction most of the best
solutions violate the invariant (RESULTS.md, TaylorGLO section). Rejected solutions are never proposed:
``ask`` returns only the solutions that pass, and CMA-ES is told ``PENALTY + violation`` for the
others (the violation amount ranks them, pulling the search back to the feasible side).
:attr:`TaylorGLO.n_rejected` counts them, :attr:`TaylorGLO.last_rejected` lists the latest
generation's rejected ``θ``.

If pycma's remaining termination criteria fire, CMA-ES restarts from the best ``θ`` found with
σ = ``sigma`` and a fresh seed. ``ask(n)`` returns at most the candidates left in the current
generation (it can return fewer than ``n``).
"""
from __future__ import annotations

import copy
from typing import Any

from lossforge.expr.expr import Expr
from lossforge.expr.spaces import SearchSpace
from lossforge.search._cma import PENALTY, CMAReplay, EntryTell, stored_entries, take_new
from lossforge.search.seeded import SeededStrategy, parse_candidate, sig_round, taylor_expr


def taylor_coefficients(theta: list[float]) -> dict[str, float]:
    """Coefficients of ``∂f/∂p = c1 + ch·p + chh·p² + chy·y·p + cy·y + cyy·y²`` (TaylorGLO code)."""
    if len(theta) != 8:
        raise ValueError(f"TaylorGLO has 8 parameters, got {len(theta)}")
    t0, t1, t2, t3, t4, t5, t6, t7 = (float(t) for t in theta)
    return {
        "c1": -2 * t1 * t3 + 2 * t0 * t1 * t6 + t2 - t5 * t0 + t7 * t0**2 + 3 * t4 * t1**2,
        "ch": 2 * t3 - 2 * t6 * t0 - 6 * t4 * t1,
        "chh": 3 * t4,
        "chy": 2 * t6,
        "cy": -2 * t1 * t6 + t5 - 2 * t7 * t0,
        "cyy": t7,
    }


def invariant_margin(theta: list[float], num_classes: int) -> float:
    """``(cy + cyy + chy/n) - (n-2)(c1 + ch/n + chh/n²)``: negative means rejected."""
    c = taylor_coefficients(theta)
    n = float(num_classes)
    return (c["cy"] + c["cyy"] + c["chy"] / n) - (n - 2) * (c["c1"] + c["ch"] / n + c["chh"] / n**2)


def invariant_holds(theta: list[float], num_classes: int) -> bool:
    """Whether ``θ`` passes TaylorGLO's invariant check for ``num_classes`` classes."""
    return invariant_margin(theta, num_classes) >= 0


class TaylorGLO(EntryTell, SeededStrategy):
    """CMA-ES over TaylorGLO's 8 parameters.

    Options (defaults): ``popsize=8``, ``sigma=1.2``, ``check_invariant=True``,
    ``num_classes=10``, ``digits=6``.
    """

    name = "taylor"
    default_space = "taylor"
    space_kinds = ("parametric",)
    needs_label = True  # f(y, p): a box slot (i, u, e) has no label
    defaults = {"popsize": 8, "sigma": 1.2, "check_invariant": True, "num_classes": 10,
                "digits": 6}

    def __init__(self, space: SearchSpace | str | None = None, seed: int = 0, **options):
        super().__init__(space, seed, **options)
        if self.space.n_params != 8:
            raise ValueError(f"TaylorGLO needs an 8-parameter space, got n_params="
                             f"{self.space.n_params}")
        self.run = 0
        self.entries: list[dict] = []
        self.best_: list | None = None   # [text, fitness, theta]
        self.n_rejected = 0
        self.last_rejected: list[list[float]] = []
        self.log: list[dict] = []
        self.n_asked = 0
        self.n_told = 0
        self._exprs: dict[str, Expr] = {}  # this generation's expressions by text (not state)
        self._replay = self._new_replay([0.0] * 8)

    @classmethod
    def task_options(cls, task) -> dict[str, Any]:
        """The invariant check's ``num_classes``: the task's number of classes, when it has one."""
        return {"num_classes": task.num_classes} if task.num_classes else {}

    def _new_replay(self, x0: list[float]) -> CMAReplay:
        seed = int(self.rng.integers(1, 2**31 - 1))
        return CMAReplay(x0, float(self.config["sigma"]), seed, int(self.config["popsize"]))

    @property
    def batch_size(self) -> int:
        return int(self.config["popsize"])

    def is_valid_theta(self, theta: list[float]) -> bool:
        """Whether ``θ`` passes the invariant check (always, when the check is off)."""
        return (not self.config["check_invariant"]
                or invariant_holds(theta, int(self.config["num_classes"])))

    # ---- protocol --------------------------------------------------------------------------------
    def ask(self, n: int) -> list[Expr]:
        for _ in range(10_000):
            if any(e["status"] in ("new", "asked") for e in self.entries):
                break
            if self.entries:
                self._close_generation()
            self._open_generation()
        else:
            raise RuntimeError("TaylorGLO: every solution of 10,000 generations was rejected")
        out = [self._exprs.get(e["expr"]) or parse_candidate(e["expr"])
               for e in take_new(self.entries, int(n))]
        self.n_asked += len(out)
        return out

    @property
    def best(self) -> tuple[Expr, float] | None:
        """The best evaluated loss so far."""
        return None if self.best_ is None else (parse_candidate(self.best_[0]), self.best_[1])

    # ---- generations -----------------------------------------------------------------------------
    def _open_generation(self) -> None:
        if self._replay.stop():
            self.run += 1
            self._replay = self._new_replay(self.best_[2] if self.best_ else [0.0] * 8)
        digits = int(self.config["digits"])
        self.entries, self.last_rejected, self._exprs = [], [], {}
        for x in self._replay.ask():
            theta = [sig_round(v, digits) for v in x]
            if self.is_valid_theta(theta):
                expr = taylor_expr(theta, self.space)
                self._exprs[str(expr)] = expr
                self.entries.append({"expr": str(expr), "theta": theta, "fitness": None,
                                   "status": "new"})
            else:
                margin = invariant_margin(theta, int(self.config["num_classes"]))
                self.entries.append({"expr": None, "theta": theta, "fitness": None,
                                   "status": "done", "penalty": PENALTY - margin})
                self.last_rejected.append(theta)
                self.n_rejected += 1

    def _close_generation(self) -> None:
        entries, self.entries = self.entries, []
        values = []
        for e in entries:
            if "penalty" in e:
                values.append(e["penalty"])
            elif e["fitness"] is None:
                values.append(PENALTY)
            else:
                values.append(-e["fitness"])
                if self.best_ is None or e["fitness"] > self.best_[1]:
                    self.best_ = [e["expr"], e["fitness"], e["theta"]]
        self._replay.tell(values)
        fits = [e["fitness"] for e in entries if e["fitness"] is not None]
        self.log.append({"run": self.run, "generation": len(self._replay.history) - 1,
                         "size": len(entries), "rejected": sum("penalty" in e for e in entries),
                         "best": max(fits) if fits else None})

    # ---- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **self.base_state(),
            "run": self.run,
            "replay": self._replay.state_dict(),
            "entries": copy.deepcopy(self.entries),
            "best": copy.deepcopy(self.best_),
            "n_rejected": self.n_rejected,
            "last_rejected": copy.deepcopy(self.last_rejected),
            "log": copy.deepcopy(self.log),
            "n_asked": self.n_asked,
            "n_told": self.n_told,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_base_state(state)
        self.run = int(state["run"])
        self._replay = CMAReplay.from_state(state["replay"])
        self.entries = stored_entries(state)
        self.best_ = copy.deepcopy(state["best"])
        self.n_rejected = int(state["n_rejected"])
        self.last_rejected = copy.deepcopy(state["last_rejected"])
        self.log = copy.deepcopy(state["log"])
        self.n_asked = int(state["n_asked"])
        self.n_told = int(state["n_told"])


__all__ = ["TaylorGLO", "invariant_holds", "invariant_margin", "taylor_coefficients"]
