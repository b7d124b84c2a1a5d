"""Torch implementations of every primitive, written so that they import only ``torch``.

This module is the single source of truth for the numerical behaviour of an op: the registry in
:mod:`lossforge.expr.ops` calls these functions, and :func:`lossforge.expr.export.to_source`
copies their source text into a standalone file. Keep every function self-contained (it may use
``torch``, ``EPS`` and the other functions here, nothing else).

Tensor contract: every variable is shaped like the model output ``(N, C, *spatial)``; ``mask`` is a
boolean tensor ``(N, 1, *spatial)`` marking the positions that count (``None``: all count).
Aggregations keep dimensions so that their result broadcasts back against the inputs.
"""
import torch

EPS = 1e-6


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
