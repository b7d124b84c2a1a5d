"""The verbs on a study file: ``show`` (its summary), ``export`` (a hall-of-fame loss as a standalone
PyTorch module, :func:`export_loss`), ``report`` (an HTML page) and ``refine`` (retrain the best
losses longer, :func:`lossforge.refine.refine_study`).

A study file is data, never code: ``show``, ``export`` and ``report`` import nothing it names.
Each takes an optional ``--task SPEC`` naming the study's task again: ``show`` and ``export`` then
check that it is the study's task and say whether its file changed since the study was made
(``show --format json``: ``task_file``); ``report`` takes the class count of its loss plots from
it for old study files that did not store one. ``refine`` retrains, so a study of your own task
file needs ``--task`` (built-in tasks do not), as ``resume`` does."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, NamedTuple, Optional

import typer

from lossforge.cli._app import _FORMAT, Format, app, emit, err_console, fail, guarded
from lossforge.cli._task_options import ALLOW_CHANGED_HELP, STUDY_TASK_HELP


class ExportedLoss(NamedTuple):
    """One file written by :func:`export_loss`: its path, the class in it, its formula (as stored),
    the fitness of the hall-of-fame entry it came from, and ``stripped``: what the module leaves
    out (:mod:`lossforge.expr.strip`, same gradient; None: it computes the stored formula)."""

    path: Path
    cls: str
    formula: str
    fitness: float
    stripped: str | None = None


def study_summary(study: str | Path, top: int = 10, task: str | None = None) -> dict[str, Any]:
    """``Study.summary(top)`` of the study file at ``study`` (opened read-only); with ``task`` (the
    study's task named again) also ``task_file``: :func:`lossforge.study_task.task_file_status`."""
    from lossforge.study import load_study
    from lossforge.study_task import task_file_status

    from lossforge.transfer import show_extras

    s = load_study(study, readonly=True)
    try:
        summary = s.summary(top=top)
        summary.update(show_extras(s))  # transfer panel, ties with the best, setups checked
        settings = s.settings
    finally:
        s.close()
    if task is not None:
        summary["task_file"] = task_file_status(settings, task, path=study)
    return summary


def _say_task_file(status: dict[str, Any] | None) -> None:
    """One line on stderr about the task named with ``--task`` (changed or not)."""
    if status is None or status["unchanged"] is None:
        return
    if status["unchanged"]:
        err_console.print(f"task file unchanged since the study was created ({status['task_spec']})",
                          highlight=False, soft_wrap=True)
    else:
        err_console.print(f"[yellow]warning:[/] the task file {status['task_spec']} changed since "
                          "the study was created: resume and refine need --allow-changed-task",
                          highlight=False, soft_wrap=True)


def export_loss(study: str | Path, output: str | Path, rank: int = 1,
                name: str = "SearchedLoss") -> list[ExportedLoss]:
    """Write the hall-of-fame entry ``rank`` (1 = best) of the study at ``study`` as a standalone
    PyTorch module (imports only torch) at ``output``, class ``name``; a joint search writes one file
    per slot (``OUTPUT_<slot>.py``, class ``NAME_<slot>``). The module computes the formula
    without its terms that are constant w.r.t. the prediction (the same gradient; its docstring
    says what was dropped: :func:`lossforge.expr.strip.stripped_source`). ``ValueError`` if the
    study has no trained loss or ``rank`` is out of range."""
    from lossforge.study import load_study

    s = load_study(study, readonly=True)
    try:
        hof, joint = s.hall_of_fame, bool(s.settings.get("joint"))
    finally:
        s.close()
    if not hof:
        raise ValueError(f"{study} has no trained loss yet; run or resume the search first")
    if not 1 <= rank <= len(hof):
        raise ValueError(f"--rank must be between 1 and {len(hof)}")
    entry = hof[rank - 1]
    if joint:
        from lossforge.expr.bundle import parse_bundle, write_sources

        return [ExportedLoss(Path(path), cls, str(expr), entry.fitness)
                for path, cls, expr in write_sources(parse_bundle(entry.formula), output, name)]
    from lossforge.expr import parse
    from lossforge.expr.strip import display_fields, stripped_source

    Path(output).write_text(stripped_source(parse(entry.formula, strict=False), name=name))
    return [ExportedLoss(Path(output), name, entry.formula, entry.fitness,
                         display_fields(entry.formula)["stripped"])]


@app.command("show")
@guarded
def show_cli(
    study: str = typer.Argument(..., help="Study file."),
    top: int = typer.Option(10, "--top", help="Hall-of-fame entries to show."),
    task: Optional[str] = typer.Option(None, "--task", help=STUDY_TASK_HELP + " Checks that it is "
                                       "the study's task and whether its file changed."),
    format: Format = _FORMAT,
):
    """Show a study: settings, funnel counts, best loss and hall of fame."""
    summary = study_summary(study, top=top, task=task)
    emit(summary, format, "print_study")
    if format != Format.json:
        _say_task_file(summary.get("task_file"))


@app.command("refine")
@guarded
def refine_cli(
    study: str = typer.Argument(..., help="Study file (a finished or stopped search)."),
    top: int = typer.Option(8, "--top", help="Best distinct trained losses to race."),
    round_: Optional[List[str]] = typer.Option(
        None, "--round", help="STEPS:SEEDS:KEEP (repeatable), e.g. 240:3:4; default: halve --top "
                              "each round, doubling the steps and adding a seed."),
    restart: bool = typer.Option(False, "--restart", help="Discard a stored refinement."),
    task: Optional[str] = typer.Option(None, "--task", help=STUDY_TASK_HELP),
    allow_changed_task: bool = typer.Option(False, "--allow-changed-task", help=ALLOW_CHANGED_HELP),
    panel: bool = typer.Option(False, "--panel", help=(
        "Transfer panel instead of halving: retrain the --top losses, CE and the baseline under "
        "the task's setup, SGD (lr tuned for CE), lr x0.5 and x2, x2 steps and another "
        "architecture; rank by worst rank over the settings.")),
    seeds: int = typer.Option(3, "--seeds", help="--panel: seeds per (setting, loss)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="--panel: base steps (default: "
                                        "the study's proxy steps)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="--panel: the other architecture "
                                       "(default: the task's first other one)."),
    loss: Optional[List[str]] = typer.Option(None, "--loss", help="--panel: put these losses "
                                             "through it instead of the study's top."),
    format: Format = _FORMAT,
):
    """Retrain a study's best losses longer, on fresh seeds, keeping the best of each round
    (successive halving on the validation split); each round is saved in the study. With
    --panel, check them under other optimizers, learning rates, lengths and models instead."""
    from lossforge.cli.tables import console
    from lossforge.refine import RoundSpec, refine_study

    if panel:
        from lossforge.transfer import transfer_panel

        if round_:
            fail("--round is for successive halving; leave it out with --panel")
        with console.status("transfer panel") as status:
            result = transfer_panel(
                study, top=top, seeds=seeds, steps=steps, arch=arch, restart=restart, task=task,
                allow_changed_task=allow_changed_task, losses=loss or None,
                progress=lambda d, n, st, lo: status.update(f"panel {d}/{n}: {st} ({lo})"))
        emit(result, format, "print_panel")
        return

    rounds = [RoundSpec.parse(r) for r in round_ or []]
    with console.status("refining") as status:
        def progress(i, done, total, formula):
            status.update(f"refine round {i + 1}: {done}/{total} trainings ({formula})")

        state = refine_study(study, rounds or None, top=top, restart=restart, progress=progress,
                             task=task, allow_changed_task=allow_changed_task)
    emit(state, format, "print_refine")


@app.command("export")
@guarded
def export_cli(
    study: str = typer.Argument(..., help="Study file."),
    output: str = typer.Option(..., "-o", "--output", help="Python file (joint: OUTPUT_<slot>.py each)."),
    rank: int = typer.Option(1, "--rank", help="Hall-of-fame rank to export (1 = best)."),
    name: str = typer.Option("SearchedLoss", "--name", help="Class name (joint: NAME_<slot>)."),
    task: Optional[str] = typer.Option(None, "--task", help=STUDY_TASK_HELP + " Checks that it is "
                                       "the study's task and whether its file changed."),
):
    """Write a hall-of-fame loss as a standalone PyTorch module (imports only torch).

    The module has the searched slot's signature (a box slot: forward(pred_boxes, target_boxes));
    a joint search writes one standalone file per slot."""
    from lossforge.cli.tables import console

    if task is not None:  # before writing anything
        _say_task_file(study_summary(study, top=0, task=task)["task_file"])
    for e in export_loss(study, output, rank=rank, name=name):
        console.print(f"wrote {e.path}: {e.cls} = {e.formula} (fitness {e.fitness:.4f})")
        if e.stripped:
            console.print(f"  the module computes it without its constant terms: {e.stripped}",
                          markup=False, highlight=False, soft_wrap=True)
        _say_checked(study, e.formula)


def _say_checked(study: str | Path, formula: str) -> None:
    """Under which setups ``formula`` was checked, and a warning for one optimizer only."""
    from lossforge.cli.tables import print_checked
    from lossforge.study import load_study
    from lossforge.transfer import checked_under

    s = load_study(study, readonly=True)
    try:
        print_checked(checked_under(s, formula))
    finally:
        s.close()


@app.command("report")
@guarded
def report_cli(
    study: str = typer.Argument(..., help="Study file."),
    output: str = typer.Option(..., "-o", "--output", help="Directory to write index.html and PNGs to."),
    top: int = typer.Option(3, "--top", help="Hall-of-fame losses to plot against cross-entropy."),
    task: Optional[str] = typer.Option(None, "--task", help=STUDY_TASK_HELP + " Only needed for "
                                       "the class count of the loss plots of old study files."),
):
    """Write an HTML report of a study (plots made from the study file alone)."""
    from lossforge.cli.tables import console
    from lossforge.report import write_report

    if top < 0:
        fail(f"--top must be 0 or more, got {top}")
    console.print(f"wrote {write_report(study, output, top=top, task=task)}")
