"""``check_task``: is a task ready to search? What ``lossforge tasks --check SPEC`` runs.

Contract. :func:`check_task` loads a task (a spec for :func:`lossforge.tasks.spec.load_task`, or a
``Task``), runs the checks below on a few real samples and returns a :class:`TaskReport`: a list of
:class:`Finding` (``level`` ``"error"``, ``"warning"`` or ``"ok"``; ``what`` was checked; ``detail``
what was found; ``fix`` what to change, empty for ``ok``). Nothing raises for a defect of the task:
every exception from the user's code becomes an error finding naming the exception and the place in
the user's file (``file.py:LINE in function: `source```). ``report.ok`` is true when there is no
error. Checks that need what an earlier one found broken are skipped (a model that cannot be built
is not trained).

The checks, in order:

1. *loading*: the spec loads (a :class:`~lossforge.tasks.spec.TaskSpecError` is an error);
2. *attributes*: ``kind`` is known (or ``slots`` are given), ``num_classes`` (≥ 2) for
   classification, ``metrics`` are :class:`~lossforge.tasks.Metric` objects, ``default_metric`` is
   one of them, the ``baseline`` loss loads for the task;
3. *splits*: ``data()`` returns train/val/test splits, each non-empty with as many targets as inputs;
   targets are integer class indices (classification, segmentation) or floats (regression), finite;
   class indices lie in ``[0, num_classes)`` or equal ``ignore_index`` (the offending values, how many,
   and a fix: ``num_classes``, 1-based labels, a void marker for ``ignore_index``);
4. *model*: ``seeded_model(0)`` builds an ``nn.Module``, a training batch goes through it, and the
   output has the task's layout (:func:`~lossforge.tasks.check_output_shape`; for a multi-slot task
   ``slot_inputs`` gives every slot a (prediction, target) pair of its kind); the output is finite;
5. *training step*: ``steps`` optimiser steps (the task's proxy optimiser) with the ``baseline`` loss on
   that batch: a finite scalar loss that depends on the parameters, finite gradients, finite
   parameters after the step;
6. *metrics*: on the model's predictions for a validation batch, each metric returns a finite number
   (NaN, inf, a tensor, a string, ``None``, an exception: each its own message); an overridden
   ``compute_metrics`` returns every metric name with a finite number;
7. *the training loop*: a task that overrides ``Task.fit`` (its own loop) is called as
   ``fit(baseline, steps=steps, seed=0, device=device, report=...)`` and must return a dict with the
   metric names and finite floats; otherwise, when all splits are in-memory tensors, lossforge's own
   loop ``training.train(task, baseline, steps=steps, splits=("val",))`` runs once, validation
   included.

Data on disk: a split that holds a map-style ``torch.utils.data.Dataset`` (items ``(x, y)``) is only
read for its first batch (labels are then checked on those items only, and the report says so);
tensors are checked whole (they are in memory anyway). Batches are at most ``proxy.batch_size``
samples. Runs on ``device`` (default CPU); torch's global RNG state is restored afterwards.
"""
from __future__ import annotations

import math
import numbers
import sysconfig
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lossforge._hints import did_you_mean
from lossforge.data import Split
from lossforge.tasks.base import (BOX, CLASSIFICATION, REGRESSION, Metric, Task, check_output_shape,
                                  has_data, overrides_fit, probe_targets)
from lossforge.tasks.spec import TaskSpecError, load_task, spec_of

ERROR, WARNING, OK = "error", "warning", "ok"
LEVELS = (ERROR, WARNING, OK)
_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Finding:
    """One result of :func:`check_task`: ``level`` (``"error"``, ``"warning"`` or ``"ok"``),
    ``what`` was checked, the ``detail`` found and the ``fix`` (empty when nothing is to change)."""

    level: str
    what: str
    detail: str
    fix: str = ""

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f"finding level must be one of {', '.join(LEVELS)}, got {self.level!r}")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class TaskReport:
    """What :func:`check_task` found for the task ``spec`` (``task``: its name once loaded;
    ``seconds``: the wall time of the check)."""

    spec: str
    task: str | None = None
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No error (warnings allowed)."""
        return not self.errors

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    def add(self, level: str, what: str, detail: str, fix: str = "") -> Finding:
        finding = Finding(level, what, detail, fix)
        self.findings.append(finding)
        return finding

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "task": self.task, "ok": self.ok, "errors": len(self.errors),
                "warnings": len(self.warnings), "seconds": round(self.seconds, 3),
                "findings": [f.to_dict() for f in self.findings]}

    def __str__(self) -> str:
        lines = [f"task check {self.spec}: {len(self.errors)} error(s), "
                 f"{len(self.warnings)} warning(s)"]
        for f in self.findings:
            fix = f" -> fix: {f.fix}" if f.fix else ""
            lines.append(f"  [{f.level}] {f.what}: {f.detail}{fix}")
        return "\n".join(lines)


# --- where an exception came from --------------------------------------------------------------------
_LIBRARY_DIRS = tuple(str(Path(p).resolve()) + "/" for p in
                      {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
                       sysconfig.get_paths()["platlib"], str(Path(torch.__file__).parent),
                       str(Path(__file__).parent.parent)})


def _is_library(filename: str) -> bool:
    if filename.startswith("<") or filename == __file__:
        return True
    resolved = str(Path(filename).resolve())
    return resolved.startswith(_LIBRARY_DIRS)


def _shown_path(filename: str) -> str:
    path = Path(filename)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def raised_at(err: BaseException) -> str:
    """``"Type: message (at file.py:LINE in function: `source`)"``: the exception and the innermost
    frame outside lossforge, the standard library, torch and installed packages (the innermost
    frame of all when every frame is library code, as for a built-in task)."""
    frames = traceback.extract_tb(err.__traceback__)
    own = [f for f in frames if not _is_library(f.filename)]
    frame = (own or frames or [None])[-1]
    text = str(err).strip().replace("\n", " ")
    text = text if len(text) <= 400 else text[:397] + "..."
    exc = f"{type(err).__name__}: {text}" if text else type(err).__name__
    if frame is None:
        return exc
    line = f": `{frame.line.strip()}`" if frame.line else ""
    return f"{exc} (at {_shown_path(frame.filename)}:{frame.lineno} in {frame.name}{line})"


# --- reading splits without loading them ---------------------------------------------------------------
@dataclass
class _Head:
    """The first ``len(x)`` samples of a split; ``size`` its length; ``whole``: x, y are the
    whole split (in-memory tensors)."""

    x: Any
    y: Any
    size: int
    whole: bool


def _head(split, n: int) -> _Head:
    """The first ``n`` samples of a split (a :class:`~lossforge.data.Split`, or a ``Dataset``):
    tensor slices in memory, else the first ``n`` items read and collated as training would
    (``split.items``). ``TypeError``/``ValueError`` naming what is wrong."""
    if isinstance(split, torch.utils.data.Dataset) and not isinstance(split, Split):
        split = Split(split)
    if not isinstance(split, Split):
        raise TypeError(f"the split is a {type(split).__name__}, not a lossforge.data.Split or a "
                        "torch Dataset")
    if not split.in_memory:
        size = len(split)
        x, y = split.items(list(range(min(n, size))))
        return _Head(x, y, size, False)
    x, y = split.x, split.y
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"split.{name} is a {type(t).__name__}, not a torch tensor "
                            f"(use torch.as_tensor({name}))")
    return _Head(x[:n], y[:n], int(x.shape[0]), True)


def _overrides(task: Task, method: str) -> bool:
    base = getattr(Task, method, None)
    return base is not None and getattr(type(task), method, None) is not base


def _shape(t) -> str:
    return str(tuple(t.shape)) if hasattr(t, "shape") else type(t).__name__


def _counts(values: torch.Tensor, limit: int = 8) -> str:
    vals, counts = torch.unique(values, return_counts=True)
    order = torch.argsort(counts, descending=True)[:limit]
    text = ", ".join(f"{_num(vals[i])} (×{int(counts[i])})" for i in order.tolist())
    return text + (f" and {len(vals) - limit} more values" if len(vals) > limit else "")


def _num(v) -> str:
    v = v.item() if hasattr(v, "item") else v
    return str(int(v)) if float(v).is_integer() else f"{float(v):g}"


# --- the checks -----------------------------------------------------------------------------------------
class _Checker:
    """Runs the checks of one task into ``report`` (one method per stage; each returns whether the
    stages that depend on it can run)."""

    def __init__(self, task: Task, report: TaskReport, steps: int, device: torch.device):
        self.task, self.report, self.steps, self.device = task, report, steps, device
        self.loss: nn.Module | None = None
        self.heads: dict[str, _Head] = {}
        self.model: nn.Module | None = None
        self.clean = False  # every split passed (targets in range, finite)
        self._warned_unused = False

    def add(self, level, what, detail, fix=""):
        self.report.add(level, what, detail, fix)

    @property
    def batch_size(self) -> int:
        bs = getattr(getattr(self.task, "proxy", None), "batch_size", 32)
        return max(2, min(int(bs), 64))

    def run(self) -> None:
        if not self.attributes():
            return
        readable = self.splits()
        if readable and self.build_model() and self.forward() and self.clean:
            if self.loss is not None:
                self.train_step()
            self.metrics()
        if self.clean or not has_data(self.task):
            self.probes()
        if self.loss is not None and (overrides_fit(self.task) or not self.report.errors):
            self.loop()

    # 2. attributes ------------------------------------------------------------------------------
    def attributes(self) -> bool:
        t = self.task
        good = self._kind() & self._metrics()
        if good:
            self._baseline()
        names = ", ".join(f"{n}={getattr(t, n, None)!r}" for n in ("kind", "num_classes"))
        if good:
            self.add(OK, "task attributes", f"{names}, metrics {', '.join(t.metrics)} "
                                            f"(default {t.default_metric})")
        return good

    def _kind(self) -> bool:
        t = self.task
        if t.slots:
            return True
        if t.kind not in (CLASSIFICATION, REGRESSION):
            self.add(ERROR, "kind", f"kind is {t.kind!r}, which lossforge cannot train without "
                     "loss slots", "set kind = 'classification' (class indices, also segmentation) "
                     "or 'regression' (float targets), or declare `slots` and `slot_inputs()`")
            return False
        c = t.num_classes
        if t.kind == CLASSIFICATION and not (isinstance(c, int) and not isinstance(c, bool) and c >= 2):
            self.add(ERROR, "num_classes", f"a classification task needs num_classes ≥ 2, got {c!r}",
                     "set num_classes = the number of classes (the model's output channels; a "
                     "binary task has 2)")
            return False
        if t.kind == CLASSIFICATION and 0 <= t.ignore_index < c:
            self.add(WARNING, "ignore_index", f"ignore_index {t.ignore_index} is a class index "
                     f"(num_classes {c}): that class is ignored by every loss",
                     "set ignore_index to a value outside [0, num_classes), e.g. -1")
        return True

    def _metrics(self) -> bool:
        t = self.task
        metrics = getattr(t, "metrics", None)
        if not isinstance(metrics, dict) or not metrics:
            self.add(ERROR, "metrics", f"metrics is {metrics!r}: the task has no metric",
                     "set metrics = {'name': Metric('name', fn, higher_is_better=True)} with "
                     "fn(pred, target) -> float on NumPy arrays")
            return False
        good = True
        for name, m in metrics.items():
            if not isinstance(m, Metric):
                self.add(ERROR, f"metric {name!r}", f"metrics[{name!r}] is a "
                         f"{type(m).__name__}, not a Metric",
                         f"wrap it: Metric({name!r}, fn, higher_is_better=True)")
                good = False
        if t.default_metric not in metrics:
            self.add(ERROR, "default_metric", f"default_metric {t.default_metric!r} is not one of "
                     f"the metrics{did_you_mean(str(t.default_metric), list(metrics))}",
                     f"set default_metric to one of: {', '.join(metrics)}")
            good = False
        return good

    def _baseline(self) -> None:
        from lossforge.training.loss_spec import load_losses

        try:
            self.loss = load_losses(self.task.baseline, self.task).module.to(self.device)
        except Exception as err:  # noqa: BLE001 -- any failure is a finding
            from lossforge import zoo

            kinds = sorted({s.kind for s in self.task.loss_slots()})
            names = ", ".join(n for k in kinds for n in zoo.names(k)[:8])
            self.add(ERROR, "baseline loss", f"baseline {self.task.baseline!r} does not load: "
                     f"{raised_at(err)}", f"set baseline to a zoo name or formula for this task's "
                     f"kind ({names}, …: see `lossforge zoo`)")

    # 3. splits ------------------------------------------------------------------------------------
    def splits(self) -> bool:
        """Whether the train and val splits can be read (``self.clean``: and all passed)."""
        t = self.task
        if not has_data(t):
            if overrides_fit(t):
                self.add(OK, "data", "no data(): the task trains in its own fit(); split, model and "
                         "metric checks are skipped")
            else:
                self.add(ERROR, "data", "the task implements neither data() nor fit()",
                         "implement data() (train/val/test splits) and make_model(), or fit() with "
                         "your own training loop")
            return False
        try:
            data = t.data()
        except Exception as err:  # noqa: BLE001
            fix = ("make the files data() reads available (the message says where; built-in sets: "
                   "`make data`)" if isinstance(err, OSError) else
                   "fix data() so it returns DataSplits(train, val, test, num_classes, name)")
            self.add(ERROR, "data", f"data() raised {raised_at(err)}", fix)
            return False
        missing = [s for s in _SPLITS if getattr(data, s, None) is None]
        if missing:
            self.add(ERROR, "splits", f"data() returned {type(data).__name__} without "
                     f"{', '.join(missing)}", "return DataSplits(train, val, test, num_classes, "
                     "name) with a Split(x, y) (or a Dataset of (x, y) items) for each of "
                     "train, val and test")
            return False
        self.clean = all([self._split(name, getattr(data, name)) for name in _SPLITS])
        declared = getattr(data, "num_classes", None)
        if self.clean and not t.slots and declared is not None and declared != t.num_classes:
            self.add(WARNING, "num_classes", f"data() says num_classes={declared}, the task "
                     f"{t.num_classes}", "make Task.num_classes and DataSplits.num_classes agree")
        return "train" in self.heads and "val" in self.heads

    def _split(self, name: str, split) -> bool:
        what = f"split {name}"
        try:
            head = _head(split, self.batch_size)
        except Exception as err:  # noqa: BLE001
            self.add(ERROR, what, f"cannot read it: {raised_at(err)}",
                     "give each split as Split(x, y) with tensors of N samples, or a map-style "
                     "torch Dataset whose items are (x, y) pairs")
            return False
        if head.size == 0:
            self.add(ERROR, what, "the split is empty", f"give the {name} split at least one "
                     "sample (a few hundred for a meaningful proxy score)")
            return False
        if head.whole and len(split.y) != head.size:
            self.add(ERROR, what, f"{head.size} inputs but {len(split.y)} targets",
                     "give x and y the same first dimension: one target per input")
            return False
        self.heads[name] = head
        x, y = (split.x, split.y) if head.whole else (head.x, head.y)
        scope = "" if head.whole else f" (first {len(head.y)} of {head.size} items checked)"
        good = self._targets(name, y, scope) and self._finite(name, x, y, scope)
        if good:
            self.add(OK, what, f"{head.size} samples; a batch: x {_shape(head.x)} "
                     f"{getattr(head.x, 'dtype', '')}, y {_shape(head.y)} {y.dtype}{scope}")
        return good

    def _targets(self, name: str, y, scope: str) -> bool:
        t = self.task
        if not isinstance(y, torch.Tensor):
            self.add(ERROR, f"targets ({name})", f"y is a {type(y).__name__}, not a tensor",
                     "give targets as torch tensors (torch.as_tensor(y))")
            return False
        if t.slots:
            return True  # the slots' targets are checked on slot_inputs
        if t.kind == REGRESSION:
            if not y.is_floating_point():
                self.add(ERROR, f"targets ({name})", f"a regression task's targets are {y.dtype}",
                         "give float targets: y.float() (or as_split(x, y, regression=True))")
                return False
            return True
        if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
            self.add(ERROR, f"targets ({name})", f"class targets are {y.dtype}, not integer class "
                     "indices", "give class indices as int64: y.long() (one-hot or probability "
                     "targets: take argmax first)")
            return False
        if y.dtype != torch.int64:
            self.add(WARNING, f"targets ({name})", f"class targets are {y.dtype}; torch's "
                     "cross_entropy and nll_loss (a loop of your own, an exported loss) need int64",
                     "convert them: y.long()")
        return self._label_range(name, y, scope)

    def _label_range(self, name: str, y: torch.Tensor, scope: str) -> bool:
        c, ignore = self.task.num_classes, self.task.ignore_index
        y = y.to(torch.int64)
        bad = y[~(((y >= 0) & (y < c)) | (y == ignore))]
        if len(bad):
            share = f"{len(bad)} of {y.numel()} labels ({100 * len(bad) / y.numel():.2g} %)"
            self.add(ERROR, f"labels ({name})", f"{share}{scope} are outside [0, {c}) and not "
                     f"the ignore index {ignore}: {_counts(bad)}", self._label_fix(y, bad))
            return False
        if name == "train":
            present = set(torch.unique(y[y != ignore]).tolist())
            absent = [k for k in range(c) if k not in present]
            if absent and len(absent) < c:
                listed = ", ".join(map(str, absent[:10])) + (" …" if len(absent) > 10 else "")
                self.add(WARNING, f"labels ({name})", f"classes {listed} never occur in the "
                         f"training split{scope}", "check num_classes, or the class mapping of "
                         "the labels")
        return True

    def _label_fix(self, y: torch.Tensor, bad: torch.Tensor) -> str:
        c, ignore = self.task.num_classes, self.task.ignore_index
        valid = y[y != ignore]
        lo, hi = int(valid.min()), int(valid.max())
        fixes = []
        if lo == 1 and hi == c:
            fixes.append(f"labels run 1..{c}: subtract 1 so they run 0..{c - 1}")
        elif hi >= c:
            fixes.append(f"set num_classes = {hi + 1} if there are that many classes, or map the "
                         f"labels to 0..{c - 1}")
        odd = sorted({int(v) for v in bad.unique().tolist()} & {-100, -1, 255, 254, 65535})
        if odd:
            fixes.append(f"if {', '.join(map(str, odd))} marks unlabelled positions, set "
                         f"ignore_index = {odd[0]} (the task's is {ignore}) or map it to {ignore}")
        if lo < 0 and not odd:
            fixes.append(f"map negative labels to 0..{c - 1} or to the ignore index {ignore}")
        return "; ".join(fixes) or f"map every label to 0..{c - 1} or the ignore index {ignore}"

    def _finite(self, name: str, x, y, scope: str) -> bool:
        good = True
        for label, t in (("inputs x", x), ("targets y", y)):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                bad = int((~torch.isfinite(t)).sum())
                if bad:
                    self.add(ERROR, f"{label} ({name})", f"{bad} of {t.numel()} values are NaN or "
                             f"infinite{scope}", "clean or impute them when building the split "
                             "(e.g. torch.nan_to_num, or drop those samples)")
                    good = False
        return good

    # 4. model ---------------------------------------------------------------------------------------
    def build_model(self) -> bool:
        try:
            model = self.task.seeded_model(0)
        except Exception as err:  # noqa: BLE001
            self.add(ERROR, "model", f"make_model() raised {raised_at(err)}",
                     "fix make_model() so it returns a freshly initialised torch.nn.Module")
            return False
        if not isinstance(model, nn.Module):
            self.add(ERROR, "model", f"make_model() returned a {type(model).__name__}, not an "
                     "nn.Module", "return a torch.nn.Module (e.g. nn.Sequential(...))")
            return False
        self.model = model.to(self.device)
        return True

    def _batch(self, name: str):
        head = self.heads[name]
        return head.x.to(self.device), head.y.to(self.device)

    def forward(self) -> bool:
        x, y = self._batch("train")
        self.model.train()
        try:
            out = self.model(x)
        except Exception as err:  # noqa: BLE001
            self.add(ERROR, "model forward", f"the model fails on a training batch x of shape "
                     f"{_shape(x)} ({x.dtype}): {raised_at(err)}",
                     "make the model accept batches as data() gives them (B first; check the "
                     "input size, channels and dtype of the first layer)")
            return False
        if self.task.slots:
            return self._slot_outputs(out, y)
        if not isinstance(out, torch.Tensor):
            self.add(ERROR, "model output", f"the model returns a {type(out).__name__}, not a "
                     "tensor", "return one tensor of logits (or values for regression); a model "
                     "with several outputs needs loss slots: `slots` and `slot_inputs()`")
            return False
        try:
            check_output_shape(self.task, out, y)
        except ValueError as err:
            self.add(ERROR, "model output shape", str(err), self._shape_fix(out, y))
            return False
        return self._finite_output(out, f"output {_shape(out)} for targets {_shape(y)}")

    def _finite_output(self, out: torch.Tensor, shapes: str) -> bool:
        if not torch.isfinite(out.detach()).all():
            self.add(ERROR, "model output", f"{shapes}: the untrained model outputs NaN or inf",
                     "check the model's initialisation and operations (log of 0, division by "
                     "0) and the inputs' scale")
            return False
        self.add(OK, "model output", shapes)
        return True

    def _shape_fix(self, out: torch.Tensor, y: torch.Tensor) -> str:
        t = self.task
        if t.kind == REGRESSION:
            if out.dim() == y.dim() + 1 and out.shape[-1] == 1:
                return "squeeze the model's last dimension (out.squeeze(-1), or models.Squeeze())"
            return f"make the model output the target's shape {_shape(y)} per batch"
        c = t.num_classes
        if out.dim() != y.dim() + 1:
            return (f"output logits (B, {c}, *spatial) for targets (B, *spatial): one score per "
                    f"class, not class indices or a flattened map")
        fixes = []
        if out.shape[1] != c:
            fixes.append(f"give the last layer {c} output channels (num_classes), or set "
                         f"num_classes = {out.shape[1]} if that is the number of classes")
        if tuple(out.shape[2:]) != tuple(y.shape[1:]):
            fixes.append(f"make the logits' spatial size {tuple(y.shape[1:])} like the targets' "
                         f"(e.g. F.interpolate(logits, size={tuple(y.shape[1:])}, "
                         "mode='bilinear'))")
        if out.shape[0] != y.shape[0]:
            fixes.append("keep the batch dimension first (no transposes or flattening across B)")
        return "; ".join(fixes)

    def _slot_outputs(self, out, y) -> bool:
        t = self.task
        try:
            pairs = t.slot_inputs(out, y)
        except Exception as err:  # noqa: BLE001
            self.add(ERROR, "slot_inputs", f"slot_inputs(outputs {_shape(out)}, target "
                     f"{_shape(y)}) raised {raised_at(err)}", "make the model's output and "
                     "slot_inputs() agree: it maps (outputs, target) to {slot: (prediction, "
                     "target)}")
            return False
        names = [s.name for s in t.loss_slots()]
        if not isinstance(pairs, dict) or set(pairs) != set(names):
            got = sorted(pairs) if isinstance(pairs, dict) else type(pairs).__name__
            self.add(ERROR, "slot_inputs", f"slot_inputs() gave {got}, expected the slots "
                     f"{names}", "return a dict with one (prediction, target) pair per slot")
            return False
        good = all([self._slot_pair(s.name, s.kind, *pairs[s.name]) for s in t.loss_slots()])
        if good:
            self.add(OK, "model output", f"output {_shape(out)}; " + ", ".join(
                f"{n}: {_shape(p)} vs {_shape(q)}" for n, (p, q) in pairs.items()))
        return good

    def _slot_pair(self, name: str, kind: str, pred, target) -> bool:
        what = f"slot {name} ({kind})"
        shapes = f"prediction {_shape(pred)}, target {_shape(target)}"
        if kind == CLASSIFICATION:
            ok = pred.dim() >= 2 and tuple(target.shape) == (pred.shape[0], *pred.shape[2:])
            want = "logits (N, C, *spatial) and class indices (N, *spatial)"
        elif kind == BOX:
            ok = pred.dim() == 2 and pred.shape[-1] == 4 and tuple(target.shape) == tuple(pred.shape)
            want = "boxes (M, 4) and (M, 4)"
        else:
            ok = tuple(pred.shape) == tuple(target.shape)
            want = "prediction and target of one shape"
        if not ok:
            self.add(ERROR, what, f"slot_inputs gives {shapes}", f"return {want} for this slot")
            return False
        if kind == CLASSIFICATION and len(target):
            c, ignore = pred.shape[1], self.task.ignore_index
            bad = target[~(((target >= 0) & (target < c)) | (target == ignore))]
            if len(bad):
                self.add(ERROR, what, f"{len(bad)} slot targets outside [0, {c}) and not the "
                         f"ignore index {ignore}: {_counts(bad)}", "make slot_inputs give class "
                         f"indices below the logits' {c} channels (or the ignore index)")
                return False
        return True

    # 5. one training step -----------------------------------------------------------------------
    def train_step(self) -> None:
        from lossforge.training import make_optimizer

        x, y = self._batch("train")
        model = self.model
        model.train()
        opt = make_optimizer(model.parameters(), self.task.proxy)
        for step in range(self.steps):
            try:
                value = self.loss(model(x), y)
            except Exception as err:  # noqa: BLE001
                self.add(ERROR, "training step", f"the baseline loss {self.task.baseline!r} "
                         f"fails on the model's output: {raised_at(err)}",
                         "make the model output and the targets fit the task's kind (see the "
                         "model output check)")
                return
            if not self._loss_value(value):
                return
            opt.zero_grad(set_to_none=True)
            value.backward()
            if not self._gradients():
                return
            opt.step()
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            self.add(ERROR, "training step", "the optimiser step made parameters NaN or inf",
                     f"lower proxy.lr (now {self.task.proxy.lr}) or scale the inputs")
            return
        self.add(OK, "training step", f"{self.steps} step(s) of {self.task.baseline!r} on a batch "
                 f"of {len(y)}: loss {float(value.detach()):.4g}, gradients finite")

    def _loss_value(self, value) -> bool:
        base = repr(self.task.baseline)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            self.add(ERROR, "training step", f"the baseline loss {base} gave {_shape(value)}, "
                     "not a scalar", "check that the targets have the task's layout")
            return False
        if not torch.isfinite(value):
            self.add(ERROR, "training step", f"the baseline loss {base} is {float(value)} on the "
                     "first batch", "check the inputs and targets (NaN, huge values) and the "
                     "model's outputs; lossforge treats a non-finite loss as an invalid run")
            return False
        if not value.requires_grad:
            self.add(ERROR, "training step", f"the baseline loss {base} does not depend on the "
                     "model's parameters", "do not detach the output in forward() (.detach(), "
                     ".item(), NumPy, torch.no_grad)")
            return False
        return True

    def _gradients(self) -> bool:
        named = list(self.model.named_parameters())
        trainable = [(n, p) for n, p in named if p.requires_grad]
        none = [n for n, p in trainable if p.grad is None]
        bad = [n for n, p in trainable if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            self.add(ERROR, "gradients", f"NaN or inf gradients in {', '.join(bad[:5])}"
                     f"{' …' if len(bad) > 5 else ''}", "check the model for operations without "
                     "a finite gradient (sqrt or log at 0, division by 0)")
            return False
        if trainable and len(none) == len(trainable):
            self.add(ERROR, "gradients", "no parameter received a gradient",
                     "do not detach the output in forward() (.detach(), .item(), NumPy)")
            return False
        if none and not self._warned_unused:
            self.add(WARNING, "gradients", f"{len(none)} parameter(s) got no gradient: "
                     f"{', '.join(none[:5])}{' …' if len(none) > 5 else ''}",
                     "remove unused layers, or check that forward() uses them")
            self._warned_unused = True
        return True

    # 6. metrics -------------------------------------------------------------------------------------
    def metrics(self) -> None:
        x, y = self._batch("val")
        model = self.model
        model.eval()
        try:
            with torch.no_grad():
                pred = self.task.predict(model(x))
            pred_np = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
        except Exception as err:  # noqa: BLE001
            self.add(ERROR, "evaluation", f"predicting a validation batch raised {raised_at(err)}",
                     "make the model work in eval mode on validation inputs, and predict() "
                     "return a tensor")
            return
        finally:
            model.train()
        target = y.cpu().numpy()
        where = f"a validation batch of {len(y)} (untrained model)"
        for name, m in self.task.metrics.items():
            self._metric(name, lambda m=m: m.fn(pred_np, target), where)
        if _overrides(self.task, "compute_metrics"):
            self._compute_metrics(pred_np, target, where)

    def _metric(self, name: str, call, where: str) -> None:
        what = f"metric {name}"
        try:
            value = call()
        except NotImplementedError as err:
            if overrides_fit(self.task):  # computed by the task's own loop (objective_task)
                self.add(OK, what, "computed by the task's own fit(), not from predictions")
                return
            self.add(ERROR, what, f"raised on {where}: {raised_at(err)}",
                     "implement the metric's fn(pred, target) -> float")
            return
        except Exception as err:  # noqa: BLE001
            self.add(ERROR, what, f"raised on {where} (pred {_kind_of_pred(self.task)}): "
                     f"{raised_at(err)}", "make fn(pred, target) accept NumPy arrays as "
                     "predict() and the targets give them")
            return
        problem = metric_problem(value)
        if problem is None:
            self.add(OK, what, f"{float(value):.4g} on {where}")
        else:
            self.add(ERROR, what, f"returned {problem[0]} on {where}", problem[1])

    def _compute_metrics(self, pred_np, target, where: str) -> None:
        try:
            values = self.task.compute_metrics(pred_np, target)
        except Exception as err:  # noqa: BLE001
            if isinstance(err, NotImplementedError) and overrides_fit(self.task):
                return  # computed by the task's own loop (objective_task)
            self.add(ERROR, "compute_metrics", f"raised on {where}: {raised_at(err)}",
                     "fix compute_metrics(pred, target) (NumPy arrays, a whole split)")
            return
        self._metric_dict("compute_metrics", values, where)

    def _metric_dict(self, what: str, values, where: str) -> bool:
        """Validate ``{metric: float}`` from ``compute_metrics`` or ``fit``; whether it is usable."""
        if not isinstance(values, dict):
            self.add(ERROR, what, f"returned a {type(values).__name__} on {where}, not a dict",
                     "return {metric name: float} for the task's metrics")
            return False
        good = True
        missing = [n for n in self.task.metrics if n not in values]
        if self.task.default_metric in missing:
            self.add(ERROR, what, f"the result has no {self.task.default_metric!r} (the default "
                     f"metric); it has {', '.join(map(str, values)) or 'nothing'}",
                     f"return every metric of the task: {', '.join(self.task.metrics)}")
            good = False
        elif missing:
            self.add(WARNING, what, f"the result lacks {', '.join(missing)}",
                     f"return every metric of the task: {', '.join(self.task.metrics)}")
        for name, value in values.items():
            problem = metric_problem(value)
            if problem is not None:
                self.add(ERROR, f"{what}: {name}", f"returned {problem[0]} on {where}", problem[1])
                good = False
        return good

    # the screening probes ------------------------------------------------------------------------
    def probes(self) -> None:
        """The few real targets the screening stages (checks, GEC, LRP) draw."""
        t = self.task
        try:
            if t.slots:
                got = {s.name: t.slot_probe_targets(s.name, 8, 0) for s in t.loss_slots()}
            else:
                got = {"loss": probe_targets(t, 8, 0)}
        except Exception as err:  # noqa: BLE001
            self.add(ERROR, "probe targets", f"the screening stages cannot draw real targets: "
                     f"{raised_at(err)}", "implement Task.probe_targets(n, seed) (or data()); "
                     "objective_task: pass probe_targets=")
            return
        bad = [n for n, v in got.items() if not isinstance(v, torch.Tensor) or not len(v)]
        if bad:
            self.add(ERROR, "probe targets", f"probe targets of {', '.join(bad)} are empty or not "
                     "tensors", "return a tensor of n real training targets")
            return
        if not t.slots and t.kind == CLASSIFICATION and not has_data(t):
            y = got["loss"]
            if y.is_floating_point() or not self._label_range("probe targets", y, ""):
                if y.is_floating_point():
                    self.add(ERROR, "labels (probe targets)", f"probe targets are {y.dtype}",
                             "give class indices as int64: y.long()")
                return
        self.add(OK, "probe targets", ", ".join(f"{n}: {_shape(v)} {v.dtype}"
                                                for n, v in got.items()))

    # 7. the training loop -------------------------------------------------------------------------
    def loop(self) -> None:
        if overrides_fit(self.task):
            self._fit()
        elif all(h.whole for h in self.heads.values()):
            self._train()
        else:
            self.add(OK, "training loop", "not run: a split is a Dataset read on demand and the "
                     "check reads its first batch only (`lossforge evaluate --steps 1` runs it "
                     "whole)")

    def _fit(self) -> None:
        reports: list[tuple] = []
        start = time.perf_counter()
        try:
            values = self.task.fit(self.loss, steps=self.steps, seed=0, device=str(self.device),
                                   report=lambda step, metrics: reports.append((step, metrics)))
        except Exception as err:  # noqa: BLE001
            self.add(ERROR, "fit", f"fit(loss, steps={self.steps}, seed=0) raised "
                     f"{raised_at(err)}", "fix the training loop in fit(); it gets the loss as an "
                     "nn.Module called as loss(output, target)")
            return
        where = f"fit(steps={self.steps})"
        if self._metric_dict("fit", values, where):
            shown = ", ".join(f"{k} {float(v):.4g}" for k, v in values.items())
            self.add(OK, "fit", f"your loop ran {self.steps} step(s) in "
                     f"{time.perf_counter() - start:.2f} s: {shown}; report() called "
                     f"{len(reports)} time(s)")

    def _train(self) -> None:
        from lossforge.training import train

        try:
            r = train(self.task, self.task.baseline, steps=self.steps, seed=0,
                      device=str(self.device), splits=("val",))
        except Exception as err:  # noqa: BLE001
            self.add(ERROR, "training loop", f"lossforge.train(steps={self.steps}) raised "
                     f"{raised_at(err)}", "fix what the message names (the checks above narrow "
                     "it down)")
            return
        if r.status != "ok":
            self.add(ERROR, "training loop", f"lossforge.train(steps={self.steps}) with "
                     f"{self.task.baseline!r} was {r.status} (a non-finite loss or weights)",
                     "check the inputs' scale and proxy.lr")
            return
        if self._metric_dict("validation", r.val, "the whole validation split"):
            shown = ", ".join(f"{k} {v:.4g}" for k, v in r.val.items())
            self.add(OK, "training loop", f"lossforge.train ran {r.steps_done} step(s) and scored "
                     f"the validation split in {r.wall_time:.2f} s: {shown}")


def _kind_of_pred(task: Task) -> str:
    if task.slots:
        return "what predict() returns"
    return "class indices" if task.kind == CLASSIFICATION else "values"


def metric_problem(value) -> tuple[str, str] | None:
    """Why ``value`` is not a usable metric result, as ``(what it is, fix)``; ``None`` when it is a
    finite real number (Python or NumPy scalar; ``bool`` is not)."""
    ret = "return a finite Python float"
    if isinstance(value, torch.Tensor):
        return (f"a torch.Tensor of shape {tuple(value.shape)}",
                f"{ret}: float(value) or value.item() (metrics get NumPy arrays, not tensors)")
    if isinstance(value, np.ndarray):
        return (f"a NumPy array of shape {value.shape}",
                f"{ret}: reduce it (e.g. .mean()) and convert with float(...)")
    if value is None:
        return "None", f"{ret}; the function lacks a `return` statement"
    if isinstance(value, str):
        text = value if len(value) <= 20 else value[:17] + "..."
        return f"a string ({text!r})", f"{ret}, not text: float(...) of the number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"a {type(value).__name__} ({value!r:.40})", ret
    if math.isnan(value):
        return ("NaN", f"{ret} on every batch: handle the undefined case (0/0, e.g. a class "
                       "absent from the batch, or constant predictions) and return e.g. 0.0; a "
                       "NaN fitness cannot be ranked")
    if math.isinf(value):
        return (f"{value}", f"{ret}: guard divisions and logs (e.g. a small epsilon, or clip)")
    return None


def check_task(spec_or_task: str | Task, *, steps: int = 1, device: str = "cpu") -> TaskReport:
    """Check that a task is ready to search; see the module docstring for what is checked.

    ``spec_or_task``: a registered name, ``path/to/file.py[:ATTR]``, ``package.module:ATTR`` or a
    ``Task``; ``steps``: optimiser steps of the training checks (≥ 1). Never raises for a defect of
    the task (``ValueError`` for ``steps`` < 1)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    start = time.perf_counter()
    spec = spec_or_task if isinstance(spec_or_task, str) else \
        (spec_of(spec_or_task) or getattr(spec_or_task, "name", type(spec_or_task).__name__))
    report = TaskReport(spec=str(spec))
    try:
        task = load_task(spec_or_task)
    except TaskSpecError as err:
        report.add(ERROR, "loading", str(err), "change what the message names (the spec, the "
                   "file or the object) and run the check again")
    except Exception as err:  # noqa: BLE001 -- a registered task whose constructor fails
        report.add(ERROR, "loading", f"creating the task raised {raised_at(err)}",
                   "fix the task's constructor")
    else:
        report.task = task.name
        report.add(OK, "loading", f"{type(task).__qualname__} {task.name!r}, kind {task.kind!r}")
        with torch.random.fork_rng(devices=[]):
            _Checker(task, report, steps, torch.device(device)).run()
    report.seconds = time.perf_counter() - start
    return report


__all__ = ["ERROR", "Finding", "OK", "TaskReport", "WARNING", "check_task", "metric_problem",
           "raised_at"]
