"""The run loop: ``LossSearch(...).run() -> Study``; ``load_study(path)``; ``resume(path)``; the
hall of fame (:func:`pareto_front`).

One search = one study file. Each generation: the strategy asks for candidates, the funnel screens
them (all at once) and trains the survivors, every result is committed as it arrives, the
strategy is told the fitnesses, and its state is checkpointed. A killed search resumes from the
file: the last checkpoint restores the strategy, the interrupted generation is asked again (the
same candidates, by determinism) and the positions already stored are not evaluated twice.

``LossSearch`` knows no strategy by name: what it needs (default space, joint search, label,
funnel overrides, task-derived options) each strategy class declares
(:class:`~lossforge.search.strategy.Strategy`). The study file is reached only through
:class:`~lossforge.storage.Store`'s methods; readers open it with ``load_study(path,
readonly=True)``.

Which task: ``LossSearch(task=...)`` takes a :class:`~lossforge.tasks.Task`, a built-in name, or a
spec; what the study records of it, and when a resumed study may load it, is
:mod:`lossforge.study_task`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from lossforge import search
from lossforge.evaluation.candidate import (FAILED, GEC_HIT, INVALID, STAGES, STOPPED_BY, TRAINED,
                                            Candidate)
from lossforge.evaluation.fidelity import row_selection_fitness
from lossforge.evaluation.funnel import Funnel, FunnelConfig
from lossforge.expr import Expr, parse
from lossforge.expr.strip import display_fields
from lossforge.search.strategy import Strategy, scored
from lossforge.storage import Row, Store, StudyFileError
from lossforge.tasks import Task
from lossforge.tasks.options import task_options
from lossforge.study_task import (check_task_unchanged, moved_or_changed, stored_task_spec,
                                  study_task, task_identity)
from lossforge.tasks.spec import load_task

#: Settings that must match to continue a study (the budget may grow).
_FIXED = ("task", "task_options", "metric", "strategy", "space", "seed", "funnel",
          "strategy_options", "slot", "fixed", "joint")
#: Values of settings that study files written before they existed hold implicitly.
_IMPLICIT = {"slot": "loss", "fixed": {}, "joint": False, "task_options": {}}
T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HallOfFameEntry:
    """One loss of the hall of fame: its formula, search fitness, expression size and metrics."""

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
        """Every explored candidate, in commit order."""
        return self.store.rows()

    @property
    def explored(self) -> int:
        """How many candidates were explored (put through the funnel, GEC hits included)."""
        return self.store.count()

    def trained(self) -> list[Row]:
        """The trained candidates that have a fitness, in commit order."""
        return self.store.rows(status=TRAINED, with_fitness=True)

    @property
    def best(self) -> Row | None:
        """The trained candidate with the highest fitness (on ties the smaller expression, then the
        earlier one — the hall of fame's first entry); ``None`` if none. With multi-fidelity proxy
        training the steps reached come first (:mod:`lossforge.evaluation.rungs`)."""
        from lossforge.evaluation.fidelity import row_steps

        rows = self.trained()
        return max(rows, key=lambda r: (row_steps(r), r.fitness, -r.size, -r.id)) if rows else None

    @property
    def hall_of_fame(self) -> list[HallOfFameEntry]:
        """Pareto front of (fitness ↑, expression size ↓) over trained candidates, best first
        (:func:`pareto_front`)."""
        return [HallOfFameEntry(r.formula, r.fitness, r.size, r.details.get("metrics", {}))
                for r in pareto_front(self.trained())]

    @property
    def stats(self) -> dict[str, dict[str, float]]:
        """Per-stage counts (exact, from the stored statuses) and seconds (from checkpoints), in
        :data:`~lossforge.evaluation.candidate.STAGES` order: ``{stage: {"in", "out", "seconds"}}``,
        the proxy stage also with ``invalid`` and ``failed``."""
        counts = self.store.status_counts()
        seconds: dict[str, float] = {}
        for _, state in self.store.checkpoints():
            for name, s in state.get("stage_seconds", {}).items():
                seconds[name] = seconds.get(name, 0.0) + s
        out: dict[str, dict[str, float]] = {}
        n = sum(counts.values())
        for stage in STAGES:
            if stage in STOPPED_BY:
                passed = n - counts.get(STOPPED_BY[stage], 0)
                out[stage] = {"in": n, "out": passed}
            else:  # the proxy stage: trained, invalid or failed
                passed = counts.get(TRAINED, 0)
                out[stage] = {"in": n, "out": passed, "invalid": counts.get(INVALID, 0),
                              "failed": counts.get(FAILED, 0)}
            out[stage]["seconds"] = seconds.get(stage, 0.0)
            n = passed
        return out

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
            "path": str(self.path), "task": s["task"], "task_spec": stored_task_spec(s),
            "task_fingerprint": s.get("task_fingerprint"), "metric": s["metric"],
            "slot": s.get("slot", "loss"), "fixed": s.get("fixed", {}),
            "joint": bool(s.get("joint", False)),
            "strategy": s["strategy"], "space": s["space"], "seed": s["seed"], "budget": s["budget"],
            "explored": self.explored,
            "best": None if best is None else {"formula": best.formula, "fitness": best.fitness,
                                               "size": best.size,
                                               "metrics": best.details.get("metrics", {}),
                                               **display_fields(best.formula)},
            # display_formula / stripped: the formula without constant terms (same gradient)
            "hall_of_fame": [{"formula": h.formula, "fitness": h.fitness, "size": h.size,
                              **display_fields(h.formula)} for h in self.hall_of_fame[:top]],
            "stats": self.stats,
            "refine": self.store.meta("refine"),  # lossforge refine's races (None before any)
            "baseline": self.baseline,  # the task's baseline loss, proxy-trained (None: not measured)
            "fidelity": _fidelity_summary(self.store, best),  # rungs (None: not used)
        }

    @property
    def baseline(self) -> dict[str, Any] | None:
        """The task's baseline loss trained with the study's proxy settings (``loss``, ``formula``,
        ``status``, ``fitness``, ``metrics``, ``seconds``: :mod:`lossforge.evaluation.baseline`);
        ``None`` for a study file that has not measured it."""
        return self.store.meta("baseline")

    def meta(self, key: str) -> Any:
        """The study's stored value under ``key`` (e.g. ``"evaluation"``, ``"refine"``), or
        ``None``."""
        return self.store.meta(key)

    def set_meta(self, key: str, value: Any) -> None:
        """Store the JSON ``value`` under ``key`` (committed at once; needs a writable study)."""
        self.store.set_meta(key, value)

    def close(self) -> None:
        self.store.close()


def load_study(path: str | Path, readonly: bool = False) -> Study:
    """Open the study file at ``path``; clear :class:`StudyFileError` for a missing or bad file.

    ``readonly=True`` is the door for readers (report, live view, ``show``): the file is opened
    read-only when possible (a WAL file whose ``-shm`` is gone needs a writable open: then it is
    opened normally, and still only read). A reader may run while the search writes."""
    if not readonly:
        return Study(Store.open(path))
    try:
        return Study(Store.open(path, readonly=True))
    except StudyFileError:
        return Study(Store.open(path))  # the real error, if any


def pareto_front(entries: Iterable[T], fitness: Callable[[T], float | None] = attrgetter("fitness"),
                 size: Callable[[T], int] = attrgetter("size")) -> list[T]:
    """The hall of fame: the Pareto front of (fitness ↑, size ↓) over ``entries``, best first.

    ``entries`` in evaluation order; ``fitness``/``size`` read an entry (default: its attributes of
    those names); entries without a fitness are skipped. Rule: an entry is kept when no other is at
    least as fit and strictly smaller, or strictly fitter and no larger; among entries of equal
    fitness and size the first evaluated is kept. The one implementation behind
    :attr:`Study.hall_of_fame` and the live view.
    """
    best_by_size: dict[int, tuple[float, T]] = {}
    for e in entries:
        f = fitness(e)
        if f is None:
            continue
        cur = best_by_size.get(size(e))
        if cur is None or f > cur[0]:
            best_by_size[size(e)] = (f, e)
    front: list[tuple[float, T]] = []
    top = float("-inf")
    for s in sorted(best_by_size):
        f, e = best_by_size[s]
        if f > top:
            front.append((f, e))
            top = f
    return [e for _f, e in sorted(front, key=lambda fe: -fe[0])]


@dataclass
class LossSearch:
    """A loss search on ``task`` for ``metric`` with ``strategy``, stored at ``storage``.

    ``budget``: candidates to explore (put through the funnel, GEC hits included).
    ``executor``: a ``concurrent.futures``-style executor for proxy trainings (default in-process).
    ``progress(study_state)`` is called after every committed result when given (a dict: event
    ``"result"``, explored, budget, generation, position, status, formula, fitness, size, reason;
    ``position`` is the candidate's index within its generation, and a position may be reported
    twice). A task with its own training loop (:meth:`~lossforge.tasks.Task.fit`) trained in this
    process (no executor, or a serial one) also sends each ``report(step, metrics)`` of its loop:
    a dict with event ``"report"``, explored, budget, generation, formula, step, metrics (and no
    status); worker processes drop them. With ``min_steps="auto"`` a new study first sends event
    ``"rung_check"`` (explored, budget, generation 0, max_steps, losses) before its rung check.

    Tasks with several loss slots (:meth:`~lossforge.tasks.Task.loss_slots`): ``slot`` names the
    loss slot to search (its kind's variables, probes and LRP metric), ``fixed`` gives the losses
    of other slots during proxy training (slot -> zoo name or formula; the rest use their
    ``default``); or ``joint=True`` searches every slot at once (candidates are
    :class:`~lossforge.expr.bundle.Bundle` s; strategies that can search jointly, see
    :meth:`~lossforge.search.strategy.Strategy.can_search_jointly`). A
    single-slot task searches its slot ``"loss"``. ``slot``, ``fixed`` and ``joint`` are settings
    a resumed study must match.

    ``task``: a task, a built-in name or a spec (``path/to/file.py:ATTR``, see the module
    docstring). ``allow_changed_task``: continue an existing study file even though its task file
    changed since the study was created (else :class:`~lossforge.study_task.StudyTaskChangedError`).

    ``fidelity``: multi-fidelity proxy training — a
    :class:`~lossforge.evaluation.rungs.FidelityConfig`, its dict, or ``"asha"`` / ``"none"``
    (``None``: what ``funnel.proxy.fidelity`` says, by default one training of the proxy steps).
    It is stored with the funnel settings, which a resumed study must match.
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
    allow_changed_task: bool = False
    fidelity: Any = None

    def __post_init__(self):
        if self.budget <= 0:
            raise ValueError(f"budget must be a positive number of candidates, got {self.budget}")
        self.task = load_task(self.task)
        self.metric = self.metric or self.task.default_metric
        self.task.metric(self.metric)  # clear error for an unknown metric
        try:
            cls = search.get_class(self.strategy)
        except KeyError as err:
            raise ValueError(err.args[0]) from None
        self.space = self.space or cls.default_space
        self._resolve_slots(cls)
        slot_kind = None if self.joint else self.task.slot(self.slot).kind
        self.funnel = cls.funnel_overrides(self.funnel, slot_kind)
        self.funnel = _with_fidelity(self.funnel, self.fidelity, self.task, self.joint)
        if self.funnel.proxy.optimizers:  # issue 18: each proxy training under each optimizer
            from lossforge.evaluation.optimizers import check_combination

            check_combination(self.task, self.funnel.proxy.optimizers, self.funnel.proxy.fidelity,
                              joint=self.joint)

    def _resolve_slots(self, cls: type[Strategy]) -> None:
        """Check ``slot``/``fixed``/``joint`` against the task and the strategy class ``cls``;
        clear errors say what to pass."""
        from lossforge.training.loss_spec import load_loss

        slots = self.task.loss_slots()
        names = [s.name for s in slots]
        listing = ", ".join(f"{s.name} ({s.kind})" for s in slots)
        self.fixed = {str(k): str(v) for k, v in (self.fixed or {}).items()}
        if self.joint:
            if not cls.can_search_jointly():
                able = [n for n, c in search.STRATEGIES.items() if c.can_search_jointly()]
                raise ValueError(f"joint search supports {_either(able, 'and')}, not strategy "
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
            searched = self.task.slot(self.slot)
        except KeyError as err:
            raise ValueError(err.args[0]) from None
        if cls.needs_label and "y" not in searched.variables:
            able = [n for n, c in search.STRATEGIES.items() if not c.needs_label]
            variables = ", ".join(sorted(searched.variables))
            raise ValueError(f"the {self.strategy} strategy needs a label y: it cannot search a "
                             f"{searched.kind} slot ({variables}); use {_either(able, 'or')}")
        for k, v in self.fixed.items():
            if k == self.slot:
                raise ValueError(f"slot {k!r} is the searched slot: it cannot be fixed too")
            load_loss(v, self.task, slot=k)  # clear ValueError: unknown slot, wrong kind …

    def settings(self) -> dict[str, Any]:
        """What the study file records (``task_spec``/``task_fingerprint`` only for a task loaded
        from a name or spec, :func:`task_identity`)."""
        return {"task": self.task.name, **task_identity(self.task),
                "task_options": task_options(self.task),
                "num_classes": getattr(self.task, "num_classes", None), "metric": self.metric,
                "strategy": self.strategy, "space": self.space, "seed": self.seed,
                "budget": self.budget, "funnel": self.funnel.to_dict(),
                "strategy_options": self.strategy_options, "slot": self.slot, "fixed": self.fixed,
                "joint": self.joint}

    # --- opening / resuming ---------------------------------------------------------------------
    def check(self) -> None:
        """Validate every setting before any worker starts, writing nothing.

        Task, metric, strategy and slots are checked when the search is made; this adds the
        strategy's options (``TypeError`` listing them) and, for an existing study file, its
        stored settings (:class:`StudyFileError` naming the differences). No file is created.
        """
        self._make_strategy()
        path = Path(self.storage)
        if path.exists():
            study = load_study(path, readonly=True)
            try:
                self._check_settings(study.store)
            finally:
                study.close()

    def _check_settings(self, store: Store) -> None:
        """:class:`StudyFileError` unless ``store`` holds these settings (the budget may differ)."""
        old, new = store.settings, self.settings()
        diff = [d for k in _FIXED
                for d in _differences(k, old.get(k, _IMPLICIT.get(k)), new.get(k))]
        if diff:
            detail = "; ".join(f"{k}: study has {a!r}, requested {b!r}" for k, a, b in diff)
            raise StudyFileError(f"{store.path} was created with other settings ({detail}); use "
                                 "`lossforge resume` to continue it, or choose a new study file")
        if not self.allow_changed_task:
            check_task_unchanged(old, task_identity(self.task))

    def _open_store(self) -> Store:
        path = Path(self.storage)
        if not path.exists():
            return Store.create(path, self.settings())
        store = Store.open(path)
        try:
            self._check_settings(store)
        except StudyFileError:
            store.close()
            raise
        old = store.settings
        new = {**old, "budget": self.budget, **moved_or_changed(old, task_identity(self.task))}
        if new != old:
            if new.get("task_fingerprint") != old.get("task_fingerprint"):
                changes = store.meta("task_changes") or []
                store.set_meta("task_changes", changes + [{
                    "time": time.time(), "task_spec": old.get("task_spec"),
                    "task_fingerprint": old.get("task_fingerprint"), "explored": store.count()}])
            store.set_meta("settings", new)
        return store

    def _make_strategy(self) -> Strategy:
        from lossforge.expr import spaces

        if self.joint:
            from lossforge.expr.bundle import ProductSpace

            space = ProductSpace(tuple(
                (s.name, spaces.get(self.space, variables=sorted(s.variables - {"z"})))
                for s in self.task.loss_slots()))
        else:
            variables = sorted(self.task.slot(self.slot).variables - {"z"})
            space = spaces.get(self.space, variables=variables)
        cls = search.get_class(self.strategy)
        options = {**cls.task_options(self.task), **self.strategy_options}
        return cls(space, seed=self.seed, **options)

    def _make_funnel(self, config: FunnelConfig | None = None):
        config = config or self.funnel
        if self.joint:
            from lossforge.evaluation.joint import JointFunnel

            return JointFunnel(self.task, self.metric, config, self.executor)
        return Funnel(self.task, self.metric, config, self.executor, slot=self.slot,
                      fixed=self.fixed)

    def _measured_ladder(self, store: Store) -> FunnelConfig:
        """The funnel settings to run: ``self.funnel``, where ``min_steps="auto"`` is replaced by
        the ladder a rung check chose (:mod:`~lossforge.evaluation.rung_check`; run once per
        study on the search's executor, stored as meta ``"rung_check"`` and read back on
        resume). The stored settings
        keep ``"auto"``."""
        from dataclasses import replace

        from lossforge.evaluation.rung_check import (POOL_RANDOM, RungCheck, loss_pool,
                                                     search_check, summary_line)

        fid = self.funnel.proxy.fidelity
        if fid is None or not fid.auto:
            return self.funnel
        stored = store.meta("rung_check")
        if stored is not None:
            check = RungCheck.from_dict(stored)
        else:
            proxy = self.funnel.proxy
            top = int(fid.max_steps or proxy.steps or self.task.proxy.steps)
            if self.progress:
                self.progress({"event": "rung_check", "explored": store.count(), "generation": 0,
                               "budget": self.budget, "max_steps": top,
                               "losses": POOL_RANDOM + len(loss_pool(self.task))})
            check = search_check(self.task, self.metric, self._screening_stages(store), top,
                                 eta=fid.eta, seed=proxy.seed, device=proxy.device,
                                 executor=self.executor)
            store.set_meta("rung_check", check.to_dict())
        min_steps, brackets = check.choose()
        log.info("rung check: %s", summary_line(check))
        return replace(self.funnel, proxy=replace(self.funnel.proxy,
                                                  fidelity=fid.chosen(min_steps, brackets)))

    def _screening_stages(self, store: Store) -> list:
        """The search's screening stages (checks, GEC, LRP) without its proxy stage, calibrated
        as the search will be (the calibration is stored, so the search reads it back)."""
        from dataclasses import replace

        config = replace(self.funnel, proxy=replace(self.funnel.proxy, fidelity=None))
        funnel = Funnel(self.task, self.metric, config, slot=self.slot, fixed=self.fixed)
        _calibrate_once(store, funnel)
        return [stage for stage in funnel.stages if stage is not funnel.proxy]

    # --- the loop -------------------------------------------------------------------------------
    def run(self) -> Study:
        """Search until ``budget`` candidates are explored; returns the :class:`Study`."""
        store = self._open_store()
        strategy = self._make_strategy()
        funnel = self._make_funnel(self._measured_ladder(store))
        generation = 0
        ckpt = store.last_checkpoint()
        if ckpt is not None:
            generation = ckpt[0] + 1
            strategy.load_state_dict(ckpt[1]["strategy"])
        _calibrate_once(store, funnel)
        if self.funnel.proxy.optimizers:  # tuned learning rates, the stage, the baseline
            from lossforge.evaluation.optimizers import prepare_search

            prepare_search(store, self.task, self.metric, funnel, self.fixed)
        from lossforge.evaluation.baseline import ensure_baseline  # once per study, RNG untouched
        ensure_baseline(store, self.task, self.metric, self.funnel.proxy, self.fixed)
        for row in store.rows():  # what earlier runs learnt: GEC classes and results
            if row.fingerprint:
                funnel.gec.known.setdefault(row.fingerprint, row.formula)
            if row.status != GEC_HIT:
                funnel.known_results.setdefault(row.formula, row.fitness)
        while True:
            before = store.count_before(generation)
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
        todo = [pos for pos in range(len(exprs)) if pos not in stored]
        before = _stage_seconds(funnel)
        if todo:
            if hasattr(funnel.proxy, "bind"):  # multi-fidelity rungs: the store and positions
                funnel.proxy.bind(store, generation, todo)
            funnel.proxy.on_report = self._reporter(store, generation)
            cands = funnel.run([exprs[p] for p in todo],
                               on_result=lambda i, c: self._commit(store, generation, todo[i],
                                                                   exprs[todo[i]], c))
            for i, c in enumerate(cands):  # GEC hits resolve last: commit whatever is still open
                self._commit(store, generation, todo[i], exprs[todo[i]], c)
        rows = store.generation_rows(generation)
        strategy.tell([(exprs[p], scored(row_selection_fitness(rows[p]), rows[p].fingerprint))
                       for p in range(len(exprs))])
        seconds = {name: s - before[name] for name, s in _stage_seconds(funnel).items()}
        store.save_checkpoint(generation, {"strategy": strategy.state_dict(),
                                           "stage_seconds": seconds, "time": time.time()})

    def _commit(self, store: Store, generation: int, position: int, proposed: Expr,
                c: Candidate) -> None:
        store.add(generation, position, str(proposed), str(c.expr), c.expr.size(), c.status,
                  c.fitness, c.fingerprint, c.same_as, c.to_record())
        if self.progress:
            self.progress({"event": "result", "explored": store.count(), "budget": self.budget,
                           "generation": generation, "status": c.status, "formula": str(c.expr), "fitness": c.fitness,
                           "size": c.expr.size(), "reason": c.reason, "position": position})

    def _reporter(self, store: Store, generation: int):
        """The proxy stage's ``on_report``: a task's own loop's ``report(step, metrics)`` ->
        ``progress`` with event ``"report"`` (``None`` without ``progress``)."""
        if not self.progress:
            return None
        return lambda c, step, metrics: self.progress(
            {"event": "report", "explored": store.count(), "budget": self.budget,
             "generation": generation, "formula": str(c.expr), "step": step, "metrics": metrics})


def _calibrate_once(store: Store, funnel) -> None:
    """Calibrate ``funnel``'s LRP once per study: the stored calibration when there is one, else
    calibrate and store it."""
    calibrated = store.meta("calibration")
    if calibrated is None:
        funnel.calibrate()
        store.set_meta("calibration", funnel.calibration_state())
    else:
        funnel.load_calibration(calibrated)


def _with_fidelity(funnel: FunnelConfig, fidelity: Any, task: Task, joint: bool) -> FunnelConfig:
    """``funnel`` with ``LossSearch(fidelity=...)`` (a FidelityConfig, its dict or a kind name;
    ``None``: keep the funnel's) in its proxy settings, checked (the rung ladder must exist)."""
    from dataclasses import replace

    from lossforge.evaluation.rungs import FidelityConfig

    if fidelity is not None:
        funnel = replace(funnel, proxy=replace(funnel.proxy, fidelity=FidelityConfig.coerce(fidelity)))
    fid = funnel.proxy.fidelity
    if fid is not None:
        if joint:
            raise ValueError("multi-fidelity proxy training does not support joint searches yet; "
                             "use fidelity='none' or search one slot")
        if fid.auto:
            if len(task.loss_slots()) > 1:
                raise ValueError("min_steps='auto' (a rung check with the zoo's losses) supports "
                                 "single-loss tasks; give min_steps and brackets")
        else:
            fid.ladder(funnel.proxy.steps or task.proxy.steps)  # ValueError: no such ladder
    return funnel


def _fidelity_summary(store: Store, best: Row | None) -> dict[str, Any] | None:
    from lossforge.evaluation.fidelity import study_fidelity

    return study_fidelity(store, best)


def _stage_seconds(funnel) -> dict[str, float]:
    """Seconds spent so far in each stage of ``funnel`` (which holds each stage as the attribute
    named after it), in :data:`STAGES` order."""
    return {name: getattr(funnel, name).stats.seconds for name in STAGES}


def _either(names: list[str], conjunction: str) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"`` (or ``"a, b or c"``)."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {conjunction} {names[-1]}"


def _differences(key: str, a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    """The leaves where two settings values differ, as (dotted key, a, b)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(f"{key}.{k}", a.get(k), b.get(k))]
    return [] if a == b else [(key, a, b)]


def prepare_resume(path: str | Path, executor: Any = None, progress=None,
                   budget: int | None = None, task: Task | str | None = None,
                   allow_changed_task: bool = False) -> LossSearch:
    """The checked :class:`LossSearch` that continues the study at ``path`` (see :func:`resume`),
    before anything runs: the study file, the task (:func:`study_task`) and every setting."""
    store = Store.open(path)
    s = store.settings
    store.close()
    task = study_task(s, task, path=path, allow_changed_task=allow_changed_task)
    search = LossSearch(task=task, storage=path, metric=s["metric"], strategy=s["strategy"],
                        budget=budget or s["budget"], seed=s["seed"], space=s["space"],
                        funnel=FunnelConfig.from_dict(s["funnel"]),
                        strategy_options=s["strategy_options"], executor=executor,
                        progress=progress, slot=s.get("slot"), fixed=s.get("fixed", {}),
                        joint=bool(s.get("joint", False)), allow_changed_task=allow_changed_task)
    search.check()
    return search


def resume(path: str | Path, executor: Any = None, progress=None, budget: int | None = None,
           task: Task | str | None = None, allow_changed_task: bool = False) -> Study:
    """Continue the study at ``path`` with its stored settings (optionally a new ``budget``).

    ``task``: a study of a built-in task reloads it by name; a study of a task file or module
    needs it named again (a spec such as ``"my_task.py:Wine"``, or the task object; its name must
    match the study's): a study file never imports code by itself. A task file changed since the
    study was created is refused (:class:`~lossforge.study_task.StudyTaskChangedError`) unless ``allow_changed_task``."""
    return prepare_resume(path, executor, progress, budget, task, allow_changed_task).run()
