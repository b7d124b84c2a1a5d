"""The transfer panel: do a study's best losses still work when the user changes the training?

``transfer_panel(study_path, top=, seeds=, settings=None) -> dict``

A search scores each loss under one training setup (the task's proxy: usually Adam at one learning
rate). Adam normalises each parameter's gradient, so it trains with losses whose gradient *scale*
is absurd; under plain SGD such a loss collapses (issue 18: ``square(inv(p * y))`` reaches 0.987
accuracy on ``digits`` with Adam and chance with SGD). The panel retrains the study's ``top``
losses, cross-entropy (classification) and the task's baseline under several setups and ranks them
by how they do in the *worst* of them.

Settings (:func:`default_settings`), each ``steps`` = the study's proxy steps unless it says
otherwise:

* ``task``: the task's own setup (its :class:`~lossforge.tasks.ProxyConfig`);
* ``sgd``: SGD with momentum 0.9 at a learning rate tuned once for the baseline loss (CE) on the
  task: the grid :data:`SGD_LR_GRID`, one training each (seed 1, validation metric), the best
  kept; the tuning is cached in the study (meta ``"panel_sgd_lr"``) and reused by later panels;
* ``lr x0.5`` and ``lr x2``: the task's optimizer at half and twice its learning rate;
* ``steps x2``: twice the steps;
* ``arch=NAME``: another architecture where the task offers one (``task.archs``; default the first
  that is not the task's own), made by the task's class with the task's recorded options.

A task with its own training loop (``Task.fit``) decides its optimizer itself: its panel keeps the
settings lossforge can change for it (``task``, ``steps x2``, ``arch=``), and the stored panel
says which were skipped.

Ranking (:func:`rank_panel`), the robust aggregate: within each setting, losses are ranked by mean
validation metric over the seeds (a loss with an invalid run below every loss without one; equal
means share a rank); a loss's panel score is its **worst rank over the settings**, ties by the
**mean over settings** of its mean metric (in the metric's direction). A loss that collapses under
one setting thus ranks below every loss that works under all of them, however good it is under
Adam. The study's proxy seed 0 is never used: panel seeds start at 1.

Ties (:func:`tied_with_best`): a loss is tied with the best when its mean metric over settings is
within ``tol`` of the best's and under no setting is it worse than the best by more than ``tol``,
where ``tol = sigma * sqrt(2 / n)`` is one standard error of a difference of two ``n``-seed means
and ``sigma`` the pooled seed-to-seed standard deviation of the panel's cells (ranks alone would
separate losses whose means differ by noise). When the best is tied, the panel adds ``tie_seeds`` more seeds to the tied losses under
every setting (evidence) and ranks again; what it did is stored (``tie_break``). Expression size
never breaks a tie.

Verdict (:func:`transfer_verdict`): a searched loss **transferred** when its worst rank is at or
above CE's (the reference; the baseline where the task has no CE) and under no setting is it worse
than CE with Welch p < 0.05 or invalid. The panel recommends the best-ranked loss that
transferred; when none did, ``show``, ``export``, the report and the CLI say plainly "no searched
loss transferred: CE ranks first under …" (or which setting failed each loss ranked at or above
CE). ``export`` of a loss the panel ranked below its recommendation warns
(:func:`panel_warning`).

Storage and resumption: the panel's settings are stored first (meta ``"panel"``), then each
(setting, loss, seed) training as it finishes (table ``panel_runs``, :meth:`Store.add_panel_run`).
Calling again with the same arguments skips every stored training, so a killed panel resumes
where it stopped; other arguments raise ``ValueError`` unless ``restart=True``. The study's own
candidates are never modified. Scores are on the validation split: the test split is never
computed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lossforge.evaluation.optimizers import tune_lr, with_training
from lossforge.evaluation.own_loop import training_run
from lossforge.refine import _jsonable, _loss_text, candidates
from lossforge.storage import json_safe
from lossforge.study import Study, load_study
from lossforge.study_task import study_task
from lossforge.tasks import Task, overrides_fit
from lossforge.training import OK

META_KEY = "panel"
SGD_LR_KEY = "panel_sgd_lr"
#: Learning rates tried for SGD (momentum 0.9) with the baseline loss, once per study.
SGD_LR_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
SGD_MOMENTUM = 0.9
CE = "ce"


@dataclass(frozen=True)
class Setting:
    """One training setup of the panel. ``None`` fields keep the task's own value; ``steps`` is
    absolute (the panel fills it in)."""

    name: str
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    steps: int | None = None
    arch: str | None = None

    def describe(self, task_optimizer: str = "the task's optimizer") -> str:
        """Plain words, e.g. ``"sgd lr 0.03 momentum 0.9, 300 steps"``."""
        parts = [self.optimizer or task_optimizer]
        if self.lr is not None:
            parts.append(f"lr {self.lr:g}")
        if self.momentum is not None and (self.optimizer or task_optimizer) == "sgd":
            parts.append(f"momentum {self.momentum:g}")
        if self.arch:
            parts.append(f"arch {self.arch}")
        return " ".join(parts) + (f", {self.steps} steps" if self.steps else "")


def other_arch(task: Task) -> str | None:
    """The first architecture the task offers (``task.archs``) that is not its own
    (``task.arch``); ``None`` when it offers no other."""
    archs, own = getattr(task, "archs", None) or (), getattr(task, "arch", None)
    others = [a for a in archs if a != own]
    return others[0] if own is not None and others else None


def with_arch(task: Task, arch: str) -> Task:
    """``task`` rebuilt by its class with its recorded options and ``arch``; ``ValueError`` when
    the task takes no ``arch`` or not this one."""
    from lossforge.tasks.options import task_options

    if arch not in (getattr(task, "archs", None) or ()):
        raise ValueError(f"task {task.name!r} offers no architecture {arch!r}; it offers "
                         f"{', '.join(getattr(task, 'archs', ()) or ()) or 'none'}")
    return type(task)(**{**task_options(task), "arch": arch})


def setting_task(task: Task, setting: Setting) -> Task:
    """The task to train ``setting`` on (``setting.steps`` is passed to the training itself)."""
    t = with_arch(task, setting.arch) if setting.arch else task
    if setting.optimizer or setting.lr is not None or setting.momentum is not None:
        t = with_training(t, optimizer=setting.optimizer, lr=setting.lr, momentum=setting.momentum)
    return t


def tune_sgd_lr(study: Study, task: Task, loss: str, steps: int, device: str = "cpu",
                grid: Sequence[float] = SGD_LR_GRID) -> float:
    """The learning rate of ``grid`` at which SGD (momentum 0.9) trains ``loss`` best on the
    validation split (seed 1, ``steps`` steps; :func:`lossforge.evaluation.optimizers.tune_lr`);
    each grid point is stored in the study as it finishes (meta ``"panel_sgd_lr"``) and reused.
    An invalid run scores last; ties: the smaller learning rate."""
    lr, _ = tune_lr(study.meta(SGD_LR_KEY), lambda c: study.set_meta(SGD_LR_KEY, c), task, loss,
                    "sgd", steps, study.settings["metric"], grid, seed=1, device=device)
    return lr


def default_settings(task: Task, steps: int, sgd_lr: float | None, arch: str | None = None
                     ) -> tuple[list[Setting], list[str]]:
    """The panel for ``task`` (see the module docstring) and the names of settings skipped (a
    task with its own loop: the optimizer settings; no other architecture: ``arch``)."""
    lr = task.proxy.lr
    settings = [Setting("task", steps=steps)]
    skipped = []
    opt = [Setting("sgd", optimizer="sgd", lr=sgd_lr, momentum=SGD_MOMENTUM, steps=steps),
           Setting("lr x0.5", lr=lr * 0.5, steps=steps), Setting("lr x2", lr=lr * 2, steps=steps)]
    if overrides_fit(task):
        skipped += [s.name for s in opt]
    else:
        settings += opt
    settings.append(Setting("steps x2", steps=2 * steps))
    arch = arch or other_arch(task)
    if arch:
        settings.append(Setting(f"arch={arch}", steps=steps, arch=arch))
    else:
        skipped.append("arch")
    return settings, skipped


# --- ranking -------------------------------------------------------------------------------------
def cell_stats(values: Sequence[float | None]) -> dict[str, Any]:
    """``mean``/``std`` (ddof 1; 0 for one run) of the valid values, ``runs``, ``invalid``."""
    valid = [float(v) for v in values if v is not None and math.isfinite(v)]
    return {"runs": len(values), "invalid": len(values) - len(valid),
            "mean": float(np.mean(valid)) if valid else math.nan,
            "std": float(np.std(valid, ddof=1)) if len(valid) > 1 else 0.0 if valid else math.nan,
            "values": list(values)}


def rank_panel(values: dict[str, dict[str, Sequence[float | None]]], higher_is_better: bool = True
               ) -> list[dict[str, Any]]:
    """Rank losses by the panel's aggregate (module docstring). ``values[setting][loss]`` are the
    per-seed validation metrics (``None``: an invalid run). Returns one entry per loss, best
    first: ``loss``, ``rank`` (1 = best), ``worst_rank``, ``mean_metric`` (mean over settings of
    the cell means; ``nan`` if a cell has no valid run), ``ranks`` (setting -> rank) and
    ``means`` (setting -> cell mean). Equal
    keys keep the order in which the losses first appear in ``values``."""
    sign = 1.0 if higher_is_better else -1.0
    losses = list(dict.fromkeys(loss for cells in values.values() for loss in cells))
    ranks: dict[str, dict[str, int]] = {loss: {} for loss in losses}
    means: dict[str, dict[str, float]] = {loss: {} for loss in losses}
    for setting, cells in values.items():
        stats = {loss: cell_stats(v) for loss, v in cells.items()}

        def key(loss: str) -> tuple:
            s = stats[loss]
            score = sign * s["mean"] if math.isfinite(s["mean"]) else -math.inf
            return (s["invalid"] > 0, s["invalid"], -score)

        keys = {loss: key(loss) for loss in stats}
        for loss, k in keys.items():  # competition ranking: equal cells share a rank
            ranks[loss][setting] = 1 + sum(other < k for other in keys.values())
            means[loss][setting] = stats[loss]["mean"]
    order = {loss: i for i, loss in enumerate(losses)}
    rows = []
    for loss in losses:
        m = list(means[loss].values())
        mean_metric = float(np.mean(m)) if m and all(math.isfinite(x) for x in m) else math.nan
        rows.append({"loss": loss, "worst_rank": max(ranks[loss].values()),
                     "mean_metric": mean_metric, "ranks": ranks[loss], "means": means[loss]})
    rows.sort(key=lambda r: (r["worst_rank"], -(sign * r["mean_metric"])
                             if math.isfinite(r["mean_metric"]) else math.inf, order[r["loss"]]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def seed_noise(values: dict[str, dict[str, Sequence[float | None]]]) -> float:
    """The pooled seed-to-seed standard deviation of the panel's cells (root mean of the cell
    variances with ≥ 2 valid runs); ``nan`` when no cell has two."""
    var = [cell_stats(v)["std"] ** 2 for cells in values.values() for v in cells.values()
           if sum(x is not None and math.isfinite(x) for x in v) > 1]
    return float(math.sqrt(np.mean(var))) if var else math.nan


def tied_with_best(ranking: list[dict[str, Any]], sigma: float, n_seeds: int,
                   higher_is_better: bool = True) -> list[str]:
    """The losses tied with the best of ``ranking`` (the best included): mean metric within
    ``tol = sigma * sqrt(2 / n_seeds)`` of the best's and no setting where it is worse than the
    best by more than ``tol`` (module docstring). Without a noise estimate (``sigma`` nan) only
    exactly equal means are ties."""
    if not ranking or not math.isfinite(ranking[0]["mean_metric"]):
        return [ranking[0]["loss"]] if ranking else []
    best, sign = ranking[0], 1.0 if higher_is_better else -1.0
    tol = sigma * math.sqrt(2.0 / max(n_seeds, 1)) if math.isfinite(sigma) else 0.0

    def tied(r: dict[str, Any]) -> bool:
        if not math.isfinite(r["mean_metric"]):
            return False
        behind = [sign * (best["means"][s] - r["means"][s]) for s in best["means"]]
        return abs(r["mean_metric"] - best["mean_metric"]) <= tol + 1e-12 and \
            all(b <= tol + 1e-12 for b in behind)

    return [r["loss"] for r in ranking if tied(r)]


# --- the panel -------------------------------------------------------------------------------------
def panel_losses(study: Study, task: Task, top: int) -> tuple[list[str], dict[str, str]]:
    """The losses of the panel, in order: the study's ``top`` candidates (best first), then CE
    (classification) and the task's baseline when not among them; and formula -> the loss text
    to train (slot searches: with the study's fixed slots)."""
    chosen = [f for f, _ in candidates(study, top)]
    extra = ([CE] if task.kind == "classification" and task.baseline != CE else []) + \
        [task.baseline]
    losses = chosen + [e for e in dict.fromkeys(extra) if e not in chosen]
    texts = {f: _loss_text(study, f) if f in chosen else f for f in losses}
    return losses, texts


def _table(study: Study, state: dict[str, Any]) -> dict[str, dict[str, list[float | None]]]:
    """``values[setting][loss]`` = per-seed validation metrics (``None`` invalid), seeds in order."""
    runs = {(r["setting"], r["loss"], r["seed"]): r for r in study.store.panel_runs()}
    metric = state["metric"]
    out: dict[str, dict[str, list]] = {}
    for s in state["settings"]:
        out[s["name"]] = {}
        for loss in state["losses"]:
            seeds = sorted(seed for (st, lo, seed) in runs if st == s["name"] and lo == loss)
            out[s["name"]][loss] = [runs[(s["name"], loss, seed)]["metrics"].get(metric)
                                    if runs[(s["name"], loss, seed)]["status"] == OK else None
                                    for seed in seeds]
    return out


def _train_missing(study: Study, task: Task, state: dict[str, Any], texts: dict[str, str],
                   losses: Sequence[str], seeds: Sequence[int], device: str,
                   progress: Callable[[int, int, str, str], None] | None) -> None:
    """Train every (setting, loss, seed) of ``losses`` × ``seeds`` not stored yet, storing each."""
    done = {(r["setting"], r["loss"], r["seed"]) for r in study.store.panel_runs()}
    jobs = [(Setting(**s), loss, seed) for s in state["settings"] for loss in losses
            for seed in seeds if (s["name"], loss, seed) not in done]
    tasks: dict[str, Task] = {}
    for i, (setting, loss, seed) in enumerate(jobs):
        t = tasks.setdefault(setting.name, setting_task(task, setting))
        r = training_run(t, texts[loss], steps=setting.steps, seed=seed, device=device,
                         split="val", metric=state["metric"])
        study.store.add_panel_run(setting.name, loss, seed, r.status, r.val, r.wall_time)
        if progress:
            progress(i + 1, len(jobs), setting.name, loss)


def transfer_panel(study_path: str | Path, top: int = 4, seeds: int = 3,
                   settings: list[Setting] | None = None, *, arch: str | None = None,
                   steps: int | None = None, tie_seeds: int = 2, restart: bool = False,
                   device: str = "cpu", task: Task | str | None = None,
                   allow_changed_task: bool = False, losses: Sequence[str] | None = None,
                   sgd_lr_grid: Sequence[float] = SGD_LR_GRID,
                   progress: Callable[[int, int, str, str], None] | None = None
                   ) -> dict[str, Any]:
    """Run (or resume) the transfer panel of the study at ``study_path`` and return the stored
    panel (:func:`panel_result`). ``top``: the study's best distinct losses to include;
    ``seeds``: seeds 1..``seeds`` per (setting, loss); ``settings``: the setups (default
    :func:`default_settings`, with the study's proxy steps or ``steps``); ``arch``: the other
    architecture (default: the task's first other one); ``tie_seeds``: seeds added to the losses
    tied with the best (0: no tie-break); ``losses``: train these instead of the study's top
    (CE and the baseline are still added) — for checking given losses; ``sgd_lr_grid``: the
    learning rates tried for the ``sgd`` setting (:func:`tune_sgd_lr`). ``task`` and
    ``allow_changed_task`` as in :func:`lossforge.refine.refine_study`. ``progress(done, total,
    setting, loss)`` after each training."""
    if top < 1 or seeds < 1 or tie_seeds < 0:
        raise ValueError(f"top and seeds must be at least 1 and tie_seeds at least 0, got top "
                         f"{top}, seeds {seeds}, tie_seeds {tie_seeds}")
    study = load_study(study_path)
    try:
        task = study_task(study.settings, task, path=study_path,
                          allow_changed_task=allow_changed_task, verb="refine")
        base_steps = int(steps or study.settings["funnel"]["proxy"].get("steps")
                         or task.proxy.steps)
        if losses is not None:
            names, texts = _given_losses(task, losses)
        else:
            if not candidates(study, top):
                raise ValueError(f"{study_path} has no trained loss; run or resume the search first")
            names, texts = panel_losses(study, task, top)
        spec = {"top": top, "seeds": list(range(1, seeds + 1)), "steps": base_steps,
                "losses": names, "tie_seeds": tie_seeds,
                "given": None if settings is None else [asdict(s) for s in settings], "arch": arch,
                "sgd_lr_grid": list(sgd_lr_grid)}
        state = study.meta(META_KEY)
        if state is not None and not restart and state.get("spec") != _jsonable(spec):
            raise ValueError(f"{study_path} holds a transfer panel with other settings "
                             f"({state.get('spec')}); pass the same ones to continue it, or "
                             "restart it (CLI: --restart)")
        if state is None or restart:
            study.store.clear_panel_runs()
            state = _new_state(study, task, spec, settings, arch, base_steps, device, sgd_lr_grid)
        _train_missing(study, task, state, texts, names, spec["seeds"], device, progress)
        _break_ties(study, task, state, texts, device, progress)
        return panel_result(study)
    finally:
        study.close()


def _given_losses(task: Task, losses: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    extra = ([CE] if task.kind == "classification" else []) + [task.baseline]
    names = list(dict.fromkeys([*losses, *extra]))
    return names, {n: n for n in names}


def _new_state(study: Study, task: Task, spec: dict, settings: list[Setting] | None,
               arch: str | None, steps: int, device: str, grid: Sequence[float]
               ) -> dict[str, Any]:
    """Tune SGD's learning rate if needed, fix the settings, store the panel's header."""
    skipped: list[str] = []
    if settings is None:
        needs_sgd = not overrides_fit(task)
        sgd_lr = tune_sgd_lr(study, task, task.baseline, steps, device, grid) if needs_sgd else None
        settings, skipped = default_settings(task, steps, sgd_lr, arch)
    metric = study.settings["metric"]
    state = {"spec": _jsonable(spec), "metric": metric, "losses": spec["losses"],
             "reference": CE if CE in spec["losses"] else task.baseline,
             "higher_is_better": task.metric(metric).higher_is_better,
             "task_optimizer": task.proxy.optimizer, "task_lr": task.proxy.lr,
             "settings": [asdict(s) for s in settings], "skipped": skipped,
             "sgd_lr": study.meta(SGD_LR_KEY), "tie_break": None,
             "baselines": [x for x in spec["losses"] if x in (CE, task.baseline)]}
    study.set_meta(META_KEY, _jsonable(state))
    return _jsonable(state)


def _break_ties(study: Study, task: Task, state: dict[str, Any], texts: dict[str, str],
                device: str, progress) -> None:
    """If the best is tied (:func:`tied_with_best`), train the tied losses on ``tie_seeds`` more
    seeds under every setting and store what was done in ``state["tie_break"]``."""
    n, extra = len(state["spec"]["seeds"]), int(state["spec"]["tie_seeds"])
    if state.get("tie_break") is None:
        values = _table(study, state)
        ranking = rank_panel(values, state["higher_is_better"])
        tied = tied_with_best(ranking, seed_noise(values), n, state["higher_is_better"])
        state["tie_break"] = {"tied": tied, "seeds_added":
                              list(range(n + 1, n + 1 + extra)) if len(tied) > 1 and extra else []}
        study.set_meta(META_KEY, state)
    tb = state["tie_break"]
    if tb["seeds_added"]:
        _train_missing(study, task, state, texts, tb["tied"], tb["seeds_added"], device, progress)


def panel_result(study: Study) -> dict[str, Any] | None:
    """The stored panel of ``study`` with its table and ranking (:func:`summarize_panel`), or
    ``None`` when it has none."""
    state = study.meta(META_KEY)
    return None if state is None else summarize_panel(state, _table(study, state))


def summarize_panel(state: dict[str, Any], values: dict[str, dict[str, Sequence[float | None]]]
                    ) -> dict[str, Any]:
    """The panel of header ``state`` (as stored: ``settings``, ``losses``, ``metric``,
    ``reference``, ``higher_is_better``, ``spec``, ``sgd_lr``, ``tie_break``, …) and per-seed
    metrics ``values[setting][loss]``: the header plus ``cells`` (setting -> loss -> ``mean``,
    ``std``, ``runs``, ``invalid``, ``values``, ``delta`` and ``p`` vs the reference: Welch's
    t-test), ``ranking`` (:func:`rank_panel`), ``tied`` (losses still tied with the best after the
    tie-break), ``sigma`` (:func:`seed_noise`), ``best``, ``complete`` (every planned training
    stored), and for a complete panel ``verdict`` (:func:`transfer_verdict`) and ``recommended``
    (its loss, or ``None``). JSON-safe: undefined numbers (``nan``) are ``None``."""
    from lossforge.comparison import welch_p

    ref = state["reference"]
    cells: dict[str, dict[str, Any]] = {}
    for setting, by_loss in values.items():
        ref_vals = [v for v in by_loss.get(ref, []) if v is not None and math.isfinite(v)]
        cells[setting] = {}
        for loss, vals in by_loss.items():
            c = cell_stats(vals)
            valid = [v for v in vals if v is not None and math.isfinite(v)]
            c["delta"] = c["mean"] - float(np.mean(ref_vals)) if ref_vals else math.nan
            c["p"] = welch_p(valid, ref_vals) if loss != ref else math.nan
            cells[setting][loss] = c
    ranking = rank_panel(values, state["higher_is_better"])
    sigma = seed_noise(values)
    n = len(state["spec"]["seeds"])
    planned = len(state["settings"]) * len(state["losses"]) * n
    stored = sum(min(len(v), n) for by in values.values() for v in by.values())
    complete = stored >= planned
    verdict = transfer_verdict(ranking, json_safe(cells), state) if complete else None
    return json_safe({**state, "cells": cells, "ranking": ranking, "sigma": sigma,
                      "tied": tied_with_best(ranking, sigma, n, state["higher_is_better"]),
                      "complete": complete, "best": ranking[0]["loss"] if ranking else None,
                      "verdict": verdict,
                      "recommended": verdict["recommended"] if verdict else None})


#: Significance level of "worse than the reference" in the verdict.
ALPHA = 0.05


def baseline_losses(state: dict[str, Any]) -> list[str]:
    """The panel's non-searched losses: CE and the task's baseline (stored as ``baselines``;
    panels stored before it: CE and the reference)."""
    return list(state.get("baselines") or {CE, state["reference"]} & set(state["losses"]))


def worse_under(cells: dict[str, dict[str, Any]], loss: str, higher_is_better: bool,
                alpha: float = ALPHA) -> list[str]:
    """The settings under which ``loss`` is worse than the reference with Welch p < ``alpha``,
    or has an invalid run (a diverged training is a failure whatever the p-value)."""
    sign = 1.0 if higher_is_better else -1.0
    out = []
    for setting, by_loss in cells.items():
        c = by_loss[loss]
        worse = c["delta"] is not None and math.isfinite(c["delta"]) and sign * c["delta"] < 0 \
            and c["p"] is not None and math.isfinite(c["p"]) and c["p"] < alpha
        if c["invalid"] or worse:
            out.append(setting)
    return out


def transfer_verdict(ranking: list[dict[str, Any]], cells: dict[str, dict[str, Any]],
                     state: dict[str, Any], alpha: float = ALPHA) -> dict[str, Any]:
    """What the panel recommends, in plain words. A searched loss (not CE or the baseline)
    **transferred** when its worst rank over the settings is at or above the reference's (CE,
    else the baseline) and under no setting is it worse than the reference with Welch p <
    ``alpha`` or invalid. Returns ``recommended`` (the best-ranked loss that transferred, or
    ``None``), ``transferred`` (all of them, best first), ``worse_under`` (searched loss ->
    settings where it is significantly worse) and ``text``: ``"recommended after the panel:
    …"`` or ``"no searched loss transferred: CE ranks first under …"`` (the reason)."""
    ref, hib = state["reference"], state["higher_is_better"]
    base = set(baseline_losses(state))
    by_loss = {r["loss"]: r for r in ranking}
    searched = [r for r in ranking if r["loss"] not in base]
    worse = {r["loss"]: worse_under(cells, r["loss"], hib, alpha) for r in searched}
    ref_rank = by_loss[ref]["worst_rank"] if ref in by_loss else math.inf
    ok = [r["loss"] for r in searched if r["worst_rank"] <= ref_rank and not worse[r["loss"]]]
    names = ", ".join(s["name"] for s in state["settings"])
    out = {"recommended": ok[0] if ok else None, "transferred": ok, "worse_under": worse}
    if ok:
        r = by_loss[ok[0]]
        out["text"] = (f"recommended after the panel: {ok[0]} (worst rank {r['worst_rank']}, "
                       f"{ref} {ref_rank}; not worse than {ref} with p < {alpha:g} under any of "
                       f"{names})")
        return out
    first = ranking[0]["loss"] if ranking else ref
    if not searched:
        why = "the panel holds no searched loss"
    elif first in base:
        best = searched[0]
        why = (f"{first} ranks first under {names} (worst rank over them); the best searched "
               f"loss, {best['loss']}, has worst rank {best['worst_rank']}")
        if worse[best["loss"]]:
            why += (f" and is worse than {ref} with p < {alpha:g} (or invalid) under "
                    + ", ".join(worse[best["loss"]]))
    else:
        above = [r["loss"] for r in searched if r["worst_rank"] <= ref_rank]
        why = (f"each searched loss ranked at or above {ref} is worse than it with p < "
               f"{alpha:g} (or invalid) under some setting: "
               + "; ".join(f"{lo}: {', '.join(worse[lo])}" for lo in above))
    out["text"] = f"no searched loss transferred: {why}"
    return out


# --- what the user is told ---------------------------------------------------------------------------
def checked_under(study: Study, formula: str | None) -> dict[str, Any]:
    """Under which setups ``formula`` was trained in ``study``: ``setups`` (plain words: the
    search proxy, refine rounds, panel settings with a stored run), ``optimizers`` (the distinct
    optimizers among them, where known) and ``warning`` (text, or ``None``) when it was checked
    under one optimizer only."""
    s = study.settings
    proxy_steps = (s.get("funnel") or {}).get("proxy", {}).get("steps")
    multi = proxy_optimizers(study, top=0)
    if multi:
        lrs = multi["lrs"]
        opts = " and ".join(o + (f" lr {lrs[o]:g}" if lrs.get(o) else "") for o in multi["optimizers"])
        setups = [f"search proxy ({opts}, scored by the worst; {proxy_steps or 'default'} steps, "
                  "seed 0)"]
    else:
        setups = [f"search proxy (the task's optimizer, {proxy_steps or 'default'} steps, seed 0)"]
    panel = study.meta(META_KEY)
    optimizers = {panel["task_optimizer"]} if panel else set()
    optimizers |= set(multi["optimizers"]) if multi else set()
    refine = study.meta("refine")
    for r in (refine or {}).get("results", []):
        if any(st["loss"] == formula for st in r["standings"]):
            setups.append(f"refine round {r['round']} ({r['steps']} steps, seeds {r['seeds']})")
    if panel and formula in panel["losses"]:
        trained = {r["setting"] for r in study.store.panel_runs() if r["loss"] == formula}
        for st in panel["settings"]:
            if st["name"] in trained:
                setting = Setting(**st)
                setups.append(f"panel {st['name']} ({setting.describe(panel['task_optimizer'])})")
                optimizers.add(st["optimizer"] or panel["task_optimizer"])
    warning = None
    if len(optimizers) <= 1:
        warning = ("checked under one optimizer only (the task's): it may fail under another, e.g. "
                   "SGD; run `lossforge refine STUDY --panel` to check it under SGD, other learning "
                   "rates, longer training and another architecture")
    full = panel_result(study) if panel else None
    return {"formula": formula, "setups": setups, "optimizers": sorted(optimizers),
            "warning": warning, "panel_warning": panel_warning(full, formula) if full else None}


def panel_warning(panel: dict[str, Any], formula: str) -> str | None:
    """What a stored, complete panel says against ``formula`` (``None``: nothing, or it is the
    panel's recommendation): where it ranked (``last`` called out) and the settings under which it
    is significantly worse than the reference, or that it was not in the panel; each followed by
    the panel's recommendation or its verdict that no searched loss transferred."""
    if not panel.get("complete") or formula == panel.get("recommended"):
        return None
    verdict = panel["verdict"]
    after = (f"the panel recommends {panel['recommended']}" if panel.get("recommended")
             else verdict["text"])
    if formula not in panel["losses"]:
        return f"not in the stored transfer panel; {after}"
    ranking = [r["loss"] for r in panel["ranking"]]
    k, n = ranking.index(formula) + 1, len(ranking)
    text = f"the transfer panel ranked it {k} of {n}" + (" (last)" if k == n and n > 1 else "")
    worse = verdict["worse_under"].get(formula)
    if worse:
        text += (f"; worse than {panel['reference']} with p < {ALPHA:g} (or invalid) under "
                 + ", ".join(worse))
    return f"{text}; {after}"


def search_ties(study: Study, sigma: float | None = None) -> dict[str, Any]:
    """How many distinct trained formulas are tied with the search's best: ``exact`` (the same
    fitness, to 1e-12) and, when a seed-noise estimate ``sigma`` is known (default: the stored
    panel's, :func:`seed_noise`), ``within_noise``: within one seed's standard deviation of the
    best fitness (a single-seed score differs from its mean by about ``sigma``)."""
    best: dict[str, float] = {}
    for r in study.trained():
        best[r.formula] = max(best.get(r.formula, -math.inf), r.fitness)
    if not best:
        return {"exact": 0, "within_noise": None, "sigma": None}
    top = max(best.values())
    if sigma is None:
        panel = panel_result(study)
        sigma = panel["sigma"] if panel else None
    ok = sigma is not None and math.isfinite(sigma)
    return {"exact": sum(abs(f - top) <= 1e-12 for f in best.values()),
            "within_noise": sum(top - f <= sigma for f in best.values()) if ok else None,
            "sigma": sigma if ok else None}


def _panel_pick(panel: dict[str, Any]) -> str | None:
    """The loss a complete panel points the user to: its recommendation, else its best-ranked
    searched loss (whose ``checked`` then carries the verdict), else its best."""
    if panel.get("recommended"):
        return panel["recommended"]
    base = set(baseline_losses(panel))
    searched = [r["loss"] for r in panel["ranking"] if r["loss"] not in base]
    return searched[0] if searched else panel["best"]


def show_extras(study: Study) -> dict[str, Any]:
    """What ``lossforge show`` adds for issue 18: ``panel`` (:func:`panel_result` or ``None``),
    ``ties`` (:func:`search_ties`) and ``checked`` (:func:`checked_under` for the recommended
    loss: the panel's recommendation when a complete panel is stored — else its best-ranked
    searched loss —, else refine's best, else the search's)."""
    panel = panel_result(study)
    refine = study.meta("refine")
    best = study.best
    rec = (_panel_pick(panel) if panel and panel["complete"] else
           refine["survivors"][0] if refine and refine.get("results") else
           best.formula if best else None)
    return {"panel": panel, "ties": search_ties(study, panel["sigma"] if panel else None),
            "checked": checked_under(study, rec) if rec else None,
            "proxy_optimizers": proxy_optimizers(study)}


def proxy_optimizers(study: Study, top: int = 10) -> dict[str, Any] | None:
    """For a search trained under several optimizers (``--proxy-optimizers``): ``optimizers``,
    ``lrs`` (optimizer -> the tuned learning rate; the task's own optimizer is absent),
    ``baseline`` (the stored baseline: its ``fitness`` and ``by_optimizer``) and ``losses``: the ``top`` hall-of-fame
    entries, each ``formula``, ``fitness`` (the worst) and ``by_optimizer`` (optimizer -> the
    validation metric). ``None`` for a search under one optimizer."""
    from lossforge.evaluation.optimizers import LR_KEY, parse_optimizers, per_optimizer

    opts = parse_optimizers((study.settings.get("funnel") or {}).get("proxy", {}).get("optimizers"))
    if not opts:
        return None
    metric = study.settings["metric"]
    tuned = study.meta(LR_KEY) or {}
    return {"optimizers": list(opts), "metric": metric,
            "lrs": {o: c.get("lr") for o, c in tuned.items()},
            "baseline": study.baseline if (study.baseline or {}).get("by_optimizer") else None,
            "losses": [{"formula": h.formula, "fitness": h.fitness,
                        "by_optimizer": per_optimizer(h.metrics, metric)}
                       for h in study.hall_of_fame[:top]]}


__all__ = ["ALPHA", "CE", "SGD_LR_GRID", "Setting", "baseline_losses", "cell_stats",
           "checked_under", "default_settings", "other_arch", "panel_result", "panel_warning",
           "proxy_optimizers", "rank_panel", "search_ties", "seed_noise", "setting_task", "show_extras",
           "summarize_panel", "tied_with_best", "transfer_panel", "transfer_verdict",
           "tune_sgd_lr", "with_arch", "with_training", "worse_under"]
