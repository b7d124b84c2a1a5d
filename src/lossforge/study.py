"""The run loop: ``LossSearch(...).run() -> Study``; ``load_study(path)``; the hall of fame.

One search = one study file. Each generation: the strategy asks for candidates, the funnel screens
them (all at once) and trains the survivors, every result is committed as it arrives, the
strategy is told the fitnesses, and its state is checkpointed. A killed search resumes from the
file: the last checkpoint restores the strategy, the interrupted generation is asked again (the
same candidates, by determinism) and the slots already stored are not evaluated twice.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from lossforge.evaluation.candidate import (FAILED, GEC_HIT, INVALID, REJECTED_CHECKS,
                                            REJECTED_LRP, TRAINED, Candidate)
from lossforge.evaluation.funnel import Funnel, FunnelConfig
from lossforge.expr import Expr, parse
from lossforge.search.strategy import scored
from lossforge.storage import Row, Store, StudyFileError
from lossforge.tasks import Task
from lossforge.tasks import get as get_task

#: The search space each strategy uses unless told otherwise.
DEFAULT_SPACE = {"autoloss-zero": "autoloss-zero", "random": "autoloss-zero", "aging": "nlfs",
                 "glo": "glo", "taylor": "taylor"}
#: Settings that must match to continue a study (the budget may grow).
_FIXED = ("task", "metric", "strategy", "space", "seed", "funnel", "strategy_options", "slot",
          "fixed", "joint")
#: Values of settings that study files written before they existed hold implicitly.
_IMPLICIT = {"slot": "loss", "fixed": {}, "joint": False}
#: Strategies that can search several slots jointly (bundles of expressions).
JOINT_STRATEGIES = ("autoloss-zero", "random")


@dataclass(frozen=True)
class HallOfFameEntry:
    formula: str
    fitness: float
    size: int
    metrics: dict[str, float]


class Study:
    """A study read from its file: settings, candidates, best, hall of fame, stats."""

    def __init__(self, store: Store):
        self.store = store
        self.path = store.path
        self.settings: dict[str, Any] = store.settings

    @property
    def candidates(self) -> list[Row]:
        return self.store.rows()

    @property
    def explored(self) -> int:
        return self.store.count()

    def trained(self) -> list[Row]:
        return [r for r in self.store.rows("status = ? AND fitness IS NOT NULL", (TRAINED,))]

    @property
    def best(self) -> Row | None:
        """The trained candidate with the highest fitness (on ties the smaller expression, then the
        earlier one — the hall of fame's first entry); ``None`` if none."""
        rows = self.trained()
        return max(rows, key=lambda r: (r.fitness, -r.size, -r.id)) if rows else None

    @property
    def hall_of_fame(self) -> list[HallOfFameEntry]:
        """Pareto front of (fitness ↑, expression size ↓) over trained candidates, best first.

        Rule: a loss is kept when no other loss is at least as fit and strictly smaller, or
        strictly fitter and no larger; among equal formulas the first evaluated is kept.
        """
        best_by_size: dict[int, Row] = {}
        for r in self.trained():
            cur = best_by_size.get(r.size)
            if cur is None or r.fitness > cur.fitness:
                best_by_size[r.size] = r
        front, top = [], float("-inf")
        for size in sorted(best_by_size):
            r = best_by_size[size]
            if r.fitness > top:
                front.append(r)
                top = r.fitness
        return [HallOfFameEntry(r.formula, r.fitness, r.size, r.details.get("metrics", {}))
                for r in sorted(front, key=lambda r: -r.fitness)]

    @property
    def stats(self) -> dict[str, dict[str, float]]:
        """Per-stage counts (exact, from the stored statuses) and seconds (from checkpoints)."""
        counts = dict(self.store.conn.execute(
            "SELECT status, count(*) FROM candidates GROUP BY status").fetchall())
        total = sum(counts.values())
        seconds: dict[str, float] = {}
        for _, state in self.store.checkpoints():
            for name, s in state.get("stage_seconds", {}).items():
                seconds[name] = seconds.get(name, 0.0) + s
        checks_out = total - counts.get(REJECTED_CHECKS, 0)
        gec_out = checks_out - counts.get(GEC_HIT, 0)
        lrp_out = gec_out - counts.get(REJECTED_LRP, 0)
        return {
            "checks": {"in": total, "out": checks_out, "seconds": seconds.get("checks", 0.0)},
            "gec": {"in": checks_out, "out": gec_out, "seconds": seconds.get("gec", 0.0)},
            "lrp": {"in": gec_out, "out": lrp_out, "seconds": seconds.get("lrp", 0.0)},
            "proxy": {"in": lrp_out, "out": counts.get(TRAINED, 0), "invalid": counts.get(INVALID, 0),
                      "failed": counts.get(FAILED, 0), "seconds": seconds.get("proxy", 0.0)},
        }

    @property
    def slot(self) -> str:
        """The searched loss slot (``"loss"`` for a single-slot task; ``"joint"`` for a joint
        search, whose candidates are bundles)."""
        return "joint" if self.settings.get("joint") else self.settings.get("slot", "loss")

    def parse_candidate(self, text: str):
        """A stored candidate formula back as an :class:`Expr` (a :class:`Bundle` for a joint
        search)."""
        if self.settings.get("joint"):
            from lossforge.expr.bundle import parse_bundle

            return parse_bundle(text)
        return parse(text, strict=False)

    def summary(self, top: int = 10) -> dict[str, Any]:
        """What ``lossforge show --format json`` prints."""
        s = self.settings
        best = self.best
        return {
            "path": str(self.path), "task": s["task"], "metric": s["metric"],
            "slot": s.get("slot", "loss"), "fixed": s.get("fixed", {}),
            "joint": bool(s.get("joint", False)),
            "strategy": s["strategy"], "space": s["space"], "seed": s["seed"], "budget": s["budget"],
            "explored": self.explored,
            "best": None if best is None else {"formula": best.formula, "fitness": best.fitness,
                                               "size": best.size,
                                               "metrics": best.details.get("metrics", {})},
            "hall_of_fame": [{"formula": h.formula, "fitness": h.fitness, "size": h.size}
                             for h in self.hall_of_fame[:top]],
            "stats": self.stats,
            "refine": self.store.meta("refine"),  # lossforge refine's races (None before any)
        }

    def close(self) -> None:
        self.store.close()


def load_study(path: str | Path) -> Study:
    """Open a study file (read-only use); clear :class:`StudyFileError` for a bad file."""
    return Study(Store.open(path))


@dataclass
class LossSearch:
    """A loss search on ``task`` for ``metric`` with ``strategy``, stored at ``storage``.

    ``budget``: candidates to explore (put through the funnel, GEC hits included).
    ``executor``: a ``concurrent.futures``-style executor for proxy trainings (default in-process).
    ``progress(study_state)`` is called after every committed result when given (a dict: explored,
    budget, generation, slot, status, formula, fitness, size, reason; a slot may be reported twice;
    here "slot" is the candidate's position in its generation).

    Tasks with several loss slots (:meth:`~lossforge.tasks.Task.loss_slots`): ``slot`` names the
    loss slot to search (its kind's variables, probes and LRP metric), ``fixed`` gives the losses
    of other slots during proxy training (slot -> zoo name or formula; the rest use their
    ``default``); or ``joint=True`` searches every slot at once (candidates are
    :class:`~lossforge.expr.bundle.Bundle` s; strategies ``autoloss-zero`` and ``random``). A
    single-slot task searches its slot ``"loss"``. ``slot``, ``fixed`` and ``joint`` are settings
    a resumed study must match.
    """

    task: Task | str
    storage: str | Path
    metric: str | None = None
    strategy: str = "autoloss-zero"
    budget: int = 100
    seed: int = 0
    space: str | None = None
    funnel: FunnelConfig = field(default_factory=FunnelConfig)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    executor: Any = None
    progress: Callable[[dict[str, Any]], None] | None = None
    slot: str | None = None
    fixed: dict[str, str] = field(default_factory=dict)
    joint: bool = False

    def __post_init__(self):
        if self.budget <= 0:
            raise ValueError(f"budget must be a positive number of candidates, got {self.budget}")
        self.task = get_task(self.task)
        self.metric = self.metric or self.task.default_metric
        self.task.metric(self.metric)  # clear error for an unknown metric
        if self.strategy not in DEFAULT_SPACE:
            import difflib

            close = difflib.get_close_matches(self.strategy, list(DEFAULT_SPACE), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown strategy {self.strategy!r}{hint}; strategies: "
                             f"{', '.join(DEFAULT_SPACE)}")
        self.space = self.space or DEFAULT_SPACE[self.strategy]
        self._resolve_slots()
        if self.strategy == "aging" and not self.joint and \
                self.task.slot(self.slot).kind == "classification":
            # NLFS: 2-class integrity check with automatic orientation of every candidate
            self.funnel = replace(self.funnel, checks=replace(self.funnel.checks, integrity=True))

    def _resolve_slots(self) -> None:
        """Check ``slot``/``fixed``/``joint`` against the task; clear errors say what to pass."""
        from lossforge.loss_spec import load_loss

        slots = self.task.loss_slots()
        names = [s.name for s in slots]
        listing = ", ".join(f"{s.name} ({s.kind})" for s in slots)
        self.fixed = {str(k): str(v) for k, v in (self.fixed or {}).items()}
        if self.joint:
            if self.strategy not in JOINT_STRATEGIES:
                raise ValueError(f"joint search supports autoloss-zero and random, not strategy "
                                 f"{self.strategy!r}; or search one slot with slot=")
            if self.fixed:
                raise ValueError("a joint search searches every slot: fixed= is not allowed")
            self.slot = None
            return
        if self.slot is None:
            if len(slots) > 1:
                raise ValueError(f"task {self.task.name!r} has loss slots {listing}: choose the "
                                 "one to search with slot= (CLI --slot), or search them all with "
                                 "joint=True (--joint)")
            self.slot = names[0]
        try:
            kind = self.task.slot(self.slot).kind
        except KeyError as err:
            raise ValueError(err.args[0]) from None
        if kind == "box" and self.strategy == "taylor":
            raise ValueError("the taylor strategy needs a label y: it cannot search a box slot "
                             "(i, u, e); use autoloss-zero, random, glo or aging")
        for k, v in self.fixed.items():
            if k == self.slot:
                raise ValueError(f"slot {k!r} is the searched slot: it cannot be fixed too")
            load_loss(v, self.task, slot=k)  # clear ValueError: unknown slot, wrong kind …

    def settings(self) -> dict[str, Any]:
        return {"task": self.task.name, "metric": self.metric, "strategy": self.strategy,
                "space": self.space, "seed": self.seed, "budget": self.budget,
                "funnel": self.funnel.to_dict(), "strategy_options": self.strategy_options,
                "slot": self.slot, "fixed": self.fixed, "joint": self.joint}

    # --- opening / resuming ---------------------------------------------------------------------
    def _open_store(self) -> Store:
        path = Path(self.storage)
        if not path.exists():
            return Store.create(path, self.settings())
        store = Store.open(path)
        old, new = store.settings, self.settings()
        diff = [d for k in _FIXED
                for d in _differences(k, old.get(k, _IMPLICIT.get(k)), new.get(k))]
        if diff:
            store.close()
            detail = "; ".join(f"{k}: study has {a!r}, requested {b!r}" for k, a, b in diff)
            raise StudyFileError(f"{path} was created with other settings ({detail}); use "
                                 "`lossforge resume` to continue it, or choose a new study file")
        if old.get("budget") != self.budget:
            store.set_meta("settings", {**old, "budget": self.budget})
        return store

    def _make_strategy(self):
        from lossforge import search
        from lossforge.expr import spaces

        if self.joint:
            from lossforge.expr.bundle import ProductSpace

            space = ProductSpace(tuple(
                (s.name, spaces.get(self.space, variables=sorted(s.variables - {"z"})))
                for s in self.task.loss_slots()))
        else:
            variables = sorted(self.task.slot(self.slot).variables - {"z"})
            space = spaces.get(self.space, variables=variables)
        options = dict(self.strategy_options)
        if self.strategy == "taylor" and self.task.num_classes:
            options.setdefault("num_classes", self.task.num_classes)
        return search.get(self.strategy, space, seed=self.seed, **options)

    def _funnel_config(self) -> FunnelConfig:
        return self.funnel

    def _make_funnel(self):
        if self.joint:
            from lossforge.evaluation.joint import JointFunnel

            return JointFunnel(self.task, self.metric, self.funnel, self.executor)
        return Funnel(self.task, self.metric, self.funnel, self.executor, slot=self.slot,
                      fixed=self.fixed)

    # --- the loop -------------------------------------------------------------------------------
    def run(self) -> Study:
        """Search until ``budget`` candidates are explored; returns the :class:`Study`."""
        store = self._open_store()
        strategy = self._make_strategy()
        funnel = self._make_funnel()
        generation = 0
        ckpt = store.last_checkpoint()
        if ckpt is not None:
            generation = ckpt[0] + 1
            strategy.load_state_dict(ckpt[1]["strategy"])
        calibrated = store.meta("calibration")
        if calibrated is None:
            funnel.calibrate()
            store.set_meta("calibration", funnel.calibration_state())
        else:
            funnel.load_calibration(calibrated)
        for row in store.rows():  # what earlier runs learnt: GEC classes and results
            if row.fingerprint:
                funnel.gec.known.setdefault(row.fingerprint, row.formula)
            if row.status != GEC_HIT:
                funnel.known_results.setdefault(row.formula, row.fitness)
        while True:
            before = store.count("generation < ?", (generation,))
            if before >= self.budget:
                break
            self._generation(store, strategy, funnel, generation, min(strategy.batch_size,
                                                                       self.budget - before))
            generation += 1
        study = Study(store)
        return study

    def _generation(self, store: Store, strategy, funnel: Funnel, generation: int, n: int) -> None:
        exprs = strategy.ask(n)
        stored = store.generation_rows(generation)
        todo = [slot for slot in range(len(exprs)) if slot not in stored]
        before = {s.name: s.stats.seconds for s in (funnel.checks, funnel.gec, funnel.lrp, funnel.proxy)}
        if todo:
            cands = funnel.run([exprs[s] for s in todo],
                               on_result=lambda i, c: self._commit(store, generation, todo[i],
                                                                   exprs[todo[i]], c))
            for i, c in enumerate(cands):  # GEC hits resolve last: commit whatever is still open
                self._commit(store, generation, todo[i], exprs[todo[i]], c)
        rows = store.generation_rows(generation)
        strategy.tell([(exprs[s], scored(rows[s].fitness, rows[s].fingerprint))
                       for s in range(len(exprs))])
        seconds = {k: funnel_stage.stats.seconds - before[k]
                   for k, funnel_stage in (("checks", funnel.checks), ("gec", funnel.gec),
                                           ("lrp", funnel.lrp), ("proxy", funnel.proxy))}
        store.save_checkpoint(generation, {"strategy": strategy.state_dict(),
                                           "stage_seconds": seconds, "time": time.time()})

    def _commit(self, store: Store, generation: int, slot: int, proposed: Expr, c: Candidate) -> None:
        store.add(generation, slot, str(proposed), str(c.expr), c.expr.size(), c.status, c.fitness,
                  c.fingerprint, c.same_as, c.to_record())
        if self.progress:
            self.progress({"explored": store.count(), "budget": self.budget, "generation": generation,
                           "status": c.status, "formula": str(c.expr), "fitness": c.fitness,
                           "size": c.expr.size(), "reason": c.reason, "slot": slot})


def _differences(key: str, a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    """The leaves where two settings values differ, as (dotted key, a, b)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(f"{key}.{k}", a.get(k), b.get(k))]
    return [] if a == b else [(key, a, b)]


def resume(path: str | Path, executor: Any = None, progress=None, budget: int | None = None,
           task: Task | None = None) -> Study:
    """Continue the study at ``path`` with its stored settings (optionally a new ``budget``).

    ``task``: the task object, for a user-defined task that is not registered by name (its name
    must match the study's)."""
    store = Store.open(path)
    s = store.settings
    store.close()
    if task is not None and task.name != s["task"]:
        raise StudyFileError(f"{path} was created for task {s['task']!r}, not {task.name!r}")
    search = LossSearch(task=task or s["task"], storage=path, metric=s["metric"], strategy=s["strategy"],
                        budget=budget or s["budget"], seed=s["seed"], space=s["space"],
                        funnel=FunnelConfig.from_dict(s["funnel"]),
                        strategy_options=s["strategy_options"], executor=executor,
                        progress=progress, slot=s.get("slot"), fixed=s.get("fixed", {}),
                        joint=bool(s.get("joint", False)))
    return search.run()
