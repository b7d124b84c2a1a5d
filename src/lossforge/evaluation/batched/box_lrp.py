"""The LRP of box losses for a whole population at once.

Contract. :func:`box_lrp_scores` returns, for every expression, what
:func:`~lossforge.evaluation.lrp.lrp_score` returns on a box probe (``None`` once a loss value
turns non-finite or the optimised parameters end non-finite; else the metric improvement).

How. Box probes are tiny (a few boxes, 4 parameters each), so the cost of the reference is the
per-operation overhead of decoding the boxes and computing ``i, u, e`` at every step for every
candidate. Here every candidate's parameters are rows of one ``(P, B, 4)`` leaf tensor: one
decode and one :func:`~lossforge.expr.kernels.prepare_box` per step serve all candidates; each
expression is evaluated on its own rows (the reference's shapes ``(B, 1)``, so the same values);
the live candidates' losses are summed for one backward pass (rows never mix, so each row gets
its own candidate's gradient) and one ``torch.optim`` optimiser steps every row (element-wise:
the same as one optimiser per candidate). A candidate is dead from its first non-finite value,
like the reference's early stop; its rows no longer count.
"""
from __future__ import annotations

import torch

from lossforge.evaluation.lrp import metric_value
from lossforge.evaluation.probes import Probe, decode_boxes
from lossforge.expr import kernels as K
from lossforge.expr.interpret import loss_value
from lossforge.expr.expr import Expr


def box_lrp_scores(exprs: list[Expr], probe: Probe, metric, config,
                   init: torch.Tensor) -> list[float | None]:
    """LRP scores of box-loss ``exprs`` on the box ``probe`` (see the module docstring)."""
    if not exprs:
        return []
    uniq: dict[Expr, int] = {}
    for e in exprs:
        uniq.setdefault(e, len(uniq))
    todo = list(uniq)
    p, b = len(todo), init.shape[0]
    x = init.detach().unsqueeze(0).repeat(p, 1, 1).requires_grad_(True)
    anchor = probe.anchor.repeat(p, 1)
    target = probe.target.repeat(p, 1)
    if config.optimizer == "sgd":
        opt = torch.optim.SGD([x], lr=config.lr, momentum=config.momentum)
    else:
        opt = torch.optim.Adam([x], lr=config.lr)
    alive = [True] * p
    for _ in range(config.steps):
        live = [j for j in range(p) if alive[j]]
        if not live:
            break
        env, _ = K.prepare_box(decode_boxes(x.reshape(p * b, 4), anchor), target)
        env = {k: v.reshape(p, b, 1) for k, v in env.items()}
        values = [loss_value(todo[j], {k: v[j] for k, v in env.items()}, None) for j in live]
        stacked = torch.stack([v.reshape(()) for v in values])
        finite = torch.isfinite(stacked).tolist()
        keep = [v for v, ok in zip(values, finite) if ok]
        for j, ok in zip(live, finite):
            alive[j] = alive[j] and ok
        opt.zero_grad(set_to_none=True)
        if keep:
            torch.stack(keep).sum().backward()
        opt.step()
    target_np = probe.target.cpu().numpy()
    base = metric_value(metric, probe, init)
    scores: list[float | None] = []
    with torch.no_grad():
        for j in range(p):
            if not alive[j] or not bool(torch.isfinite(x[j]).all()):
                scores.append(None)
                continue
            boxes = decode_boxes(x[j], probe.anchor).cpu().numpy()
            scores.append(metric.sign * (float(metric.fn(boxes, target_np)) - base))
    return [scores[uniq[e]] for e in exprs]


__all__ = ["box_lrp_scores"]
