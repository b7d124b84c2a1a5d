"""``lossforge report FILE -o DIR``: an HTML page and PNG plots of a study, from its file alone.

Nothing but the SQLite study file is read (no task data, no training), through the readers' door
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


def write_report(study_path: str | Path, output: str | Path, top: int = 3) -> Path:
    """Write the report of the study at ``study_path`` into the directory ``output``; returns the
    path of ``index.html``. Raises :class:`~lossforge.storage.StudyFileError` for a bad file."""
    data = read_study(study_path)
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


def read_study(path: str | Path) -> dict[str, Any]:
    """Everything the report shows, read from the study file (read-only when possible)."""
    from lossforge.study import load_study

    study = load_study(path, readonly=True)
    try:
        return _collect(study)
    finally:
        study.close()


def _collect(study) -> dict[str, Any]:
    s = study.settings
    rows = study.candidates
    num_classes = None
    try:  # the class count, if this machine knows the task (only for the probe's size)
        from lossforge import tasks

        num_classes = tasks.get(s["task"]).num_classes
    except Exception:
        pass
    return {"path": str(study.path), "settings": s, "metric": s.get("metric", "fitness"),
            "rows": rows, "stats": study.stats, "hof": study.hall_of_fame, "best": study.best,
            "evaluation": study.meta("evaluation"), "created": study.meta("created"),
            "num_classes": min(10, max(2, num_classes or 10)), "explored": len(rows)}
