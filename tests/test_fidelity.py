"""Multi-fidelity proxy training (ASHA rungs): the ladder and promotion rule on hand-made cases,
a search whose rung results equal straight trainings, the same study in-process and on 2 worker
processes, a search interrupted mid-generation that resumes to the same study, and old study
files without the rungs table."""
from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest

from lossforge.evaluation.funnel import FunnelConfig
from lossforge.evaluation.rungs import FidelityConfig, selection_key, selection_value, top_indices
from lossforge.study import LossSearch, load_study, resume
from lossforge.training import train


# --- the schedule -------------------------------------------------------------------------------
def test_ladder_geometric_down_from_max():
    assert FidelityConfig("asha", 13, 120, 3, brackets=1).ladder(0) == [[13, 40, 120]]
    assert FidelityConfig("asha", 13, 120, 3, brackets=3).ladder(0) == [[13, 40, 120], [40, 120],
                                                                        [120]]
    assert FidelityConfig("asha", 10, 160, 4, brackets=1).ladder(0) == [[10, 40, 160]]
    # defaults: min max/η², two brackets (one from max/η); one when there is a single length
    assert FidelityConfig("asha", None, None, 3).ladder(90) == [[10, 30, 90], [30, 90]]
    assert FidelityConfig("asha", None, 300, 3).ladder(0) == [[33, 100, 300], [100, 300]]
    assert FidelityConfig("asha", 13, 120, 3).ladder(0) == [[13, 40, 120], [40, 120]]
    # rung lengths are compared rounded, as the rung check's grid rounds them: 2/3 -> 1 step
    assert FidelityConfig("asha", None, 2, 3).ladder(0) == [[1, 2], [2]]
    assert FidelityConfig("asha", None, 1, 3).ladder(0) == [[1]]
    assert FidelityConfig("asha", None, 60, 3).ladder(0) == [[7, 20, 60], [20, 60]]  # 60/9=6.7
    with pytest.raises(ValueError, match="only 3"):
        FidelityConfig("asha", 13, 120, 3, brackets=4).ladder(0)
    with pytest.raises(ValueError, match="eta"):
        FidelityConfig("asha", eta=1)
    with pytest.raises(ValueError, match="fidelity must be"):
        FidelityConfig("hyperband")


def test_promotion_rule_top_fraction_of_seen():
    assert top_indices([0.9], 3) == set()                  # fewer than η results: nobody yet
    assert top_indices([0.5, 0.2, 0.6], 3) == {2}          # n=3: the best one
    assert top_indices([0.5, 0.2, 0.5], 3) == {0}          # a tie goes to the earlier result
    assert top_indices([0.1, 0.2, 0.3, 0.4, 0.5, 0.45], 3) == {4, 5}  # n=6: top 2
    assert top_indices([0.1, 0.2, 0.3, 0.4], 4) == {3}


def test_cross_rung_order_is_steps_first():
    keys = [(40, 0.9), (120, 0.5), (120, 0.6), (13, 0.99)]
    by_key = sorted(keys, key=lambda k: selection_key(*k), reverse=True)
    by_value = sorted(keys, key=lambda k: selection_value(*k), reverse=True)
    assert by_key == by_value == [(120, 0.6), (120, 0.5), (40, 0.9), (13, 0.99)]
    assert selection_value(40, -3.0) > selection_value(13, 5.0)  # negative fitness: same order


# --- searches -------------------------------------------------------------------------------------
FUNNEL = replace(FunnelConfig(), use_lrp=False)
FID = FidelityConfig("asha", min_steps=4, max_steps=36, eta=3)


def _search(path, budget=16, **kw):
    return LossSearch(task="digits", storage=path, budget=budget, seed=4, funnel=FUNNEL,
                      fidelity=FID, strategy_options={"population_size": 16, "batch_size": 8},
                      **kw)


def _rows(study):
    cands = sorted((r.generation, r.position, r.formula, r.status, r.fitness,
                    r.details.get("fidelity", {}).get("steps")) for r in study.candidates)
    rungs = [(r.generation, r.position, r.rung, r.steps, r.status, r.fitness)
             for r in study.store.rung_rows()]
    return cands, rungs


def test_search_rungs_match_straight_training(tmp_path):
    study = _search(tmp_path / "s.db").run()
    cands, rungs = _rows(study)
    assert rungs, "nothing was trained: the test needs candidates that pass screening"
    assert {r[3] for r in rungs} <= {4, 12, 36}
    trained = [r for r in study.trained()]
    assert trained and all(r.details["fidelity"]["steps"] in (4, 12, 36) for r in trained)
    top = [r for r in study.store.rung_rows() if r.steps == 36 and r.fitness is not None]
    assert top, "no candidate reached the top rung"
    r = top[0]
    straight = train("digits", r.formula, steps=36, seed=0, splits=("val",))
    assert straight.val == r.metrics  # continued through rungs == one run of 36 steps
    # every stored candidate that trained has one rung row per rung it reached
    per = {}
    for g, p, k, *_ in rungs:
        per.setdefault((g, p), []).append(k)
    assert all(ks == list(range(len(ks))) for ks in per.values())
    summary = study.summary()
    assert summary["fidelity"]["settings"]["kind"] == "asha"
    assert sum(summary["fidelity"]["stopped_at"].values()) == len(per)
    assert study.best.details["fidelity"]["steps"] == max(x[5] or 0 for x in cands)
    best_rung = summary["fidelity"]["best_rung"]
    assert best_rung["steps"] == study.best.details["fidelity"]["steps"]
    assert (best_rung["rung"] < best_rung["top"]) == (best_rung["steps"] < 36)
    assert not (tmp_path / "s.db.rungs").exists()  # in-process: states in memory, no files
    study.close()


def test_same_study_in_process_and_on_two_workers_and_after_interruption(tmp_path):
    from lossforge.execution import make_executor

    ref = _search(tmp_path / "ref.db").run()
    expected = _rows(ref)
    ref.close()

    ex = make_executor(workers=2)
    try:
        pooled = _search(tmp_path / "pool.db", executor=ex).run()
    finally:
        ex.shutdown()
    assert _rows(pooled) == expected
    pooled.close()

    class Stop(Exception):
        pass

    seen = []

    def crash(event):  # interrupt in the second generation, after a few results
        seen.append(event)
        if event["generation"] == 1 and len([e for e in seen if e["generation"] == 1]) == 3:
            raise Stop

    path = tmp_path / "killed.db"
    with pytest.raises(Stop):
        _search(path, progress=crash).run()
    partial = load_study(path)
    n_rungs = len(partial.store.rung_rows())
    partial.close()
    done = resume(path)
    assert _rows(done) == expected
    assert len(done.store.rung_rows()) >= n_rungs
    done.close()


def test_fidelity_none_keeps_the_single_proxy(tmp_path):
    s = LossSearch(task="digits", storage=tmp_path / "n.db", budget=4, seed=0, funnel=FUNNEL,
                   fidelity="none")
    assert s.funnel.proxy.fidelity is None
    with pytest.raises(ValueError, match="joint"):
        LossSearch(task="shapes-det", storage=tmp_path / "j.db", strategy="random", joint=True,
                   fidelity=FID)


def test_old_study_without_rungs_table_opens(tmp_path):
    path = tmp_path / "old.db"
    from lossforge.storage import Store

    store = Store.create(path, {"task": "digits", "funnel": {}})
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE rungs")
    conn.commit()
    conn.close()
    ro = Store.open(path, readonly=True)
    assert ro.rung_rows() == []
    ro.close()
    rw = Store.open(path)  # a writable open adds the table
    assert rw.rung_rows() == []
    rw.close()


def test_show_and_the_report_warn_when_the_best_stopped_below_its_top_rung():
    from lossforge.evaluation.fidelity import best_rung_warning
    from lossforge.report.html import _rungs_html

    assert best_rung_warning(None) is None
    assert best_rung_warning({"steps": 36, "rung": 2, "top": 2}) is None
    text = best_rung_warning({"steps": 12, "rung": 1, "top": 2})
    assert "judged at 12 proxy steps" in text and "lossforge refine" in text
    fid = {"settings": {"kind": "asha", "eta": 3}, "candidates": 3, "steps_spent": 40,
           "seconds": 1.0, "stopped_at": {4: 2, 12: 1}, "rungs": [],
           "best_rung": {"steps": 12, "rung": 1, "top": 2}}
    assert 'class="warning"' in _rungs_html(fid, None)
    assert 'class="warning"' not in _rungs_html({**fid, "best_rung": None}, None)


def test_in_process_rungs_train_together_and_match_one_at_a_time(tmp_path, monkeypatch):
    from lossforge.evaluation import fidelity

    sizes = []
    real = fidelity.rung_batch

    def counted(task, losses, *a, **kw):
        sizes.append(len(losses))
        return real(task, losses, *a, **kw)

    monkeypatch.setattr(fidelity, "rung_batch", counted)
    together = _search(tmp_path / "together.db").run()
    assert max(sizes) > 1, "no two rungs were trained together"
    one = replace(FUNNEL, proxy=replace(FUNNEL.proxy, batch=1))
    alone = LossSearch(task="digits", storage=tmp_path / "alone.db", budget=16, seed=4,
                       funnel=one, fidelity=FID,
                       strategy_options={"population_size": 16, "batch_size": 8}).run()
    a, b = _rows(together), _rows(alone)
    # the same candidates reach the same rungs; fitness agrees to float noise (a sample or two)
    assert [r[:4] for r in a[1]] == [r[:4] for r in b[1]]
    for x, y in zip(a[1], b[1]):
        assert (x[5] is None) == (y[5] is None)
        if x[5] is not None:
            assert x[5] == pytest.approx(y[5], abs=2 / 360)
    together.close()
    alone.close()
