"""The tensor interpreter of an :class:`Expr`: its value on tensors, the scalar loss, and the
``nn.Module`` losses built on them.

Contract. :func:`interpret` gives the element-wise value of an expression on a dict of variable
tensors (before the final mean), with every op's own torch kernel
(:mod:`lossforge.expr.kernels` via the op registry); :func:`loss_value` is that value reduced to
the scalar loss over the positions that count. :func:`loss_kind` infers the loss signature
(classification, regression, box) from the variables. :class:`ExprLoss`,
:class:`RegressionExprLoss` and :class:`BoxExprLoss` are drop-in ``nn.Module`` losses that compute
:func:`loss_value` on prepared inputs. Every funnel stage, the proxy training and the exported
modules (:func:`lossforge.expr.export.to_torch`) evaluate losses through this module.

Every expression is evaluated in its exact form (:func:`lossforge.expr.exact.exact_form`):
``log(p)`` is ``log_softmax(z)``, with no guard. Two variables are derived when the caller's
``env`` lacks them: ``logp`` (``log_softmax(z)`` over the classes, or ``log(p)`` unguarded when
``env`` has ``p`` but no ``z``) and ``q`` (the uniform class prior ``1 / C``: a caller that knows
the task's prior passes it, e.g. through :func:`~lossforge.expr.kernels.prepare_classification`).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from lossforge.expr import kernels as K
from lossforge.expr import ops as _ops
from lossforge.expr.exact import LOGP, exact_form
from lossforge.expr.expr import Expr

CLASSIFICATION_VARS = frozenset({"p", "y", "z", "q"})
REGRESSION_VARS = frozenset({"f", "y"})
BOX_VARS = frozenset({"i", "u", "e"})
KINDS = ("classification", "regression", "box")


# ---- numeric value -----------------------------------------------------------------------------
def interpret(expr: Expr, env: dict[str, torch.Tensor], mask: torch.Tensor | None = None,
              cache: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Element-wise value of ``expr`` on the variables in ``env`` (before the final mean).

    All tensors in ``env`` share one shape ``(N, C, *spatial)``; the result broadcasts against it.
    ``mask (N, 1, *spatial)`` marks the positions that count in aggregations (``None``: all).
    ``cache`` (``id(node) -> value``, for the same ``env`` and ``mask``) lets several calls share
    the values of common sub-expressions: nodes found there are not recomputed, new ones are added.
    ``log(p)`` is evaluated exactly (the module docstring; ``logp`` and ``q`` are derived when
    ``env`` lacks them).
    """
    ref = next(iter(env.values()))
    values: dict[int, torch.Tensor] = {} if cache is None else cache
    expr = exact_form(expr)
    for node in expr.nodes():
        if id(node) in values:
            continue
        if node.is_var:
            out = env[node.value] if node.value in env else _derived(node.value, env)
        elif node.is_const:
            out = torch.tensor(node.value, dtype=ref.dtype, device=ref.device)
        else:
            spec = _ops.OPS[node.op]
            args = [values[id(a)] for a in node.args]
            if spec.aggregation:
                arg = args[0]
                if arg.dim() < ref.dim():
                    arg = arg.expand_as(ref)
                out = spec.torch_fn(arg, mask)
            else:
                out = spec.torch_fn(*args)
        values[id(node)] = out
    return values[id(expr)]


def _derived(name: str, env: dict[str, torch.Tensor]) -> torch.Tensor:
    """The value of a variable ``env`` does not hold: ``logp`` or ``q`` (see the module
    docstring); ``ValueError`` naming what the task provides for any other."""
    if name == LOGP and "z" in env:
        return K.log_softmax_classes(env["z"])
    if name == LOGP and "p" in env:
        return torch.log(env["p"])
    if name == "q" and ("z" in env or "p" in env):
        return K.prior_variable(None, env["z"] if "z" in env else env["p"])
    raise ValueError(f"the loss reads variable {name!r}, which this task does not "
                     f"provide (it provides {', '.join(sorted(env))})")


def loss_value(expr: Expr, env: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
    """The scalar loss: :func:`interpret` followed by the mean over the positions that count."""
    return K.reduce_loss(interpret(expr, env, mask), mask)


def loss_kind(expr: Expr) -> str:
    """``"classification"`` (variables among p, y, z, q), ``"regression"`` (f, y) or ``"box"``
    (i, u, e)."""
    v = expr.variables()
    if "f" in v and v <= REGRESSION_VARS:
        return "regression"
    if v and v <= BOX_VARS:
        return "box"
    if v <= CLASSIFICATION_VARS:
        return "classification"
    raise ValueError(f"cannot infer the loss kind from variables {sorted(v)}: use p, y, z for "
                     "classification/segmentation, f, y for regression or i, u, e for boxes, "
                     "or pass kind=")


# ---- nn.Module ---------------------------------------------------------------------------------
class ExprLoss(nn.Module):
    """A classification / segmentation loss from an expression, a drop-in for ``nn.CrossEntropyLoss``.

    ``forward(logits, target)``: logits ``(N, C, *spatial)``, class-index target ``(N, *spatial)``;
    positions labelled ``ignore_index`` do not count. Returns a scalar.

    ``prior``: the class prior ``(C,)`` of the training set (the variable ``q``), kept as the
    buffer ``prior`` (it moves with ``.to(device)`` and is saved in the ``state_dict``); ``None``
    gives the uniform prior ``1 / C``, with a warning when the expression reads ``q``.
    """

    kind = "classification"

    def __init__(self, expr: Expr, ignore_index: int = 255, prior=None):
        super().__init__()
        self.expr = expr
        self.formula = str(expr)
        self.ignore_index = ignore_index
        self.register_buffer("prior", checked_prior(prior))
        if prior is None and "q" in expr.variables():
            warnings.warn(f"loss {self.formula!r} reads the class prior q but no prior was given: "
                          "using the uniform prior 1/C (pass prior=task.class_prior())",
                          UserWarning, stacklevel=2)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        env, mask = K.prepare_classification(logits, target, self.ignore_index, self.prior)
        return loss_value(self.expr, env, mask)

    def extra_repr(self) -> str:
        prior = "" if self.prior is None else f", prior={[round(v, 4) for v in self.prior.tolist()]}"
        return f"formula={self.formula!r}, ignore_index={self.ignore_index}{prior}"


def checked_prior(prior) -> torch.Tensor | None:
    """A class prior as a float32 tensor ``(C,)`` (``None`` stays ``None``); ``ValueError`` unless
    it is a finite, non-negative vector summing to 1 (within 1e-4)."""
    if prior is None:
        return None
    t = torch.as_tensor(prior, dtype=torch.float32).detach().clone()
    if t.dim() != 1 or t.numel() < 1 or not bool(torch.isfinite(t).all()) or bool((t < 0).any()) \
            or abs(float(t.sum()) - 1.0) > 1e-4:
        raise ValueError(f"a class prior must be a vector (C,) of non-negative numbers summing to "
                         f"1 (e.g. Task.class_prior()), got {prior!r}")
    return t


class RegressionExprLoss(nn.Module):
    """A regression loss from an expression over ``f`` (prediction) and ``y`` (target).

    ``forward(pred, target)`` with equal shapes ``(N,)`` or ``(N, D, ...)``; returns a scalar.
    """

    kind = "regression"

    def __init__(self, expr: Expr):
        super().__init__()
        self.expr = expr
        self.formula = str(expr)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        env, mask = K.prepare_regression(pred, target)
        return loss_value(self.expr, env, mask)

    def extra_repr(self) -> str:
        return f"formula={self.formula!r}"


class BoxExprLoss(nn.Module):
    """A box-regression loss from an expression over ``i``, ``u``, ``e`` (intersection, union and
    smallest-enclosing-box areas, :func:`~lossforge.expr.kernels.prepare_box`).

    ``forward(pred_boxes, target_boxes)``: ``(M, 4)`` each as ``x1, y1, x2, y2``; the loss is the
    mean over the boxes. ``M = 0`` gives a differentiable 0 (``pred_boxes.sum() * 0``).
    """

    kind = "box"

    def __init__(self, expr: Expr):
        super().__init__()
        self.expr = expr
        self.formula = str(expr)

    def forward(self, pred_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        if pred_boxes.shape[0] == 0 and pred_boxes.dim() == 2:
            return pred_boxes.sum() * 0
        env, mask = K.prepare_box(pred_boxes, target_boxes)
        return loss_value(self.expr, env, mask)

    def extra_repr(self) -> str:
        return f"formula={self.formula!r}"


__all__ = ["interpret", "loss_value", "loss_kind", "checked_prior", "ExprLoss", "RegressionExprLoss", "BoxExprLoss",
           "KINDS", "CLASSIFICATION_VARS", "REGRESSION_VARS", "BOX_VARS"]
