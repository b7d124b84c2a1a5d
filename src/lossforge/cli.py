"""The ``lossforge`` command line (typer + rich). Errors are one line with what to do, exit code 1,
no traceback unless ``--debug``."""
from __future__ import annotations

import json
import math
import sys
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="lossforge: discover loss functions automatically.")
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    _state["debug"] = debug


def fail(message: str) -> None:
    """Print a one-line error and exit with code 1."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


def guarded(fn):
    """Turn expected user errors into one-line messages (full traceback with ``--debug``)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
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


def _fmt(v: float, digits: int = 4) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


@app.command()
@guarded
def evaluate(
    task: str = typer.Option(..., "--task", help="Task name (see `lossforge tasks`)."),
    loss: List[str] = typer.Option(..., "--loss", help="Formula, zoo name or exported .py file; repeatable."),
    seeds: int = typer.Option(3, "--seeds", help="Trainings per loss (seeds 0..K-1)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (default: the task's proxy steps)."),
    split: str = typer.Option("test", "--split", help="Split to score: val or test."),
    device: str = typer.Option("cpu", "--device"),
    format: str = typer.Option("table", "--format", help="table or json"),
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
    from rich.progress import Progress

    with Progress(console=err_console, transient=True, disable=format == "json") as bar:
        job = bar.add_task("training", total=None)
        result = run_eval(t, loss, seeds=seeds, steps=steps, device=device, split=split,
                          progress=lambda d, n, name: bar.update(job, completed=d, total=n,
                                                                 description=f"training {name}"))
    if format == "json":
        print(json.dumps(result.to_dict()))
        return
    print_comparison(result)


def print_comparison(result) -> None:
    """The evaluate table: one row per loss, mean ± std per metric, Δ vs baseline with p-value."""
    table = Table(title=f"{result.task} — {result.split} split, {len(result.seeds)} seed(s), "
                        f"{result.steps} steps; Δ and Welch p vs {result.baseline}")
    table.add_column("loss", overflow="fold")
    table.add_column("runs")
    for m in result.metrics:
        arrow = "↑" if result.higher_is_better[m] else "↓"
        table.add_column(f"{m} {arrow}", justify="right")
    for row in result.rows:
        cells = [row.loss, f"{row.runs - row.invalid}/{row.runs}"]
        for m in result.metrics:
            cell = f"{_fmt(row.mean[m])} ± {_fmt(row.std[m])}"
            if row.loss != result.baseline:
                cell += f"\nΔ {row.delta[m]:+.4f} (p={_fmt(row.p_value[m], 3)})"
            cells.append(cell)
        table.add_row(*cells)
    console.print(table)


def _progress_printer(bar, job):
    def update(state: dict) -> None:
        fit = state["fitness"]
        bar.update(job, completed=state["explored"], total=state["budget"],
                   description=f"gen {state['generation']} · {state['status']}"
                               + (f" · {fit:.4f}" if fit is not None else ""))
    return update


def _run_search(make_study, title: str, fmt: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, disable=fmt == "json") as bar:
        job = bar.add_task(title, total=None)
        study = make_study(_progress_printer(bar, job))
    _print_study(study, top=10, fmt=fmt)
    study.close()


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
    format: str = typer.Option("table", "--format", help="table or json"),
):
    """Search for a loss function; every result is saved to the study file as it arrives."""
    from dataclasses import replace

    from lossforge.evaluation.funnel import FunnelConfig
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
    _run_search(lambda progress: LossSearch(task=task, storage=study, metric=metric,
                                            strategy=strategy, budget=budget, seed=seed,
                                            space=space, funnel=cfg, strategy_options=options,
                                            progress=progress).run(), "searching", format)


@app.command()
@guarded
def resume(
    study: str = typer.Argument(..., help="Study file to continue."),
    budget: Optional[int] = typer.Option(None, "--budget", help="A new (larger) budget."),
    format: str = typer.Option("table", "--format", help="table or json"),
):
    """Continue a study with its stored settings (after a crash, or to a larger budget)."""
    from lossforge.study import resume as resume_study

    if budget is not None and budget <= 0:
        fail(f"--budget must be a positive number of candidates, got {budget}")
    _run_search(lambda progress: resume_study(study, progress=progress, budget=budget),
                "resuming", format)


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
    _print_study(s, top=top, fmt=format)
    s.close()


def _print_study(study, top: int, fmt: str) -> None:
    summary = study.summary(top=top)
    if fmt == "json":
        print(json.dumps(summary))
        return
    console.print(f"[bold]{summary['path']}[/]: task {summary['task']}, metric {summary['metric']}, "
                  f"strategy {summary['strategy']} (space {summary['space']}), seed {summary['seed']}; "
                  f"explored {summary['explored']}/{summary['budget']}")
    funnel = Table(title="funnel")
    for col in ("stage", "in", "out", "seconds"):
        funnel.add_column(col, justify="right" if col != "stage" else "left")
    for name, st in summary["stats"].items():
        funnel.add_row(name, str(st["in"]), str(st["out"]), f"{st['seconds']:.1f}")
    console.print(funnel)
    hof = Table(title="hall of fame (Pareto: fitness vs size)")
    for col in ("rank", "fitness", "size", "formula"):
        hof.add_column(col, overflow="fold")
    for i, h in enumerate(summary["hall_of_fame"], 1):
        hof.add_row(str(i), f"{h['fitness']:.4f}", str(h["size"]), h["formula"])
    console.print(hof)
    if summary["best"]:
        console.print(f"[bold green]best[/] ({summary['best']['fitness']:.4f}): {summary['best']['formula']}")


@app.command()
@guarded
def export(
    study: str = typer.Argument(..., help="Study file."),
    output: str = typer.Option(..., "-o", "--output", help="Python file to write."),
    rank: int = typer.Option(1, "--rank", help="Hall-of-fame rank to export (1 = best)."),
    name: str = typer.Option("SearchedLoss", "--name", help="Class name in the module."),
):
    """Write a hall-of-fame loss as a standalone PyTorch module (imports only torch)."""
    from pathlib import Path

    from lossforge.expr import parse
    from lossforge.study import load_study

    s = load_study(study)
    hof = s.hall_of_fame
    s.close()
    if not hof:
        fail(f"{study} has no trained loss yet; run or resume the search first")
    if not 1 <= rank <= len(hof):
        fail(f"--rank must be between 1 and {len(hof)}")
    entry = hof[rank - 1]
    Path(output).write_text(parse(entry.formula, strict=False).to_source(name=name))
    console.print(f"wrote {output}: {name} = {entry.formula} (fitness {entry.fitness:.4f})")


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
