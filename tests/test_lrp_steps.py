"""A shorter loss-rejection protocol keeps its decisions only with the same summed step
(``LRPConfig.with_steps``: lr · old steps / new steps), which ``--lrp-steps`` applies."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lossforge.cli.search import funnel_config
from lossforge.evaluation.lrp import LossRejection, LRPConfig, lrp_score
from lossforge.evaluation.probes import Probe
from lossforge.expr import parse
from lossforge.tasks import Metric

ACCURACY = Metric("accuracy", lambda p, t: float(np.mean(p == t)))


def test_with_steps_keeps_the_summed_step():
    short = LRPConfig(lr=0.004, steps=500).with_steps(200)
    assert (short.steps, short.lr) == (200, pytest.approx(0.01))
    assert short.with_steps(500).lr == pytest.approx(0.004)
    with pytest.raises(ValueError, match="positive"):
        LRPConfig().with_steps(0)


def test_the_command_line_scales_the_lr_with_lrp_steps():
    cfg = funnel_config(lrp_steps=200)
    assert cfg.lrp.steps == 200 and cfg.lrp.lr == pytest.approx(LRPConfig().lr * 2.5)
    assert funnel_config().lrp == LRPConfig()


def test_a_short_protocol_scores_like_the_long_one_only_with_the_lr_scaled():
    target = torch.randint(0, 10, (200,), generator=torch.Generator().manual_seed(0))
    probe = Probe("classification", target, (200, 10), 10)
    full = LRPConfig(lr=0.3, samples=200)
    start = LossRejection(probe, ACCURACY, full).init
    for formula in ("-sum_c(y * log(p))", "sum_c(square(p - y))"):
        loss = parse(formula)
        long_ = lrp_score(loss, probe, ACCURACY, full, start)
        scaled = lrp_score(loss, probe, ACCURACY, full.with_steps(100), start)
        unscaled = lrp_score(loss, probe, ACCURACY, LRPConfig(lr=0.3, samples=200, steps=100),
                             start)
        assert long_ > 0.5
        assert abs(scaled - long_) <= 0.03, formula
        assert unscaled < long_ - 0.2, formula


def test_lrp_width_narrows_the_dense_probe_only():
    from lossforge import tasks
    from lossforge.evaluation.funnel import Funnel

    cfg = funnel_config(lrp_width=16)
    assert cfg.lrp.spatial_size == 16 and cfg.lrp.steps == LRPConfig().steps
    seg = Funnel(tasks.get("shapes-seg"), "miou", cfg)
    assert tuple(seg.lrp.probe.target.shape[-2:]) == (16, 16)
    assert tuple(Funnel(tasks.get("shapes-seg"), "miou", funnel_config()).lrp.probe.target
                 .shape[-2:]) == (32, 32)
    with pytest.raises(ValueError, match="--lrp-width"):
        funnel_config(lrp_width=0)
