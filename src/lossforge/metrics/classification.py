"""Classification and regression metrics (not differentiable; NumPy, vectorised).

Every function takes the prediction first, then the target, as NumPy arrays or torch tensors on any
device (labels as ``int64``, values as ``float64``; see :mod:`lossforge.metrics._common`) and
returns a Python float.

Classification: :func:`accuracy`, :func:`balanced_accuracy`, :func:`f1`, :func:`macro_f1`; for
long-tailed data :func:`group_accuracy` (mean recall over a group of classes) and
:func:`shot_groups` (many / medium / few-shot classes by training count).
Regression: :func:`mae`, :func:`rmse` (non-finite values raise ``ValueError``).

Absent classes (as in :mod:`lossforge.metrics.segmentation`): a class contributes to a mean only if
it is defined — F1 needs the class in the prediction or the target (a class in only one of them
scores 0 and counts); recall (``balanced_accuracy``) needs the class in the target. Classes absent
from both are left out, never counted as 0 or 1.
"""
from __future__ import annotations

import numpy as np

from lossforge.metrics._common import as_labels, check_same_shape, confusion_counts, to_numpy

__all__ = ["accuracy", "balanced_accuracy", "f1", "group_accuracy", "macro_f1", "mae", "rmse",
           "shot_groups"]

_F1_AVERAGES = ("auto", "binary", "macro", "micro", "weighted")


# ----------------------------------------------------------------------------- input handling
def _label_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, t = as_labels(pred, "pred"), as_labels(target, "target")
    check_same_shape(p, t)
    if p.size == 0:
        raise ValueError("pred and target are empty: nothing to score")
    return p.ravel(), t.ravel()


def _num_classes(p: np.ndarray, t: np.ndarray, num_classes: int | None) -> int:
    lo, hi = int(min(p.min(), t.min())), int(max(p.max(), t.max()))
    if lo < 0:
        raise ValueError(f"class labels must be >= 0, got {lo}")
    if num_classes is None:
        return hi + 1
    if hi >= num_classes:
        raise ValueError(f"label {hi} is out of range for num_classes={num_classes}")
    return int(num_classes)


# ----------------------------------------------------------------------------- classification
def accuracy(pred, target) -> float:
    """Fraction of positions where ``pred == target``."""
    p, t = _label_pair(pred, target)
    return float(np.mean(p == t))


def balanced_accuracy(pred, target, num_classes: int | None = None) -> float:
    """Mean per-class recall over the classes present in ``target`` (as scikit-learn's
    ``balanced_accuracy_score``). ``num_classes`` only validates the labels."""
    p, t = _label_pair(pred, target)
    cm = confusion_counts(t, p, _num_classes(p, t, num_classes))
    support = cm.sum(1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def f1(pred, target, num_classes: int | None = None, average: str = "auto",
       pos_label: int = 1) -> float:
    """F1 score.

    ``average``: ``"binary"`` (F1 of class ``pos_label``; 0.0 when that class is in neither array,
    as scikit-learn), ``"macro"`` (unweighted mean over classes present in ``pred`` or ``target``),
    ``"weighted"`` (the same, weighted by ground-truth support), ``"micro"`` (pooled counts; equals
    accuracy for single-label data), or ``"auto"`` (default): ``"binary"`` when there are at most
    two classes (``num_classes``, or the largest label + 1 when not given), else ``"macro"``.
    Binary tasks should encode the class of interest (e.g. malignant) as ``pos_label``.
    """
    if average not in _F1_AVERAGES:
        raise ValueError(f"average must be one of {_F1_AVERAGES}, got {average!r}")
    p, t = _label_pair(pred, target)
    c = _num_classes(p, t, num_classes)
    if average == "auto":
        average = "binary" if c <= 2 else "macro"
    if average == "binary":
        if c > 2:
            raise ValueError(f"average='binary' needs at most 2 classes, got {c}; "
                             "use average='macro', 'weighted' or 'micro'")
        tp = np.count_nonzero((p == pos_label) & (t == pos_label))
        denom = np.count_nonzero(p == pos_label) + np.count_nonzero(t == pos_label)
        return float(2 * tp / denom) if denom else 0.0
    cm = confusion_counts(t, p, c)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)  # = 2tp + fp + fn
    if average == "micro":
        return float(2 * tp.sum() / denom.sum())
    present = denom > 0
    scores = 2 * tp[present] / denom[present]
    if average == "macro":
        return float(scores.mean())
    support = cm.sum(1)[present]
    return float((scores * support).sum() / support.sum())


def macro_f1(pred, target, num_classes: int | None = None) -> float:
    """Unweighted mean of the per-class F1 over the classes present in ``pred`` or ``target``
    (:func:`f1` with ``average="macro"``, also for two classes)."""
    return f1(pred, target, num_classes=num_classes, average="macro")


def group_accuracy(pred, target, classes) -> float:
    """Mean recall over the classes of ``classes`` that occur in ``target`` (the many-, medium- or
    few-shot accuracy of long-tailed recognition, on a balanced test set equal to the accuracy on
    those classes' images). ``ValueError`` when no class of the group occurs in ``target``."""
    p, t = _label_pair(pred, target)
    recalls = [float(np.mean(p[t == c] == c)) for c in sorted({int(c) for c in classes})
               if np.any(t == c)]
    if not recalls:
        raise ValueError(f"none of the classes {sorted(int(c) for c in classes)} occurs in the "
                         "target: the group's accuracy is undefined")
    return float(np.mean(recalls))


def shot_groups(train_counts, many_above: float = 100, few_below: float = 20
                ) -> dict[str, list[int]]:
    """Classes grouped by their number of training samples ``train_counts[c]``: ``"many"``
    (more than ``many_above``), ``"few"`` (fewer than ``few_below``), ``"medium"`` (the rest).
    The defaults are the standard thresholds of long-tailed recognition (Liu et al., CVPR 2019:
    >100, 20–100, <20 images); a group may be empty."""
    if few_below > many_above:
        raise ValueError(f"few_below ({few_below}) must not exceed many_above ({many_above})")
    counts = np.asarray(train_counts)
    return {"many": [int(c) for c in np.flatnonzero(counts > many_above)],
            "medium": [int(c) for c in np.flatnonzero((counts >= few_below) & (counts <= many_above))],
            "few": [int(c) for c in np.flatnonzero(counts < few_below)]}


# ----------------------------------------------------------------------------- regression
def _value_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p = to_numpy(pred).astype(np.float64)
    t = to_numpy(target).astype(np.float64)
    check_same_shape(p, t)
    if p.size == 0:
        raise ValueError("pred and target are empty: nothing to score")
    for name, a in (("pred", p), ("target", t)):
        bad = np.count_nonzero(~np.isfinite(a))
        if bad:
            raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or inf)")
    return p, t


def mae(pred, target) -> float:
    """Mean absolute error (lower is better)."""
    p, t = _value_pair(pred, target)
    return float(np.mean(np.abs(p - t)))


def rmse(pred, target) -> float:
    """Root mean squared error (lower is better)."""
    p, t = _value_pair(pred, target)
    return float(np.sqrt(np.mean(np.square(p - t))))
