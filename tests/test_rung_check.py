"""The rung check (``min_steps="auto"``): ranks and shares on hand-made cases, the choice rule,
rung results equal to straight trainings, and a study that measures its ladder once, uses it,
stores it and does not measure again on resume."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from lossforge import tasks
from lossforge.evaluation import rung_check
from lossforge.evaluation.funnel import FunnelConfig
from lossforge.evaluation.rung_check import (RungCheck, check_rungs, grid, promoted_share,
                                             spearman)
from lossforge.evaluation.rungs import FidelityConfig
from lossforge.study import LossSearch, load_study, resume
from lossforge.training import train


def test_spearman_hand_cases():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one swap of neighbours among 4: 1 - 6·(1+1)/(4·15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # a diverged loss (-inf) ranks last, as the worst fitness
    assert spearman([-math.inf, 0.2, 0.5, 0.9], [0.1, 0.2, 0.5, 0.9]) == pytest.approx(1.0)
    assert math.isnan(spearman([1, 1, 1, 1], [1, 2, 3, 4]))


def test_promoted_share_counts_the_final_top3_in_the_rungs_top_third():
    final = [0.9, 0.8, 0.7, 0.1, 0.2, 0.3]          # top 3: losses 0, 1, 2
    assert promoted_share([6, 5, 4, 3, 2, 1], final, 3) == pytest.approx(2 / 3)  # keeps 0, 1
    assert promoted_share([1, 2, 3, 4, 5, 6], final, 3) == 0.0                   # keeps 5, 4
    assert promoted_share([6, 1, 5, 2, 3, 4], final, 3) == pytest.approx(2 / 3)  # keeps 0, 2
    # ⌈7/3⌉ = 3 kept of 7
    assert promoted_share([7, 6, 5, 4, 3, 2, 1], [7, 6, 5, 4, 3, 2, 1], 3) == 1.0


def _check(rows) -> RungCheck:
    return RungCheck([4, 12, 36], 3, [f"l{i}" for i in range(len(rows))], rows)


def test_choose_shortest_rung_from_which_all_rank_usefully():
    good = [[0.1 * i, 0.1 * i, 0.1 * i] for i in range(9)]          # every rung ranks alike
    assert _check(good).choose() == (4, 1)
    shuffled = [[(7 * i) % 9, 0.1 * i, 0.1 * i] for i in range(9)]  # rung 0 ranks at random
    c = _check(shuffled)
    assert c.spearman[0] < 0.5 and c.passes(1) and not c.passes(0)
    assert c.choose() == (12, 1)
    # rung 1 fails while rung 0 would pass: cutting at 4 steps would also cut at 12, so no rungs
    broken = [[0.1 * i, (7 * i) % 9, 0.1 * i] for i in range(9)]
    assert _check(broken).choose() == (36, 1)


def test_round_trip_keeps_diverged_and_choice():
    rows = [[0.1 * i, 0.1 * i, 0.1 * i] for i in range(5)] + [[0.3, -math.inf, -math.inf]]
    c = _check(rows)
    d = c.to_dict()
    assert d["fitness"][-1] == [0.3, None, None] and d["chosen"] == {"min_steps": 4, "brackets": 1}
    back = RungCheck.from_dict(d)
    assert back.fitness[-1][1] == -math.inf and back.choose() == c.choose()
    assert back.spearman == pytest.approx(c.spearman)


def test_grid_is_geometric_and_distinct():
    assert grid(300, 3, 4) == [11, 33, 100, 300]
    assert grid(120, 3, 4) == [4, 13, 40, 120]
    assert grid(5, 3, 4) == [1, 2, 5]


def test_the_ladder_starts_at_the_rung_the_check_chose():
    """The check prints rung lengths rounded (150/9 = 16.7 -> 17); --min-steps 17 must give that
    rung, not skip it (it did: 50/150)."""
    assert FidelityConfig("asha", 17, 150, 3, 1).ladder(150) == [[17, 50, 150]]
    for top in (20, 64, 100, 120, 150, 200, 250, 300, 1000):
        for eta in (2, 3, 4):
            lengths = grid(top, eta, 4)
            for i, low in enumerate(lengths):
                ladder = FidelityConfig("asha", low, top, eta, 1).ladder(top)
                assert ladder == [lengths[i:]], (top, eta, low)


def test_auto_config_validation():
    assert FidelityConfig("asha", "auto").auto
    assert FidelityConfig("asha", "auto").chosen(12, 1) == FidelityConfig("asha", 12, None, 3, 1)
    with pytest.raises(ValueError, match="leave brackets unset"):
        FidelityConfig("asha", "auto", brackets=2)
    with pytest.raises(ValueError, match="'auto'"):
        FidelityConfig("asha", "fast")
    with pytest.raises(ValueError, match="measured when the study starts"):
        FidelityConfig("asha", "auto").ladder(300)


def test_check_rungs_equals_straight_trainings():
    task = tasks.get("digits")
    losses = ["ce", "focal", "brier", "gce"]
    formulas = [str(task_formula) for task_formula in map(_formula, losses)]
    c = check_rungs(task, "accuracy", formulas, 18, eta=3, levels=3)
    assert c.rungs == [2, 6, 18]
    for i, f in enumerate(formulas):
        for k, steps in enumerate(c.rungs):
            straight = train(task, f, steps=steps, seed=0, splits=("val",)).val["accuracy"]
            assert c.fitness[i][k] == pytest.approx(straight, abs=1e-12)
    with pytest.raises(ValueError, match="at least 4"):
        check_rungs(task, "accuracy", formulas[:3], 18)


def test_check_rungs_on_workers_equals_in_process():
    from lossforge.execution import make_executor

    task = tasks.get("digits")
    formulas = [str(_formula(n)) for n in ("ce", "focal", "brier", "gce")] + ["exp(exp(exp(p)))"]
    here = check_rungs(task, "accuracy", formulas, 18, eta=3, levels=3)
    executor = make_executor(workers=2)
    try:
        there = check_rungs(task, "accuracy", formulas, 18, eta=3, levels=3, executor=executor)
    finally:
        executor.shutdown()
    assert np.allclose(there.fitness, here.fitness, atol=1e-12)
    assert there.spearman == pytest.approx(here.spearman, nan_ok=True)


def _formula(name: str):
    from lossforge import zoo

    return zoo.get(name).expr_for(tasks.get("digits"))


FUNNEL = replace(FunnelConfig(), use_lrp=False)


def test_study_measures_once_uses_the_choice_and_resumes(tmp_path, monkeypatch):
    calls = []
    real = rung_check.check_rungs

    def counted(*a, **kw):
        calls.append(a[3])
        return real(*a, **kw)

    monkeypatch.setattr(rung_check, "check_rungs", counted)
    monkeypatch.setattr(rung_check, "POOL_RANDOM", 2)
    zoo = rung_check.loss_pool(tasks.get("digits"))
    path = tmp_path / "s.db"
    events = []
    fid = {"kind": "asha", "min_steps": "auto", "max_steps": 18}
    study = LossSearch(task="digits", storage=path, budget=12, seed=1, funnel=FUNNEL,
                       fidelity=fid, progress=events.append).run()
    assert calls == [18]
    assert events[0]["event"] == "rung_check" and events[0]["losses"] == len(zoo) + 2
    stored = study.store.meta("rung_check")
    assert stored["losses"][:len(zoo)] == zoo and len(stored["losses"]) == len(zoo) + 2
    low, brackets = RungCheck.from_dict(stored).choose()
    ladder = FidelityConfig("asha", low, 18, 3, brackets).ladder(18)[0]
    steps = {r.steps for r in study.store.rung_rows()}
    assert steps and steps <= set(ladder)
    assert study.store.settings["funnel"]["proxy"]["fidelity"]["min_steps"] == "auto"
    study.close()
    resume(path, budget=20).close()
    assert calls == [18]  # read back, not measured again
    s = load_study(path, readonly=True)
    assert s.store.meta("rung_check") == stored and s.explored == 20
    s.close()


def test_study_text_for_show_and_report():
    rows = [[(7 * i) % 9, 0.1 * i, 0.1 * i] for i in range(9)]
    line = rung_check.study_text({"rung_check": _check(rows).to_dict()})
    assert line.startswith("rung check: 9 losses, 4: ρ") and "rungs from 12 steps, 1 bracket" in line
    assert rung_check.study_text({"rung_check": None}) is None
    assert "unreadable" in rung_check.study_text({"rung_check": {"rungs": [1]}})
