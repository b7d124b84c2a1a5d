"""``evaluate``: compare losses fairly on a task — K seeds each, mean ± std of every metric, and
the difference to the task's baseline (cross-entropy) with a Welch t-test p-value."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from lossforge.tasks import Task
from lossforge.tasks import get as get_task
from lossforge.training import OK, TrainResult, train


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


@dataclass
class Comparison:
    """The result of :func:`evaluate`: per-loss summaries and every raw run."""

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
        return _finite(asdict(self))


def _finite(obj):
    """JSON-safe copy: non-finite floats become ``None``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided Welch t-test p-value; ``nan`` when it is undefined."""
    if len(a) < 2 or len(b) < 2 or (np.std(a) == 0 and np.std(b) == 0):
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def evaluate(task: Task | str, losses: list, *, seeds: int | list[int] = 3, steps: int | None = None,
             device: str = "cpu", split: str = "test", baseline: str | None = None,
             progress=None) -> Comparison:
    """Train every loss in ``losses`` on ``task`` once per seed and summarise the ``split`` metrics.

    The baseline (default: the task's, cross-entropy for classification) is added first if absent.
    ``progress(done, total, loss_name)`` is called after each run when given.
    """
    task = get_task(task)
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
            r = train(task, spec, steps=steps, seed=seed, device=device, splits=(split,))
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
