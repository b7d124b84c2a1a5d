"""Proxy training: ``train(task, loss, steps=, seed=, device=) -> TrainResult``.

Short, deterministic (for a seed, on CPU) trainings of the task's model with a candidate loss.
The first non-finite loss value stops the run with status ``"invalid"`` (AutoLoss-Zero's early
stop); nothing raises for a bad loss value.

The package: this module is the training loop (:func:`train`, :func:`score_model`, the batch
order and optimiser every path shares); :mod:`~lossforge.training.stacked` trains K copies of a
model at once (``train_batched``) with the forwards of :mod:`~lossforge.training.stacked_forward`;
:mod:`~lossforge.training.loss_spec` turns what a user names as a loss into an ``nn.Module``.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from lossforge.expr import Expr
from lossforge.tasks import Task, check_output_shape
from lossforge.tasks import get as get_task
from lossforge.training.loss_spec import load_losses

OK = "ok"
INVALID = "invalid"


@dataclass
class TrainResult:
    """Outcome of one training run.

    ``val``/``test``: metric name -> value (empty when the run was invalid or the split skipped);
    ``loss_curve``: the training loss every ``curve_every`` steps; ``val_curve``: the validation
    metrics every ``eval_every`` steps (empty unless asked); ``wall_time`` in seconds.
    """

    loss: str
    seed: int
    steps: int
    steps_done: int
    status: str
    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    loss_curve: list[float] = field(default_factory=list)
    val_curve: list[dict] = field(default_factory=list)
    wall_time: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def batch_generator(seed: int) -> torch.Generator:
    """The generator of a run's batch order and training subset (seeded with ``seed + 1``)."""
    return torch.Generator().manual_seed(seed + 1)


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use 'adam' or 'sgd'")


def batch_indices(n: int, batch_size: int, steps: int, gen: torch.Generator):
    """Yield ``steps`` index batches, walking through fresh permutations of ``range(n)``."""
    perm, pos = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        yield perm[pos:pos + batch_size]
        pos += batch_size


@torch.no_grad()
def predict_split(task: Task, model: nn.Module, x: torch.Tensor, batch_size: int,
                  device: torch.device) -> np.ndarray:
    """The task's predictions for the inputs ``x``, as a NumPy array (model in eval mode)."""
    model.eval()
    outs = [task.predict(model(x[i:i + batch_size].to(device))).cpu() for i in range(0, len(x), batch_size)]
    model.train()
    return torch.cat(outs).numpy()


def score_model(task: Task, model: nn.Module, split, batch_size: int, device) -> dict[str, float]:
    """All of the task's metrics for ``model`` on one data split."""
    pred = predict_split(task, model, split.x, batch_size, torch.device(device))
    return task.compute_metrics(pred, split.y.numpy())


def train(task: Task | str, loss: str | Expr | nn.Module | dict, *, steps: int | None = None, seed: int = 0,
          device: str = "cpu", batch_size: int | None = None, lr: float | None = None,
          splits: tuple[str, ...] = ("val", "test"), curve_every: int = 10,
          train_fraction: float = 1.0, eval_every: int = 0) -> TrainResult:
    """Train the task's model with ``loss`` for ``steps`` steps (default: the task's proxy steps).

    ``loss``: a zoo name, formula, ``Expr``, ``nn.Module`` or ``.py`` file. For a task with several
    loss slots (:meth:`~lossforge.tasks.Task.loss_slots`): a ``dict`` slot -> loss, a text
    ``"cls=focal; box=giou"``, or one loss that goes to the only slot of its kind (``ValueError``
    when ambiguous); slots not given use their ``default``, and the training loss is
    ``sum_slots weight * loss_slot`` on :meth:`~lossforge.tasks.Task.slot_inputs`.
    ``TrainResult.loss`` names every slot's loss (``"cls=focal; box=giou"``).

    ``splits`` lists the splits to score at the end; ``train_fraction`` < 1 trains on a seeded
    subset of the training data (data-utilisation experiments). ``eval_every`` > 0 scores the
    validation split after every ``eval_every`` steps into ``val_curve`` (``{"step": s, **metrics}``;
    training speed: steps to reach a validation accuracy). Deterministic for ``seed`` on CPU.
    """
    task = get_task(task)
    cfg = task.proxy.with_(steps=steps, batch_size=batch_size, lr=lr)
    loaded = load_losses(loss, task)
    data = task.data()
    dev = torch.device(device)
    gen = batch_generator(seed)
    x, y = data.train.x, data.train.y
    if train_fraction < 1.0:
        keep = torch.randperm(len(x), generator=gen)[: max(1, int(round(train_fraction * len(x))))]
        x, y = x[keep], y[keep]
    x, y = x.to(dev), y.to(dev)
    model = task.seeded_model(seed).to(dev)
    criterion = loaded.module.to(dev)
    opt = make_optimizer(model.parameters(), cfg)
    result = TrainResult(loaded.name, seed, cfg.steps, 0, OK)
    start = time.perf_counter()
    bs = min(cfg.batch_size, len(x))
    for step, idx in enumerate(batch_indices(len(x), bs, cfg.steps, gen)):
        idx = idx.to(dev)
        out = model(x[idx])
        if step == 0:
            check_output_shape(task, out, y[idx])
        value = criterion(out, y[idx])
        if not torch.isfinite(value):
            result.status = INVALID
            result.loss_curve.append(float("nan"))
            break
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        result.steps_done = step + 1
        if eval_every > 0 and (step + 1) % eval_every == 0:
            result.val_curve.append({"step": step + 1, **score_model(task, model, data.val,
                                                                     cfg.eval_batch_size, dev)})
        if step % curve_every == 0:
            result.loss_curve.append(float(value.detach()))
    if result.status == OK and not all(torch.isfinite(p).all() for p in model.parameters()):
        result.status = INVALID
    if result.status == OK:
        for name in splits:
            setattr(result, name, score_model(task, model, getattr(data, name),
                                              cfg.eval_batch_size, dev))
    result.wall_time = time.perf_counter() - start
    return result
