"""Batched proxy training (``training/stacked.py``) against the sequential ``train``."""
import math

import pytest
import torch
from torch import nn

from lossforge.data import DataSplits, Split
from lossforge.evaluation.candidate import FAILED, INVALID, TRAINED, Candidate
from lossforge.evaluation.proxy import ProxyStageConfig, ProxyTraining
from lossforge.expr import parse
from lossforge.tasks import Metric, ProxyConfig, Task, models
from lossforge.training import OK, train
from lossforge.training import stacked as PB

ACC = {"accuracy": Metric("accuracy", lambda p, t: float((p == t).mean()))}
#: Non-finite from the first step / after a few steps (sequentially: steps_done 0 and 4).
BLOW_UP_NOW = "exp(100 * z) * y"
BLOW_UP_LATER = "-exp(exp(mean_c(square(z))))"


def _images(n, g, classes=3):
    y = torch.randint(0, classes, (n,), generator=g)
    x = 0.5 * torch.randn(n, 1, 8, 8, generator=g)
    x[:, 0, 2:6, 2:6] += y.view(-1, 1, 1).float() - 1
    return x, y


class TinyConv(Task):
    """A user task that lives in this file: conv, GroupNorm, max-pool, dropout, linear head."""

    name = "tiny-conv"
    num_classes = 3
    metrics = ACC
    proxy = ProxyConfig(steps=30, batch_size=16, lr=0.01)
    dropout = 0.3

    def data(self) -> DataSplits:
        g = torch.Generator().manual_seed(0)
        return DataSplits(Split(*_images(96, g)), Split(*_images(48, g)), Split(*_images(48, g)),
                          3, "tiny")

    def make_model(self) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(self.dropout),
                             nn.Linear(64, 3))


class TinySeg(Task):
    """Segmentation with the built-in U-Net (ConvTranspose, skip concatenations) and ignored pixels."""

    name = "tiny-seg"
    num_classes = 3
    default_metric = "pixel_acc"
    metrics = {"pixel_acc": Metric("pixel_acc", lambda p, t: float((p == t)[t != 255].mean()))}
    proxy = ProxyConfig(steps=12, batch_size=4, lr=0.01)

    def data(self) -> DataSplits:
        g = torch.Generator().manual_seed(0)

        def split(n):
            x = torch.randn(n, 3, 8, 8, generator=g)
            y = (x[:, 0] > 0.3).long() + (x[:, 1] > 0.8).long()
            y[:, 0, :] = 255
            return Split(x, y)

        return DataSplits(split(24), split(8), split(8), 3, "tiny-seg")

    def make_model(self) -> nn.Module:
        return models.TinyUNet(3, width=4)


class WithLayerNorm(TinyConv):
    """A module the grouped engine does not know: trained through the vmap engine."""

    name = "tiny-layernorm"

    def make_model(self) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.LayerNorm(16), nn.ReLU(),
                             nn.Linear(16, 3))


class WithBatchNorm(TinyConv):
    name = "tiny-batchnorm"

    def make_model(self) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.Flatten(), nn.Linear(256, 3))


def assert_same(seq, bat, metric="accuracy", tol=1e-6):
    for a, b in zip(seq, bat):
        assert (a.loss, a.status, a.steps_done) == (b.loss, b.status, b.steps_done)
        assert len(a.loss_curve) == len(b.loss_curve)
        for u, v in zip(a.loss_curve, b.loss_curve):
            assert (math.isnan(u) and math.isnan(v)) or v == pytest.approx(u, rel=1e-4, abs=1e-5)
        if a.status == OK:
            assert b.val[metric] == pytest.approx(a.val[metric], abs=tol)
            assert b.val.keys() == a.val.keys()
        else:
            assert b.val == {} == a.val


@pytest.mark.parametrize("engine", PB.ENGINES)
def test_batched_equals_sequential_with_dropout_and_early_stops(engine):
    task = TinyConv()
    losses = ["ce", "focal", "mse", BLOW_UP_LATER, "baikal", BLOW_UP_NOW, "poly1"]
    seq = [train(task, f, seed=3, splits=("val",)) for f in losses]
    bat = PB.train_batched(task, losses, seed=3, engine=engine)
    assert [r.status for r in seq] == [OK, OK, OK, "invalid", OK, "invalid", OK]
    assert [r.steps_done for r in seq][3] not in (0, 30)  # stops mid-run: compaction is exercised
    assert_same(seq, bat)


def test_segmentation_unet_with_ignored_pixels():
    task = TinySeg()
    assert PB.batched_engine(task) == "grouped"
    losses = ["ce", "dice", "focal", "wce"]
    seq = [train(task, f, seed=1, splits=("val", "test")) for f in losses]
    bat = PB.train_batched(task, losses, seed=1, splits=("val", "test"))
    assert_same(seq, bat, "pixel_acc")
    for a, b in zip(seq, bat):
        assert b.test == pytest.approx(a.test, abs=1e-6)


def test_digits_few_steps_match_sequential():
    losses = ["ce", "focal", "-sum_c(y * log(p)) + 0.1 * mean_c(square(z))"]
    seq = [train("digits", f, steps=15, seed=0, splits=("val",)) for f in losses]
    bat = PB.train_batched("digits", losses, steps=15, seed=0)
    assert_same(seq, bat, tol=2 / 360)  # float noise may move a sample or two


def test_an_invalid_or_failing_copy_does_not_touch_the_others():
    class Raises(nn.Module):
        def forward(self, logits, target):
            raise RuntimeError("boom")

    task = TinyConv()
    alone = PB.train_batched(task, ["ce", "focal"], seed=0)
    mixed = PB.train_batched(task, [BLOW_UP_NOW, "ce", Raises(), BLOW_UP_LATER, "focal"], seed=0)
    assert [r.status for r in mixed] == ["invalid", OK, PB.FAILED, "invalid", OK]
    for r in (mixed[0], mixed[3]):
        ref = train(task, r.loss, seed=0)
        assert r.steps_done == ref.steps_done and math.isnan(r.loss_curve[-1])
    for a, b in zip(alone, [mixed[1], mixed[4]]):
        assert b.loss_curve == pytest.approx(a.loss_curve, rel=1e-5)
        assert b.val == pytest.approx(a.val)


def test_engine_choice_and_unsupported_models():
    assert PB.batched_engine(TinyConv()) == "grouped"
    task = WithLayerNorm()
    assert PB.batched_engine(task) == "vmap"
    seq = [train(task, f, seed=0, steps=10, splits=("val",)) for f in ("ce", "mse")]
    assert_same(seq, PB.train_batched(task, ["ce", "mse"], seed=0, steps=10))
    assert not PB.supports_batched(WithBatchNorm())
    with pytest.raises(ValueError, match="cannot be trained batched"):
        PB.train_batched(WithBatchNorm(), ["ce"])


def _stage(task, batch, formulas, monkeypatch=None):
    calls = []
    if monkeypatch is not None:
        real = PB.train_batched
        monkeypatch.setattr(PB, "train_batched",
                            lambda t, losses, **kw: calls.append(len(losses)) or real(t, losses, **kw))
    stage = ProxyTraining(task, "accuracy", ProxyStageConfig(steps=20, seed=2, batch=batch))
    cands = [Candidate(parse(f)) for f in formulas]
    done = []
    stage(cands, on_done=done.append)
    return cands, done, stage, calls


def test_proxy_stage_trains_in_chunks_with_the_sequential_outcome(monkeypatch):
    task = TinyConv()
    formulas = ["-sum_c(y * log(p))", BLOW_UP_NOW, "sum_c(square(p - y))", "f * y",
                BLOW_UP_LATER, "-mean_c(log(p) - y / p)", "-sum_c(y * square(1 - p) * log(p))"]
    seq, _, _, _ = _stage(task, 1, formulas)
    bat, done, stage, calls = _stage(task, 4, formulas, monkeypatch)
    assert calls == [4, 2]  # "f * y" cannot be loaded for this task: the sequential job reports it
    assert sorted(map(id, done)) == sorted(map(id, bat))
    assert [c.status for c in bat] == [c.status for c in seq] == [
        TRAINED, INVALID, TRAINED, FAILED, INVALID, TRAINED, TRAINED]
    assert bat[3].reason == seq[3].reason and "f" in bat[3].reason
    for a, b in zip(seq, bat):
        assert (b.fitness is None) == (a.fitness is None)
        if a.fitness is not None:
            assert b.fitness == pytest.approx(a.fitness, abs=1e-6)
            assert b.metrics == pytest.approx(a.metrics, abs=1e-6)
            assert b.seconds["proxy"] > 0
    assert stage.stats.n_in == 7 and stage.stats.n_out == 4


def test_proxy_stage_without_batching_support_runs_sequentially(monkeypatch):
    formulas = ["-sum_c(y * log(p))", BLOW_UP_NOW]
    seq, _, _, _ = _stage(WithBatchNorm(), 1, formulas)
    bat, _, _, calls = _stage(WithBatchNorm(), 16, formulas, monkeypatch)
    assert calls == []
    assert [(c.status, c.fitness) for c in bat] == [(c.status, c.fitness) for c in seq]
