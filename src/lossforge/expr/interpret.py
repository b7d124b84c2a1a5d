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
"""
from __future__ import annotations

import torch
from torch import nn

from lossforge.expr import kernels as K
from lossforge.expr import ops as _ops
from lossforge.expr.expr import Expr

CLASSIFICATION_VARS = frozenset({"p", "y", "z"})
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
    """
    ref = next(iter(env.values()))
    values: dict[int, torch.Tensor] = {} if cache is None else cache
    for node in expr.nodes():
        if id(node) in values:
            continue
        if node.is_var:
            try:
                out = env[node.value]
            except KeyError:
                raise ValueError(f"the loss reads variable {node.value!r}, which this task does not "
                                 f"provide (it provides {', '.join(sorted(env))})") from None
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


def loss_value(expr: Expr, env: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
    """The scalar loss: :func:`interpret` followed by the mean over the positions that count."""
    return K.reduce_loss(interpret(expr, env, mask), mask)


def loss_kind(expr: Expr) -> str:
    """``"classification"`` (variables among p, y, z), ``"regression"`` (f, y) or ``"box"``
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
    """

    kind = "classification"

    def __init__(self, expr: Expr, ignore_index: int = 255):
        super().__init__()
        self.expr = expr
        self.formula = str(expr)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        env, mask = K.prepare_classification(logits, target, self.ignore_index)
        return loss_value(self.expr, env, mask)

    def extra_repr(self) -> str:
        return f"formula={self.formula!r}, ignore_index={self.ignore_index}"


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


__all__ = ["interpret", "loss_value", "loss_kind", "ExprLoss", "RegressionExprLoss", "BoxExprLoss",
           "KINDS", "CLASSIFICATION_VARS", "REGRESSION_VARS", "BOX_VARS"]
