"""The LRP's random start must leave the metric room to improve: a classification start whose
argmax already matches every probe target would score every loss 0 (and reject them all)."""
from __future__ import annotations

import numpy as np
import torch

from lossforge.evaluation.lrp import LossRejection, LRPConfig, lrp_score, metric_value, random_start
from lossforge.evaluation.probes import Probe
from lossforge.expr import parse
from lossforge.tasks import Metric

ACCURACY = Metric("accuracy", lambda p, t: float(np.mean(p == t)))


def _probe(target: torch.Tensor) -> Probe:
    return Probe("classification", target, (len(target), 2), 2)


def test_a_perfect_first_draw_is_replaced_by_the_next_draw():
    seed = 7
    first = torch.randn((5, 2), generator=torch.Generator().manual_seed(seed))
    probe = _probe(first.argmax(1))                 # the first draw is already right everywhere
    assert metric_value(ACCURACY, probe, first) == 1.0
    start = random_start(probe, ACCURACY, seed)
    assert metric_value(ACCURACY, probe, start) < 1.0
    gen = torch.Generator().manual_seed(seed)
    draws = [torch.randn((5, 2), generator=gen) for _ in range(17)]
    assert any(torch.equal(start, d) for d in draws[1:])  # a later draw of the same generator
    assert torch.equal(random_start(probe, ACCURACY, seed), start)  # deterministic
    # cross-entropy now has something to improve, and passes the protocol
    stage = LossRejection(probe, ACCURACY, LRPConfig(lr=0.01, seed=seed))
    assert torch.equal(stage.init, start)
    score = lrp_score(parse("-sum_c(y * log(p))"), probe, ACCURACY, stage.config, stage.init)
    assert score == 1.0 - metric_value(ACCURACY, probe, start) and score > 0


def test_an_imperfect_first_draw_is_kept():
    seed = 7
    first = torch.randn((5, 2), generator=torch.Generator().manual_seed(seed))
    probe = _probe(1 - first.argmax(1))             # every sample wrong at the start
    assert torch.equal(random_start(probe, ACCURACY, seed), first)
