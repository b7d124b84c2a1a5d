"""``lossforge search`` and ``lossforge resume``: run a loss search with the live view on stderr
(off with ``--format json``: stdout then gets the final summary only) and an executor from the
``--workers``/``--dask``/``--timeout`` options.

:func:`make_search` turns the command-line options into a checked
:class:`~lossforge.study.LossSearch`; :func:`run_search` runs a search with the view and the
executor and returns the study's summary.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

import typer

from lossforge.cli._app import (_DASK, _FORMAT, _TIMEOUT, _WORKERS, Format, app, emit, err_console,
                                fail, guarded)
from lossforge.cli._task_options import (ALLOW_CHANGED_HELP, STUDY_TASK_HELP, TASK_HELP,
                                         TASK_OPTION_HELP, load_task_with_options)

if TYPE_CHECKING:
    from lossforge.evaluation.funnel import FunnelConfig
    from lossforge.study import LossSearch

#: Hall-of-fame entries in the summary ``search``/``resume`` print at the end.
TOP = 10


def funnel_config(proxy_steps: int | None = None, lrp_steps: int | None = None, use_lrp: bool = True,
                  use_gec: bool = True, proxy_optimizers: str | None = None,
                  lrp_width: int | None = None) -> FunnelConfig:
    """The default :class:`~lossforge.evaluation.funnel.FunnelConfig` with the command line's
    changes (``None``: keep the default)."""
    from dataclasses import replace

    from lossforge.evaluation.funnel import FunnelConfig

    cfg = FunnelConfig()
    if proxy_steps is not None:
        cfg = replace(cfg, proxy=replace(cfg.proxy, steps=proxy_steps))
    if lrp_steps is not None:
        cfg = replace(cfg, lrp=cfg.lrp.with_steps(lrp_steps))  # the same summed step
    if lrp_width is not None:
        if lrp_width < 1:
            raise ValueError(f"--lrp-width must be a positive number of pixels, got {lrp_width}")
        cfg = replace(cfg, lrp=replace(cfg.lrp, spatial_size=lrp_width))
    if proxy_optimizers:  # "adam,sgd": checked by parse_optimizers (a clear ValueError)
        from lossforge.evaluation.optimizers import parse_optimizers

        cfg = replace(cfg, proxy=replace(cfg.proxy, optimizers=parse_optimizers(proxy_optimizers)))
    return replace(cfg, use_lrp=use_lrp, use_gec=use_gec)


def make_search(task: str, study: str | Path, *, metric: str | None = None,
                strategy: str = "autoloss-zero", budget: int = 100, seed: int = 0,
                space: str | None = None, proxy_steps: int | None = None,
                lrp_steps: int | None = None, use_lrp: bool = True, use_gec: bool = True,
                population: int | None = None, generation_size: int | None = None,
                options: Sequence[str] = (), slot: str | None = None, fixed: Sequence[str] = (),
                joint: bool = False, allow_changed_task: bool = False,
                task_options: Sequence[str] = (),
                fidelity: dict[str, Any] | None = None,
                proxy_optimizers: str | None = None, lrp_width: int | None = None) -> LossSearch:
    """A :class:`~lossforge.study.LossSearch` from command-line values, every setting checked
    (task — a built-in name or a spec, :func:`~lossforge.tasks.spec.load_task` —, metric, strategy
    and its ``KEY=VALUE`` ``options``, slots, ``SLOT=LOSS`` ``fixed``, an existing study file's
    settings and task file) before any worker starts; ``task_options``: the task's ``KEY=VALUE``
    settings (``--task-option``, stored with the study's settings). Errors: ``ValueError`` (a
    :class:`~lossforge.storage.StudyFileError` for the file, a
    :class:`~lossforge.tasks.spec.TaskSpecError` for the task), ``TypeError`` for unknown strategy
    options. ``fidelity``: the :class:`~lossforge.evaluation.rungs.FidelityConfig` fields
    (``kind``, ``min_steps``, ``max_steps``, ``eta``, ``brackets``; ``None``: one proxy length).
    ``proxy_optimizers``: e.g. ``"adam,sgd"`` (:mod:`lossforge.evaluation.optimizers`);
    ``lrp_width``: the dense screening probe's width (``LRPConfig.spatial_size``)."""
    from lossforge.search.strategy import parse_options
    from lossforge.study import LossSearch
    from lossforge.training.loss_spec import slot_assignments

    if budget <= 0:
        raise ValueError(f"--budget must be a positive number of candidates, got {budget}")
    strategy_options = {k: v for k, v in (("population_size", population),
                                          ("batch_size", generation_size)) if v}
    strategy_options.update(parse_options(list(options), "--option"))
    funnel = funnel_config(proxy_steps, lrp_steps, use_lrp, use_gec, proxy_optimizers, lrp_width)
    run = LossSearch(task=load_task_with_options(task, task_options), storage=study, metric=metric, strategy=strategy, budget=budget,
                     seed=seed, space=space, funnel=funnel, strategy_options=strategy_options,
                     slot=slot, fixed=slot_assignments(list(fixed), "--fixed"), joint=joint,
                     allow_changed_task=allow_changed_task, fidelity=fidelity)
    run.check()
    return run


def run_search(run: LossSearch, title: str, path: str | Path, budget: int | None = None, *,
               live: bool = True, workers: int | None = None, dask: str | None = None,
               timeout: float | None = None) -> dict[str, Any]:
    """Run the checked search ``run`` with the live view on stderr (``live``) as its progress
    callback and the executor the options ask for; the finished study's summary (top :data:`TOP`)."""
    from lossforge.cli.live import LiveView, SearchView
    from lossforge.execution import make_executor

    # no option: executor None, the API's default (in-process, where the proxy stage may batch)
    plain = workers is None and dask is None and timeout is None
    executor = None if plain else make_executor(workers=workers, dask=dask, timeout=timeout)
    try:
        run.executor = executor
        if not live:  # stdout gets the final JSON only, stderr nothing
            run.progress = None
            study = run.run()
        else:
            view = SearchView(title, study=path, budget=budget,
                              executor="in-process" if plain else repr(executor))
            with LiveView(err_console, view) as shown:
                run.progress = shown.update
                study = run.run()
    finally:
        if executor is not None:
            executor.shutdown()
    from lossforge.transfer import show_extras

    try:  # what `show` says of the study: the summary, the panel, ties, setups checked
        summary = study.summary(top=TOP)
        summary.update(show_extras(study))
        return summary
    finally:
        study.close()


def _print_summary(summary: dict[str, Any], format: Format) -> None:
    emit(summary, format, "print_study")


@app.command("search")
@guarded
def search_cli(
    task: str = typer.Option(..., "--task", help=TASK_HELP),
    task_option: List[str] = typer.Option([], "--task-option", help=TASK_OPTION_HELP),
    study: str = typer.Option(..., "--study", help="Study file (SQLite); an existing one is continued."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Target metric (default: the task's)."),
    strategy: str = typer.Option("autoloss-zero", "--strategy",
                                 help="autoloss-zero | aging | glo | taylor | random"),
    budget: int = typer.Option(100, "--budget", help="Candidates to explore (put through the funnel)."),
    seed: int = typer.Option(0, "--seed"),
    space: Optional[str] = typer.Option(None, "--space", help="Search space (default: the strategy's)."),
    proxy_steps: Optional[int] = typer.Option(None, "--proxy-steps", help="Proxy training steps."),
    lrp_steps: Optional[int] = typer.Option(None, "--lrp-steps", help="Loss-rejection protocol steps (default 500); the lr is scaled by 500/S to keep the summed step: 200 keeps 99.5 % of its decisions, 2.1-2.5x faster."),
    lrp_width: Optional[int] = typer.Option(None, "--lrp-width", help=(
        "Dense tasks: screen (checks, GEC, LRP) on a probe at most this many pixels wide "
        "(default 32). shapes-seg: 16 kept all 38 of 600 LRP acceptances, 4x faster "
        "(benchmarks/lrp_steps.py --spatial).")),
    no_lrp: bool = typer.Option(False, "--no-lrp", help="Disable the loss-rejection protocol."),
    no_gec: bool = typer.Option(False, "--no-gec", help="Disable the gradient-equivalence check."),
    population: Optional[int] = typer.Option(None, "--population", help="Strategy population size."),
    generation: Optional[int] = typer.Option(None, "--generation-size",
                                             help="Candidates per generation (per ask)."),
    option: List[str] = typer.Option([], "--option", help=(
        "KEY=VALUE strategy option (repeatable; VALUE read as JSON when it parses), e.g. "
        "remove=worst, tournament_size=10, check_invariant=false.")),
    slot: Optional[str] = typer.Option(None, "--slot", help="Loss slot to search (tasks with several, e.g. box)."),
    fixed: List[str] = typer.Option([], "--fixed", help="SLOT=LOSS for another slot (repeatable)."),
    joint: bool = typer.Option(False, "--joint", help="Search every slot at once (autoloss-zero, random)."),
    allow_changed_task: bool = typer.Option(False, "--allow-changed-task", help=ALLOW_CHANGED_HELP),
    fidelity: str = typer.Option("none", "--fidelity", help=(
        "Proxy training: none (one training of --proxy-steps) or asha (rungs of min-steps·η^k "
        "up to max-steps; the best 1/η of each rung continue training).")),
    min_steps: Optional[str] = typer.Option(None, "--min-steps", help=(
        "Shortest rung (asha; default max/η²), or 'auto': measured on the task at the start "
        "(a rung check: the zoo's losses trained once through the rungs; one bracket from the "
        "shortest rung that ranks them as max-steps does).")),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Top rung (asha; default --proxy-steps or the task's)."),
    eta: int = typer.Option(3, "--eta", help="Reduction factor η (asha)."),
    brackets: Optional[int] = typer.Option(None, "--brackets", help=(
        "Hyperband brackets (asha; default 2: one from --min-steps, one from max/η; 1 = plain ASHA).")),
    proxy_optimizers: Optional[str] = typer.Option(None, "--proxy-optimizers", help=(
        "Train each proxy under each of these optimizers and score the worst, e.g. adam,sgd "
        "(SGD: momentum 0.9, lr tuned once for the baseline loss and stored in the study).")),
    format: Format = _FORMAT,
    workers: Optional[int] = _WORKERS,
    dask: Optional[str] = _DASK,
    timeout: Optional[float] = _TIMEOUT,
):
    """Search for a loss function; every result is saved to the study file as it arrives."""
    fid = None if fidelity == "none" else {"kind": fidelity, "min_steps": _steps_or_auto(min_steps),
                                            "max_steps": max_steps, "eta": eta, "brackets": brackets}
    try:
        run = make_search(task, study, metric=metric, strategy=strategy, budget=budget, seed=seed,
                          space=space, proxy_steps=proxy_steps, lrp_steps=lrp_steps,
                          use_lrp=not no_lrp, use_gec=not no_gec, population=population,
                          generation_size=generation, options=option, slot=slot, fixed=fixed,
                          joint=joint, allow_changed_task=allow_changed_task,
                          task_options=task_option, fidelity=fid,
                          proxy_optimizers=proxy_optimizers, lrp_width=lrp_width)
    except TypeError as err:  # unknown strategy options
        fail(str(err))

    summary = run_search(run, "searching", study, budget, live=format != Format.json,
                         workers=workers, dask=dask, timeout=timeout)
    _print_summary(summary, format)


def _steps_or_auto(text: str | None) -> int | str | None:
    """``--min-steps``: a number of steps or ``auto``."""
    if text is None or text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        fail(f"--min-steps {text!r}: expected a number of steps or 'auto'")


def rung_check(task: Any, metric: str | None = None, max_steps: int | None = None, eta: int = 3,
               levels: int = 4, random: int = 8, seed: int = 0,
               executor: Any = None) -> dict[str, Any]:
    """:func:`lossforge.evaluation.rung_check.check_rungs` on ``task`` (the zoo's losses, plus
    ``random`` screened random candidates; trained on ``executor`` when given): the check's dict
    with ``task``, ``metric``, ``max_steps`` and ``flags`` (the ``search`` options that use its
    choice)."""
    from lossforge.evaluation.funnel import Funnel, FunnelConfig
    from lossforge.evaluation.rung_check import search_check

    metric = metric or task.default_metric
    task.metric(metric)  # clear error for an unknown metric
    top = int(max_steps or task.proxy.steps)
    stages = None
    if random > 0:
        funnel = Funnel(task, metric, FunnelConfig())
        funnel.calibrate()
        stages = [stage for stage in funnel.stages if stage is not funnel.proxy]
    check = search_check(task, metric, stages, top, eta=eta, levels=levels, n_random=random,
                         seed=seed, executor=executor)
    low, brackets = check.choose()
    flags = (f"--fidelity asha --min-steps {low} --max-steps {top} --eta {eta} "
             f"--brackets {brackets}" if low < top else "--fidelity none")
    return {"task": task.name, "metric": metric, "max_steps": top, **check.to_dict(),
            "flags": flags}


@app.command("rung-check")
@guarded
def rung_check_cli(
    task: str = typer.Option(..., "--task", help=TASK_HELP),
    task_option: List[str] = typer.Option([], "--task-option", help=TASK_OPTION_HELP),
    metric: Optional[str] = typer.Option(None, "--metric", help="Metric to rank by (default: the task's)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Full length (default: the task's proxy steps)."),
    eta: int = typer.Option(3, "--eta", help="Reduction factor η between rungs."),
    levels: int = typer.Option(4, "--levels", help="Rungs max·η^-k, k < levels."),
    random: int = typer.Option(8, "--random", help=(
        "Also rank this many random candidates that pass screening (closer to what a search "
        "trains than the zoo's hand-made losses, which make short rungs look safer; costs "
        "screening; what --min-steps auto uses).")),
    format: Format = _FORMAT,
    workers: Optional[int] = typer.Option(None, "--workers", help="Train the losses in N local processes."),
    dask: Optional[str] = _DASK,
):
    """Measure which multi-fidelity rungs rank your task's losses as a full-length proxy does,
    and print the search options that use the shortest safe rung (what --min-steps auto does at
    a search's start; run it once, reuse the flags)."""
    from lossforge.execution import make_executor

    if eta < 2 or levels < 2 or random < 0:
        fail("--eta and --levels must be at least 2, --random at least 0")
    loaded = load_task_with_options(task, task_option)
    executor = None if workers is None and dask is None else make_executor(workers=workers,
                                                                           dask=dask)
    try:
        out = rung_check(loaded, metric, max_steps, eta, levels, random, executor=executor)
    finally:
        if executor is not None:
            executor.shutdown()
    emit(out, format, "print_rung_check")


@app.command("resume")
@guarded
def resume_cli(
    study: str = typer.Argument(..., help="Study file to continue."),
    budget: Optional[int] = typer.Option(None, "--budget", help="A new (larger) budget."),
    task: Optional[str] = typer.Option(None, "--task", help=STUDY_TASK_HELP),
    allow_changed_task: bool = typer.Option(False, "--allow-changed-task", help=ALLOW_CHANGED_HELP),
    format: Format = _FORMAT,
    workers: Optional[int] = _WORKERS,
    dask: Optional[str] = _DASK,
    timeout: Optional[float] = _TIMEOUT,
):
    """Continue a study with its stored settings (after a crash, or to a larger budget).

    A study of your own task file needs it named again with --task (a study file never imports
    the code it names); a task file changed since the study was created is refused unless
    --allow-changed-task."""
    from lossforge.study import load_study, prepare_resume

    if budget is not None and budget <= 0:
        fail(f"--budget must be a positive number of candidates, got {budget}")
    load_study(study).close()  # a missing or bad file fails before any worker starts
    run = prepare_resume(study, budget=budget, task=task, allow_changed_task=allow_changed_task)

    summary = run_search(run, "resuming", study, budget, live=format != Format.json,
                         workers=workers, dask=dask, timeout=timeout)
    _print_summary(summary, format)
