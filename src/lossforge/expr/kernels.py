"""Torch implementations of every primitive, written so that they import only ``torch``.

This module is the single source of truth for the numerical behaviour of an op: the registry in
:mod:`lossforge.expr.ops` calls these functions, and :func:`lossforge.expr.export.to_source`
copies their source text into a standalone file. Keep every function self-contained (it may use
``torch``, ``EPS`` and the other functions here, nothing else).

Tensor contract: every variable is shaped like the model output ``(N, C, *spatial)`` (box losses:
``(M, 1)``, one row per box, see :func:`prepare_box`); ``mask`` is a
boolean tensor ``(N, 1, *spatial)`` marking the positions that count (``None``: all count).
Aggregations keep dimensions so that their result broadcasts back against the inputs.
"""
import torch

EPS = 1e-6


class protection_eps:
    """``with protection_eps(eps):`` evaluates every protected kernel (``log``, ``slog``,
    ``log10``, ``sqrt``, ``ssqrt``, ``inv``, ``div``) with ``eps`` in place of :data:`EPS`;
    :data:`EPS` is restored on exit, also on error. The one place where the protection constant
    may vary: measurements of how much a loss depends on it
    (:mod:`lossforge.evaluation.scale`). Outside the block nothing changes.

    Process-global (the kernels read the module constant), so not for concurrent threads; the
    exact ``log(p)`` (``log_softmax``), the sympy forms, exported source and the batched
    screening (:mod:`lossforge.evaluation.batched`) keep :data:`EPS`. ``ValueError`` for an
    ``eps`` that is not a positive finite number.
    """

    def __init__(self, eps: float):
        eps = float(eps)
        if not 0.0 < eps < float("inf"):
            raise ValueError(f"protection eps must be a positive finite number, got {eps!r}")
        self.eps, self._saved = eps, None

    def __enter__(self):
        global EPS
        self._saved, EPS = EPS, self.eps
        return self

    def __exit__(self, *exc_info):
        global EPS
        EPS = self._saved
        return False


# ---- protected unary ops -------------------------------------------------------------------
def k_log(x):
    return torch.log(torch.abs(x) + EPS)


def k_slog(x):
    return torch.sign(x) * torch.log(torch.abs(x) + EPS)


def k_log10(x):
    return torch.log10(torch.abs(x) + EPS)


def k_sqrt(x):
    return torch.sqrt(torch.abs(x) + EPS)


def k_ssqrt(x):
    return torch.sign(x) * torch.sqrt(torch.abs(x) + EPS)


def k_inv(x):
    return 1.0 / (x + EPS)


def k_inv1pabs(x):
    return 1.0 / (1.0 + torch.abs(x))


def k_softsign(x):
    return x / (1.0 + torch.abs(x))


def k_dtanh(x):
    return 1.0 - torch.tanh(x) ** 2


def k_dsigmoid(x):
    s = torch.sigmoid(x)
    return s * (1.0 - s)


def k_i0e(x):
    return torch.special.i0e(x)


def k_i1e(x):
    return torch.special.i1e(x)


# ---- plain ops (wrapped so that every op has exactly one implementation here) ------------------
def k_add(a, b):
    return a + b


def k_sub(a, b):
    return a - b


def k_mul(a, b):
    return a * b


def k_max(a, b):
    return torch.maximum(a, b)


def k_min(a, b):
    return torch.minimum(a, b)


def k_neg(x):
    return -x


def k_abs(x):
    return torch.abs(x)


def k_sign(x):
    return torch.sign(x)


def k_square(x):
    return x * x


def k_exp(x):
    return torch.exp(x)


def k_tanh(x):
    return torch.tanh(x)


def k_sigmoid(x):
    return torch.sigmoid(x)


def k_softplus(x):
    return torch.nn.functional.softplus(x)


def k_erf(x):
    return torch.erf(x)


def k_erfc(x):
    return torch.erfc(x)


def k_sin(x):
    return torch.sin(x)


def k_cos(x):
    return torch.cos(x)


def k_sinh(x):
    return torch.sinh(x)


def k_asinh(x):
    return torch.asinh(x)


def k_atan(x):
    return torch.atan(x)


def k_relu(x):
    return torch.relu(x)


def k_negrelu(x):
    return torch.clamp(x, max=0.0)


def k_i0(x):
    return torch.special.i0(x)


def k_i1(x):
    return torch.special.i1(x)


# ---- binary ops ------------------------------------------------------------------------------
def k_div(a, b):
    return a / (b + EPS)


def k_aq(a, b):
    return a / torch.sqrt(1.0 + b * b)


# ---- aggregations (keep dims; masked positions never count) ------------------------------------
def _spatial_dims(x):
    return tuple(range(2, x.dim()))


def _fit_mask(mask, x):
    """``mask`` reduced (any) over the dims ``x`` has already reduced, expanded to ``x``'s shape."""
    m = mask
    for d in range(x.dim()):
        if x.shape[d] == 1 and m.shape[d] != 1:
            m = m.any(dim=d, keepdim=True)
    return m.expand_as(x)


def _masked_mean(x, mask, dims):
    if not dims:
        return x
    if mask is None or mask.dim() != x.dim():
        return x.mean(dim=dims, keepdim=True)
    m = _fit_mask(mask, x)
    total = torch.where(m, x, torch.zeros_like(x)).sum(dim=dims, keepdim=True)
    count = m.to(x.dtype).sum(dim=dims, keepdim=True).clamp_min(1.0)
    return total / count


def k_sum_c(x, mask=None):
    return x.sum(dim=1, keepdim=True)


def k_mean_c(x, mask=None):
    return x.mean(dim=1, keepdim=True)


def k_mean_s(x, mask=None):
    return _masked_mean(x, mask, _spatial_dims(x))


def k_mean_bs(x, mask=None):
    return _masked_mean(x, mask, (0,) + _spatial_dims(x))


def k_mean_b(x, mask=None):
    return _masked_mean(x, mask, (0,))


def reduce_loss(x, mask=None):
    """The loss value: mean over every element of ``x`` at the positions that count.

    ``x`` broadcasts against the inputs ``(N, C, *spatial)``; dimensions that an aggregation has
    already reduced to size 1 are averaged without the mask.
    """
    if mask is None or mask.dim() != x.dim():
        return x.mean()
    m = _fit_mask(mask, x)
    total = torch.where(m, x, torch.zeros_like(x)).sum()
    return total / m.sum().clamp_min(1)


# ---- turning a model output and a target into the variables of a loss --------------------------
def log_softmax_classes(logits):
    """``log p`` exactly: ``log_softmax`` of ``logits (N, C, *spatial)`` over the classes (dim 1).

    The value of the derived variable ``logp`` (the exact-log rule of
    :mod:`lossforge.expr.exact`: ``log(p)`` of a loss is evaluated as this, with no guard)."""
    return torch.log_softmax(logits, dim=1)


def prior_variable(prior, logits):
    """The variable ``q``: the class prior ``prior (C,)`` broadcast to ``logits``' shape
    ``(N, C, *spatial)`` (an expanded view, constant over samples and positions).

    ``prior=None`` gives the uniform prior ``1 / C``. Raises ``ValueError`` when ``prior`` does
    not have one entry per class."""
    c = logits.shape[1]
    view = (1, c) + (1,) * (logits.dim() - 2)
    if prior is None:
        q = torch.full(view, 1.0 / c, dtype=logits.dtype, device=logits.device)
    else:
        prior = torch.as_tensor(prior)
        if prior.dim() != 1 or prior.shape[0] != c:
            raise ValueError(f"the class prior must have shape ({c},), one entry per class of "
                             f"the logits, got {tuple(prior.shape)}")
        q = prior.to(dtype=logits.dtype, device=logits.device).reshape(view)
    return q.expand(logits.shape)


def prepare_classification(logits, target, ignore_index=255, prior=None):
    """``logits (N, C, *spatial)`` and class-index ``target (N, *spatial)`` -> (variables, mask).

    Variables: ``p`` softmax probabilities, ``y`` one-hot target (all zeros where ignored), ``z``
    logits, ``q`` the class prior ``prior (C,)`` broadcast (uniform ``1 / C`` when ``None``,
    :func:`prior_variable`), each ``(N, C, *spatial)``. ``mask (N, 1, *spatial)`` is ``None``
    when nothing is ignored. Raises ``ValueError`` for shapes or labels that do not fit.
    """
    if logits.dim() < 2:
        raise ValueError(f"logits must be (N, C, *spatial), got shape {tuple(logits.shape)}")
    n, c = logits.shape[0], logits.shape[1]
    expected = (n,) + tuple(logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must be class indices of shape {expected} for logits of shape "
            f"{tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    target = target.long()
    valid = target != ignore_index
    all_valid = bool(valid.all())
    safe = target if all_valid else torch.where(valid, target, torch.zeros_like(target))
    if bool(((safe < 0) | (safe >= c)).any()):
        raise ValueError(f"target holds labels outside [0, {c}) other than ignore_index={ignore_index}")
    y = torch.nn.functional.one_hot(safe, c).movedim(-1, 1).to(logits.dtype)
    mask = None if all_valid else valid.unsqueeze(1)
    if mask is not None:
        y = y * mask.to(logits.dtype)
    p = torch.softmax(logits, dim=1)
    return {"p": p, "y": y, "z": logits, "q": prior_variable(prior, logits)}, mask


def prepare_regression(pred, target):
    """``pred`` and ``target`` of the same shape ``(N,)`` or ``(N, D, ...)`` -> variables ``f, y``.

    1-D inputs become ``(N, 1)`` so that ``sum_c``/``mean_c`` act over the output dimension.
    """
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    if pred.dim() == 1:
        pred, target = pred.unsqueeze(1), target.unsqueeze(1)
    return {"f": pred, "y": target.to(pred.dtype)}, None


def prepare_box(pred, target):
    """Predicted and target boxes ``(M, 4)`` as ``x1, y1, x2, y2`` -> variables ``i, u, e``.

    ``i``: intersection area, ``u``: union area, ``e``: area of the smallest box enclosing both;
    each ``(M, 1)`` (one value per box; the singleton class axis lets ``sum_c``/``mean_c`` apply
    and the loss is the mean over boxes). A predicted box with ``x2 < x1`` (or ``y2 < y1``) does
    not crash: widths and heights are clamped at 0, so it has area 0 and intersects nothing; the
    union uses the areas of the clamped boxes, ``u = area(pred) + area(target) - i``. No eps is
    added here: a ratio such as ``i / u`` goes through the protected ``/`` (``a / (b + 1e-6)``),
    which guards ``u = 0`` (two empty boxes). Raises ``ValueError`` for shapes that do not fit.
    """
    if pred.dim() != 2 or pred.shape[-1] != 4 or tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"boxes must be (M, 4) as x1, y1, x2, y2 for prediction and target, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    target = target.to(pred.dtype)
    pw = (pred[:, 2] - pred[:, 0]).clamp_min(0.0)
    ph = (pred[:, 3] - pred[:, 1]).clamp_min(0.0)
    tw = (target[:, 2] - target[:, 0]).clamp_min(0.0)
    th = (target[:, 3] - target[:, 1]).clamp_min(0.0)
    iw = (torch.minimum(pred[:, 2], target[:, 2]) - torch.maximum(pred[:, 0], target[:, 0]))
    ih = (torch.minimum(pred[:, 3], target[:, 3]) - torch.maximum(pred[:, 1], target[:, 1]))
    inter = iw.clamp_min(0.0) * ih.clamp_min(0.0)  # <= 0 wide for an inverted box: clamped to 0
    union = pw * ph + tw * th - inter
    ew = torch.maximum(pred[:, 2], target[:, 2]) - torch.minimum(pred[:, 0], target[:, 0])
    eh = torch.maximum(pred[:, 3], target[:, 3]) - torch.minimum(pred[:, 1], target[:, 1])
    enclose = ew.clamp_min(0.0) * eh.clamp_min(0.0)
    return {"i": inter.unsqueeze(1), "u": union.unsqueeze(1), "e": enclose.unsqueeze(1)}, None
