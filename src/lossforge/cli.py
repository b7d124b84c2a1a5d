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


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
