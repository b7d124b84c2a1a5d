"""Stage 5 of DESIGN.md §5, in place of the single proxy training: multi-fidelity rungs (ASHA).

:class:`MultiFidelityTraining` is the funnel's ``proxy`` stage when
``ProxyStageConfig.fidelity`` is an active :class:`~lossforge.evaluation.rungs.FidelityConfig`
(the rung ladder, brackets, promotion rule and cross-rung order are documented in
:mod:`~lossforge.evaluation.rungs`). Every candidate that passed screening trains to rung 0 of its
bracket; a candidate that the promotion rule promotes *continues* from where it stopped (model,
optimiser and RNG state, :class:`~lossforge.training.TrainState`; the data order is a function of
the seed), so its result at a rung of ``s`` steps is exactly that of one straight training of
``s`` steps. A task with its own training loop (:meth:`~lossforge.tasks.Task.fit`) cannot be
continued: each rung restarts ``fit`` with the rung's steps (the rung record says
``restart: true``).

Jobs. A rung is one ordinary job (:func:`rung_job`, plain picklable arguments) on whatever
executor the stage has: in-process, local processes, Dask. Without an executor, the rungs waiting
to be trained at one moment (a generation's rung 0; the promotions one result unlocks) train
together on the stacked engine when the task allows it (:func:`rung_batch`, chunks of
``ProxyStageConfig.batch``; ``batch=1`` trains one at a time): continuation then holds to float
noise instead of bit for bit (a validation sample may flip), as for the single-length proxy's
batches, and the promotions are the ones one-at-a-time training would make on those results. Continuation state travels in files
beside the study (``<study>.rungs/g<generation>-p<position>-r<rung>.pt``, written atomically by
the job before its result is committed; removed once the candidate's outcome is final), which
workers on the same file system read and write. In-process runs (no executor, or a serial one)
keep the states in memory and write no files (a save and load cost 7 ms on ``digits`` and 27 ms
on ``shapes-seg`` per rung, 2-4 % of a short rung); after a kill, a promotion whose state was in
memory retrains from scratch to its rung's steps — the same result, more steps. Without a study
(no :meth:`bind`), worker states go to a temporary folder.

Persistence. Each rung result (position, rung, bracket, steps, status, fitness, metrics, seconds)
is handed to the bound store the moment its job returns (``Store.add_rung``). A resumed
generation reads its stored rung results back: finished rungs are not trained again, a promotion
whose rung is missing continues from the stored state file (or, if that is gone, retrains from
scratch to the rung's steps — the same result). Because promotion decisions follow the fixed
(generation, position) order, a resumed search reaches the same study as an uninterrupted one.

The candidate's outcome: status ``trained`` with the fitness and metrics of the highest rung
reached, or ``invalid`` / ``failed`` at the first rung that diverged or crashed (no fitness);
``Candidate.fidelity`` holds ``{"bracket", "rung", "steps", "top"}`` (``top``: the bracket's top
rung index) and ``Candidate.seconds["proxy"]`` the seconds of all its rungs.
"""
from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossforge.evaluation.candidate import FAILED, INVALID, TRAINED, Candidate
from lossforge.evaluation.own_loop import Reports, fit_job
from lossforge.evaluation.proxy import ProxyStageConfig, ProxyTraining, _result
from lossforge.evaluation.rungs import FidelityConfig, bracket_of, top_indices
from lossforge.tasks import Task, overrides_fit

if TYPE_CHECKING:
    from lossforge.training import TrainState


def rung_job(task: Task, formula, metric: str, steps: int, seed: int, device: str = "cpu",
             state_in: "str | TrainState | None" = None, state_out: str | None = None,
             report: Reports | None = None, return_state: bool = False) -> dict:
    """Train ``formula`` to ``steps`` steps and return ``{"status", "fitness", "metrics",
    "seconds", "steps_done", "started_at", "restart"}``.

    ``state_in``: where to continue from — a :class:`~lossforge.training.TrainState` (in-process
    runs keep them in memory) or the path of a saved one (workers); a path that does not exist
    means a fresh start. A trained run writes its end state to the file ``state_out`` when given,
    and returns it under ``"state"`` when ``return_state``. A task with its own loop restarts
    ``fit`` with ``steps`` (``restart`` true; no states). Exceptions in the training become
    status ``failed`` (as :func:`~lossforge.evaluation.proxy.safe_proxy_job`)."""
    from lossforge.training import OK, TrainState, train

    try:
        if overrides_fit(task):
            out = fit_job(task, formula, metric, steps, seed, device, report)
            return {**out, "restart": True}
        state = state_in if isinstance(state_in, TrainState) else (
            TrainState.load(state_in) if state_in and Path(state_in).exists() else None)
        keep = state_out is not None or return_state
        result = train(task, formula, steps=steps, seed=seed, device=device, splits=("val",),
                       state=state, keep_state=keep)
    except (RuntimeError, ValueError, FloatingPointError) as err:
        return {"status": FAILED, "fitness": None, "reason": f"{type(err).__name__}: {err}"}
    if result.status == OK and state_out is not None:
        result.state.save(state_out)
    return _outcome(result, task.metric(metric).sign, metric, state, return_state)


def _outcome(result, sign: float, metric: str, state_in, keep_state: bool) -> dict:
    """A rung's result dict from a training's result (status ``OK`` or ``INVALID``):
    ``state_in`` is the state it continued from (``None``: a fresh start)."""
    from lossforge.training import OK

    ok = result.status == OK
    out = {"status": TRAINED if ok else INVALID,
           "fitness": sign * result.val[metric] if ok else None, "metrics": result.val,
           "seconds": result.wall_time, "steps_done": result.steps_done,
           "started_at": 0 if state_in is None else state_in.steps_done, "restart": False}
    if ok and keep_state:
        out["state"] = result.state
    return out


def rung_batch(task: Task, losses: list, metric: str, steps: int, seed: int, device: str,
               states: list, keep_state: bool) -> list[dict]:
    """:func:`rung_job` for several losses at once on the stacked engine
    (:func:`~lossforge.training.stacked.train_batched`; in-process only): ``states`` (one
    :class:`~lossforge.training.TrainState` or ``None`` each) share one ``steps_done``. One result
    dict per loss, with ``"state"`` when ``keep_state``. A copy that raised, or a batch that could
    not run (a loss that does not load), goes through :func:`rung_job` for the exact sequential
    outcome and reason."""
    from lossforge.training import OK
    from lossforge.training.stacked import train_batched

    def one(loss, state):
        return rung_job(task, loss, metric, steps, seed, device, state_in=state,
                        return_state=keep_state)

    try:
        results = train_batched(task, losses, steps=steps, seed=seed, device=device,
                                splits=("val",), states=states, keep_state=keep_state)
    except (RuntimeError, ValueError, FloatingPointError):
        return [one(loss, state) for loss, state in zip(losses, states)]
    sign = task.metric(metric).sign
    # a copy that raised in the batch goes through the sequential job, which says why
    return [_outcome(r, sign, metric, state, keep_state) if r.status in (OK, INVALID)
            else one(loss, state) for loss, state, r in zip(losses, states, results)]


@dataclass
class RungResult:
    """One finished rung of one candidate (what the store keeps; ``started_at``: the step the
    training continued from, 0 for a fresh or restarted run)."""

    position: int
    rung: int
    bracket: int
    steps: int
    status: str
    fitness: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    started_at: int = 0
    restart: bool = False
    reason: str = ""


@dataclass
class _Track:
    """One candidate's way up the rungs in this generation."""

    cand: Candidate
    position: int
    bracket: int
    results: dict[int, RungResult] = field(default_factory=dict)
    promoted_to: int = 0          # the highest rung it is allowed to train
    final: bool = False
    seen_at: dict[int, int] = field(default_factory=dict)  # rung -> index in that rung's results
    #: a candidate of this generation committed before a resume: its stored rungs are replayed
    #: (they count in the rung statistics) but it is neither trained nor reported again
    ghost: bool = False


class MultiFidelityTraining(ProxyTraining):
    """The ``proxy`` stage with rungs (module docstring). Same interface as
    :class:`~lossforge.evaluation.proxy.ProxyTraining` (``__call__(candidates, on_done)``,
    ``stats``, ``on_report``), plus :meth:`bind` (the study's store for one generation)."""

    def __init__(self, task: Task, metric: str, config: ProxyStageConfig, executor=None,
                 slot: str | None = None, fixed: dict[str, str] | None = None):
        super().__init__(task, metric, config, executor, slot=slot, fixed=fixed)
        self.fidelity: FidelityConfig = config.fidelity
        self.ladder = self.fidelity.ladder(config.steps or task.proxy.steps)
        self._store = None
        self._generation = 0
        self._positions: list[int] | None = None
        self._state_dir: Path | None = None
        #: rung results per (bracket, rung) of candidates before this generation, in order
        self.history: dict[tuple[int, int], list[float]] = {}
        #: every rung result of this stage's life, for the benchmark and tests
        self.rung_log: list[RungResult] = []
        #: in-process runs: (position, rung) -> the TrainState at the end of that rung
        self._memory: dict[tuple[int, int], Any] = {}
        #: in-process rung jobs waiting to be trained together: (future, track, rung)
        self._pending: list[tuple[Future, _Track, int]] = []

    # --- the study's side -----------------------------------------------------------------------
    def bind(self, store, generation: int, positions: list[int]) -> None:
        """Evaluate the next call's candidates as ``positions`` of ``generation`` of the study in
        ``store``: promotion history from the rung results of earlier generations, the stored
        rung results of this generation reused, each new one committed with ``store.add_rung``,
        state files in ``<study>.rungs/``."""
        self._store, self._generation, self._positions = store, generation, list(positions)
        self._state_dir = Path(f"{store.path}.rungs")
        self.history = {}
        for r in store.rung_rows(before=generation):
            if r.fitness is not None:
                self.history.setdefault((r.bracket, r.rung), []).append(r.fitness)

    def _stored(self) -> dict[tuple[int, int], RungResult]:
        if self._store is None:
            return {}
        return {(r.position, r.rung): RungResult(r.position, r.rung, r.bracket, r.steps, r.status,
                                                 r.fitness, r.metrics, r.seconds,
                                                 r.details.get("started_at", 0),
                                                 r.details.get("restart", False),
                                                 r.details.get("reason", ""))
                for r in self._store.rung_rows(generation=self._generation)}

    def _commit(self, track: _Track, res: RungResult) -> None:
        self.rung_log.append(res)
        if self._store is not None:
            self._store.add_rung(self._generation, res.position, res.rung, res.bracket, res.steps,
                                 str(track.cand.expr), res.status, res.fitness, res.metrics,
                                 res.seconds, {"started_at": res.started_at,
                                               "restart": res.restart, "reason": res.reason})

    @property
    def in_process(self) -> bool:
        """Whether rung jobs run in this process (no executor, or a serial one): their
        continuation states then stay in memory (:attr:`_memory`), never in files."""
        return self.executor is None or bool(getattr(self.executor, "serial", False))

    def _state_path(self, track: _Track, rung: int) -> str | None:
        if rung >= len(self.ladder[track.bracket]) - 1 or self._state_dir is None:
            return None  # the top rung (nothing continues from it), or an in-process run
        return str(self._state_dir / f"g{self._generation}-p{track.position}-r{rung}.pt")

    def _state_in(self, track: _Track, rung: int):
        """Where rung ``rung`` of ``track`` continues from: the in-memory state of rung
        ``rung - 1``, else its file (a study started on workers and resumed in-process), else
        ``None`` (a fresh start: the same result, more steps)."""
        if rung == 0:
            return None
        return self._memory.get((track.position, rung - 1)) or self._state_path(track, rung - 1)

    # --- the stage ------------------------------------------------------------------------------
    def __call__(self, candidates: list[Candidate], on_done=None) -> None:
        """Race the pending candidates up the rungs; ``on_done(candidate)`` as each one's outcome
        becomes final (in the promotion order, not necessarily as trainings finish)."""
        todo = [c for c in candidates if not c.done]
        if not todo:
            return
        positions = self._positions if self._positions is not None else list(range(len(candidates)))
        index = {id(c): i for i, c in enumerate(candidates)}
        tmp = None
        if not self.in_process:
            if self._state_dir is None:
                tmp = self._state_dir = Path(tempfile.mkdtemp(prefix="lossforge-rungs-"))
            self._state_dir.mkdir(parents=True, exist_ok=True)
        try:
            with _timed(self.stats):
                self.stats.n_in += len(todo)
                tracks = [_Track(c, positions[index[id(c)]],
                                 bracket_of(positions[index[id(c)]], len(self.ladder)))
                          for c in todo]
                self._race(tracks, on_done)
        finally:
            self._positions = None
            self._memory.clear()
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                self._state_dir = None

    def _race(self, tracks: list[_Track], on_done) -> None:
        """ASHA over ``tracks``: each (bracket, rung) has a queue of the candidates that entered
        it — rung 0 in position order, higher rungs in the order of their promotions — walked
        in order as results become known; every result walked may promote any candidate of this
        generation parked at that rung that is now in the top ⌊n/η⌋ of the rung's results.
        Candidates still parked when nothing runs stop at their rung."""
        stored = self._stored()
        mine = {t.position for t in tracks}
        for pos in sorted({p for p, _k in stored} - mine):
            tracks = tracks + [_Track(None, pos, stored[(pos, 0)].bracket, ghost=True)]
        tracks.sort(key=lambda t: t.position)
        for t in tracks:
            for k in range(len(self.ladder[t.bracket])):
                if (t.position, k) in stored:
                    t.results[k] = stored[(t.position, k)]
        keys = [(b, k) for b in range(len(self.ladder)) for k in range(len(self.ladder[b]))]
        queues = {key: [t for t in tracks if t.bracket == key[0]] if key[1] == 0 else []
                  for key in keys}
        cursors = dict.fromkeys(keys, 0)
        seen = {key: list(self.history.get(key, [])) for key in keys}
        parked: dict[tuple[int, int], list[_Track]] = {key: [] for key in keys}
        running: dict[Future, tuple[_Track, int]] = {}
        for t in tracks:
            self._start(t, 0, running)
        while True:
            self._walk(queues, cursors, seen, parked, running, on_done)
            self._train_pending()
            if not running:
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for f in sorted(done, key=lambda f: (running[f][0].position, running[f][1])):
                t, k = running.pop(f)
                self._finish_rung(t, k, _result(f))
        for key in keys:  # nothing runs any more: the parked stop where they are
            for t in sorted(parked[key], key=lambda t: t.position):
                self._finalise(t, key[1], on_done)
        for t in tracks:
            assert t.final, f"candidate at position {t.position} left undecided"

    def _walk(self, queues, cursors, seen, parked, running, on_done) -> None:
        """Advance every rung's queue over the results known now (see :meth:`_race`)."""
        progress = True
        while progress:
            progress = False
            for (b, k), queue in queues.items():
                while cursors[(b, k)] < len(queue):
                    t = queue[cursors[(b, k)]]
                    res = t.results.get(k)
                    if res is None:
                        break  # not trained yet
                    cursors[(b, k)] += 1
                    progress = True
                    top = k == len(self.ladder[b]) - 1
                    if res.status != TRAINED or top:
                        self._finalise(t, k, on_done)
                        continue
                    t.seen_at[k] = len(seen[(b, k)])
                    seen[(b, k)].append(res.fitness)
                    parked[(b, k)].append(t)
                    for winner in promotable(parked[(b, k)], seen[(b, k)], k, self.fidelity.eta):
                        parked[(b, k)].remove(winner)
                        queues[(b, k + 1)].append(winner)
                        self._start(winner, k + 1, running)

    def _start(self, t: _Track, k: int, running: dict) -> None:
        """Train ``t`` to rung ``k`` unless its result is already known (stored)."""
        t.promoted_to = k
        if k in t.results:
            return
        steps = self.ladder[t.bracket][k]
        if self.executor is None and self._stacks:  # trained with the others waiting
            future = Future()
            self._pending.append((future, t, k))
            running[future] = (t, k)
            return
        if self.in_process:
            keep = k < len(self.ladder[t.bracket]) - 1
            args = (self.task, self.loss_spec(t.cand.expr), self.metric, steps, self.config.seed,
                    self.config.device, self._state_in(t, k), None)
            kw = {"report": self.reporter(t.cand), "return_state": keep}
            future: Future = Future()
            if self.executor is None:
                future.set_result(rung_job(*args, **kw))
            else:
                future = self.executor.submit(rung_job, *args, **kw)
        else:
            args = (self.task, self.loss_spec(t.cand.expr), self.metric, steps, self.config.seed,
                    self.config.device, self._state_in(t, k), self._state_path(t, k))
            future = self.executor.submit(rung_job, *args)
        running[future] = (t, k)

    @property
    def _stacks(self) -> bool:
        """Whether in-process rungs train together on the stacked engine
        (:func:`~lossforge.evaluation.proxy.can_stack` with ``config.batch``)."""
        if not hasattr(self, "_can_stack"):
            from lossforge.evaluation.proxy import can_stack

            self._can_stack = can_stack(self.task, self.config.batch)
        return self._can_stack

    def _train_pending(self) -> None:
        """Train the deferred in-process rung jobs: those with the same steps that continue from
        the same step together (:func:`rung_batch`, chunks of ``config.batch``), and resolve
        their futures. Every decision waits for these results anyway (:meth:`_race` walks
        after training), so promotions are what one-at-a-time training would give — up to the
        float noise of stacked training."""
        from lossforge.training import TrainState

        groups: dict[tuple[int, int, bool], list] = {}
        for future, t, k in self._pending:
            state = self._state_in(t, k)
            if isinstance(state, str):  # a state file (a study begun on workers)
                state = TrainState.load(state) if Path(state).exists() else None
            key = (self.ladder[t.bracket][k], state.steps_done if state is not None else 0,
                   k < len(self.ladder[t.bracket]) - 1)
            groups.setdefault(key, []).append((future, t, state))
        self._pending = []
        chunk = max(1, self.config.batch)
        for (steps, _start, keep), jobs in groups.items():
            for lo in range(0, len(jobs), chunk):
                part = jobs[lo:lo + chunk]
                outs = rung_batch(self.task, [self.loss_spec(t.cand.expr) for _f, t, _s in part],
                                  self.metric, steps, self.config.seed, self.config.device,
                                  [st for _f, _t, st in part], keep)
                for (future, _t, _s), out in zip(part, outs):
                    future.set_result(out)

    def _finish_rung(self, t: _Track, k: int, out: dict) -> None:
        state = out.pop("state", None)
        if state is not None:
            self._memory[(t.position, k)] = state
        res = RungResult(t.position, k, t.bracket, self.ladder[t.bracket][k], out["status"],
                         out.get("fitness"), out.get("metrics", {}), out.get("seconds", 0.0),
                         out.get("started_at", 0), bool(out.get("restart", False)),
                         out.get("reason", ""))
        t.results[k] = res
        self._commit(t, res)

    def _finalise(self, t: _Track, k: int, on_done) -> None:
        """``t``'s outcome is its result at rung ``k``."""
        t.final = True
        if t.ghost:
            return
        res, c = t.results[k], t.cand
        c.status, c.fitness, c.metrics = res.status, res.fitness, res.metrics
        c.reason = res.reason
        c.seconds[self.name] = sum(r.seconds for r in t.results.values())
        c.fidelity = {"bracket": t.bracket, "rung": k, "steps": res.steps,
                      "top": len(self.ladder[t.bracket]) - 1}
        if c.status == TRAINED:
            self.stats.n_out += 1
        if on_done is not None:
            on_done(c)
        for j in range(k + 1):  # nothing continues from this candidate any more
            self._memory.pop((t.position, j), None)
            path = self._state_path(t, j)
            if path:
                Path(path).unlink(missing_ok=True)


def promotable(parked: list[_Track], seen: list[float], rung: int, eta: int) -> list[_Track]:
    """The candidates of ``parked`` (trained at ``rung``, not promoted) whose result is among the
    best ``⌊n/η⌋`` of the ``n`` results ``seen`` at that rung
    (:func:`~lossforge.evaluation.rungs.top_indices`), in position order."""
    top = top_indices(seen, eta)
    return sorted((t for t in parked if t.seen_at[rung] in top), key=lambda t: t.position)


def _timed(stats):
    from lossforge.evaluation.stage import timed

    return timed(stats)


def make_proxy_stage(task: Task, metric: str, config: ProxyStageConfig, executor=None,
                     slot: str | None = None, fixed: dict[str, str] | None = None) -> ProxyTraining:
    """The funnel's ``proxy`` stage for ``config``: :class:`MultiFidelityTraining` when
    ``config.fidelity`` is set, else the single-length :class:`ProxyTraining`."""
    cls = MultiFidelityTraining if config.fidelity is not None else ProxyTraining
    return cls(task, metric, config, executor, slot=slot, fixed=fixed)


def rung_summary(rows: list, ladder_hint: Any = None) -> dict[str, Any]:
    """How many candidates stopped at each rung length and the proxy steps spent, from stored
    rung rows (``Store.rung_rows()``): ``{"candidates", "stopped_at": {steps: n}, "steps_spent",
    "seconds"}``; steps spent count only the steps each rung trained (continued rungs from where
    they started)."""
    last: dict[tuple[int, int], Any] = {}
    spent = 0
    seconds = 0.0
    for r in rows:
        key = (r.generation, r.position)
        if key not in last or r.rung > last[key].rung:
            last[key] = r
        spent += r.steps - int(r.details.get("started_at", 0) or 0)
        seconds += r.seconds or 0.0
    stopped: dict[int, int] = {}
    for r in last.values():
        stopped[r.steps] = stopped.get(r.steps, 0) + 1
    return {"candidates": len(last), "stopped_at": dict(sorted(stopped.items())),
            "steps_spent": spent, "seconds": seconds}


def row_selection_fitness(row) -> float | None:
    """What strategies are told for a stored candidate: its fitness, or with multi-fidelity the
    cross-rung :func:`~lossforge.evaluation.rungs.selection_value` of (steps reached, fitness)."""
    from lossforge.evaluation.rungs import selection_value

    steps = (row.details.get("fidelity") or {}).get("steps")
    return selection_value(steps, row.fitness) if steps else row.fitness


def row_steps(row) -> int:
    """The proxy steps a stored candidate reached with multi-fidelity (0 without)."""
    return int((row.details.get("fidelity") or {}).get("steps") or 0)


def study_fidelity(store, best=None) -> dict[str, Any] | None:
    """What ``show`` and the report print about a study's rungs (``None`` for a study without
    multi-fidelity): its settings, :func:`rung_summary`, ``rungs``: the trained
    candidates, each ``{"generation", "position", "formula", "rungs"}`` with one ``{"rung",
    "bracket", "steps", "status", "fitness", "metrics", "seconds"}`` per finished rung, and
    ``best_rung``: where the study's ``best`` row stopped, ``{"steps", "rung", "top"}`` (``top``:
    its bracket's top rung index; ``None`` without a best or rungs), and ``rung_check``: the
    stored :class:`~lossforge.evaluation.rung_check.RungCheck` dict of a ``min_steps="auto"``
    study (``None`` otherwise)."""
    settings = (store.settings.get("funnel") or {}).get("proxy", {}).get("fidelity")
    rows = store.rung_rows()
    if not settings and not rows:
        return None
    per: dict[tuple[int, int], dict] = {}
    for r in rows:
        entry = per.setdefault((r.generation, r.position), {
            "generation": r.generation, "position": r.position, "formula": r.formula, "rungs": []})
        entry["rungs"].append(
            {"rung": r.rung, "bracket": r.bracket, "steps": r.steps, "status": r.status,
             "fitness": r.fitness, "metrics": r.metrics, "seconds": r.seconds})
    f = (best.details.get("fidelity") or {}) if best is not None else {}
    best_rung = {k: f.get(k) for k in ("steps", "rung", "top")} if f.get("steps") else None
    return {"settings": settings, **rung_summary(rows), "rungs": list(per.values()),
            "best_rung": best_rung, "rung_check": store.meta("rung_check")}


def best_rung_warning(best: dict | None) -> str | None:
    """What to say when the best loss stopped below its bracket's top rung (``None``: it reached
    it, or there is no best): its fitness is a short training's, which on some tasks ranks losses
    at random (benchmarks/fidelity_rank.py)."""
    if not best or best.get("rung") is None or best.get("top") is None \
            or best["rung"] >= best["top"]:
        return None
    return (f"the best loss was judged at {best['steps']} proxy steps, below its top rung: no "
            f"full-length training backs it. Retrain it before trusting it (lossforge refine "
            f"STUDY, or evaluate --loss FORMULA).")
