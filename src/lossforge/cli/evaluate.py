"""``lossforge evaluate``: train each loss K times on a task and compare it with cross-entropy
(:func:`lossforge.comparison.evaluate` does the work; :func:`save_evaluation` keeps the result in a
study file for ``lossforge report``)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from lossforge.cli._app import _FORMAT, Format, app, emit, err_console, fail, guarded
from lossforge.cli._task_options import TASK_HELP, TASK_OPTION_HELP, load_task_with_options


def save_evaluation(study: str | Path, result) -> None:
    """Store a :class:`~lossforge.comparison.Comparison` in the study file at ``study`` (its
    ``"evaluation"`` entry, which ``lossforge report`` shows)."""
    from lossforge.study import load_study

    s = load_study(study)
    try:
        s.set_meta("evaluation", result.to_dict())
    finally:
        s.close()


@app.command("evaluate")
@guarded
def evaluate_cli(
    task: str = typer.Option(..., "--task", help=TASK_HELP),
    task_option: List[str] = typer.Option([], "--task-option", help=TASK_OPTION_HELP),
    loss: List[str] = typer.Option(..., "--loss", help=(
        "Formula, zoo name or exported .py file; repeatable (one compared loss each). Tasks with "
        "several loss slots (e.g. cls and box): 'box=giou' sets one slot, 'cls=focal; box=giou' "
        "several, the other slots keep their defaults; a plain loss goes to the only slot of its "
        "kind.")),
    seeds: int = typer.Option(3, "--seeds", help="Trainings per loss (seeds 0..K-1)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (default: the task's proxy steps)."),
    split: Optional[str] = typer.Option(
        None, "--split", help="Split to score: val or test (default: test; val for a task that "
                              "trains with its own loop, whose fit returns validation metrics)."),
    device: str = typer.Option("cpu", "--device"),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adam or sgd (default: the task's)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: the task's)."),
    momentum: Optional[float] = typer.Option(None, "--momentum", help="SGD momentum (default: the task's)."),
    format: Format = _FORMAT,
    study: Optional[str] = typer.Option(None, "--study",
                                        help="Also save the comparison in this study file (for `report`)."),
):
    """Train each loss K times on a task; mean ± std of every metric, Δ and Welch p vs cross-entropy."""
    from lossforge.comparison import evaluate
    from lossforge.training.loss_spec import load_loss
    from lossforge.study import load_study

    if seeds < 1:
        fail("--seeds must be at least 1")
    if steps is not None and steps < 1:
        fail("--steps must be at least 1")
    if split not in (None, "val", "test"):
        fail(f"--split must be 'val' or 'test', got {split!r}")
    t = load_task_with_options(task, task_option)
    if optimizer is not None or lr is not None or momentum is not None:
        from lossforge.transfer import with_training

        try:
            t = with_training(t, optimizer=optimizer, lr=lr, momentum=momentum)
        except ValueError as err:
            fail(str(err))
    for spec in loss:  # fail fast on a bad loss before any training
        load_loss(spec, t)
    if study is not None:  # and on a bad study file
        load_study(study).close()
    from rich.progress import Progress

    with Progress(console=err_console, transient=True, disable=format == Format.json) as bar:
        job = bar.add_task("training", total=None)
        result = evaluate(t, loss, seeds=seeds, steps=steps, device=device, split=split,
                          progress=lambda d, n, name: bar.update(job, completed=d, total=n,
                                                                 description=f"training {name}"))
    if study is not None:
        save_evaluation(study, result)
    emit(result, format, "print_comparison", json_data=result.to_dict())
