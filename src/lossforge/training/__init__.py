"""Proxy training: ``train(task, loss, steps=, seed=, device=) -> TrainResult``.

Short, deterministic (for a seed, on CPU) trainings of the task's model with a candidate loss.
The first non-finite loss value stops the run with status ``"invalid"`` (AutoLoss-Zero's early
stop); nothing raises for a bad loss value.

The package: this module is the training loop (:func:`train`, :func:`score_model`, the batch
order and optimiser every path shares; in-memory tensor splits are indexed directly, ``Dataset``
splits stream through a ``DataLoader`` reading the same index batches, :class:`StepBatchSampler`);
:mod:`~lossforge.training.stacked` trains K copies of a model at once (``train_batched``, tensor
splits only) with the forwards of :mod:`~lossforge.training.stacked_forward`;
:mod:`~lossforge.training.loss_spec` turns what a user names as a loss into an ``nn.Module``.
"""
from __future__ import annotations

import itertools
import multiprocessing
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Iterable, Iterator

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
    ``state``: where training stopped (:class:`TrainState`), when ``train(..., keep_state=True)``
    ran to the end with status ``ok``; ``None`` otherwise. A continued run's curves and
    ``wall_time`` cover only the steps it trained.
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
    state: "TrainState | None" = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """Every field but ``state`` (tensors), as plain data."""
        d = asdict(replace(self, state=None))
        d.pop("state")
        return d


@dataclass
class TrainState:
    """Where a run of :func:`train` stopped, enough to continue it exactly.

    ``steps_done`` optimiser steps were taken with ``seed``; ``model`` and ``optimizer`` are the
    state dicts (tensors on CPU); ``rng`` is torch's global RNG state at that moment (dropout
    masks). The data order is not stored: it is a function of ``seed`` alone (the batch
    generator, :func:`batch_generator`), so a continued run re-draws the same index batches and
    skips the first ``steps_done`` (index arithmetic only, no data is read).

    Continuation is exact because lossforge's loop has no learning-rate schedule (a constant
    ``lr``; Adam's and SGD's per-step state is in ``optimizer``): ``train(steps=s2,
    state=train(steps=s1, keep_state=True).state)`` gives the weights and metrics of
    ``train(steps=s2)`` bit for bit on CPU (tests/test_fidelity.py). A loop with a schedule would
    have to define it on the final step count for this to hold.

    :meth:`save` / :meth:`load` keep it in a file of tensors and numbers (``torch.load`` with
    ``weights_only=True``: loading never executes code).
    """

    seed: int
    steps_done: int
    model: dict
    optimizer: dict
    rng: torch.Tensor

    def save(self, path) -> None:
        """Write the state to ``path`` atomically (a temporary file renamed into place)."""
        import os

        tmp = f"{path}.tmp{os.getpid()}"
        torch.save({"seed": self.seed, "steps_done": self.steps_done, "model": self.model,
                    "optimizer": self.optimizer, "rng": self.rng}, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "TrainState":
        """The state :meth:`save` wrote at ``path``."""
        d = torch.load(path, map_location="cpu", weights_only=True)
        return cls(int(d["seed"]), int(d["steps_done"]), d["model"], d["optimizer"], d["rng"])


def _cpu(obj):
    """``obj`` (nested dicts/lists of tensors) with every tensor copied to CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


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


class StepBatchSampler:
    """The index batches of a training run, for a ``DataLoader`` over a ``Dataset`` split.

    Yields the same ``steps`` batches :func:`batch_indices` gives for ``(n, batch_size, steps,
    gen)`` (lists of ints), mapped through ``subset`` (the kept indices of a ``train_fraction``
    run) when given; the ``Dataset`` path thus reads the items the tensor path indexes, in the
    same order. Iterate it once per run (it draws from ``gen``)."""

    def __init__(self, n: int, batch_size: int, steps: int, gen: torch.Generator,
                 subset: torch.Tensor | None = None, start: int = 0):
        self.n, self.batch_size, self.steps, self.gen, self.subset = n, batch_size, steps, gen, subset
        self.start = start

    def __iter__(self) -> Iterator[list[int]]:
        batches = batch_indices(self.n, self.batch_size, self.steps, self.gen)
        for idx in itertools.islice(batches, self.start, None):
            yield (idx if self.subset is None else self.subset[idx]).tolist()

    def __len__(self) -> int:
        return self.steps - self.start


def num_workers_of(task: Task) -> int:
    """The task's ``DataLoader`` workers (``proxy.num_workers``; 0 for a config without it)."""
    return int(getattr(task.proxy, "num_workers", 0) or 0)


def usable_workers(num_workers: int) -> int:
    """``num_workers``, or 0 (with a warning) inside a daemonic process, which may not start
    worker processes of its own (a Dask worker by default: ``distributed.worker.daemon``). A
    ``Dataset`` without randomness gives the same result either way."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if num_workers and multiprocessing.current_process().daemon:
        warnings.warn(f"num_workers={num_workers}: this is a daemonic process (a Dask worker?), "
                      "which cannot start DataLoader workers; reading the data in the process "
                      "itself (set the Dask option distributed.worker.daemon to False to use "
                      "workers)", RuntimeWarning, stacklevel=3)
        return 0
    return num_workers


def tensor_data(task: Task) -> bool:
    """True when every split of ``task.data()`` is in-memory tensors (what the batched engines of
    :mod:`~lossforge.training.stacked` need); False for a ``Dataset`` split."""
    data = task.data()
    return all(getattr(getattr(data, s), "in_memory", True) for s in ("train", "val", "test"))


class _TrainBatches:
    """The ``(x, y)`` training batches of one run on ``device`` (a context manager: ``close``
    stops a ``DataLoader``'s workers when the run ends early).

    In-memory split: the tensors (moved to ``device`` once) indexed by :func:`batch_indices`.
    ``Dataset`` split: a ``DataLoader`` with :class:`StepBatchSampler`, ``num_workers`` workers.
    ``train_fraction`` < 1 first draws the kept subset from ``gen`` (both paths alike).
    ``start`` > 0 skips the first ``start`` batches (a continued run; the order is unchanged)."""

    def __init__(self, split, batch_size: int, steps: int, gen: torch.Generator,
                 train_fraction: float, device: torch.device, num_workers: int, seed: int,
                 start: int = 0):
        n, keep = len(split), None
        if train_fraction < 1.0:
            keep = torch.randperm(n, generator=gen)[: max(1, int(round(train_fraction * n)))]
            n = len(keep)
        self.batch_size = bs = min(batch_size, n)
        self.device = device
        self._loader_iter = None
        if getattr(split, "in_memory", True):
            x, y = split.x, split.y
            if keep is not None:
                x, y = x[keep], y[keep]
            batches = itertools.islice(batch_indices(n, bs, steps, gen), start, None)
            self._iter = self._indexed(x.to(device), y.to(device), batches)
        else:
            loader = split.loader(StepBatchSampler(n, bs, steps, gen, keep, start),
                                  num_workers=num_workers,
                                  seed=seed, pin_memory=device.type == "cuda")
            self._loader_iter = iter(loader)
            self._iter = self._moved(self._loader_iter)

    def _indexed(self, x, y, batches):
        for idx in batches:
            idx = idx.to(self.device)
            yield x[idx], y[idx]

    def _moved(self, batches):
        for xb, yb in batches:
            yield xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)

    def __iter__(self):
        return self._iter

    def __enter__(self) -> "_TrainBatches":
        return self

    def __exit__(self, *exc) -> None:
        self._iter.close()
        shutdown = getattr(self._loader_iter, "_shutdown_workers", None)
        if shutdown is not None:  # a multi-process loader left mid-way: stop its workers now
            shutdown()


@torch.no_grad()
def predict_split(task: Task, model: nn.Module, x: torch.Tensor, batch_size: int,
                  device: torch.device) -> np.ndarray:
    """The task's predictions for the inputs ``x``, as a NumPy array (model in eval mode)."""
    model.eval()
    outs = [task.predict(model(x[i:i + batch_size].to(device))).cpu() for i in range(0, len(x), batch_size)]
    model.train()
    return torch.cat(outs).numpy()


@torch.no_grad()
def predict_batches(task: Task, model: nn.Module, batches: Iterable, device: torch.device
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and targets over ``(x, y)`` batches, concatenated in order, as NumPy arrays
    (model in eval mode, back in training mode after)."""
    model.eval()
    preds, targets = [], []
    try:
        for xb, yb in batches:
            preds.append(task.predict(model(xb.to(device))).cpu())
            targets.append(yb)
    finally:
        model.train()
    return torch.cat(preds).numpy(), torch.cat(targets).numpy()


def score_model(task: Task, model: nn.Module, split, batch_size: int, device,
                num_workers: int | None = None, loader=None) -> dict[str, float]:
    """All of the task's metrics for ``model`` on one data split (every sample, in order).

    An in-memory split is scored in slices of ``batch_size``; a ``Dataset`` split is streamed
    through ``loader`` when given (an iterable of ``(x, y)`` batches, e.g. a ``DataLoader`` kept
    across calls), else through ``split.loader`` with ``num_workers`` workers (default: the
    task's ``proxy.num_workers``)."""
    dev = torch.device(device)
    if getattr(split, "in_memory", True):
        pred = predict_split(task, model, split.x, batch_size, dev)
        return task.compute_metrics(pred, split.y.numpy())
    if loader is None:
        workers = usable_workers(num_workers_of(task) if num_workers is None else num_workers)
        loader = split.loader(batch_size=batch_size, num_workers=workers)
    pred, target = predict_batches(task, model, loader, dev)
    return task.compute_metrics(pred, target)


class _Scorer:
    """Scores a run's model on named splits, keeping one ``DataLoader`` per ``Dataset`` split
    (workers persist across the ``eval_every`` scorings of a run)."""

    def __init__(self, task: Task, data, batch_size: int, device: torch.device, num_workers: int):
        self.task, self.data, self.batch_size = task, data, batch_size
        self.device, self.num_workers = device, num_workers
        self.loaders: dict[str, object] = {}

    def __call__(self, model: nn.Module, name: str) -> dict[str, float]:
        split = getattr(self.data, name)
        loader = None
        if not getattr(split, "in_memory", True):
            if name not in self.loaders:
                self.loaders[name] = split.loader(batch_size=self.batch_size,
                                                  num_workers=self.num_workers,
                                                  persistent_workers=True)
            loader = self.loaders[name]
        return score_model(self.task, model, split, self.batch_size, self.device, loader=loader)


def train(task: Task | str, loss: str | Expr | nn.Module | dict, *, steps: int | None = None, seed: int = 0,
          device: str = "cpu", batch_size: int | None = None, lr: float | None = None,
          splits: tuple[str, ...] = ("val", "test"), curve_every: int = 10,
          train_fraction: float = 1.0, eval_every: int = 0,
          num_workers: int | None = None, state: TrainState | None = None,
          keep_state: bool = False, optimizer: str | None = None,
          momentum: float | None = None) -> TrainResult:
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

    Data: in-memory tensor splits are indexed directly (the fast path). A ``Dataset`` split
    (:class:`~lossforge.data.Split`) streams through a ``DataLoader`` with ``num_workers`` workers
    (default: the task's ``proxy.num_workers``) reading the very index batches the tensor path
    uses: ``steps`` batches of ``min(batch_size, N)`` from fresh seeded permutations, an incomplete
    last batch of a pass dropped (a new permutation starts). What differs from the usual
    ``DataLoader(shuffle=True, drop_last=True)`` epoch loop: the run counts steps, not epochs, and
    a split smaller than ``batch_size`` is one whole batch every step. A ``Dataset`` holding the
    same samples as tensors gives the same result bit for bit, for any ``num_workers``, when its
    items are deterministic and keep the tensors' memory layout (batches keep their items' layout,
    :func:`~lossforge.data.collate_pairs`; items re-read from files come back row-major, and a
    tensor with another layout, such as the built-in ``digits`` with NumPy's strides, may select
    another convolution kernel: differences of order 1e-7 per step). Random augmentations inside
    the ``Dataset`` repeat per seed for a given ``num_workers``: with workers, from the worker
    seeds, which derive from ``seed`` (torch's global RNG is not drawn from); without, from the
    global RNG, which :meth:`~lossforge.tasks.Task.seeded_model` seeds. Scoring reads every item of the split once,
    in order (its loaders' workers seeded with 0, whatever the training seed).

    Continuation (multi-fidelity rungs): ``keep_state=True`` returns the run's end in
    ``TrainResult.state``; ``state=`` (a :class:`TrainState` of the same task, loss, ``seed``,
    batch size and ``train_fraction``) continues it from ``state.steps_done`` to ``steps``, giving
    exactly the weights and metrics of one run of ``steps`` (see :class:`TrainState`).
    ``ValueError`` when ``state`` has another seed or more steps than ``steps``.

    ``optimizer`` (``"adam"`` or ``"sgd"``), ``lr`` and ``momentum`` (SGD only) override the
    task's :class:`~lossforge.tasks.ProxyConfig` for this run (``None``: the task's own).
    """
    task = get_task(task)
    cfg = task.proxy.with_(steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer,
                           momentum=momentum)
    workers = usable_workers(num_workers_of(task) if num_workers is None else num_workers)
    loaded = load_losses(loss, task)
    data = task.data()
    dev = torch.device(device)
    first = _check_state(state, seed, cfg.steps)
    gen = batch_generator(seed)
    with _TrainBatches(data.train, cfg.batch_size, cfg.steps, gen, train_fraction, dev, workers,
                       seed, start=first) as batches:
        model = task.seeded_model(seed).to(dev)
        criterion = loaded.module.to(dev)
        opt = make_optimizer(model.parameters(), cfg)
        if state is not None:
            model.load_state_dict(state.model)
            opt.load_state_dict(state.optimizer)
            torch.set_rng_state(state.rng)
        scorer = _Scorer(task, data, cfg.eval_batch_size, dev, workers)
        result = TrainResult(loaded.name, seed, cfg.steps, first, OK)
        start = time.perf_counter()
        for step, (xb, yb) in enumerate(batches, start=first):
            out = model(xb)
            if step == first:
                check_output_shape(task, out, yb)
            value = criterion(out, yb)
            if not torch.isfinite(value):
                result.status = INVALID
                result.loss_curve.append(float("nan"))
                break
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            result.steps_done = step + 1
            if eval_every > 0 and (step + 1) % eval_every == 0:
                result.val_curve.append({"step": step + 1, **scorer(model, "val")})
            if step % curve_every == 0:
                result.loss_curve.append(float(value.detach()))
    if result.status == OK and not all(torch.isfinite(p).all() for p in model.parameters()):
        result.status = INVALID
    if result.status == OK and keep_state:  # before scoring: eval passes draw no random numbers
        result.state = TrainState(seed, result.steps_done, _cpu(model.state_dict()),
                                  _cpu(opt.state_dict()), torch.get_rng_state())
    if result.status == OK:
        for name in splits:
            setattr(result, name, scorer(model, name))
    result.wall_time = time.perf_counter() - start
    return result


def _check_state(state: TrainState | None, seed: int, steps: int) -> int:
    """The step a run with ``state`` starts from (0 without); ``ValueError`` for a state that
    cannot continue to ``steps`` with ``seed``."""
    if state is None:
        return 0
    if state.seed != seed:
        raise ValueError(f"state was trained with seed {state.seed}, not {seed}: continue it with "
                         f"seed={state.seed}")
    if state.steps_done > steps:
        raise ValueError(f"state has {state.steps_done} steps done, more than steps={steps}: "
                         "continue to at least as many steps")
    return state.steps_done
