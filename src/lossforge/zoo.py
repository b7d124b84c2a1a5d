"""Named known losses: the baselines a search is compared with, and seeds for a search.

``names()`` lists the entries, ``get(name)`` returns a :class:`ZooEntry`; ``entry.module()`` is a
ready ``nn.Module`` with ``forward(logits, target)`` (class-index targets, ``ignore_index=255``),
a drop-in for ``nn.CrossEntropyLoss``. Parametrised families are constructors returning an
:class:`Expr`: :func:`focal`, :func:`poly1`, :func:`taylorglo`.

A name means the usual thing for the loss kind it is used for: ``get(name, kind)`` picks the form
of that kind. ``mse`` has two: on a regression task the mean squared error of the prediction
against the target (``torch.nn.functional.mse_loss``); on a classification task the squared error
of the softmax probabilities against the one-hot target summed over classes, the multi-class
Brier score, which also has its own name ``brier``. ``get(name)`` without a kind is the name's
first form (``mse``: the classification one, as before regression entries existed).

Conventions of the expression entries (DESIGN.md §3): ``p`` softmax probabilities, ``y`` one-hot
ground truth, ``z`` logits, all shaped ``(N, C, *spatial)``; the loss is the mean of what remains
after the expression's aggregations, over the positions that are not ignored. ``log`` and ``/`` are
the protected forms of the op registry (``log(|x| + 1e-6)``, ``a / (b + 1e-6)``), so an entry can
differ from its textbook form by terms of order 1e-6.

Lovász-softmax is sort-based and has no expression: it is a module entry (:class:`LovaszSoftmax`).

Regression entries (``kind == "regression"``: ``mse``, ``mae``, ``huber``) are formulas over the
prediction ``f`` and the target ``y`` of one shape ``(N,)`` or ``(N, D, ...)``: ``forward(pred,
target)``, the loss is the mean over every element, as ``reduction="mean"`` in torch.

Box-regression entries (``kind == "box"``: ``iou``, ``giou`` over the areas ``i, u, e`` of
:func:`~lossforge.expr.kernels.prepare_box`, and the module entry ``l1`` on the coordinates) take
``forward(pred_boxes, target_boxes)`` with ``(M, 4)`` boxes ``x1, y1, x2, y2``; the loss is the mean
over boxes. ``names(kind)`` lists the entries of one kind.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from lossforge._hints import did_you_mean
from lossforge.expr import Expr, apply, const, parse, var

__all__ = [
    "BoxL1Loss",
    "LovaszSoftmax",
    "ZooEntry",
    "entries",
    "focal",
    "get",
    "kinds",
    "lovasz_softmax",
    "names",
    "poly1",
    "taylorglo",
]


@dataclass(frozen=True)
class ZooEntry:
    """A named loss.

    Expression entries have ``expr`` and ``formula`` (``str(expr)``, the canonical text);
    module entries (losses that are not expressions, e.g. Lovász-softmax) have ``factory`` and
    ``formula = expr = None``. ``source`` cites where the loss comes from; ``doc`` says what it is
    and which choices are ours.
    """

    name: str
    formula: str | None
    expr: Expr | None
    source: str
    doc: str
    factory: Callable[..., nn.Module] | None = None
    kind: str = "classification"

    def module(self, **kw) -> nn.Module:
        """A fresh ``nn.Module`` computing the loss; ``forward(logits, target)`` (box entries:
        ``forward(pred_boxes, target_boxes)``).

        Keyword arguments go to :meth:`Expr.to_torch` (e.g. ``ignore_index``) or to the module
        factory (for Lovász-softmax: ``classes``, ``per_image``, ``ignore_index``).
        """
        if self.expr is not None:
            return self.expr.to_torch(**kw)
        assert self.factory is not None
        return self.factory(**kw)


# ---- parametrised families -------------------------------------------------------------------
_P, _Y = var("p"), var("y")


def _power(base: Expr, k: int) -> Expr:
    """``base ** k`` for an integer ``k >= 1`` with ``square`` and ``*`` (binary powering)."""
    if k == 1:
        return base
    half = _power(apply("square", base), k // 2)
    return apply("mul", half, base) if k % 2 else half


def focal(gamma: float = 2.0) -> Expr:
    """Focal loss ``-sum_c(y * (1 - p)^gamma * log(p))`` (Lin et al. 2017), as an expression.

    Integer ``gamma`` (0 to 16) uses ``square`` and ``*``; any other ``gamma >= 0`` uses
    ``exp(gamma * log(1 - p))``, i.e. ``(|1 - p| + 1e-6)^gamma`` with the protected ``log``.
    ``gamma = 0`` is cross-entropy. Raises ``ValueError`` for a negative or non-finite ``gamma``.
    """
    gamma = float(gamma)
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"focal: gamma must be a finite number >= 0, got {gamma!r}")
    ce = apply("mul", _Y, apply("log", _P))
    one_minus_p = apply("sub", const(1), _P)
    if gamma == 0:
        body = ce
    elif gamma == int(gamma) and gamma <= 16:
        body = apply("mul", apply("mul", _Y, _power(one_minus_p, int(gamma))), apply("log", _P))
    else:
        modulator = apply("exp", apply("mul", const(gamma), apply("log", one_minus_p)))
        body = apply("mul", apply("mul", _Y, modulator), apply("log", _P))
    return apply("neg", apply("sum_c", body))


def poly1(epsilon: float = 1.0) -> Expr:
    """Poly-1 loss ``CE + epsilon * (1 - p_t)`` with ``p_t = sum_c(y * p)`` (Leng et al. 2022)."""
    epsilon = float(epsilon)
    if not math.isfinite(epsilon):
        raise ValueError(f"poly1: epsilon must be finite, got {epsilon!r}")
    ce = apply("neg", apply("sum_c", apply("mul", _Y, apply("log", _P))))
    poly = apply("sub", const(1), apply("sum_c", apply("mul", _Y, _P)))
    if epsilon == 1.0:
        return apply("add", ce, poly)
    return apply("add", ce, apply("mul", const(epsilon), poly))


def taylorglo(theta: Sequence[float]) -> Expr:
    """The TaylorGLO loss of parameters ``theta = (θ0, ..., θ7)`` (Gonzalez & Miikkulainen 2021).

    ``L = -mean over the batch of sum_c f(y, p)`` with ``θ0``, ``θ1`` the expansion centres of
    ``y`` and ``p`` and ``θ2..θ7`` the coefficients::

        f = θ2 (p-θ1) + θ3 (p-θ1)^2 + θ4 (p-θ1)^3
            + θ5 (y-θ0)(p-θ1) + θ6 (y-θ0)(p-θ1)^2 + θ7 (y-θ0)^2 (p-θ1)

    This is the authors' convention (label ``y``, prediction ``p``), not the re-implementation that
    swaps them. Every term is kept (zero coefficients included), so the structure is the same for
    every ``theta``. Raises ``ValueError`` unless ``theta`` holds 8 finite numbers.
    """
    t = [float(v) for v in theta]
    if len(t) != 8 or not all(math.isfinite(v) for v in t):
        raise ValueError(f"taylorglo: theta must be 8 finite numbers, got {list(theta)!r}")
    dp = apply("sub", _P, const(t[1]))
    dy = apply("sub", _Y, const(t[0]))
    dp2 = apply("square", dp)
    terms = [
        apply("mul", const(t[2]), dp),
        apply("mul", const(t[3]), dp2),
        apply("mul", const(t[4]), apply("mul", dp2, dp)),
        apply("mul", const(t[5]), apply("mul", dy, dp)),
        apply("mul", const(t[6]), apply("mul", dy, dp2)),
        apply("mul", const(t[7]), apply("mul", apply("square", dy), dp)),
    ]
    f = terms[0]
    for term in terms[1:]:
        f = apply("add", f, term)
    return apply("neg", apply("sum_c", f))


# ---- Lovász-softmax ----------------------------------------------------------------------------
def _lovasz_jaccard_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Increments of the Jaccard loss along the error-sorted pixels.

    ``fg_sorted[k]`` is 1 where the k-th largest error belongs to a pixel of the class. With
    ``S_k`` the ``k`` pixels of largest error, the Jaccard loss of mispredicting ``S_k`` is
    ``Δ(S_k) = 1 - |gt \\ S_k| / |gt ∪ S_k|``; the result is ``Δ(S_k) - Δ(S_{k-1})``, ``Δ(∅) = 0``.
    """
    gts = fg_sorted.sum()
    intersection = gts - fg_sorted.cumsum(0)
    union = gts + (1.0 - fg_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_softmax(
    probs: torch.Tensor,
    target: torch.Tensor,
    classes: str | Sequence[int] = "present",
    ignore_index: int = 255,
) -> torch.Tensor:
    """Lovász-softmax over all (non-ignored) positions of ``probs (N, C, *spatial)``.

    For each class ``c`` the pixel errors ``e_i = |1[target_i = c] - p_ic|`` are sorted in
    decreasing order and the loss is ``sum_k e_(k) (Δ(S_k) - Δ(S_{k-1}))``: the Lovász extension
    of the Jaccard loss ``Δ`` evaluated at the error vector (Berman et al. 2018, Eq. 9 and
    Algorithm 1). The result is the mean over ``classes``: ``"present"`` (classes occurring in the
    non-ignored target), ``"all"``, or explicit class indices. With no position or no class left,
    the loss is a zero that keeps the graph.
    """
    c = probs.shape[1]
    flat = probs.movedim(1, -1).reshape(-1, c)
    labels = target.reshape(-1)
    valid = labels != ignore_index
    flat, labels = flat[valid], labels[valid].long()
    zero = probs.sum() * 0.0
    if labels.numel() == 0:
        return zero
    if classes == "present":
        chosen = [int(k) for k in torch.unique(labels).tolist()]
    elif classes == "all":
        chosen = list(range(c))
    elif isinstance(classes, str):
        raise ValueError(f"classes must be 'present', 'all' or class indices, got {classes!r}")
    else:
        chosen = [int(k) for k in classes]
    losses = []
    for k in chosen:
        fg = (labels == k).to(flat.dtype)
        errors = (fg - flat[:, k]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_jaccard_grad(fg[order])))
    if not losses:
        return zero
    return torch.stack(losses).mean()


class LovaszSoftmax(nn.Module):
    """Lovász-softmax loss (Berman, Rannen Triki, Blaschko, CVPR 2018): a convex surrogate of
    the per-class Jaccard loss (1 - IoU), computed from sorted errors.

    ``forward(logits, target)``: logits ``(N, C)`` or ``(N, C, *spatial)``, class-index target
    ``(N,)`` / ``(N, *spatial)``; positions labelled ``ignore_index`` do not count. ``per_image``:
    average the loss computed on each image separately (default: one loss over the whole batch).
    ``classes``: see :func:`lovasz_softmax`.
    """

    def __init__(self, classes: str | Sequence[int] = "present", per_image: bool = False,
                 ignore_index: int = 255):
        super().__init__()
        self.classes = classes if isinstance(classes, str) else tuple(int(k) for k in classes)
        self.per_image = per_image
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.dim() < 2 or tuple(target.shape) != (logits.shape[0],) + tuple(logits.shape[2:]):
            raise ValueError(f"expected logits (N, C, *spatial) and target (N, *spatial), got "
                             f"{tuple(logits.shape)} and {tuple(target.shape)}")
        probs = torch.softmax(logits, dim=1)
        if not self.per_image:
            return lovasz_softmax(probs, target, self.classes, self.ignore_index)
        return torch.stack([
            lovasz_softmax(probs[i : i + 1], target[i : i + 1], self.classes, self.ignore_index)
            for i in range(probs.shape[0])
        ]).mean()

    def extra_repr(self) -> str:
        return f"classes={self.classes!r}, per_image={self.per_image}, ignore_index={self.ignore_index}"


# ---- the registry ------------------------------------------------------------------------------
#: name -> loss kind -> entry; a name's first kind is its default (:func:`get` without a kind).
_ENTRIES: dict[str, dict[str, ZooEntry]] = {}


def _add(entry: ZooEntry) -> None:
    forms = _ENTRIES.setdefault(entry.name, {})
    if entry.kind in forms:
        raise ValueError(f"zoo: {entry.name!r} already has a {entry.kind} form")
    forms[entry.kind] = entry


def _add_expr(name: str, expr: Expr | str, source: str, doc: str) -> None:
    from lossforge.expr.interpret import loss_kind

    e = parse(expr) if isinstance(expr, str) else expr
    _add(ZooEntry(name=name, formula=str(e), expr=e, source=source, doc=doc, kind=loss_kind(e)))


_add_expr(
    "ce", "-sum_c(y * log(p))",
    "cross-entropy (negative log-likelihood of the softmax); e.g. Goodfellow, Bengio & Courville, "
    "Deep Learning (2016), Sec. 6.2.2",
    "Cross-entropy; equals torch.nn.functional.cross_entropy up to the 1e-6 guard of log.",
)
_add_expr(
    "wce", "-sum_c(y * log(p) / (mean_bs(y) * sum_c(sign(mean_bs(y)))))",
    "weighted cross-entropy with inverse class-frequency weights, the WCE segmentation baseline "
    "compared in Auto Seg-Loss (Li et al., NeurIPS 2020) and AutoLoss-Zero (Li et al., CVPR 2022); "
    "batch-statistics formulation: ours",
    "Class weights w_c = 1 / freq_c with freq_c = mean_bs(y) the frequency of class c among the "
    "batch's non-ignored positions. Dividing also by the number of classes present, "
    "sum_c(sign(mean_bs(y))), makes the mean over positions equal to the weighted mean "
    "sum_i w_(y_i) CE_i / sum_i w_(y_i) of nn.CrossEntropyLoss(weight=w). Absent classes have "
    "y = 0 and contribute nothing; the protected '/' guards freq_c = 0.",
)
_add_expr(
    "focal", focal(2.0),
    "Lin, Goyal, Girshick, He, Dollar: Focal Loss for Dense Object Detection, ICCV 2017 "
    "(arXiv 1708.02002); gamma = 2 as in the paper, no alpha balancing",
    "Focal loss -(1 - p_t)^2 log p_t; focal(gamma) builds other gammas.",
)
_add_expr(
    "poly1", poly1(1.0),
    "Leng et al.: PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions, "
    "ICLR 2022 (arXiv 2204.12511); epsilon = 1",
    "Poly-1: cross-entropy + epsilon (1 - p_t) with p_t = sum_c(y * p); poly1(epsilon) builds "
    "other epsilons.",
)
_BRIER_SOURCE = ("squared error of the predicted probabilities (Brier score): Brier, Verification "
                 "of forecasts expressed in terms of probability, Monthly Weather Review 78 (1950)")
_add_expr(
    "mse", "sum_c(square(p - y))", _BRIER_SOURCE,
    "On classification: the squared error of the softmax probabilities against the one-hot "
    "target, summed over classes and averaged over samples/positions (the multi-class Brier "
    "score, also named 'brier'; C times the element-wise mean squared error). On regression "
    "'mse' is the mean squared error of the prediction.",
)
_add_expr(
    "brier", "sum_c(square(p - y))", _BRIER_SOURCE,
    "Multi-class Brier score: sum over classes of (p_c - y_c)^2, averaged over samples/positions "
    "(what 'mse' means on a classification task).",
)
_add_expr(
    "dice", "1 - mean_c((2 * mean_bs(p * y) + 1) / (mean_bs(p) + mean_bs(y) + 1))",
    "soft Dice loss: Milletari, Navab, Ahmadi: V-Net, 3DV 2016 (arXiv 1606.04797); "
    "per-class form with smoothing from lossforge DESIGN.md",
    "1 minus the mean over classes of the soft Dice coefficient, with batch-and-spatial means "
    "(not sums) and smoothing 1 in numerator and denominator.",
)
_add_expr(
    "baikal", "-mean_c(log(p) - y / p)",
    "Baikal loss: Gonzalez & Miikkulainen, Improved Training Speed, Accuracy, and Data "
    "Utilization Through Loss Function Optimization (GLO), CEC 2020 (arXiv 1905.11528)",
    "Baikal: -(1/n) sum_i (log p_i - y_i / p_i), log p over all classes.",
)
_add_expr(
    "baikal-cma", "-mean_c(2.6904 * log(1.5352 * p) - 1.8158 * y / p)",
    "BaikalCMA: Gonzalez & Miikkulainen, GLO, CEC 2020 (arXiv 1905.11528); constants "
    "w0 = 2.6904, w1 = 1.5352, w2 = 1.8158 as in a third-party re-implementation",
    "Baikal with CMA-ES-tuned coefficients: -(1/n) sum [w0 log(w1 p) - w2 y / p]; w1 does not "
    "change the gradients.",
)
_add(ZooEntry(
    name="lovasz", formula=None, expr=None,
    source="Berman, Rannen Triki, Blaschko: The Lovasz-Softmax loss: A tractable surrogate for "
           "the optimization of the intersection-over-union measure in neural networks, CVPR 2018 "
           "(arXiv 1705.08790)",
    doc="Lovasz-softmax: Lovasz extension of the per-class Jaccard loss at the softmax errors, "
        "averaged over the classes present; sort-based, so an nn.Module, not an expression.",
    factory=LovaszSoftmax,
))

_add_expr(
    "mse", "square(f - y)",
    "mean squared error (the L2 loss of least squares; torch.nn.functional.mse_loss)",
    "Mean over every element of (f - y)^2: equals F.mse_loss(pred, target) (reduction 'mean'). "
    "On a classification task 'mse' is the Brier score (see 'brier').",
)
_add_expr(
    "mae", "abs(f - y)",
    "mean absolute error (the L1 loss; torch.nn.functional.l1_loss)",
    "Mean over every element of |f - y|: equals F.l1_loss(pred, target) (reduction 'mean').",
)
_add_expr(
    "huber", "0.5 * square(min(abs(f - y), 1)) + abs(f - y) - min(abs(f - y), 1)",
    "Huber, Robust Estimation of a Location Parameter, Annals of Mathematical Statistics 35 (1964); "
    "delta = 1 as in torch.nn.functional.huber_loss (and smooth_l1_loss with beta = 1)",
    "Huber loss with delta = 1: 0.5 r^2 where |r| < 1, |r| - 0.5 elsewhere, r = f - y, mean over "
    "every element; written with m = min(|r|, 1) as 0.5 m^2 + |r| - m (an expression, so it "
    "exports like any formula). Equals F.huber_loss(pred, target, delta=1).",
)


_add_expr(
    "iou", "1 - i / u",
    "IoU loss: Yu, Jiang, Wang, Cao, Huang: UnitBox: An Advanced Object Detection Network, "
    "ACM MM 2016 (arXiv 1608.01471); linear form 1 - IoU as in Rezatofighi et al. 2019",
    "1 - intersection / union of a predicted and a target box (box kind, mean over boxes). "
    "UnitBox itself uses -ln(IoU); 1 - IoU is the form compared in GIoU and AutoLoss-Zero. "
    "Zero gradient for disjoint boxes.",
)
_add_expr(
    "giou", "1 - i / u + (e - u) / e",
    "GIoU loss: Rezatofighi, Tsoi, Gwak, Sadeghian, Reid, Savarese: Generalized Intersection over "
    "Union, CVPR 2019 (arXiv 1902.09630)",
    "1 - GIoU = 1 - IoU + (enclosing - union) / enclosing (box kind, mean over boxes); keeps a "
    "gradient when the boxes do not overlap.",
)


class BoxL1Loss(nn.Module):
    """L1 loss on box coordinates (no smoothing): ``mean |pred_boxes - target_boxes|`` over every
    box and coordinate (``reduction="mean"`` of ``torch.nn.L1Loss``).

    ``forward(pred_boxes, target_boxes)``: ``(M, 4)`` each; ``M = 0`` gives a differentiable 0.
    """

    kind = "box"

    def forward(self, pred_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        if tuple(pred_boxes.shape) != tuple(target_boxes.shape) or pred_boxes.dim() != 2:
            raise ValueError(f"expected boxes (M, 4) for prediction and target, got "
                             f"{tuple(pred_boxes.shape)} and {tuple(target_boxes.shape)}")
        if pred_boxes.shape[0] == 0:
            return pred_boxes.sum() * 0
        return (pred_boxes - target_boxes.to(pred_boxes.dtype)).abs().mean()


_add(ZooEntry(
    name="l1", formula=None, expr=None,
    source="L1 box regression: Girshick, Fast R-CNN, ICCV 2015 (arXiv 1504.08083) uses its smooth "
           "form; plain L1 on coordinates is the 'CE+L1' baseline of AutoLoss-Zero (Li et al., "
           "CVPR 2022, arXiv 2103.14026)",
    doc="Mean absolute error of the box coordinates x1, y1, x2, y2 (no smoothing); needs "
        "coordinates, not i, u, e, so an nn.Module, not an expression.",
    factory=BoxL1Loss, kind="box",
))


def names(kind: str | None = None) -> list[str]:
    """Names of the zoo's entries, each once, in a fixed order; ``kind`` (``"classification"``,
    ``"regression"``, ``"box"``) keeps the names that have a form of that loss kind."""
    return [n for n, forms in _ENTRIES.items() if kind is None or kind in forms]


def kinds(name: str) -> tuple[str, ...]:
    """The loss kinds ``name`` has a form for, default first (``()`` for an unknown name)."""
    return tuple(_ENTRIES.get(name, {}) if isinstance(name, str) else ())


def entries(kind: str | None = None) -> list[ZooEntry]:
    """Every form of every entry (``mse`` twice: classification and regression), in
    :func:`names` order; ``kind`` keeps the forms of that loss kind."""
    return [e for forms in _ENTRIES.values() for k, e in forms.items() if kind is None or k == kind]


def get(name: str, kind: str | None = None) -> ZooEntry:
    """The entry called ``name``: its form for loss ``kind``, or without ``kind`` its first form.

    ``KeyError`` naming the known entries (and a close match) for an unknown name, and the kinds
    it has plus the entries of ``kind`` when it has no form of that kind.
    """
    forms = _ENTRIES.get(name) if isinstance(name, str) else None
    if forms is None:
        raise KeyError(f"unknown zoo loss {name!r}{did_you_mean(name, _ENTRIES)}; known: "
                       f"{', '.join(_ENTRIES)}")
    if kind is None:
        return next(iter(forms.values()))
    if kind not in forms:
        raise KeyError(f"zoo loss {name!r} is a {' and '.join(forms)} loss, not a {kind} loss; "
                       f"{kind} losses: {', '.join(names(kind)) or 'none'}")
    return forms[kind]
