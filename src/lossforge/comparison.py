"""``evaluate``: compare losses fairly on a task — K seeds each, mean ± std of every metric, and
the difference to the task's baseline (cross-entropy) with a Welch t-test p-value.

The :class:`Comparison` it returns prints as a table (``str``/``repr``; ``_repr_html_`` in a
notebook): one row per loss, ``mean ± std`` of each metric over the valid runs, and for every loss
but the baseline ``Δ`` (its mean minus the baseline's) with the Welch p-value. The raw runs stay in
``result.runs``; ``result.to_dict()`` is the JSON form.

A task that overrides :meth:`~lossforge.tasks.Task.fit` (its own training loop) is trained by
that loop, as in a search (:func:`~lossforge.evaluation.own_loop.training_run`); ``fit`` returns
validation metrics, so such a comparison scores the validation split.
"""
from __future__ import annotations

import html
import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from lossforge.evaluation.own_loop import training_run
from lossforge.storage import json_safe
from lossforge.tasks import Task, overrides_fit
from lossforge.tasks.spec import load_task
from lossforge.training import OK, TrainResult


@dataclass
class LossSummary:
    """One row of the comparison: a loss over ``seeds`` runs on one split.

    ``mean``/``std``: metric -> value over the valid runs (std with ddof=1; 0 for one run);
    ``delta``: mean minus the baseline's mean; ``p_value``: Welch's t-test against the baseline
    runs (``nan`` when undefined, e.g. fewer than 2 runs or zero variance on both sides).
    """

    loss: str
    runs: int
    invalid: int
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    delta: dict[str, float] = field(default_factory=dict)
    p_value: dict[str, float] = field(default_factory=dict)


@dataclass(repr=False)
class Comparison:
    """The result of :func:`evaluate`: per-loss summaries and every raw run.

    Prints as a table (:meth:`table`); ``_repr_html_`` renders it in a notebook."""

    task: str
    split: str
    baseline: str
    seeds: list[int]
    steps: int
    metrics: list[str]
    higher_is_better: dict[str, bool]
    rows: list[LossSummary]
    runs: list[TrainResult]

    def to_dict(self) -> dict:
        return json_safe(asdict(self))

    def title(self) -> str:
        """What the table compares: task, split, seeds, steps and the baseline."""
        n = len(self.seeds)
        return (f"{self.task}: {self.split} split, {n} seed{'s' if n != 1 else ''}, {self.steps} "
                f"steps; Δ and Welch p vs {self.baseline}")

    def table(self, max_loss_width: int = 48) -> str:
        """The comparison as plain text: one row per loss (names longer than ``max_loss_width``
        characters are cut with …), ``runs`` valid/total, then per metric a column ``mean ± std``
        and a column ``Δ (p)``: the mean minus the baseline's and the Welch p-value (empty on the
        baseline's row)."""
        header = ["loss", "runs"]
        for m in self.metrics:
            header += [f"{m} {'↑' if self.higher_is_better[m] else '↓'}", "Δ (p)"]
        lines = [header]
        for r in self.rows:
            row = [_cut(r.loss, max_loss_width), f"{r.runs - r.invalid}/{r.runs}"]
            for m in self.metrics:
                row.append(f"{_fmt(r.mean[m])} ± {_fmt(r.std[m])}")
                row.append("" if r.loss == self.baseline else
                           f"{_fmt(r.delta[m], sign=True)} (p={_fmt(r.p_value[m], 3)})")
            lines.append(row)
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        text = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines]
        rule = "-" * max(len(t) for t in text)
        return "\n".join([self.title(), rule, text[0], rule, *text[1:], rule])

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        """The table as HTML (Jupyter): Δ and p on a second line of each cell."""
        e = html.escape
        head = "".join(f"<th>{e(m)} {'↑' if self.higher_is_better[m] else '↓'}</th>"
                       for m in self.metrics)
        body = []
        for r in self.rows:
            cells = [f'<td style="text-align:left"><code>{e(r.loss)}</code></td>',
                     f"<td>{r.runs - r.invalid}/{r.runs}</td>"]
            for m in self.metrics:
                cell = f"{_fmt(r.mean[m])} ± {_fmt(r.std[m])}"
                if r.loss != self.baseline:
                    cell += (f"<br><small>Δ {_fmt(r.delta[m], sign=True)} "
                             f"(p={_fmt(r.p_value[m], 3)})</small>")
                cells.append(f'<td style="text-align:right">{cell}</td>')
            body.append("<tr>" + "".join(cells) + "</tr>")
        return (f"<table><caption>{e(self.title())}</caption>"
                f"<tr><th>loss</th><th>runs</th>{head}</tr>{''.join(body)}</table>")


def _fmt(v: float | None, digits: int = 4, sign: bool = False) -> str:
    """A metric value for the table: ``—`` when undefined, 4 decimals (1 from 10 000 on)."""
    if v is None or not math.isfinite(v):
        return "—"
    digits = 1 if abs(v) >= 1e4 else digits
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided Welch t-test p-value; ``nan`` when it is undefined."""
    if len(a) < 2 or len(b) < 2 or (np.std(a) == 0 and np.std(b) == 0):
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _split_for(task: Task, split: str | None) -> str:
    """The split to score: ``split`` (default ``"test"``); ``"val"`` for a task whose own loop
    (``fit``) returns validation metrics only (a warning when ``"test"`` was asked for)."""
    if split not in (None, "val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    if not overrides_fit(task):
        return split or "test"
    if split == "test":
        warnings.warn(f"task {task.name!r} trains with its own loop (fit), which returns "
                      "validation metrics: scoring the validation split, not the test split",
                      stacklevel=3)
    return "val"


def evaluate(task: Task | str, losses: list, *, seeds: int | list[int] = 3, steps: int | None = None,
             device: str = "cpu", split: str | None = None, baseline: str | None = None,
             progress=None) -> Comparison:
    """Train every loss in ``losses`` on ``task`` once per seed and summarise the ``split`` metrics.

    ``split``: ``"test"`` (the default) or ``"val"``. A task with its own loop (``Task.fit``
    overridden) is trained by it and scored on what it returns, the validation metrics: its
    default split is ``"val"``, and asking for ``"test"`` warns and scores ``"val"``.
    The baseline (default: the task's, cross-entropy for classification) is added first if absent.
    ``progress(done, total, loss_name)`` is called after each run when given.
    """
    task = load_task(task)
    split = _split_for(task, split)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError("seeds must be at least 1")
    baseline = baseline or task.baseline
    specs = list(losses)
    if baseline not in [s if isinstance(s, str) else None for s in specs]:
        specs.insert(0, baseline)
    metric_names = list(task.metrics)
    runs: list[TrainResult] = []
    per_loss: dict[str, list[TrainResult]] = {}
    total, done = len(specs) * len(seed_list), 0
    for spec in specs:
        name = spec if isinstance(spec, str) else str(spec)
        per_loss[name] = []
        for seed in seed_list:
            r = training_run(task, spec, steps=steps, seed=seed, device=device, split=split)
            r.loss = name
            runs.append(r)
            per_loss[name].append(r)
            done += 1
            if progress:
                progress(done, total, name)
    values = {name: {m: [getattr(r, split)[m] for r in rs if r.status == OK] for m in metric_names}
              for name, rs in per_loss.items()}
    rows = []
    for name, rs in per_loss.items():
        row = LossSummary(name, len(rs), sum(r.status != OK for r in rs))
        for m in metric_names:
            v, b = values[name][m], values[baseline][m]
            row.mean[m] = float(np.mean(v)) if v else float("nan")
            row.std[m] = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
            row.delta[m] = row.mean[m] - (float(np.mean(b)) if b else float("nan"))
            row.p_value[m] = welch_p(v, b) if name != baseline else float("nan")
        rows.append(row)
    return Comparison(task.name, split, baseline, seed_list, steps or task.proxy.steps, metric_names,
                      {m: task.metrics[m].higher_is_better for m in metric_names}, rows, runs)
