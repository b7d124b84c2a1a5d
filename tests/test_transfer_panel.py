"""The transfer panel (issue 18): a study's best losses retrained under other optimizers, learning
rates, lengths and models; stored in the study, resumable, ranked by worst rank over settings."""
import json
import math

import pytest
from torch import nn
from typer.testing import CliRunner

import lfhelpers as H
from lossforge import cli, tasks
from lossforge.study import LossSearch, load_study
from lossforge.training import OK, train
from lossforge.transfer import (Setting, checked_under, other_arch, rank_panel, seed_noise,
                                setting_task, tied_with_best, transfer_panel, with_training)


class ArchBlobs(H.TinyBlobs):
    """Tiny blobs with two architectures, to test the ``arch=`` setting."""

    name = "arch-blobs"
    archs = ("linear", "mlp")

    def __init__(self, arch: str = "linear"):
        self.arch = arch

    def make_model(self) -> nn.Module:
        if self.arch == "mlp":
            return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
        return nn.Linear(2, 3)


tasks.register(ArchBlobs.name, ArchBlobs)

GRID = (0.03, 0.1)


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("panel") / "s.db"
    LossSearch(task=H.TinyBlobs.name, storage=path, budget=30, seed=1, funnel=H.FAST).run().close()
    return path


def copy(src, tmp_path):
    dst = tmp_path / "s.db"
    dst.write_bytes(src.read_bytes())
    return dst


# --- the ranking rule on constructed numbers ---------------------------------------------------------
def test_worst_rank_puts_a_loss_that_collapses_under_one_setting_last():
    values = {"adam": {"A": [0.99, 0.99], "B": [0.98, 0.98], "C": [0.995, 0.995]},
              "sgd": {"A": [0.97, 0.97], "B": [0.96, 0.96], "C": [0.10, 0.10]}}
    ranking = rank_panel(values)
    assert [r["loss"] for r in ranking] == ["A", "B", "C"]
    a, b, c = ranking
    assert a["ranks"] == {"adam": 2, "sgd": 1} and a["worst_rank"] == 2
    assert b["worst_rank"] == c["worst_rank"] == 3  # tie on worst rank: mean metric decides
    assert b["mean_metric"] == pytest.approx((0.98 + 0.96) / 2)
    assert c["mean_metric"] == pytest.approx((0.995 + 0.10) / 2)


def test_invalid_runs_rank_below_valid_and_equal_cells_share_a_rank():
    values = {"s": {"A": [0.5, 0.5], "B": [0.9, None], "C": [0.5, 0.5]}}
    ranking = rank_panel(values)
    assert {r["loss"]: r["ranks"]["s"] for r in ranking} == {"A": 1, "C": 1, "B": 3}
    assert ranking[-1]["loss"] == "B"
    lower = rank_panel({"s": {"A": [2.0], "B": [1.0]}}, higher_is_better=False)
    assert [r["loss"] for r in lower] == ["B", "A"]


def test_ties_within_one_standard_error_of_a_difference():
    values = {"s": {"A": [0.90, 0.92], "B": [0.89, 0.91], "C": [0.70, 0.72]}}
    sigma = seed_noise(values)
    assert sigma == pytest.approx(math.sqrt(0.02 ** 2 / 2))  # every cell has std 0.01414
    ranking = rank_panel(values)
    # |0.91 - 0.90| = 0.01 <= sigma * sqrt(2 / 2) = 0.0141; C is 0.2 away
    assert tied_with_best(ranking, sigma, 2) == ["A", "B"]
    assert tied_with_best(ranking, float("nan"), 2) == ["A"]  # no noise estimate: exact ties only


# --- settings ----------------------------------------------------------------------------------------
def test_with_training_changes_the_optimizer_of_a_copy_only():
    task = tasks.get(H.TinyBlobs.name)
    sgd = with_training(task, optimizer="sgd", lr=0.1, momentum=0.5)
    assert (sgd.proxy.optimizer, sgd.proxy.lr, sgd.proxy.momentum) == ("sgd", 0.1, 0.5)
    assert (task.proxy.optimizer, task.proxy.lr) == ("adam", 0.05)
    a = train(sgd, "ce", steps=10, seed=1, splits=("val",))
    b = train(task, "ce", steps=10, seed=1, splits=("val",), optimizer="sgd", lr=0.1, momentum=0.5)
    assert a.val == b.val and a.loss_curve == b.loss_curve
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        with_training(task, optimizer="rmsprop")


def test_arch_setting_builds_the_other_model():
    task = tasks.get(ArchBlobs.name)
    assert other_arch(task) == "mlp" and other_arch(tasks.get(H.TinyBlobs.name)) is None
    model = setting_task(task, Setting("arch=mlp", arch="mlp")).make_model()
    assert isinstance(model, nn.Sequential) and isinstance(task.make_model(), nn.Linear)


# --- the panel on a study ------------------------------------------------------------------------------
def test_panel_is_stored_and_resumes_without_redoing_runs(study_file, tmp_path):
    path = copy(study_file, tmp_path)
    calls = []

    class Killed(Exception):
        pass

    def kill_after_three(done, total, setting, loss):
        calls.append((setting, loss))
        if len(calls) == 3:
            raise Killed

    with pytest.raises(Killed):
        transfer_panel(path, top=1, seeds=1, tie_seeds=0, sgd_lr_grid=GRID,
                       progress=kill_after_three)
    s = load_study(path)
    stored = s.store.panel_runs()
    lr = s.meta("panel_sgd_lr")
    s.close()
    assert len(stored) == 3 and set(lr["values"]) == {"0.03", "0.1"}
    resumed = []
    panel = transfer_panel(path, top=1, seeds=1, tie_seeds=0, sgd_lr_grid=GRID,
                           progress=lambda d, n, st, lo: resumed.append((st, lo, n)))
    names = [st["name"] for st in panel["settings"]]
    assert names == ["task", "sgd", "lr x0.5", "lr x2", "steps x2"] and panel["skipped"] == ["arch"]
    assert len(panel["losses"]) == 2 and panel["losses"][-1] == "ce"
    assert len(resumed) == 2 * 5 - 3 and resumed[0][2] == 7  # only the missing runs
    assert {(st, lo) for st, lo, _ in resumed}.isdisjoint(calls)
    assert panel["complete"] and panel["best"] == panel["ranking"][0]["loss"]
    # a cell against an independent training with the stored setting
    task = tasks.get(H.TinyBlobs.name)
    sgd = next(st for st in panel["settings"] if st["name"] == "sgd")
    assert sgd["lr"] == max(GRID, key=lambda x: (lr["values"][f"{x:g}"], -x))
    r = train(task, "ce", steps=sgd["steps"], seed=1, splits=("val",), optimizer="sgd",
              lr=sgd["lr"], momentum=0.9)
    assert panel["cells"]["sgd"]["ce"]["values"] == [r.val["accuracy"] if r.status == OK else None]
    assert panel["cells"]["sgd"]["ce"]["delta"] == 0.0
    # the same call again trains nothing; other arguments are refused
    again = []
    transfer_panel(path, top=1, seeds=1, tie_seeds=0, sgd_lr_grid=GRID,
                   progress=lambda *a: again.append(a))
    assert again == []
    with pytest.raises(ValueError, match="other settings"):
        transfer_panel(path, top=2, seeds=1, tie_seeds=0, sgd_lr_grid=GRID)


def test_tie_at_the_top_is_broken_with_more_seeds(study_file, tmp_path):
    path = copy(study_file, tmp_path)
    settings = [Setting("task", steps=25), Setting("sgd", optimizer="sgd", lr=0.1, momentum=0.9,
                                                   steps=25)]
    # the protected-log CE trains exactly like CE here: tied with it
    panel = transfer_panel(path, seeds=2, settings=settings, tie_seeds=1,
                           losses=["-sum_c(y * log(p))", "square(inv(p * y))"])
    tb = panel["tie_break"]
    assert set(tb["tied"]) == {"-sum_c(y * log(p))", "ce"} and tb["seeds_added"] == [3]
    seeds = {(r["setting"], r["loss"]): [] for r in load_study(path).store.panel_runs()}
    s = load_study(path)
    for r in s.store.panel_runs():
        seeds[(r["setting"], r["loss"])].append(r["seed"])
    s.close()
    for st in ("task", "sgd"):
        assert sorted(seeds[(st, "ce")]) == [1, 2, 3]
        assert sorted(seeds[(st, "square(inv(p * y))")]) == [1, 2]


def test_show_and_export_say_where_the_loss_was_checked(study_file, tmp_path):
    path = copy(study_file, tmp_path)
    runner = CliRunner()
    before = runner.invoke(cli.app, ["show", str(path)])
    assert before.exit_code == 0, before.output
    assert "one optimizer only" in before.output and "share the best search fitness" in before.output
    transfer_panel(path, top=1, seeds=2, tie_seeds=0, sgd_lr_grid=GRID)
    out = runner.invoke(cli.app, ["show", str(path)])
    assert out.exit_code == 0, out.output
    assert "transfer panel" in out.output and "worst rank over the settings" in out.output
    assert "panel sgd (sgd lr" in out.output and "one optimizer only" not in out.output
    assert "within one seed's noise" in out.output
    data = json.loads(runner.invoke(cli.app, ["show", str(path), "--format", "json"]).output)
    assert data["panel"]["complete"] and data["checked"]["optimizers"] == ["adam", "sgd"]
    assert data["ties"]["exact"] >= 1
    s = load_study(path)
    top = s.hall_of_fame[0].formula
    checked = checked_under(s, top)
    s.close()
    exported = runner.invoke(cli.app, ["export", str(path), "-o", str(tmp_path / "l.py")])
    assert exported.exit_code == 0, exported.output
    assert f"checked {top} under" in exported.output.replace("\n", " ") or "checked" in exported.output
    assert (checked["warning"] is None) == ("one optimizer only" not in exported.output)
