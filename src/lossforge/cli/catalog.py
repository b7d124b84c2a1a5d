"""``lossforge zoo`` and ``lossforge tasks``: what is built in (named losses, tasks), and
``lossforge tasks --check SPEC`` (:func:`lossforge.tasks.check.check_task`: is a task ready?)."""
from __future__ import annotations

from typing import Any, Optional

import typer

from lossforge.cli._app import _FORMAT, Format, app, emit, guarded


def zoo_entries() -> list[dict[str, Any]]:
    """The zoo's named losses: ``{"name", "kind", "formula", "source"}`` each (formula ``None`` for
    a loss written as a module)."""
    from lossforge import zoo

    return [{"name": e.name, "kind": e.kind, "formula": e.formula, "source": e.source}
            for e in zoo.entries()]  # every form: mse on classification and on regression


def task_entries() -> list[dict[str, Any]]:
    """The registered tasks: ``{"task", "kind", "metrics" (default first), "proxy_steps",
    "options"}`` each; ``options``: ``{"name", "type", "default", "help"}`` per constructor
    keyword (:func:`lossforge.tasks.options.option_specs`)."""
    from lossforge import tasks
    from lossforge.tasks.options import option_specs

    out = []
    for name in tasks.names():
        t = tasks.get(name)
        metrics = [t.default_metric] + [m for m in t.metrics if m != t.default_metric]
        options = [o.to_dict() for o in option_specs(tasks.factory(name)).values()]
        out.append({"task": name, "kind": t.kind, "metrics": metrics, "proxy_steps": t.proxy.steps,
                    "options": options})
    return out


def print_task_options(entries: list[dict[str, Any]]) -> None:
    """The second table of ``lossforge tasks``: every task's options (``--task-option KEY=VALUE``)
    with type, default and help."""
    from rich.table import Table

    from lossforge.cli.tables import console

    table = Table(title="task options (--task-option KEY=VALUE)")
    for col in ("task", "option", "type", "default", "what it sets"):
        table.add_column(col, overflow="fold")
    for entry in entries:
        for i, o in enumerate(entry["options"]):
            table.add_row(entry["task"] if i == 0 else "", o["name"], o["type"], repr(o["default"]),
                          o["help"])
    console.print(table)


@app.command("zoo")
@guarded
def zoo_cli(format: Format = _FORMAT):
    """List the named losses of the zoo: name, formula, source."""
    entries = zoo_entries()
    emit(entries, format, "print_zoo")


@app.command("tasks")
@guarded
def tasks_cli(
    check: Optional[str] = typer.Option(
        None, "--check", metavar="SPEC",
        help="Check a task instead of listing: a built-in name, path/to/file.py[:ATTR] or "
             "package.module:ATTR. Prints what is wrong and how to fix it; exit status 1 on an "
             "error."),
    steps: int = typer.Option(1, "--steps", min=1, help="Training steps of --check."),
    device: str = typer.Option("cpu", "--device", help="Device of --check."),
    format: Format = _FORMAT,
):
    """List the built-in tasks with their metrics and options, or check a task (--check SPEC)."""
    if check is None:
        entries = task_entries()
        emit(entries, format, "print_tasks")
        if format != Format.json:
            print_task_options(entries)
        return
    from lossforge.tasks.check import check_task

    report = check_task(check, steps=steps, device=device)
    emit(report.to_dict(), format, "print_task_check")
    if not report.ok:
        raise typer.Exit(1)
