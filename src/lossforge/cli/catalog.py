"""``lossforge zoo`` and ``lossforge tasks``: what is built in (named losses, tasks)."""
from __future__ import annotations

from typing import Any

from lossforge.cli._app import _FORMAT, Format, app, emit, guarded


def zoo_entries() -> list[dict[str, Any]]:
    """The zoo's named losses: ``{"name", "formula", "source"}`` each (formula ``None`` for a loss
    written as a module)."""
    from lossforge import zoo

    entries = [zoo.get(n) for n in zoo.names()]
    return [{"name": e.name, "formula": e.formula, "source": e.source} for e in entries]


def task_entries() -> list[dict[str, Any]]:
    """The registered tasks: ``{"task", "kind", "metrics" (default first), "proxy_steps"}`` each."""
    from lossforge import tasks

    out = []
    for name in tasks.names():
        t = tasks.get(name)
        metrics = [t.default_metric] + [m for m in t.metrics if m != t.default_metric]
        out.append({"task": name, "kind": t.kind, "metrics": metrics, "proxy_steps": t.proxy.steps})
    return out


@app.command("zoo")
@guarded
def zoo_cli(format: Format = _FORMAT):
    """List the named losses of the zoo: name, formula, source."""
    entries = zoo_entries()
    emit(entries, format, "print_zoo")


@app.command("tasks")
@guarded
def tasks_cli():
    """List the built-in tasks with their metrics."""
    from lossforge.cli.tables import print_tasks

    print_tasks(task_entries())
