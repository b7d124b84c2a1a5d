"""Per-op forward kernels and vector-Jacobian products of the batched screening, for a whole
group of rows at once (the explicit backward pass of a
:class:`~lossforge.evaluation.batched.program.Program`).

Contract. ``FORWARD[op](args, out)`` writes exactly what ``lossforge.expr.kernels.k_<op>(*args)``
computes (same torch calls in the same order) into ``out`` and returns what its backward needs.
``BACKWARD[op](g, args, out, saved, dest, direct)`` writes each argument's vector-Jacobian product
into ``dest[k]`` (``None``: not needed) with PyTorch's own derivative formula for the kernel's
calls: per op, bit for bit what autograd gives on the reference path (``tests/test_batched.py``
checks it). :func:`op_kernels` gives the pair for any op of :mod:`lossforge.expr.ops` (ops without
a hand-written backward use autograd on the group); ops in :data:`ZERO_GRAD` pass no gradient.
Aggregations are not here: their forward and backward need the probe's fitted mask and live with
the program (:mod:`~lossforge.evaluation.batched.program`). No state besides a cache of 0-dim
constants per dtype/device.

(Named for the backward half, the reason this module exists; not to be confused with
:mod:`lossforge.expr.kernels`, the reference kernels these functions reproduce.)
"""
from __future__ import annotations

import torch

from lossforge.expr import kernels as K
from lossforge.expr import ops as _ops


EPS = K.EPS
_LN10 = 2.3025850929940456


# ---- per-op forward and backward ---------------------------------------------------------------
# A forward ``fw(args, out)`` writes exactly what ``kernels.k_<op>(*args)`` computes (same torch
# calls in the same order) into ``out`` and returns what its backward needs. A backward
# ``bw(g, args, out, saved, dest, direct)`` writes each argument's vector-Jacobian product into
# ``dest[k]`` (``None``: not needed) with PyTorch's own derivative formula for the kernel's calls:
# per op, bit for bit what autograd gives on the reference path (tests/test_batched.py checks it).
# ``direct[k]``: ``dest[k]`` has the full shape of the product (no broadcast reduction needed).

class _Consts:
    """0-dim tensors of the scalars the kernels use: an operation with a Python number converts
    it to a tensor on every call (same values, same results, more work)."""

    def __init__(self, dtype, device):
        def t(v):
            return torch.tensor(v, dtype=dtype, device=device)

        self.eps, self.one, self.two, self.zero = t(EPS), t(1.0), t(2.0), t(0.0)


_CONSTS: dict = {}


def _c(x: torch.Tensor) -> _Consts:
    key = (x.dtype, x.device)
    c = _CONSTS.get(key)
    if c is None:
        c = _CONSTS[key] = _Consts(x.dtype, x.device)
    return c


def _put(dest, v) -> None:
    """``dest <- v`` reduced (summed) over the dimensions where ``dest`` was broadcast."""
    if v.shape == dest.shape:
        dest.copy_(v)
    else:
        dims = [d for d in range(v.dim()) if dest.shape[d] == 1 and v.shape[d] != 1]
        torch.sum(v, dims, keepdim=True, out=dest)


def _emit(dest, direct, fn, *xs) -> None:
    if direct:
        fn(*xs, out=dest)
    else:
        _put(dest, fn(*xs))


def _fw_kernel(name):
    fn = getattr(K, "k_" + name)

    def fw(a, o):
        o.copy_(fn(*a))

    return fw


def _fw_add(a, o):
    torch.add(a[0], a[1], out=o)


def _fw_sub(a, o):
    torch.sub(a[0], a[1], out=o)


def _fw_mul(a, o):
    torch.mul(a[0], a[1], out=o)


def _fw_div(a, o):
    t = a[1] + _c(a[1]).eps
    torch.div(a[0], t, out=o)
    return t


def _fw_max(a, o):
    torch.maximum(a[0], a[1], out=o)


def _fw_min(a, o):
    torch.minimum(a[0], a[1], out=o)


def _fw_neg(a, o):
    torch.neg(a[0], out=o)


def _fw_abs(a, o):
    torch.abs(a[0], out=o)


def _fw_sign(a, o):
    torch.sign(a[0], out=o)


def _fw_square(a, o):
    torch.mul(a[0], a[0], out=o)


def _fw_sqrt(a, o):
    torch.sqrt(torch.abs(a[0]) + _c(o).eps, out=o)


def _fw_ssqrt(a, o):
    s = torch.sign(a[0])
    r = torch.sqrt(torch.abs(a[0]) + _c(o).eps)
    torch.mul(s, r, out=o)
    return s, r


def _fw_inv(a, o):
    # k_inv is ``1.0 / (x + EPS)``, which torch computes as ``reciprocal(x + EPS) * 1.0``
    torch.reciprocal(a[0] + _c(o).eps, out=o)


def _fw_log(a, o):
    den = torch.abs(a[0]) + _c(o).eps
    torch.log(den, out=o)
    return den


def _fw_slog(a, o):
    s = torch.sign(a[0])
    den = torch.abs(a[0]) + _c(o).eps
    torch.mul(s, torch.log(den), out=o)
    return s, den


def _fw_log10(a, o):
    den = torch.abs(a[0]) + _c(o).eps
    torch.log10(den, out=o)
    return den


def _unary_out(fn):
    def fw(a, o):
        fn(a[0], out=o)

    return fw


def _bw_add(g, a, o, s, d, direct):
    for k in (0, 1):
        if d[k] is not None:
            _put(d[k], g)


def _bw_sub(g, a, o, s, d, direct):
    if d[0] is not None:
        _put(d[0], g)
    if d[1] is not None:
        _emit(d[1], direct[1], torch.neg, g)


def _bw_mul(g, a, o, s, d, direct):
    if d[0] is not None:
        _emit(d[0], direct[0], torch.mul, g, a[1])
    if d[1] is not None:
        _emit(d[1], direct[1], torch.mul, g, a[0])


def _bw_div(g, a, o, t, d, direct):
    if d[0] is not None:
        _emit(d[0], direct[0], torch.div, g, t)
    if d[1] is not None:
        _put(d[1], -g * (o / t))


def _bw_max(g, a, o, s, d, direct):
    eq = a[0] == a[1]
    if d[0] is not None:
        _put(d[0], torch.where(eq, g / 2, g).masked_fill_(a[0] < a[1], 0))
    if d[1] is not None:
        _put(d[1], torch.where(eq, g / 2, g).masked_fill_(a[0] > a[1], 0))


def _bw_min(g, a, o, s, d, direct):
    eq = a[0] == a[1]
    if d[0] is not None:
        _put(d[0], torch.where(eq, g / 2, g).masked_fill_(a[0] > a[1], 0))
    if d[1] is not None:
        _put(d[1], torch.where(eq, g / 2, g).masked_fill_(a[0] < a[1], 0))


def _bw_neg(g, a, o, s, d, direct):
    _emit(d[0], direct[0], torch.neg, g)


def _bw_abs(g, a, o, s, d, direct):
    _emit(d[0], direct[0], torch.mul, g, torch.sign(a[0]))


def _bw_square(g, a, o, s, d, direct):
    t = g * a[0]                       # x * x: both operands receive g * x
    _emit(d[0], direct[0], torch.add, t, t)


def _bw_sqrt(g, a, o, s, d, direct):
    _emit(d[0], direct[0], torch.mul, g / (_c(g).two * o), torch.sign(a[0]))


def _bw_ssqrt(g, a, o, sr, d, direct):
    s, r = sr
    _emit(d[0], direct[0], torch.mul, (g * s) / (_c(g).two * r), s)


def _bw_inv(g, a, o, s, d, direct):
    _emit(d[0], direct[0], torch.mul, -g, o * o)


def _bw_log(g, a, o, den, d, direct):
    _emit(d[0], direct[0], torch.mul, g / den, torch.sign(a[0]))


def _bw_slog(g, a, o, sd, d, direct):
    s, den = sd
    _emit(d[0], direct[0], torch.mul, (g * s) / den, s)


def _bw_log10(g, a, o, den, d, direct):
    _emit(d[0], direct[0], torch.mul, g / (den * _LN10), torch.sign(a[0]))


def _bw_exp(g, a, o, s, d, direct):
    _emit(d[0], direct[0], torch.mul, g, o)


def _tanh_backward(g, o, out=None):
    # autograd's own kernel (a hand-written ``g * (1 - o * o)`` differs in the last bit)
    if out is None:
        return torch.ops.aten.tanh_backward(g, o)
    return torch.ops.aten.tanh_backward.grad_input(g, o, grad_input=out)


def _sigmoid_backward(g, o, out=None):
    if out is None:
        return torch.ops.aten.sigmoid_backward(g, o)
    return torch.ops.aten.sigmoid_backward.grad_input(g, o, grad_input=out)


def _bw_tanh(g, a, o, s, d, direct):
    _emit(d[0], direct[0], _tanh_backward, g, o)


def _bw_sigmoid(g, a, o, s, d, direct):
    _emit(d[0], direct[0], _sigmoid_backward, g, o)


def _bw_relu(g, a, o, s, d, direct):
    _put(d[0], torch.where(o <= 0, 0.0, g))


def _generic_bw(fn):
    """Vector-Jacobian product through autograd on the group (ops without a hand-written one)."""

    def bw(g, args, out, saved, dest, direct):
        needs = [x is not None for x in dest]
        # (screening runs in inference mode: autograd needs ordinary tensors)
        with torch.inference_mode(False), torch.enable_grad():
            xs = [a.clone().requires_grad_(n) for a, n in zip(args, needs)]
            g = g.clone()
            y = fn(*xs)
            if not y.requires_grad:
                grads = [torch.zeros_like(x) for x in xs]
            else:
                wrt = [x for x, n in zip(xs, needs) if n]
                it = iter(torch.autograd.grad(y, wrt, g, allow_unused=True))
                grads = [next(it) if n else None for n in needs]
        for dst, gr, x in zip(dest, grads, xs):
            if dst is not None:
                _put(dst, torch.zeros_like(x) if gr is None else gr)

    return bw


FORWARD = {"add": _fw_add, "sub": _fw_sub, "mul": _fw_mul, "div": _fw_div, "max": _fw_max,
       "min": _fw_min, "neg": _fw_neg, "abs": _fw_abs, "sign": _fw_sign, "square": _fw_square,
       "sqrt": _fw_sqrt, "ssqrt": _fw_ssqrt, "inv": _fw_inv, "log": _fw_log, "slog": _fw_slog,
       "log10": _fw_log10, "exp": _unary_out(torch.exp), "tanh": _unary_out(torch.tanh),
       "sigmoid": _unary_out(torch.sigmoid), "sin": _unary_out(torch.sin),
       "cos": _unary_out(torch.cos), "sinh": _unary_out(torch.sinh),
       "asinh": _unary_out(torch.asinh), "atan": _unary_out(torch.atan),
       "erf": _unary_out(torch.erf), "erfc": _unary_out(torch.erfc)}
BACKWARD = {"add": _bw_add, "sub": _bw_sub, "mul": _bw_mul, "div": _bw_div, "max": _bw_max,
       "min": _bw_min, "neg": _bw_neg, "abs": _bw_abs, "square": _bw_square, "sqrt": _bw_sqrt,
       "ssqrt": _bw_ssqrt, "inv": _bw_inv, "log": _bw_log, "slog": _bw_slog, "log10": _bw_log10,
       "exp": _bw_exp, "tanh": _bw_tanh, "sigmoid": _bw_sigmoid, "relu": _bw_relu}
#: ops whose derivative is exactly zero everywhere (no gradient flows through them)
ZERO_GRAD = frozenset({"sign"})


def op_kernels(name: str):
    """``(forward, backward)`` of the op ``name``: the hand-written pair of :data:`FORWARD` /
    :data:`BACKWARD`, else the reference kernel and autograd on the group."""
    spec = _ops.OPS[name]
    return FORWARD.get(name) or _fw_kernel(name), BACKWARD.get(name) or _generic_bw(spec.torch_fn)


__all__ = ["BACKWARD", "EPS", "FORWARD", "ZERO_GRAD", "op_kernels"]
