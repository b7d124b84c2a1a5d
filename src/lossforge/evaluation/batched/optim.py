"""The LRP's optimisation of every candidate's prediction at once (SGD with momentum, Adam).

Contract. :func:`optimise` runs ``config.steps`` steps of ``config.optimizer`` on the stacked
``(P, *pred_shape)`` predictions of a :class:`~lossforge.evaluation.batched.program.Program`, with
the same tensor operations as ``torch.optim``'s single-tensor implementations, and reports which
candidates stayed finite (the reference's early stop on a non-finite loss value).
"""
from __future__ import annotations

import torch

from lossforge.evaluation.batched.chunks import stacked_copies
from lossforge.evaluation.batched.program import Program


def optimise(prog: Program, init: torch.Tensor, config) -> tuple[torch.Tensor, torch.Tensor]:
    """The protocol's optimisation for every candidate of ``prog`` at once, from the common
    initial predictions ``init``. Returns (final predictions ``(P, *shape)``, ``alive (P,)``):
    ``alive[i]`` is False once candidate ``i``'s loss value was non-finite at some step (its
    predictions are then meaningless; the other candidates are unaffected).

    ``config.optimizer``: ``"sgd"`` (momentum, no dampening/Nesterov/weight decay, as
    ``torch.optim.SGD``) or ``"adam"`` (``torch.optim.Adam`` defaults), applied with the same
    tensor operations as torch's single-tensor implementations.
    """
    P = prog.P
    with torch.inference_mode():
        X = stacked_copies(init, P, prog.device, prog.dtype)
        alive = torch.ones(P, dtype=torch.bool, device=prog.device)   # in root order
        lr, momentum = config.lr, config.momentum
        step = prog.step
        if config.optimizer == "sgd":
            buf = None
            for _ in range(config.steps):
                values, g = step(X, True, fast_softmax=True)
                alive.logical_and_(torch.isfinite(values))
                if momentum != 0:
                    if buf is None:
                        buf = g.clone()
                    else:
                        buf.mul_(momentum).add_(g)
                    g = buf
                X.add_(g, alpha=-lr)
        elif config.optimizer == "adam":
            beta1, beta2, eps = 0.9, 0.999, 1e-8
            m = torch.zeros_like(X)
            v = torch.zeros_like(X)
            for t in range(1, config.steps + 1):
                values, g = step(X, True, fast_softmax=True)
                alive.logical_and_(torch.isfinite(values))
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                bias1 = 1 - beta1 ** t
                bias2 = 1 - beta2 ** t
                denom = (v.sqrt() / bias2 ** 0.5).add_(eps)
                X.addcdiv_(m, denom, value=-(lr / bias1))
        else:
            raise ValueError(f"unknown optimizer {config.optimizer!r}; use 'sgd' or 'adam'")
        alive = prog.to_given(prog.roots_to_rows(alive))
    return prog.to_given(X), alive
