"""Successive halving (the NLFS elimination protocol, generalised): ranking on validation only,
losses that cannot learn go first, deterministic."""
from __future__ import annotations

import pytest

import lfhelpers  # noqa: F401  (registers tiny-blobs)
from lossforge import tasks
from lossforge.evaluation import own_loop
from lossforge.evaluation.halving import HalvingRound, successive_halving

GOOD = ["ce", "-sum_c(y * log(p)) + sum_c(square(p - y))", "sum_c(square(p - y))"]
BAD = "sum_c(y * log(p))"  # anti cross-entropy: learns to be wrong


def test_bad_loss_is_eliminated_first_and_rounds_shrink():
    rounds = [HalvingRound("tiny-blobs", keep=3, steps=25, seeds=(0, 1)),
              HalvingRound(lambda: tasks.get("tiny-blobs"), keep=1, steps=50, seeds=(2,),
                           label="longer")]
    res = successive_halving([BAD, *GOOD], rounds)
    first = res.rounds[0]
    assert [s.rank for s in first.standings] == [1, 2, 3, 4]
    assert first.standings[-1].loss == BAD and not first.standings[-1].kept
    assert first.kept == [s.loss for s in first.standings[:3]]
    assert BAD not in first.kept
    assert len(res.rounds[1].standings) == 3 and len(res.survivors) == 1
    assert res.rounds[1].label == "longer" and res.rounds[1].steps == 50
    assert res.metric == "accuracy"
    assert all(s.runs == 2 for s in first.standings)
    assert res.rows()[0]["round"] == 0 and {"loss", "mean", "std", "kept"} <= set(res.rows()[0])


def test_ranks_on_validation_never_test(monkeypatch):
    calls = []
    real = own_loop.train  # what halving trains with (through own_loop.training_run)

    def spy(*args, **kwargs):
        calls.append(kwargs.get("splits"))
        return real(*args, **kwargs)

    monkeypatch.setattr(own_loop, "train", spy)
    res = successive_halving(GOOD, [HalvingRound("tiny-blobs", keep=2, steps=20, seeds=(0,))])
    assert calls and all(s == ("val",) for s in calls)
    assert all(r.test == {} and "accuracy" in r.val for r in res.runs)
    # the ranking follows the validation means
    means = [s.mean for s in res.rounds[0].standings]
    assert means == sorted(means, reverse=True)


def test_deterministic_and_ties_by_input_order():
    rounds = [HalvingRound("tiny-blobs", keep=2, steps=20, seeds=(0, 1))]
    a = successive_halving(GOOD, rounds).to_dict()
    b = successive_halving(GOOD, rounds).to_dict()
    assert a == b
    same = successive_halving(["ce", "-sum_c(y * log(p))"], rounds)  # same loss twice: a tie
    assert [s.loss for s in same.rounds[0].standings] == ["ce", "-sum_c(y * log(p))"]


def test_invalid_runs_rank_last():
    overflow = "-sum_c(y * exp(exp(exp(z))))"  # non-finite at the first step
    res = successive_halving([overflow, "sum_c(y * log(p))", "ce"],
                             [HalvingRound("tiny-blobs", keep=2, steps=10, seeds=(0, 1))])
    last = res.rounds[0].standings[-1]
    assert last.loss == overflow and last.invalid == 2 and last.values == [None, None]
    assert res.survivors == ["ce", "sum_c(y * log(p))"]


def test_bad_arguments():
    r = HalvingRound("tiny-blobs", keep=1, steps=5)
    with pytest.raises(ValueError):
        successive_halving([], [r])
    with pytest.raises(ValueError):
        successive_halving(["ce", "ce"], [r])
    with pytest.raises(ValueError):
        successive_halving(["ce"], [])
    with pytest.raises(ValueError):
        successive_halving(["ce"], [HalvingRound("tiny-blobs", keep=0)])
    with pytest.raises(ValueError):
        successive_halving(["ce"], [HalvingRound("tiny-blobs", keep=1, seeds=())])
