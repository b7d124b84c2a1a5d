"""Studies: the run loop, the store, resume, refusal of mismatched settings, bad files."""
import json
import sqlite3

import pytest

from lossforge.evaluation.candidate import GEC_HIT, TRAINED
from lossforge.evaluation.funnel import FunnelConfig
from lossforge.evaluation.lrp import LRPConfig
from lossforge.evaluation.proxy import ProxyStageConfig
from lossforge.storage import StudyFileError
from lossforge.study import LossSearch, load_study, resume
from lfhelpers import TinyBlobs


Blobs = TinyBlobs  # three Gaussian blobs, a linear model: proxy trainings take milliseconds
FAST = FunnelConfig(lrp=LRPConfig(steps=60, lr=0.1, threshold=0.3), proxy=ProxyStageConfig(steps=25))


def search(path, **kw):
    args = dict(task=Blobs.name, storage=path, strategy="autoloss-zero", budget=40, seed=1,
                funnel=FAST)
    args.update(kw)
    return LossSearch(**args).run()


def test_search_explores_exactly_the_budget_and_keeps_every_result(tmp_path):
    study = search(tmp_path / "s.db")
    rows = study.candidates
    assert len(rows) == 40 == study.explored
    assert len({(r.generation, r.position) for r in rows}) == 40
    stats = study.stats
    assert stats["checks"]["in"] == 40
    assert stats["proxy"]["out"] == sum(r.status == TRAINED for r in rows)
    assert stats["checks"]["in"] >= stats["gec"]["in"] >= stats["lrp"]["in"] >= stats["proxy"]["in"]
    trained = [r for r in rows if r.status == TRAINED]
    assert trained, "some candidate must pass the funnel on an easy task"
    best = study.best
    assert best.fitness == max(r.fitness for r in trained)
    # hall of fame: a Pareto front, best first, sizes strictly decreasing as fitness decreases
    hof = study.hall_of_fame
    assert hof[0].fitness == best.fitness
    for a, b in zip(hof, hof[1:]):
        assert a.fitness > b.fitness and a.size > b.size
    for r in rows:  # GEC hits reuse the fitness of the loss they are equivalent to
        if r.status == GEC_HIT and r.fitness is not None:
            assert r.fitness in [x.fitness for x in rows if x.formula == r.same_as]
    summary = study.summary()
    for key in ("task", "metric", "strategy", "budget", "explored", "best", "hall_of_fame", "stats"):
        assert key in summary
    json.dumps(summary)


def test_same_settings_continue_and_other_settings_are_refused(tmp_path):
    path = tmp_path / "s.db"
    search(path, budget=20).close()
    with pytest.raises(StudyFileError, match="funnel.lrp.steps: study has 60, requested 500"):
        search(path, budget=20, funnel=FunnelConfig())
    with pytest.raises(StudyFileError, match="seed: study has 1, requested 2"):
        search(path, budget=20, seed=2)
    study = search(path, budget=30)
    assert study.explored == 30
    first20 = [r.formula for r in study.candidates][:20]
    reference = search(tmp_path / "ref.db", budget=30)
    assert [r.formula for r in reference.candidates][:20] == first20
    assert sorted((r.generation, r.position, r.formula, r.status) for r in study.candidates) == \
        sorted((r.generation, r.position, r.formula, r.status) for r in reference.candidates)


def test_resume_with_another_task_is_refused(tmp_path):
    path = tmp_path / "s.db"
    search(path, budget=10).close()
    with pytest.raises(StudyFileError, match="task"):
        LossSearch(task="digits", storage=path, budget=10, seed=1, funnel=FAST).run()

    class Other(Blobs):
        name = "other-blobs"

    with pytest.raises(StudyFileError, match="created for task"):
        resume(path, task=Other())


def test_bad_study_files_give_clear_errors(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StudyFileError, match="not a lossforge study"):
        load_study(junk)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE meta (key TEXT, value TEXT)").connection.commit()
    with pytest.raises(StudyFileError, match="not a lossforge study"):
        load_study(other)
    with pytest.raises(StudyFileError, match="does not exist"):
        load_study(tmp_path / "missing.db")
    good = tmp_path / "good.db"
    search(good, budget=10).close()
    data = good.read_bytes()
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(StudyFileError):
        load_study(truncated)


def test_budget_must_be_positive_and_names_must_exist(tmp_path):
    with pytest.raises(ValueError, match="budget"):
        LossSearch(task=Blobs.name, storage=tmp_path / "x.db", budget=0)
    with pytest.raises(ValueError, match="did you mean 'autoloss-zero'"):
        LossSearch(task=Blobs.name, storage=tmp_path / "x.db", strategy="autoloss-zer")
    with pytest.raises(KeyError, match="no metric"):
        LossSearch(task=Blobs.name, storage=tmp_path / "x.db", metric="miou")


def test_pareto_front_keeps_the_first_evaluated_among_ties_best_first():
    from types import SimpleNamespace as E

    from lossforge.study import pareto_front

    entries = [E(fitness=0.5, size=3, n=0), E(fitness=0.5, size=3, n=1),  # tie: the first stays
               E(fitness=0.7, size=5, n=2), E(fitness=0.6, size=5, n=3),  # same size: the fitter
               E(fitness=0.4, size=4, n=4),                               # dominated by n=0
               E(fitness=None, size=1, n=5),                              # no fitness: skipped
               E(fitness=0.9, size=9, n=6), E(fitness=0.9, size=12, n=7)]  # as fit, larger: out
    assert [e.n for e in pareto_front(entries)] == [6, 2, 0]
    pairs = [(0.5, 3), (0.9, 9)]  # any reader: e.g. the live view's (fitness, size) tuples
    assert pareto_front(pairs, fitness=lambda t: t[0], size=lambda t: t[1]) == [(0.9, 9), (0.5, 3)]
    assert pareto_front([]) == []


def test_the_store_contract(tmp_path):
    from lossforge.evaluation.candidate import FAILED, REJECTED_CHECKS
    from lossforge.storage import Store

    store = Store.create(tmp_path / "s.db", {"budget": 5})
    rows = [(0, 0, REJECTED_CHECKS, None), (0, 1, TRAINED, 0.5), (0, 2, TRAINED, None),
            (1, 1, FAILED, None), (1, 0, TRAINED, 0.7)]
    for generation, position, status, fitness in rows:
        store.add(generation, position, "p", f"f{generation}{position}", 1, status, fitness, None,
                  None, {"x": float("nan")})
    store.add(0, 1, "p", "again", 1, FAILED, None, None, None, {})  # a second write: ignored
    assert store.count() == 5 and store.count_before(1) == 3 and store.count_before(0) == 0
    assert store.status_counts() == {REJECTED_CHECKS: 1, TRAINED: 3, FAILED: 1}
    assert [r.formula for r in store.rows()] == ["f00", "f01", "f02", "f11", "f10"]  # commit order
    assert [r.formula for r in store.rows(status=TRAINED)] == ["f01", "f02", "f10"]
    assert [r.formula for r in store.rows(status=TRAINED, with_fitness=True)] == ["f01", "f10"]
    assert {p: r.formula for p, r in store.generation_rows(1).items()} == {1: "f11", 0: "f10"}
    assert store.rows()[0].details == {"x": None}  # non-finite floats stored as null
    store.set_meta("k", [1, 2])
    store.save_checkpoint(0, {"a": 1})
    store.save_checkpoint(1, {"a": 2})
    assert store.last_checkpoint() == (1, {"a": 2}) and len(store.checkpoints()) == 2
    store.close()
    reader = Store.open(tmp_path / "s.db", readonly=True)
    assert reader.meta("k") == [1, 2] and reader.meta("missing") is None
    with pytest.raises(sqlite3.OperationalError):
        reader.set_meta("k", 3)
    reader.close()


def test_stats_follow_the_stages_and_meta_goes_through_the_study(tmp_path):
    from lossforge.evaluation.candidate import (FAILED, INVALID, REJECTED_CHECKS, REJECTED_LRP,
                                                STAGES)
    from lossforge.storage import Store

    store = Store.create(tmp_path / "s.db", {"budget": 9})
    statuses = [REJECTED_CHECKS, REJECTED_CHECKS, GEC_HIT, REJECTED_LRP, INVALID, FAILED, TRAINED,
                TRAINED, TRAINED]
    for i, status in enumerate(statuses):
        store.add(0, i, "p", f"f{i}", 1, status, 1.0 if status == TRAINED else None, None, None, {})
    store.save_checkpoint(0, {"stage_seconds": {"checks": 1.0, "proxy": 2.0}})
    store.save_checkpoint(1, {"stage_seconds": {"checks": 0.5}})
    store.close()
    study = load_study(tmp_path / "s.db", readonly=True)
    stats = study.stats
    assert list(stats) == list(STAGES)
    assert stats == {
        "checks": {"in": 9, "out": 7, "seconds": 1.5},
        "gec": {"in": 7, "out": 6, "seconds": 0.0},
        "lrp": {"in": 6, "out": 5, "seconds": 0.0},
        "proxy": {"in": 5, "out": 3, "invalid": 1, "failed": 1, "seconds": 2.0}}
    study.close()
    study = load_study(tmp_path / "s.db")
    study.set_meta("evaluation", {"ok": True})
    assert study.meta("evaluation") == {"ok": True}
    study.close()


def test_check_validates_without_writing(tmp_path):
    path = tmp_path / "s.db"
    run = LossSearch(task=Blobs.name, storage=path, budget=10, seed=1, funnel=FAST)
    run.check()
    assert not path.exists()
    with pytest.raises(TypeError, match="population_size"):
        LossSearch(task=Blobs.name, storage=path, strategy_options={"populaton_size": 3}).check()
    assert not path.exists()
    search(path, budget=10).close()
    LossSearch(task=Blobs.name, storage=path, budget=50, seed=1, funnel=FAST).check()
    assert load_study(path).settings["budget"] == 10  # checking does not grow the budget
    with pytest.raises(StudyFileError, match="seed: study has 1, requested 2"):
        LossSearch(task=Blobs.name, storage=path, budget=10, seed=2, funnel=FAST).check()


def test_settings_record_the_task_and_old_study_files_resume_by_name(tmp_path):
    path = tmp_path / "s.db"
    study = search(path, budget=8)
    s = study.settings
    assert (s["task"], s["task_spec"], s["task_fingerprint"], s["num_classes"]) == \
        ("tiny-blobs", "tiny-blobs", None, 3)
    study.close()
    # a study file written before the task's spec was stored: the name is the spec
    store = load_study(path).store
    store.set_meta("settings", {k: v for k, v in s.items()
                                if k not in ("task_spec", "task_fingerprint", "num_classes")})
    store.close()
    assert resume(path, budget=12).explored == 12
    # a task object made in Python (no spec): it is recorded by name only
    other = LossSearch(task=Blobs(), storage=tmp_path / "o.db", budget=8, seed=1, funnel=FAST)
    assert "task_spec" not in other.settings() and other.settings()["task"] == "tiny-blobs"
