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
ground truth, ``z`` logits, ``q`` the class prior of the training set, all shaped
``(N, C, *spatial)``; the loss is the mean of what remains after the expression's aggregations,
over the positions that are not ignored. ``log(p)`` of the softmax itself is exact
(``log_softmax`` of the logits, :mod:`lossforge.expr.exact`): ``ce`` *is*
``torch.nn.functional.cross_entropy`` at any margin, and so are the log terms of ``focal``,
``poly1``, ``baikal``, ``sce``, ``nce+rce``, ``gce``. Other ``log`` and ``/`` are the protected
forms of the op registry (``log(|x| + 1e-6)``, ``a / (b + 1e-6)``), so such an entry can differ
from its textbook form by terms of order 1e-6 relative to the guarded quantity.

Expert losses for noisy labels (``mae`` on probabilities, ``gce``, ``sce``, ``nce+rce``), for
long-tailed classes (``logit-adjusted``, ``balanced-softmax``, ``cb-focal``: they read the
class prior ``q``, which a task provides through :meth:`~lossforge.tasks.Task.class_prior` and
an exported module keeps as its ``prior`` buffer; without one, ``q`` is uniform and the module
warns), and for heavy-tailed regression (``huber``, ``barron``) follow their papers; each entry's
``doc`` states the constants chosen. LDAM (Cao et al., NeurIPS 2019) is left out: its margins
``Δ_j = K / n_j^{1/4}`` are normalised so that the largest is 0.5, which needs a minimum over
the classes (the language has sums and means over classes only), and its published form
scales cosine logits of a normalised classifier by s = 30, a change of the model, not the loss.

Lovász-softmax is sort-based and has no expression: it is a module entry (:class:`LovaszSoftmax`).

Regression entries (``kind == "regression"``: ``mse``, ``mae``, ``huber``, ``barron``) are formulas over the
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
    "barron",
    "cb_focal",
    "entries",
    "focal",
    "gce",
    "get",
    "huber",
    "kinds",
    "logit_adjusted",
    "lovasz_softmax",
    "names",
    "nce_rce",
    "poly1",
    "sce",
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
    #: for entries whose constants depend on the training set (``cb-focal``: its size): the
    #: expression for a task (``None``: ``expr`` fits every task).
    for_task: Callable[..., Expr] | None = None

    def expr_for(self, task) -> Expr | None:
        """The expression to train ``task`` with: ``for_task(task)`` when the entry has one,
        else :attr:`expr`."""
        if self.for_task is not None and task is not None:
            return self.for_task(task)
        return self.expr

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


# ---- expert losses: noisy labels, long tails, robust regression ----------------------------------
_Q, _F = var("q"), var("f")


def _pt() -> Expr:
    """``p_t = sum_c(y * p)``: the probability of the true class."""
    return apply("sum_c", apply("mul", _Y, _P))


def _ce() -> Expr:
    return apply("neg", apply("sum_c", apply("mul", _Y, apply("log", _P))))


def _finite(name: str, **values: float) -> None:
    for k, v in values.items():
        if not math.isfinite(v):
            raise ValueError(f"{name}: {k} must be finite, got {v!r}")


def gce(q: float = 0.7) -> Expr:
    """Generalised cross-entropy ``(1 - p_t^q) / q`` (Zhang & Sabuncu 2018), ``0 < q <= 1``.

    ``p_t^q`` is written ``sum_c(y * exp(q * log(p)))`` (``y`` is one-hot) so that ``log(p)`` is
    the exact log-softmax; ``1 / q`` is a constant factor. Raises ``ValueError`` outside
    ``(0, 1]``."""
    q = float(q)
    if not 0 < q <= 1:
        raise ValueError(f"gce: q must be in (0, 1], got {q!r}")
    ptq = apply("sum_c", apply("mul", _Y, apply("exp", apply("mul", const(q), apply("log", _P)))))
    return _scaled(1.0 / q, apply("sub", const(1), ptq))


def _scaled(c: float, e: Expr) -> Expr:
    """``c * e`` (``e`` itself for ``c = 1``)."""
    return e if c == 1 else apply("mul", const(c), e)


def _rce(beta: float, a: float) -> Expr:
    """``beta`` times the reverse cross-entropy ``-sum_k p_k log y_k`` with ``log 0 = a``
    (``a < 0``): ``-beta a (1 - p_t)``."""
    return _scaled(-a * beta, apply("sub", const(1), _pt()))


def sce(alpha: float = 0.01, beta: float = 1.0, a: float = -4.0) -> Expr:
    """Symmetric cross-entropy ``alpha CE + beta RCE`` (Wang et al. 2019), RCE with
    ``log 0 = a``."""
    _finite("sce", alpha=alpha, beta=beta, a=a)
    return apply("add", _scaled(alpha, _ce()), _rce(beta, a))


def nce_rce(alpha: float = 1.0, beta: float = 100.0, a: float = -4.0) -> Expr:
    """Active-passive loss NCE+RCE (Ma et al. 2020): ``alpha NCE + beta RCE``, with normalised CE
    ``NCE = log p_t / sum_k log p_k`` and RCE as in :func:`sce`.

    The division is the protected ``/``: its ``1e-6`` is negligible next to ``sum_k log p_k``,
    which is at most ``C log(1 / C)``."""
    _finite("nce+rce", alpha=alpha, beta=beta, a=a)
    nce = apply("div", apply("sum_c", apply("mul", _Y, apply("log", _P))),
                apply("sum_c", apply("log", _P)))
    return apply("add", _scaled(alpha, nce), _rce(beta, a))


def logit_adjusted(tau: float = 1.0) -> Expr:
    """Logit-adjusted cross-entropy (Menon et al. 2021): cross-entropy of the softmax of
    ``z + tau log q``, with ``q`` the class prior.

    Written with the exact ``log(p)``: ``-log softmax(z + tau log q)_t = -(log p_t + tau log q_t)
    + log sum_k p_k q_k^tau``; ``q^tau`` is ``exp(tau log q)`` for ``tau != 1``. ``log q`` and the
    last ``log`` are protected (``+1e-6``: a class of prior 0 is guarded; the sum is at least
    the smallest prior)."""
    _finite("logit-adjusted", tau=tau)
    logq = apply("log", _Q)
    qtau = _Q if tau == 1 else apply("exp", apply("mul", const(tau), logq))
    adj = logq if tau == 1 else apply("mul", const(tau), logq)
    nll = apply("neg", apply("sum_c", apply("mul", _Y, apply("add", apply("log", _P), adj))))
    return apply("add", nll, apply("log", apply("sum_c", apply("mul", _P, qtau))))


def cb_focal(n_train: int, beta: float = 0.9999, gamma: float = 1.0) -> Expr:
    """Class-balanced focal loss (Cui et al. 2019) for a training set of ``n_train`` samples.

    Class weights ``w_j = (1 - beta) / (1 - beta^{n_j})`` (inverse effective number), normalised
    to sum to the number of classes, with ``n_j = q_j n_train``: ``beta^{n_j} = exp(n_train
    ln(beta) q_j)``, and ``w_t / mean_c(w)`` is the normalised weight of the true class
    (``1 - beta`` cancels). The focal term is the softmax focal loss of :func:`focal` (the paper's
    experiments use a sigmoid focal loss; ``p`` here is the softmax). Raises ``ValueError`` for
    ``n_train < 1``, ``beta`` outside ``(0, 1)`` or ``gamma < 0``."""
    if int(n_train) < 1 or not 0 < beta < 1:
        raise ValueError(f"cb-focal: need n_train >= 1 and 0 < beta < 1, got {n_train!r}, {beta!r}")
    k = float(n_train) * math.log(beta)
    w = apply("inv", apply("sub", const(1), apply("exp", apply("mul", const(k), _Q))))
    weight_t = apply("div", apply("sum_c", apply("mul", _Y, w)), apply("mean_c", w))
    return apply("mul", weight_t, focal(gamma))


def huber(delta: float = 1.0) -> Expr:
    """Huber loss (Huber 1964) of ``r = f - y``: ``0.5 r^2`` where ``|r| <= delta``, else
    ``delta (|r| - 0.5 delta)``; as torch's ``huber_loss(delta=delta)``. Written with
    ``m = min(|r|, delta)``: ``0.5 m^2 + delta (|r| - m)``."""
    delta = float(delta)
    if not math.isfinite(delta) or delta <= 0:
        raise ValueError(f"huber: delta must be > 0, got {delta!r}")
    r = apply("abs", apply("sub", _F, _Y))
    m = apply("min", r, const(delta))
    quad = apply("mul", const(0.5), apply("square", m))
    if delta == 1:  # the text of the 'huber' entry: 0.5 * square(m) + abs(r) - m
        return apply("sub", apply("add", quad, r), m)
    return apply("add", quad, apply("mul", const(delta), apply("sub", r, m)))


def barron(alpha: float = 0.0, c: float = 1.0) -> Expr:
    """Barron's general robust loss (CVPR 2019) of ``x = (f - y) / c``:
    ``|alpha - 2| / alpha * ((x^2 / |alpha - 2| + 1)^{alpha / 2} - 1)``, with its limits
    ``alpha = 0``: ``log(x^2 / 2 + 1)`` (Cauchy) and ``alpha = 2``: ``x^2 / 2`` (L2).
    Powers are ``exp(k log(.))`` of an argument >= 1 (the guard's ``1e-6`` is negligible)."""
    _finite("barron", alpha=alpha, c=c)
    if c <= 0:
        raise ValueError(f"barron: c must be > 0, got {c!r}")
    x = apply("sub", _F, _Y) if c == 1 else apply("mul", const(1.0 / c), apply("sub", _F, _Y))
    x2 = apply("square", x)
    if alpha == 2:
        return apply("mul", const(0.5), x2)
    if alpha == 0:
        return apply("log", apply("add", apply("mul", const(0.5), x2), const(1)))
    b = abs(alpha - 2)
    inner = apply("add", apply("mul", const(1.0 / b), x2), const(1))
    power = apply("exp", apply("mul", const(alpha / 2), apply("log", inner)))
    return apply("mul", const(b / alpha), apply("sub", power, const(1)))


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


def _add_expr(name: str, expr: Expr | str, source: str, doc: str,
              for_task: Callable[..., Expr] | None = None) -> None:
    from lossforge.expr.interpret import loss_kind

    e = parse(expr) if isinstance(expr, str) else expr
    _add(ZooEntry(name=name, formula=str(e), expr=e, source=source, doc=doc, kind=loss_kind(e),
                  for_task=for_task))


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


# ---- expert losses -------------------------------------------------------------------------------
_add_expr(
    "mae", "sum_c(abs(p - y))",
    "Ghosh, Kumar, Sastry: Robust Loss Functions under Label Noise for Deep Neural Networks, "
    "AAAI 2017 (arXiv 1712.09482)",
    "On classification: the L1 distance of the softmax probabilities to the one-hot target, "
    "sum_c |p_c - y_c| = 2 (1 - p_t), symmetric and so noise-tolerant (Ghosh et al., Theorem 1). "
    "On regression 'mae' is the mean absolute error of the prediction.",
)
_add_expr(
    "gce", gce(0.7),
    "Zhang & Sabuncu: Generalized Cross Entropy Loss for Training Deep Neural Networks with "
    "Noisy Labels, NeurIPS 2018 (arXiv 1805.07836); q = 0.7 as in the paper",
    "(1 - p_t^q) / q with q = 0.7: between CE (q -> 0) and MAE (q = 1); gce(q) builds other q. "
    "The truncated variant L_trunc is not included.",
)
_add_expr(
    "sce", sce(0.01, 1.0),
    "Wang, Ma, Chen, Luo, Yi, Bailey: Symmetric Cross Entropy for Robust Learning with Noisy "
    "Labels, ICCV 2019 (arXiv 1908.06112); alpha = 0.01, beta = 1, A = -4: the paper's MNIST "
    "setting",
    "alpha CE + beta RCE with RCE = -sum_k p_k log y_k, log 0 clipped to A = -4, i.e. "
    "4 (1 - p_t). alpha = 0.01, beta = 1.0 are the paper's values for MNIST (our noisy families "
    "are MNIST-like digit/clothing images); its CIFAR-10 setting is sce(0.1, 1.0).",
)
_add_expr(
    "nce+rce", nce_rce(1.0, 100.0),
    "Ma, Huang, Wang, Romano, Erfani, Bailey: Normalized Loss Functions for Deep Learning with "
    "Noisy Labels, ICML 2020 (arXiv 2006.13554); alpha = 1, beta = 100: the paper's MNIST setting",
    "Active-passive loss alpha NCE + beta RCE, NCE = log p_t / sum_k log p_k (normalised CE), "
    "RCE as in 'sce' (A = -4). alpha = 1, beta = 100 as the paper uses on MNIST; its CIFAR-10 "
    "setting is nce_rce(1, 1).",
)
_add_expr(
    "logit-adjusted", logit_adjusted(1.0),
    "Menon, Jayasumana, Rawat, Jain, Veit, Kumar: Long-tail learning via logit adjustment, "
    "ICLR 2021 (arXiv 2007.07314); tau = 1",
    "Cross-entropy of softmax(z + tau log q) with q the training-set class prior (the variable "
    "q), tau = 1; logit_adjusted(tau) builds other tau. At tau = 1 it equals 'balanced-softmax'.",
)
_add_expr(
    "balanced-softmax", logit_adjusted(1.0),
    "Ren, Yu, Sheng, Ma, Zhao, Yi, Li: Balanced Meta-Softmax for Long-Tailed Visual Recognition, "
    "NeurIPS 2020 (arXiv 2007.10740)",
    "Balanced softmax: -log(n_t e^{z_t} / sum_k n_k e^{z_k}) with n the class counts, i.e. "
    "cross-entropy of softmax(z + log q): the same function as 'logit-adjusted' at tau = 1 "
    "(Menon et al. note the equivalence). The meta-sampler of the paper is not a loss.",
)
_CB_DEFAULT_N = 10_000


def _cb_focal_for(task) -> Expr:
    """'cb-focal' for ``task``: the effective numbers need its training-set size."""
    try:
        n = len(task.data().train)
    except (NotImplementedError, AttributeError, ValueError):
        n = _CB_DEFAULT_N
    return cb_focal(n, 0.9999, 1.0)


_add_expr(
    "cb-focal", cb_focal(_CB_DEFAULT_N, 0.9999, 1.0),
    "Cui, Jia, Lin, Song, Belongie: Class-Balanced Loss Based on Effective Number of Samples, "
    "CVPR 2019 (arXiv 1901.05555); beta = 0.9999, gamma = 1 (from the paper's grid 0.5, 1, 2)",
    "Focal loss (gamma = 1) weighted by the inverse effective number of the true class, "
    "(1 - beta) / (1 - beta^{n_t}), beta = 0.9999, weights normalised to sum to C. n_j = q_j N "
    "needs the training-set size N: the listed formula is for N = 10,000; training, evaluating "
    "or searching on a task substitutes the task's N. Softmax focal (the paper's experiments use "
    "the sigmoid form).",
    for_task=_cb_focal_for,
)
_add_expr(
    "barron", barron(0.0, 1.0),
    "Barron: A General and Adaptive Robust Loss Function, CVPR 2019 (arXiv 1701.03077); "
    "alpha = 0 (Cauchy / Lorentzian), c = 1",
    "Barron's loss with fixed shape alpha = 0: log((r / c)^2 / 2 + 1), r = f - y, c = 1 (targets of "
    "unit scale), a redescending loss whose influence falls off for large residuals, so gross "
    "outliers barely pull the fit; barron(alpha, c) builds others (alpha = 1: pseudo-Huber, "
    "alpha = 2: L2, alpha = -2: Geman-McClure).",
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
