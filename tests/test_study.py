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
    assert len({(r.generation, r.slot) for r in rows}) == 40
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
    assert sorted((r.generation, r.slot, r.formula, r.status) for r in study.candidates) == \
        sorted((r.generation, r.slot, r.formula, r.status) for r in reference.candidates)


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
