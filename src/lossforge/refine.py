"""Refine a finished search: its best losses raced by successive halving, stored in the study.

``refine_study(path, rounds, top=) -> dict``

A search ranks each loss by one proxy training with one seed, so its best fitness is the maximum of
many noisy numbers (optimistically biased). Refining retrains the ``top`` distinct trained losses
of the study longer and with fresh seeds, round after round, keeping the best of each round
(:func:`~lossforge.evaluation.halving.successive_halving`: validation split only, a loss with a
non-finite run ranked last). Contract:

* Candidates: the study's trained losses by fitness, best first (ties: smaller, then earlier);
  for a slot search each is trained with the study's ``fixed`` losses in the other slots.
* Rounds are :class:`RoundSpec` (steps, seeds, keep). Each finished round is committed to the
  study file (meta key ``"refine"``) before the next starts; calling again with the same top and
  rounds continues after the last finished round (other settings: ``ValueError`` naming them, or
  ``restart=True`` to discard the stored refinement).
* The study's own candidates and results are never modified.
* A task with its own training loop (``Task.fit`` overridden) is retrained by that loop, as in
  the search (successive halving trains through
  :func:`~lossforge.evaluation.own_loop.training_run`).
* The task: a built-in one is loaded by its stored name; a study of a task file or module needs
  it named again (``task=``, CLI ``--task``), and a task file changed since the study was created
  is refused unless ``allow_changed_task`` (:func:`lossforge.study_task.study_task`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from lossforge.evaluation.halving import HalvingRound, successive_halving
from lossforge.study import Study, load_study
from lossforge.study_task import study_task
from lossforge.tasks import Task

META_KEY = "refine"


@dataclass(frozen=True)
class RoundSpec:
    """One round: train ``steps`` steps (``None``: the task's proxy default) with each of
    ``seeds``, keep the best ``keep``."""

    steps: int | None
    seeds: tuple[int, ...]
    keep: int

    @classmethod
    def parse(cls, text: str) -> "RoundSpec":
        """``"STEPS:SEEDS:KEEP"``, e.g. ``"240:3:4"`` = 240 steps, seeds 1..3, keep 4 (``STEPS``
        may be ``proxy`` for the task's default). Fresh seeds start at 1: the search used 0."""
        parts = text.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            steps = None if parts[0] == "proxy" else int(parts[0])
            n_seeds, keep = int(parts[1]), int(parts[2])
            if (steps is not None and steps < 1) or n_seeds < 1 or keep < 1:
                raise ValueError
        except ValueError:
            raise ValueError(f"round {text!r}: expected STEPS:SEEDS:KEEP with positive integers "
                             "(e.g. 240:3:4; STEPS may be 'proxy')") from None
        return cls(steps, tuple(range(1, n_seeds + 1)), keep)


def default_rounds(top: int, proxy_steps: int) -> list[RoundSpec]:
    """Halve ``top`` each round, doubling the steps and adding a seed, down to 2 survivors."""
    rounds, n, steps, seeds = [], top, 2 * proxy_steps, 2
    while n > 2 or not rounds:
        n = max(1, n // 2)
        rounds.append(RoundSpec(steps, tuple(range(1, seeds + 1)), n))
        steps, seeds = 2 * steps, seeds + 1
    return rounds


def _loss_text(study: Study, formula: str) -> str:
    """The loss to train for a stored candidate: one formula, or every slot's (``a=…; b=…``)."""
    s = study.settings
    if s.get("joint"):
        return "; ".join(f"{k}={v}" for k, v in study.parse_candidate(formula).loss_spec().items())
    fixed = dict(s.get("fixed") or {})
    slot = s.get("slot") or "loss"
    if slot == "loss" and not fixed:
        return formula
    return "; ".join(f"{k}={v}" for k, v in {slot: formula, **fixed}.items())


def candidates(study: Study, top: int) -> list[tuple[str, float]]:
    """The ``top`` distinct trained formulas of ``study`` with their search fitness, best first."""
    rows = sorted(study.trained(), key=lambda r: (-r.fitness, r.size, r.id))
    out: dict[str, float] = {}
    for r in rows:
        if len(out) == top:
            break
        out.setdefault(r.formula, r.fitness)
    return list(out.items())


def refine_study(path: str | Path, rounds: list[RoundSpec] | None = None, top: int = 8,
                 restart: bool = False, device: str = "cpu",
                 progress: Callable[[int, int, int, str], None] | None = None,
                 task: Task | str | None = None, allow_changed_task: bool = False
                 ) -> dict[str, Any]:
    """Race the study's ``top`` losses through ``rounds`` (default :func:`default_rounds`) and
    store each finished round in the study. Returns the stored refinement: ``top``, ``rounds``
    (the specs), ``search_fitness`` (formula -> search fitness), ``results`` (one per finished
    round: standings best first) and ``survivors`` (best first, as formulas). ``task`` and
    ``allow_changed_task``: see the module docstring."""
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    study = load_study(path)
    try:
        task = study_task(study.settings, task, path=path, allow_changed_task=allow_changed_task,
                          verb="refine")
        proxy_steps = int(study.settings["funnel"]["proxy"].get("steps") or task.proxy.steps)
        rounds = list(rounds) if rounds else default_rounds(top, proxy_steps)
        chosen = candidates(study, top)
        if not chosen:
            raise ValueError(f"{path} has no trained loss to refine; run or resume the search first")
        spec = {"top": top, "rounds": [asdict(r) for r in rounds]}
        state = study.meta(META_KEY)
        if state is not None and not restart and \
                {"top": state["top"], "rounds": state["rounds"]} != _jsonable(spec):
            raise ValueError(f"{path} holds a refinement with other settings (top {state['top']}, "
                             f"rounds {state['rounds']}); pass the same ones to continue it, or "
                             "restart it (CLI: --restart)")
        if state is None or restart:
            state = {**_jsonable(spec), "metric": study.settings["metric"],
                     "search_fitness": dict(chosen), "results": [],
                     "survivors": [f for f, _ in chosen]}
            study.set_meta(META_KEY, state)
        texts = {f: _loss_text(study, f) for f in state["search_fitness"]}
        formula_of = {t: f for f, t in texts.items()}
        for i in range(len(state["results"]), len(rounds)):
            r = rounds[i]
            res = successive_halving(
                [texts[f] for f in state["survivors"]],
                [HalvingRound(task, r.keep, r.steps, r.seeds, label=f"round {i + 1}")],
                metric=state["metric"], device=device,
                progress=None if progress is None else
                (lambda _i, done, total, name, i=i: progress(i, done, total, formula_of[name])))
            done = res.rounds[0]
            standings = [{**asdict(s), "loss": formula_of[s.loss]} for s in done.standings]
            state["results"].append({"round": i + 1, "steps": done.steps, "seeds": done.seeds,
                                     "keep": done.keep, "standings": standings})
            state["survivors"] = [formula_of[n] for n in done.kept]
            study.set_meta(META_KEY, state)  # committed: a crash loses at most the running round
        return state
    finally:
        study.close()


def _jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from the study's JSON (tuples become lists)."""
    return json.loads(json.dumps(obj))


__all__ = ["RoundSpec", "candidates", "default_rounds", "refine_study"]
