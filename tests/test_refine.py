"""Refining a study: successive halving of its best losses, each round stored in the study,
resumable, never touching the search's own results."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

import lfhelpers as H
from lossforge import cli, refine
from lossforge.evaluation.funnel import FunnelConfig
from lossforge.evaluation.lrp import LRPConfig
from lossforge.evaluation.proxy import ProxyStageConfig
from lossforge.refine import RoundSpec, default_rounds, refine_study
from lossforge.storage import Store
from lossforge.study import LossSearch, load_study
from lossforge.tasks import get as get_task
from lossforge.training import OK, train

FAST = FunnelConfig(lrp=LRPConfig(steps=60, lr=0.1, threshold=0.3), proxy=ProxyStageConfig(steps=25))
ROUNDS = [RoundSpec(30, (1, 2), 2), RoundSpec(50, (1,), 1)]


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("refine") / "s.db"
    LossSearch(task=H.TinyBlobs.name, storage=path, budget=40, seed=1, funnel=FAST).run().close()
    return path


def rows(path):
    s = load_study(path)
    try:
        return [(r.id, r.formula, r.status, r.fitness) for r in s.candidates]
    finally:
        s.close()


def copy(study_file, tmp_path):
    dst = tmp_path / "s.db"
    dst.write_bytes(study_file.read_bytes())
    return dst


def test_rounds_rank_by_independently_computed_validation_means(study_file, tmp_path):
    path = copy(study_file, tmp_path)
    before = rows(path)
    state = refine_study(path, ROUNDS, top=3)
    assert rows(path) == before  # the search's results are untouched
    chosen = list(state["search_fitness"])
    trained = sorted((r for r in before if r[2] == "trained"), key=lambda r: -r[3])
    assert chosen[0] == trained[0][1] and len(chosen) == min(3, len({r[1] for r in trained}))
    task = get_task(H.TinyBlobs.name)
    first = state["results"][0]
    assert first["steps"] == 30 and first["seeds"] == [1, 2]
    for s in first["standings"]:
        runs = [train(task, s["loss"], steps=30, seed=seed, splits=("val",)) for seed in (1, 2)]
        vals = [r.val["accuracy"] for r in runs if r.status == OK]
        assert s["mean"] == pytest.approx(np.mean(vals)) if vals else np.isnan(s["mean"])
    means = [s["mean"] for s in first["standings"] if s["invalid"] == 0]
    assert means == sorted(means, reverse=True)
    kept = [s["loss"] for s in first["standings"] if s["kept"]]
    assert len(kept) == min(2, len(chosen))
    second = state["results"][1]
    assert {s["loss"] for s in second["standings"]} == set(kept)
    assert state["survivors"] == [second["standings"][0]["loss"]]
    # stored in the study and shown by `show --format json`
    s = load_study(path)
    assert s.summary()["refine"] == state
    s.close()


def test_a_crashed_refinement_continues_after_its_last_finished_round(study_file, tmp_path,
                                                                      monkeypatch):
    path = copy(study_file, tmp_path)
    calls = []
    real = refine.successive_halving

    def crash_on_second(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(*args, **kw)

    monkeypatch.setattr(refine, "successive_halving", crash_on_second)
    with pytest.raises(RuntimeError):
        refine_study(path, ROUNDS, top=3)
    stored = load_study(path).store.meta("refine")
    assert len(stored["results"]) == 1  # round 1 was committed before round 2 started
    monkeypatch.setattr(refine, "successive_halving", real)
    seen = []
    state = refine_study(path, ROUNDS, top=3, progress=lambda i, *_: seen.append(i))
    assert set(seen) == {1}  # only round 2 ran again
    assert state["results"][0] == stored["results"][0] and len(state["results"]) == 2
    seen.clear()
    assert refine_study(path, ROUNDS, top=3, progress=lambda i, *_: seen.append(i)) == state
    assert seen == []  # finished: nothing is retrained


def test_other_settings_are_refused_unless_restarted(study_file, tmp_path):
    path = copy(study_file, tmp_path)
    refine_study(path, ROUNDS[:1], top=2)
    with pytest.raises(ValueError, match="other settings.*restart"):
        refine_study(path, ROUNDS, top=2)
    state = refine_study(path, ROUNDS, top=2, restart=True)
    assert len(state["results"]) == 2 and state["top"] == 2


def test_round_specs_and_defaults():
    assert RoundSpec.parse("240:3:4") == RoundSpec(240, (1, 2, 3), 4)
    assert RoundSpec.parse("proxy:1:2") == RoundSpec(None, (1,), 2)
    for bad in ("240:3", "a:1:1", "10:0:1", "10:1:0", "-5:1:1"):
        with pytest.raises(ValueError, match="STEPS:SEEDS:KEEP"):
            RoundSpec.parse(bad)
    assert default_rounds(8, 100) == [RoundSpec(200, (1, 2), 4), RoundSpec(400, (1, 2, 3), 2)]
    assert default_rounds(2, 50) == [RoundSpec(100, (1, 2), 1)]
    with pytest.raises(ValueError, match="top"):
        refine_study("unused.db", top=0)


def test_slot_searches_train_the_searched_slot_with_the_fixed_ones():
    study = SimpleNamespace(settings={"slot": "box", "fixed": {"cls": "focal"}, "joint": False})
    assert refine._loss_text(study, "1 - i") == "box=1 - i; cls=focal"
    plain = SimpleNamespace(settings={"slot": "loss", "fixed": {}, "joint": False})
    assert refine._loss_text(plain, "-y * log(p)") == "-y * log(p)"


def test_cli_refine_and_show(study_file, tmp_path):
    path = copy(study_file, tmp_path)
    runner = CliRunner()
    res = runner.invoke(cli.app, ["refine", str(path), "--top", "2", "--round", "20:1:1",
                                  "--format", "json"])
    assert res.exit_code == 0, res.output
    state = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(state["survivors"]) == 1 and state["results"][0]["steps"] == 20
    shown = runner.invoke(cli.app, ["show", str(path)])
    assert "refine round 1" in shown.stdout and "refined best" in shown.stdout
    bad = runner.invoke(cli.app, ["refine", str(path), "--round", "3:x:1"])
    assert bad.exit_code == 1 and "3:x:1" in bad.stderr and "STEPS:SEEDS:KEEP" in bad.stderr
    empty = tmp_path / "e.db"  # a study created but not run yet
    Store.create(empty, load_study(path).settings).close()
    res = runner.invoke(cli.app, ["refine", str(empty)])
    assert res.exit_code == 1 and "no trained loss" in res.stderr
