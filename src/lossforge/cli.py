"""The ``lossforge`` command line (typer + rich). Errors are one line with what to do, exit code 1,
no traceback unless ``--debug``."""
from __future__ import annotations

import json
import os
import sys
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from lossforge.console_tables import console, print_comparison, print_refine, print_study

class _OneLineErrors(typer.core.TyperGroup):
    """Usage errors (unknown command or option, bad value) as one line, not a boxed panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        # click's exception base, whether typer vendors click or depends on it
        click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click_error as err:
            message = " ".join(err.format_message().split())
            if message:  # (no message: the help was shown for a bare command)
                ctx = getattr(err, "ctx", None)
                where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                err_console.print(f"[bold red]error:[/] {message}{where}", highlight=False,
                                  soft_wrap=True)
            sys.exit(err.exit_code)
        except typer.Abort:
            err_console.print("[bold red]aborted[/]")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  cls=_OneLineErrors, help="lossforge: discover loss functions automatically.")
err_console = Console(stderr=True, emoji=False)
_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
          threads: int = typer.Option(1, "--threads", min=1,
                                      help="Torch threads in this process (small proxy models run "
                                           "fastest on 1; scale out with --workers or --dask).")):
    _state["debug"] = debug
    import torch

    torch.set_num_threads(threads)


def fail(message: str) -> None:
    """Print a one-line error and exit with code 1."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def guarded(fn):
    """Turn expected user errors into one-line messages (full traceback with ``--debug``)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, BrokenPipeError):
            raise
        except (ValueError, KeyError, OSError, RuntimeError) as err:
            if _state["debug"]:
                raise
            msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            fail(str(msg))

    return wrapper


@app.command()
@guarded
def zoo(format: str = typer.Option("table", "--format", help="table or json")):
    """List the named losses of the zoo: name, formula, source."""
    from lossforge import zoo as Z

    entries = [Z.get(n) for n in Z.names()]
    if format == "json":
        print(json.dumps([{"name": e.name, "formula": e.formula, "source": e.source} for e in entries]))
        return
    table = Table(title="lossforge zoo")
    for col in ("name", "formula", "source"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(e.name, e.formula or "(module)", e.source)
    console.print(table)


@app.command("tasks")
@guarded
def tasks_cmd():
    """List the built-in tasks with their metrics."""
    from lossforge import tasks as T

    table = Table(title="lossforge tasks")
    for col in ("task", "kind", "metrics (default first)", "proxy steps"):
        table.add_column(col)
    for name in T.names():
        t = T.get(name)
        ms = [t.default_metric] + [m for m in t.metrics if m != t.default_metric]
        table.add_row(name, t.kind, ", ".join(ms), str(t.proxy.steps))
    console.print(table)


@app.command()
@guarded
def evaluate(
    task: str = typer.Option(..., "--task", help="Task name (see `lossforge tasks`)."),
    loss: List[str] = typer.Option(..., "--loss", help=(
        "Formula, zoo name or exported .py file; repeatable (one compared loss each). Tasks with "
        "several loss slots (e.g. cls and box): 'box=giou' sets one slot, 'cls=focal; box=giou' "
        "several, the other slots keep their defaults; a plain loss goes to the only slot of its "
        "kind.")),
    seeds: int = typer.Option(3, "--seeds", help="Trainings per loss (seeds 0..K-1)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (default: the task's proxy steps)."),
    split: str = typer.Option("test", "--split", help="Split to score: val or test."),
    device: str = typer.Option("cpu", "--device"),
    format: str = typer.Option("table", "--format", help="table or json"),
    study: Optional[str] = typer.Option(None, "--study",
                                        help="Also save the comparison in this study file (for `report`)."),
):
    """Train each loss K times on a task; mean ± std of every metric, Δ and Welch p vs cross-entropy."""
    from lossforge import tasks as T
    from lossforge.comparison import evaluate as run_eval
    from lossforge.loss_spec import load_loss

    if seeds < 1:
        fail("--seeds must be at least 1")
    if steps is not None and steps < 1:
        fail("--steps must be at least 1")
    if split not in ("val", "test"):
        fail(f"--split must be 'val' or 'test', got {split!r}")
    t = T.get(task)
    for spec in loss:  # fail fast on a bad loss before any training
        load_loss(spec, t)
    if study is not None:  # and on a bad study file
        from lossforge.storage import Store

        Store.open(study).close()
    from rich.progress import Progress

    with Progress(console=err_console, transient=True, disable=format == "json") as bar:
        job = bar.add_task("training", total=None)
        result = run_eval(t, loss, seeds=seeds, steps=steps, device=device, split=split,
                          progress=lambda d, n, name: bar.update(job, completed=d, total=n,
                                                                 description=f"training {name}"))
    if study is not None:
        from lossforge.storage import Store

        store = Store.open(study)
        store.set_meta("evaluation", result.to_dict())
        store.close()
    if format == "json":
        print(json.dumps(result.to_dict()))
        return
    print_comparison(result)


def _run_search(make_study, title: str, fmt: str, path: str, budget: Optional[int],
                workers: Optional[int], dask: Optional[str], timeout: Optional[float]):
    """Run ``make_study(progress, executor)`` with the live view (off for json) and the executor."""
    from lossforge.execution import make_executor
    from lossforge.live import LiveView, SearchView

    # no option: executor None, the API's default (in-process, where the proxy stage may batch)
    plain = workers is None and dask is None and timeout is None
    executor = None if plain else make_executor(workers=workers, dask=dask, timeout=timeout)
    try:
        if fmt == "json":  # stdout gets the final JSON only, stderr nothing
            study = make_study(None, executor)
        else:
            view = SearchView(title, study=path, budget=budget,
                              executor="in-process" if plain else repr(executor))
            with LiveView(err_console, view) as live:
                study = make_study(live.update, executor)
    finally:
        if executor is not None:
            executor.shutdown()
    print_study(study, top=10, fmt=fmt)
    study.close()


_WORKERS = typer.Option(None, "--workers", help="Train candidates in N local processes.")
_DASK = typer.Option(None, "--dask", help="Train on a Dask cluster: scheduler ADDRESS (tcp://host:8786), "
                                          "or local:N for N local worker processes.")
_TIMEOUT = typer.Option(None, "--timeout", help="Seconds one candidate may train; longer: failed.")


@app.command()
@guarded
def search(
    task: str = typer.Option(..., "--task", help="Task name (see `lossforge tasks`)."),
    study: str = typer.Option(..., "--study", help="Study file (SQLite); an existing one is continued."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Target metric (default: the task's)."),
    strategy: str = typer.Option("autoloss-zero", "--strategy",
                                 help="autoloss-zero | aging | glo | taylor | random"),
    budget: int = typer.Option(100, "--budget", help="Candidates to explore (put through the funnel)."),
    seed: int = typer.Option(0, "--seed"),
    space: Optional[str] = typer.Option(None, "--space", help="Search space (default: the strategy's)."),
    proxy_steps: Optional[int] = typer.Option(None, "--proxy-steps", help="Proxy training steps."),
    lrp_steps: Optional[int] = typer.Option(None, "--lrp-steps", help="Loss-rejection protocol steps."),
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
    format: str = typer.Option("table", "--format", help="table or json"),
    workers: Optional[int] = _WORKERS,
    dask: Optional[str] = _DASK,
    timeout: Optional[float] = _TIMEOUT,
):
    """Search for a loss function; every result is saved to the study file as it arrives."""
    from dataclasses import replace

    from lossforge.evaluation.funnel import FunnelConfig
    from lossforge.loss_spec import slot_assignments
    from lossforge.search.strategy import parse_options
    from lossforge.study import LossSearch

    if budget <= 0:
        fail(f"--budget must be a positive number of candidates, got {budget}")
    cfg = FunnelConfig()
    if proxy_steps is not None:
        cfg = replace(cfg, proxy=replace(cfg.proxy, steps=proxy_steps))
    if lrp_steps is not None:
        cfg = replace(cfg, lrp=replace(cfg.lrp, steps=lrp_steps))
    cfg = replace(cfg, use_lrp=not no_lrp, use_gec=not no_gec)
    options = {k: v for k, v in (("population_size", population), ("batch_size", generation)) if v}
    options.update(parse_options(option, "--option"))
    fixed_losses = slot_assignments(fixed, "--fixed")
    # settings are checked (task, metric, strategy, slots, study file) before any worker starts
    run = LossSearch(task=task, storage=study, metric=metric, strategy=strategy, budget=budget,
                     seed=seed, space=space, funnel=cfg, strategy_options=options, slot=slot,
                     fixed=fixed_losses, joint=joint)
    try:
        run._make_strategy()  # unknown strategy options fail here
    except TypeError as err:
        fail(str(err))
    if os.path.exists(study):  # and a study file made with other settings
        run._open_store().close()

    def make(progress, executor):
        run.progress, run.executor = progress, executor
        return run.run()

    _run_search(make, "searching", format, study, budget, workers, dask, timeout)


@app.command()
@guarded
def resume(
    study: str = typer.Argument(..., help="Study file to continue."),
    budget: Optional[int] = typer.Option(None, "--budget", help="A new (larger) budget."),
    format: str = typer.Option("table", "--format", help="table or json"),
    workers: Optional[int] = _WORKERS,
    dask: Optional[str] = _DASK,
    timeout: Optional[float] = _TIMEOUT,
):
    """Continue a study with its stored settings (after a crash, or to a larger budget)."""
    from lossforge.storage import Store
    from lossforge.study import resume as resume_study

    if budget is not None and budget <= 0:
        fail(f"--budget must be a positive number of candidates, got {budget}")
    Store.open(study).close()  # a missing or bad file fails before any worker starts
    _run_search(lambda progress, executor: resume_study(study, executor=executor, progress=progress,
                                                        budget=budget),
                "resuming", format, study, budget, workers, dask, timeout)


@app.command()
@guarded
def show(
    study: str = typer.Argument(..., help="Study file."),
    top: int = typer.Option(10, "--top", help="Hall-of-fame entries to show."),
    format: str = typer.Option("table", "--format", help="table or json"),
):
    """Show a study: settings, funnel counts, best loss and hall of fame."""
    from lossforge.study import load_study

    s = load_study(study)
    print_study(s, top=top, fmt=format)
    s.close()


@app.command()
@guarded
def refine(
    study: str = typer.Argument(..., help="Study file (a finished or stopped search)."),
    top: int = typer.Option(8, "--top", help="Best distinct trained losses to race."),
    round_: Optional[List[str]] = typer.Option(
        None, "--round", help="STEPS:SEEDS:KEEP (repeatable), e.g. 240:3:4; default: halve --top "
                              "each round, doubling the steps and adding a seed."),
    restart: bool = typer.Option(False, "--restart", help="Discard a stored refinement."),
    format: str = typer.Option("table", "--format", help="table or json"),
):
    """Retrain a study's best losses longer, on fresh seeds, keeping the best of each round
    (successive halving on the validation split); each round is saved in the study."""
    from lossforge.refine import RoundSpec, refine_study

    rounds = [RoundSpec.parse(r) for r in round_ or []]
    with console.status("refining") as status:
        def progress(i, done, total, formula):
            status.update(f"refine round {i + 1}: {done}/{total} trainings ({formula})")

        state = refine_study(study, rounds or None, top=top, restart=restart, progress=progress)
    if format == "json":
        print(json.dumps(state))
    else:
        print_refine(state)


@app.command()
@guarded
def export(
    study: str = typer.Argument(..., help="Study file."),
    output: str = typer.Option(..., "-o", "--output", help="Python file (joint: OUTPUT_<slot>.py each)."),
    rank: int = typer.Option(1, "--rank", help="Hall-of-fame rank to export (1 = best)."),
    name: str = typer.Option("SearchedLoss", "--name", help="Class name (joint: NAME_<slot>)."),
):
    """Write a hall-of-fame loss as a standalone PyTorch module (imports only torch).

    The module has the searched slot's signature (a box slot: forward(pred_boxes, target_boxes));
    a joint search writes one standalone file per slot."""
    from pathlib import Path

    from lossforge.study import load_study

    s = load_study(study)
    hof = s.hall_of_fame
    joint = bool(s.settings.get("joint"))
    s.close()
    if not hof:
        fail(f"{study} has no trained loss yet; run or resume the search first")
    if not 1 <= rank <= len(hof):
        fail(f"--rank must be between 1 and {len(hof)}")
    entry = hof[rank - 1]
    if joint:
        from lossforge.expr.bundle import parse_bundle, write_sources

        for path, cls, expr in write_sources(parse_bundle(entry.formula), output, name):
            console.print(f"wrote {path}: {cls} = {expr} (fitness {entry.fitness:.4f})")
        return
    from lossforge.expr import parse

    Path(output).write_text(parse(entry.formula, strict=False).to_source(name=name))
    console.print(f"wrote {output}: {name} = {entry.formula} (fitness {entry.fitness:.4f})")


@app.command()
@guarded
def report(
    study: str = typer.Argument(..., help="Study file."),
    output: str = typer.Option(..., "-o", "--output", help="Directory to write index.html and PNGs to."),
    top: int = typer.Option(3, "--top", help="Hall-of-fame losses to plot against cross-entropy."),
):
    """Write an HTML report of a study (plots made from the study file alone)."""
    from lossforge.report import write_report

    if top < 0:
        fail(f"--top must be 0 or more, got {top}")
    index = write_report(study, output, top=top)
    console.print(f"wrote {index}")


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
