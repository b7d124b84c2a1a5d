"""``objective_task``: a task made from a function that trains with a given loss.

For code that is a function rather than a :class:`~lossforge.tasks.Task` subclass (Optuna's
``objective(trial)`` shape)::

    def objective(loss, steps, seed, report):
        model, opt, loaders = build_my_project(seed)
        for step, (x, y) in enumerate(loaders.train, 1):
            opt.zero_grad(); loss(model(x), y).backward(); opt.step()
            if step % 500 == 0:
                report(step, {"miou": evaluate(model, loaders.val)})
            if step == steps:
                break
        return {"miou": evaluate(model, loaders.val)}

    task = lossforge.objective_task(objective, name="my-seg", kind="classification",
                                    num_classes=21, metrics={"miou": "max"},
                                    default_metric="miou", probe_targets=some_label_maps)

The function is the task's :meth:`~lossforge.tasks.Task.fit`: ``fn(loss, steps, seed, report)``
(positional; a ``device`` keyword too when the function declares one) returns the validation
metrics ``{name: value}``. ``loss`` is an ``nn.Module`` called ``loss(output, target)`` (logits
``(N, C, *spatial)`` and class indices ``(N, *spatial)`` with ``ignore_index`` left out, or
predictions and targets of one shape for regression); ``report(step, metrics)`` is always a
callable (it does nothing when nobody listens).

The screening stages never call the function: they use ``kind``, ``num_classes``,
``ignore_index``, the target metric and ``probe_targets`` (a few real training targets). The
loss-rejection protocol needs a metric it can compute on probe predictions itself: a
:class:`~lossforge.tasks.Metric`'s ``fn``, or for a metric given by direction only the lossforge
metric of the same name (:data:`SCREENING_METRICS`), else a stand-in for the kind (accuracy over
the non-ignored targets; mean absolute error). Only the sign of its change matters there.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from lossforge import metrics as M
from lossforge.tasks.base import (CLASSIFICATION, REGRESSION, Metric, ProxyConfig, Report, Task,
                                  has_data)

#: Direction words accepted in ``metrics={"name": direction}``.
DIRECTIONS = {"max": True, "maximize": True, "min": False, "minimize": False}

#: lossforge metrics the LRP uses for a metric given by direction only, by kind and name.
SCREENING_METRICS: dict[str, dict[str, Callable]] = {
    CLASSIFICATION: {"accuracy": M.accuracy, "balanced_accuracy": M.balanced_accuracy,
                     "f1": M.f1, "miou": M.miou, "fwiou": M.fwiou, "gacc": M.gacc, "macc": M.macc},
    REGRESSION: {"mae": M.mae, "rmse": M.rmse},
}
_SEGMENTATION = {"miou", "fwiou", "gacc", "macc"}  # take ignore_index themselves


def _valid_accuracy(pred: np.ndarray, target: np.ndarray, ignore_index: int) -> float:
    """Fraction of non-ignored positions where ``pred == target`` (0.0 when all are ignored)."""
    keep = target != ignore_index
    return float(np.mean(pred[keep] == target[keep])) if keep.any() else 0.0


def _masked(fn: Callable, ignore_index: int, pred, target, **kw) -> float:
    """``fn`` on the positions whose target is not ``ignore_index`` (flattened)."""
    pred, target = np.asarray(pred), np.asarray(target)
    keep = target != ignore_index
    return float(fn(pred[keep], target[keep], **kw)) if keep.any() else 0.0


class ObjectiveTask(Task):
    """A task whose training is a user function (see the module docstring).

    It has no :meth:`data` and no :meth:`make_model`: :meth:`fit` calls the function and
    :meth:`probe_targets` draws from the targets given at construction.
    """

    def __init__(self, fn: Callable[..., Mapping[str, float]], *, name: str, kind: str,
                 num_classes: int | None, metrics, default_metric: str,
                 probe_targets=None, ignore_index: int = 255, steps: int | None = None,
                 baseline: str | None = None, class_prior=None):
        if not callable(fn):
            raise TypeError(f"objective_task: fn must be a function fn(loss, steps, seed, report) "
                            f"-> dict of metrics, got {type(fn).__name__}")
        self.fn = fn
        self.name = str(name)
        self.kind = _check_kind(kind, self.name)
        self.num_classes = _check_classes(num_classes, self.kind, self.name)
        self.ignore_index = int(ignore_index)
        self.metrics = _metrics(metrics, self.name)
        if default_metric not in self.metrics:
            raise ValueError(f"objective task {self.name!r}: default_metric {default_metric!r} is "
                             f"not among its metrics ({', '.join(self.metrics)})")
        self.default_metric = default_metric
        self.proxy = ProxyConfig() if steps is None else ProxyConfig(steps=int(steps))
        self.baseline = baseline or ("ce" if self.kind == CLASSIFICATION else "mse")
        self._probe_targets = None if probe_targets is None else self._check_targets(probe_targets)
        self._passes_device = _accepts(fn, "device")
        self._class_prior = self._check_prior(class_prior)

    # --- training: the user's function ------------------------------------------------------------
    def fit(self, loss: nn.Module, *, steps: int, seed: int, device: str = "cpu",
            report: Report | None = None) -> dict[str, float]:
        """``fn(loss, steps, seed, report)`` (and ``device=`` when ``fn`` declares it); a
        ``report`` of ``None`` becomes a function that does nothing."""
        report = report if report is not None else _no_report
        if self._passes_device:
            return self.fn(loss, steps, seed, report, device=device)
        return self.fn(loss, steps, seed, report)

    def class_prior(self) -> torch.Tensor | None:
        """The ``class_prior`` given to :func:`objective_task` (``None``: the uniform prior)."""
        return self._class_prior

    def _check_prior(self, prior) -> torch.Tensor | None:
        if prior is None:
            return None
        if self.kind != CLASSIFICATION:
            raise ValueError(f"objective task {self.name!r}: class_prior is for classification")
        from lossforge.expr.interpret import checked_prior
        t = checked_prior(prior)
        if t.numel() != self.num_classes:
            raise ValueError(f"objective task {self.name!r}: class_prior has {t.numel()} entries, "
                             f"num_classes is {self.num_classes}")
        return t

    # --- screening: no data, no model ---------------------------------------------------------------
    def probe_targets(self, n: int, seed: int) -> torch.Tensor:
        """``n`` of the ``probe_targets`` given at construction (all when fewer), drawn with
        ``seed``; ``ValueError`` naming what to pass when none were given."""
        if self._probe_targets is None:
            if has_data(self):  # a subclass that adds data()
                return super().probe_targets(n, seed)
            raise ValueError(
                f"objective task {self.name!r} has no probe_targets and no data(): the screening "
                "stages (checks, GEC, LRP) never run your training function, but they need a few "
                f"real training targets; pass probe_targets= to objective_task ({self._shape_hint()})")
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self._probe_targets), generator=gen)[:n]
        return self._probe_targets[idx]

    def slot_probe_targets(self, slot_name: str, n: int, seed: int) -> torch.Tensor:
        self.slot(slot_name)
        return self.probe_targets(n, seed)

    def screening_metric(self, name: str | None = None) -> Metric:
        """The metric ``name`` when it has its own ``fn``; else lossforge's metric of that name
        for the kind (:data:`SCREENING_METRICS`, ignored targets left out), else the kind's
        stand-in: accuracy over non-ignored targets (classification) or MAE (regression)."""
        m = self.metric(name)
        if m.fn is not _by_direction:
            return m
        known = SCREENING_METRICS[self.kind].get(m.name)
        if self.kind == REGRESSION:
            return Metric(m.name, known, m.higher_is_better) if known else \
                Metric("mae (stand-in)", M.mae, higher_is_better=False)
        if known is None:
            return Metric("accuracy (stand-in)",
                          functools.partial(_valid_accuracy, ignore_index=self.ignore_index))
        if m.name in _SEGMENTATION:
            fn = functools.partial(known, num_classes=self.num_classes, ignore_index=self.ignore_index)
        elif m.name == "accuracy":
            fn = functools.partial(_valid_accuracy, ignore_index=self.ignore_index)
        else:
            fn = functools.partial(_masked, functools.partial(known, num_classes=self.num_classes),
                                   self.ignore_index)
        return Metric(m.name, fn, m.higher_is_better)

    def compute_metrics(self, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        raise NotImplementedError(f"objective task {self.name!r}: its metrics are computed by its "
                                  "training function (fit), not from predictions")

    # --- checks -------------------------------------------------------------------------------------
    def _shape_hint(self) -> str:
        if self.kind == CLASSIFICATION:
            return ("a tensor of class indices, shape (n,) or (n, H, W), values in "
                    f"0..{self.num_classes - 1} or {self.ignore_index}")
        return "a float tensor of targets, shape (n, ...) as your model's outputs"

    def _check_targets(self, targets) -> torch.Tensor:
        """``targets`` as a tensor, checked against the kind and the number of classes."""
        try:
            t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor)
                                else targets).detach().cpu()
        except (TypeError, ValueError) as err:
            raise ValueError(f"objective task {self.name!r}: probe_targets must be a tensor or "
                             f"array ({self._shape_hint()}): {err}") from None
        where = f"objective task {self.name!r}: probe_targets"
        if t.dim() == 0 or len(t) == 0:
            raise ValueError(f"{where} must hold at least one target ({self._shape_hint()})")
        if self.kind == REGRESSION:
            t = t.float()
            if not torch.isfinite(t).all():
                raise ValueError(f"{where} contain non-finite values")
            return t
        if t.is_floating_point() and not torch.equal(t, t.round()):
            raise ValueError(f"{where} must be class indices (integers), got fractional values")
        t = t.long()
        bad = (t != self.ignore_index) & ((t < 0) | (t >= self.num_classes))
        if bad.any():
            raise ValueError(f"{where} hold label {int(t[bad][0])}, outside 0..{self.num_classes - 1} "
                             f"(num_classes={self.num_classes}) and not the ignore index "
                             f"{self.ignore_index}")
        return t

    def __repr__(self) -> str:
        fn = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        return f"<ObjectiveTask {self.name}: {self.kind}, fn {fn}, metrics {list(self.metrics)}>"


def objective_task(fn: Callable[..., Mapping[str, float]], *, name: str, kind: str,
                   num_classes: int | None, metrics, default_metric: str, probe_targets=None,
                   ignore_index: int = 255, steps: int | None = None,
                   baseline: str | None = None, class_prior=None) -> ObjectiveTask:
    """Wrap ``fn(loss, steps, seed, report) -> {metric: value}`` into a task.

    ``kind``: ``"classification"`` (segmentation included) or ``"regression"``;
    ``num_classes``: the number of classes (``None`` for regression); ``metrics``: the validation
    metrics ``fn`` returns, as ``{name: "max" | "min"}`` (direction only), ``{name: Metric}`` or a
    list of :class:`~lossforge.tasks.Metric` (a ``Metric``'s ``fn(pred, target)`` is what the
    loss-rejection protocol scores probes with; see the module docstring for direction-only
    metrics); ``default_metric``: the one to search for; ``probe_targets``: a few real training
    targets for the screening stages (class indices ``(n, *spatial)`` or values ``(n, ...)``;
    8–32 are enough), required to search; ``ignore_index``: the target value the loss leaves out.
    ``steps``: the proxy training length when the search does not set one (default 300);
    ``baseline``: the reference loss (default ``ce`` / ``mse``); ``class_prior``: the training
    set's class frequencies ``(num_classes,)``, what the loss variable ``q`` reads (default: the
    uniform prior, with a warning, for a loss that reads ``q``).

    ``ValueError`` / ``TypeError`` name what is wrong with an argument.
    """
    return ObjectiveTask(fn, name=name, kind=kind, num_classes=num_classes, metrics=metrics,
                         default_metric=default_metric, probe_targets=probe_targets,
                         ignore_index=ignore_index, steps=steps, baseline=baseline,
                         class_prior=class_prior)


# ---- helpers ------------------------------------------------------------------------------------
def _no_report(step: int, metrics: Mapping[str, float]) -> None:
    """The ``report`` given to ``fn`` when nobody listens."""


def _by_direction(pred, target) -> float:
    """The ``fn`` of a metric given by direction only: it is computed by the user's function."""
    raise NotImplementedError("this metric is computed by the task's training function")


def _check_kind(kind: str, name: str) -> str:
    if kind not in (CLASSIFICATION, REGRESSION):
        raise ValueError(f"objective task {name!r}: kind must be 'classification' (segmentation "
                         f"included) or 'regression', got {kind!r}; box losses need a Task "
                         "subclass with loss slots")
    return kind


def _check_classes(num_classes, kind: str, name: str) -> int | None:
    if kind == REGRESSION:
        if num_classes is not None:
            raise ValueError(f"objective task {name!r}: a regression task has num_classes=None, "
                             f"got {num_classes!r}")
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"objective task {name!r}: a classification task needs num_classes, "
                         f"an int >= 2, got {num_classes!r}")
    return num_classes


def _metrics(spec, name: str) -> dict[str, Metric]:
    """``{name: "max"|"min"|Metric}`` or an iterable of :class:`Metric` -> ``{name: Metric}``."""
    where = f"objective task {name!r}: metrics"
    if isinstance(spec, Mapping):
        items: Iterable[tuple[Any, Any]] = spec.items()
    elif isinstance(spec, (list, tuple)) and all(isinstance(m, Metric) for m in spec):
        items = [(m.name, m) for m in spec]
    else:
        raise TypeError(f"{where} must be a dict name -> 'max' | 'min' | Metric, or a list of "
                        f"Metric, got {type(spec).__name__}")
    out: dict[str, Metric] = {}
    for key, value in items:
        if isinstance(value, Metric):
            out[str(key)] = value if value.name == key else Metric(str(key), value.fn,
                                                                   value.higher_is_better)
        elif isinstance(value, str) and value.lower() in DIRECTIONS:
            out[str(key)] = Metric(str(key), _by_direction, DIRECTIONS[value.lower()])
        else:
            raise ValueError(f"{where}: {key!r} -> {value!r}: give the direction 'max' "
                             "(higher is better) or 'min', or a Metric")
    if not out:
        raise ValueError(f"{where}: name at least one metric that fn returns")
    return out


def _accepts(fn: Callable, param: str) -> bool:
    """Whether ``fn`` takes a keyword ``param`` (or ``**kwargs``)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return any(p.name == param and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               or p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
