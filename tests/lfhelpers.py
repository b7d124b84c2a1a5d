"""Test helpers that worker processes must be able to import (pickled by reference): tiny tasks,
and an executor wrapper whose jobs kill their worker process for chosen candidates.

Importing this module registers the tasks ``tiny-blobs`` and ``slow-blobs``.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import Executor
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from lossforge import tasks
from lossforge.data import DataSplits, Split
from lossforge.evaluation.funnel import FunnelConfig
from lossforge.evaluation.lrp import LRPConfig
from lossforge.evaluation.proxy import ProxyStageConfig
from lossforge.tasks import Metric, ProxyConfig, Task

TESTS_DIR = Path(__file__).resolve().parent


class TinyBlobs(Task):
    """Three Gaussian blobs, a linear model: a proxy training takes milliseconds."""

    name = "tiny-blobs"
    num_classes = 3
    metrics = {"accuracy": Metric("accuracy", lambda p, t: float((p == t).mean()))}
    default_metric = "accuracy"
    proxy = ProxyConfig(steps=25, batch_size=32, lr=0.05)

    def data(self) -> DataSplits:
        g = torch.Generator().manual_seed(0)
        centres = torch.tensor([[0.0, 2.0], [2.0, -1.5], [-2.0, -1.5]])

        def split(n):
            y = torch.randint(0, 3, (n,), generator=g)
            return Split(centres[y] + torch.randn(n, 2, generator=g), y)

        return DataSplits(split(200), split(100), split(100), 3, "blobs")

    def make_model(self) -> nn.Module:
        return nn.Linear(2, 3)


class _Sleepy(nn.Module):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


class SlowBlobs(TinyBlobs):
    """Every forward pass sleeps 10 ms: a 25-step training takes over a quarter of a second."""

    name = "slow-blobs"

    def make_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(2, 3), _Sleepy(0.01))


tasks.register(TinyBlobs.name, TinyBlobs)
tasks.register(SlowBlobs.name, SlowBlobs)

#: A fast funnel for the tiny tasks (short LRP and proxy trainings).
FAST = FunnelConfig(lrp=LRPConfig(steps=60, lr=0.1, threshold=0.3), proxy=ProxyStageConfig(steps=25))
#: Without the LRP: on the tiny tasks nearly every candidate then reaches proxy training.
NO_LRP = replace(FAST, use_lrp=False)
#: ``NO_LRP`` as command-line options.
NO_LRP_CLI = ["--no-lrp", "--proxy-steps", "25"]


def crash_job(marker: str | None, fn, args):
    """Kill this worker process (``os._exit``) — every time, or only while ``marker`` is absent."""
    if marker is None:
        os._exit(1)
    if not os.path.exists(marker):
        Path(marker).write_text("crashed once")
        os._exit(1)
    return fn(args)


class CrashingExecutor(Executor):
    """Wraps an executor; the proxy jobs of chosen submissions kill their worker.

    ``always``: indices (in submission order) whose job kills its worker every time;
    ``once``: indices whose job kills its worker on the first attempt only (``marker`` file).
    ``formulas`` records what was submitted, in order.
    """

    def __init__(self, inner, always=(), once=(), marker: str | None = None):
        self.inner, self.always, self.once, self.marker = inner, set(always), set(once), marker
        self.formulas: list[str] = []

    def submit(self, fn, /, *args, **kwargs):
        i = len(self.formulas)
        self.formulas.append(args[0][1])
        if i in self.always:
            return self.inner.submit(crash_job, None, fn, args[0])
        if i in self.once:
            return self.inner.submit(crash_job, self.marker, fn, args[0])
        return self.inner.submit(fn, *args, **kwargs)

    def shutdown(self, wait=True, *, cancel_futures=False):
        self.inner.shutdown(wait=wait, cancel_futures=cancel_futures)


def rows_key(study):
    """What must match between two runs of the same search (row order and ids aside)."""
    return sorted((r.generation, r.position, r.proposed, r.formula, r.status, r.fitness, r.fingerprint,
                   r.same_as) for r in study.candidates)


def blobs_task_source(cls: str = "FileBlobs", name: str = "file-blobs", *, steps: int = 25,
                      batch_size: int = 32, sizes: tuple[int, int, int] = (200, 100, 100),
                      size_arg: int | None = None, label_hook: bool = False) -> str:
    """The source of a task file holding ``TinyBlobs`` under class ``cls`` and task ``name``
    (no import from the tests): three Gaussian blobs, a linear model, proxy ``steps`` and
    ``batch_size`` with lr 0.05, train/val/test of ``sizes`` drawn from one generator seeded 0
    (with the defaults, the same data and rows as ``tiny-blobs``).

    ``size_arg``: the class takes ``__init__(self, n=size_arg)`` and every split has ``n``
    samples (``sizes`` unused); ``label_hook``: the labels pass through a method
    ``labels(self, y)`` (identity) that a subclass may override. The text holds the lines
    ``import torch`` and ``name = "<name>"`` for tests that edit it."""
    init = (f"\n    def __init__(self, n: int = {size_arg}):\n        self.n = n\n"
            if size_arg is not None else "")
    hook = "\n    def labels(self, y):\n        return y\n" if label_hook else ""
    n = ("self.n",) * 3 if size_arg is not None else tuple(map(str, sizes))
    y = "self.labels(y)" if label_hook else "y"
    return f'''
import torch
from torch import nn

from lossforge.data import DataSplits, Split
from lossforge.tasks import Metric, ProxyConfig, Task


def accuracy(pred, target):
    return float((pred == target).mean())


class {cls}(Task):
    """Three Gaussian blobs, a linear model."""

    name = "{name}"
    num_classes = 3
    metrics = {{"accuracy": Metric("accuracy", accuracy)}}
    default_metric = "accuracy"
    proxy = ProxyConfig(steps={steps}, batch_size={batch_size}, lr=0.05)
{init}{hook}
    def data(self) -> DataSplits:
        g = torch.Generator().manual_seed(0)
        centres = torch.tensor([[0.0, 2.0], [2.0, -1.5], [-2.0, -1.5]])

        def split(n):
            y = torch.randint(0, 3, (n,), generator=g)
            return Split(centres[y] + torch.randn(n, 2, generator=g), {y})

        return DataSplits(split({n[0]}), split({n[1]}), split({n[2]}), 3, "blobs")

    def make_model(self) -> nn.Module:
        return nn.Linear(2, 3)
'''
