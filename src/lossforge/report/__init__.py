"""``lossforge report FILE -o DIR``: an HTML page and PNG plots of a study, from its file alone.

Nothing but the SQLite study file is read (no task data, no training, and no code the study names
is imported: a study file is data), through the readers' door
:func:`lossforge.study.load_study` (``readonly=True``), so a report can be made after a crash, while
the search still runs, or on another machine. :func:`write_report` reads the study
(:func:`read_study`), draws the figures (:mod:`lossforge.report.figures`) and writes the page
(:mod:`lossforge.report.html`). ``DIR`` receives:

* ``index.html`` — settings, best loss, funnel counts and timings, hall of fame, the ``evaluate``
  table when one was saved (``lossforge evaluate … --study FILE``), failures with their reasons;
* ``progress.png`` — best and median fitness over the explored candidates;
* ``funnel.png`` — candidates entering each stage, and how they ended;
* ``pareto.png`` — fitness against expression size, with the hall of fame (Pareto front);
* ``loss_K.png`` — for the top hall-of-fame losses, the loss and its gradient as functions of the
  true-class probability ``t`` next to cross-entropy (the plot GLO used to explain Baikal): the
  probe has C classes (the task's count, clipped to 2..10), the true class has probability ``t``
  and the others share ``1 - t`` equally; ``z = log p``. Regression losses are drawn against the
  residual ``f - y`` next to the squared error;
* ``rungs.png`` — only for a multi-fidelity study (``--fidelity asha``): the learning curves
  (fitness against proxy steps, one point per rung) of the candidates that reached the top rung,
  and how many candidates stopped at each rung length (also a table in the page);
* ``formula_K.png`` — each formula typeset with matplotlib's mathtext (plain text in the page if
  mathtext cannot typeset it).

Plots use matplotlib's Agg canvas directly (no pyplot, no global backend change). The page has no
scripts and no external resources. To check it in a real browser (not needed by the tests, which
skip it when Chromium is absent)::

    apt-get install -y chromium
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,3000 \\
        --screenshot=/tmp/report.png DIR/index.html
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lossforge.report.figures import make_figures, probe_curve, save_figure, typeset_formula
from lossforge.report.html import page

__all__ = ["make_figures", "probe_curve", "read_study", "write_report"]


def write_report(study_path: str | Path, output: str | Path, top: int = 3, task=None) -> Path:
    """Write the report of the study at ``study_path`` into the directory ``output``; returns the
    path of ``index.html``. Raises :class:`~lossforge.storage.StudyFileError` for a bad file.
    ``task``: see :func:`read_study`."""
    data = read_study(study_path, task=task)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    figures = {name: save_figure(fig, out / f"{name}.png")
               for name, fig in make_figures(data, top).items()}
    losses = []
    for k, entry in enumerate(data["hof"][:top], 1):
        losses.append({"rank": k, "entry": entry, "plot": figures[f"loss_{k}"],
                       "latex": typeset_formula(entry.formula, out / f"formula_{k}.png")})
    best_latex = None
    if data["best"] is not None:
        best_latex = typeset_formula(data["best"].formula, out / "formula_best.png")
    index = out / "index.html"
    index.write_text(page(data, figures, losses, best_latex), encoding="utf-8")
    return index


def read_study(path: str | Path, task=None) -> dict[str, Any]:
    """Everything the report shows, read from the study file (read-only when possible).

    Nothing the study names is imported: the class count of the loss plots' probe is the stored
    ``num_classes`` (studies written before it was stored: a built-in task's, looked up by name;
    or that of ``task`` — a spec or task object the caller names, CLI ``--task``; else 10).
    ``task`` must be the study's (its name): ``StudyFileError`` otherwise."""
    from lossforge.study import load_study

    study = load_study(path, readonly=True)
    try:
        return _collect(study, task)
    finally:
        study.close()


def _fidelity(study) -> dict[str, Any] | None:
    """The study's multi-fidelity rungs (:func:`lossforge.evaluation.fidelity.study_fidelity`),
    ``None`` for a study without them."""
    from lossforge.evaluation.fidelity import study_fidelity

    return study_fidelity(study.store, study.best)


def _transfer(study) -> dict[str, Any]:
    """The transfer panel, ties and setups checked (:func:`lossforge.transfer.show_extras`)."""
    from lossforge.transfer import show_extras

    return show_extras(study)


def _num_classes(settings: dict[str, Any], task) -> int | None:
    """The study's class count, without importing anything the study names (see
    :func:`read_study`)."""
    from lossforge.study_task import stored_task_spec
    from lossforge.tasks.spec import is_spec, load_task

    if task is not None:
        from lossforge.storage import StudyFileError

        task = load_task(task)
        if task.name != settings["task"]:
            raise StudyFileError(f"--task names task {task.name!r}, but the study was made with "
                                 f"{settings['task']!r} ({stored_task_spec(settings)})")
        return task.num_classes
    if settings.get("num_classes") is not None:
        return settings["num_classes"]
    if is_spec(stored_task_spec(settings)):
        return None  # a task file or module: never imported from a study file
    try:  # a registered task (by name only, nothing imported): its class count
        from lossforge import tasks

        return tasks.get(settings["task"]).num_classes
    except Exception:
        return None


def _collect(study, task=None) -> dict[str, Any]:
    s = study.settings
    rows = study.candidates
    num_classes = _num_classes(s, task)
    return {"path": str(study.path), "settings": s, "metric": s.get("metric", "fitness"),
            "rows": rows, "stats": study.stats, "hof": study.hall_of_fame, "best": study.best,
            "evaluation": study.meta("evaluation"), "created": study.meta("created"),
            "baseline": study.meta("baseline"), "fidelity": _fidelity(study),
            "transfer": _transfer(study),
            "num_classes": min(10, max(2, num_classes or 10)), "explored": len(rows)}
