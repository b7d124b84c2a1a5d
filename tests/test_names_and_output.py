"""What a user expects from names and output (issue 15, item 7): ``mse``/``mae``/``huber`` on
regression tasks from the CLI, zoo names resolved by the slot's kind, ``evaluate``'s result as a
readable table, and the task's baseline loss measured once per study and shown by ``show``, the
report and its progress plot next to the best found."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import lfhelpers as H
from lossforge import cli, tasks
from lossforge import report as R
from lossforge.comparison import Comparison, LossSummary, evaluate
from lossforge.evaluation import baseline as B
from lossforge.evaluation.proxy import ProxyStageConfig, proxy_job
from lossforge.report import figures as Fig
from lossforge.study import LossSearch, load_study, resume
from lossforge.training.loss_spec import load_loss, resolve_slots

runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args], prog_name="lossforge")


# ---- zoo names on the command line and in load_loss ---------------------------------------------
@pytest.mark.parametrize("task, loss", [("shapes-pose", "mse"), ("diabetes", "mae"),
                                        ("diabetes", "huber")])
def test_evaluate_regression_zoo_names_from_the_cli(task, loss):
    result = invoke("evaluate", "--task", task, "--loss", loss, "--steps", 2, "--seeds", 1,
                    "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = {r["loss"]: r for r in data["rows"]}
    assert set(rows) == {data["baseline"], loss}
    for m in data["metrics"]:
        assert math.isfinite(rows[loss]["mean"][m]), (loss, m)


def test_mse_resolves_by_the_task_kind():
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(8, 3, generator=gen), torch.randn(8, 3, generator=gen)
    reg = load_loss("mse", tasks.get("diabetes"))
    assert str(reg.expr) == "square(f - y)"
    assert reg.module(pred, target).item() == pytest.approx(F.mse_loss(pred, target).item(), rel=1e-6)
    cls = load_loss("mse", tasks.get("tiny-blobs"))
    assert str(cls.expr) == "sum_c(square(p - y))" == str(load_loss("brier", tasks.get("tiny-blobs")).expr)


def test_a_zoo_name_of_another_kind_says_which_kind_is_needed():
    with pytest.raises(ValueError) as info:
        load_loss("huber", tasks.get("tiny-blobs"))
    message = str(info.value)
    assert "'huber' is a regression loss" in message and "needs a classification loss" in message
    assert "brier" in message and "barron" not in message  # lists the classification entries
    result = invoke("evaluate", "--task", "diabetes", "--loss", "dice", "--steps", 1)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "needs a regression loss (zoo: mse, mae, huber, barron)" in result.stderr


def test_a_plain_zoo_name_goes_to_the_slot_of_its_kind():
    det = tasks.get("shapes-det")  # slots cls (classification) and box
    assert resolve_slots("mse", det) == {"cls": "mse", "box": "giou"}
    assert resolve_slots("giou", det) == {"cls": "focal", "box": "giou"}


def test_zoo_cli_lists_every_form():
    result = invoke("zoo", "--format", "json")
    assert result.exit_code == 0, result.output
    forms = {(e["name"], e["kind"]): e["formula"] for e in json.loads(result.stdout)}
    assert forms[("mse", "regression")] == "square(f - y)"
    assert forms[("mse", "classification")] == forms[("brier", "classification")]
    assert ("huber", "regression") in forms and ("mae", "regression") in forms


# ---- evaluate's result prints as a table -------------------------------------------------------
def _comparison() -> Comparison:
    rows = [LossSummary("ce", 3, 0, {"accuracy": 0.9, "nll": 0.31}, {"accuracy": 0.01, "nll": 0.02},
                        {"accuracy": 0.0, "nll": 0.0}, {"accuracy": math.nan, "nll": math.nan}),
            LossSummary("-sum_c(y * log(p)) + 0.5 * sum_c(square(p - y)) + mean_c(abs(z))", 3, 1,
                        {"accuracy": 0.925, "nll": 0.3}, {"accuracy": 0.005, "nll": 0.01},
                        {"accuracy": 0.025, "nll": -0.01}, {"accuracy": 0.0123, "nll": math.nan})]
    return Comparison("digits", "test", "ce", [0, 1, 2], 200, ["accuracy", "nll"],
                      {"accuracy": True, "nll": False}, rows, runs=[object()] * 6)


def test_comparison_prints_as_a_table():
    text = str(_comparison())
    lines = text.splitlines()
    assert lines[0] == "digits: test split, 3 seeds, 200 steps; Δ and Welch p vs ce"
    header = next(ln for ln in lines if ln.startswith("loss"))
    assert re.split(r"\s{2,}", header) == ["loss", "runs", "accuracy ↑", "Δ (p)", "nll ↓", "Δ (p)"]
    ce = next(ln for ln in lines if ln.startswith("ce "))
    assert re.split(r"\s{2,}", ce) == ["ce", "3/3", "0.9000 ± 0.0100", "0.3100 ± 0.0200"]
    other = next(ln for ln in lines if ln.startswith("-sum_c"))
    cells = re.split(r"\s{2,}", other)
    assert cells[0].endswith("…") and len(cells[0]) == 48  # a long formula is cut
    assert cells[1:] == ["2/3", "0.9250 ± 0.0050", "+0.0250 (p=0.012)", "0.3000 ± 0.0100",
                         "-0.0100 (p=—)"]
    assert "object at" not in text and "TrainResult" not in text  # not a dump of the runs
    assert repr(_comparison()) == text
    # the cells line up: every table line puts its "±" of the first metric in the same column
    table = [ln for ln in lines if "±" in ln]
    assert len({ln.index("±") for ln in table}) == 1


def test_comparison_html_for_notebooks():
    page = _comparison()._repr_html_()
    assert page.startswith("<table>") and page.endswith("</table>")
    assert page.count("<tr>") == 3 and "<th>nll ↓</th>" in page
    assert "-sum_c(y * log(p)) + 0.5 * sum_c(square(p - y)) + mean_c(abs(z))" in page  # full name
    assert "+0.0250 (p=0.012)" in page


def test_a_real_comparison_prints_its_numbers():
    result = evaluate("tiny-blobs", ["focal"], seeds=2, steps=5)
    text = str(result)
    for row in result.rows:
        line = next(ln for ln in text.splitlines() if ln.startswith(row.loss + " "))
        assert f"{row.mean['accuracy']:.4f} ± {row.std['accuracy']:.4f}" in line
    assert f"{result.rows[1].delta['accuracy']:+.4f}" in text


# ---- the baseline of a study -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    path = tmp_path_factory.mktemp("baseline") / "s.db"
    LossSearch(task="tiny-blobs", storage=path, budget=8, seed=1, funnel=H.NO_LRP,
               strategy_options={"batch_size": 8}).run().close()
    return path


def test_the_study_stores_the_baseline_trained_as_a_candidate(tiny_study):
    study = load_study(tiny_study, readonly=True)
    try:
        b = study.baseline
        assert study.summary()["baseline"] == b
    finally:
        study.close()
    assert b["loss"] == "ce" and b["formula"] == "-sum_c(y * log(p))" and b["status"] == "trained"
    assert (b["steps"], b["seed"], b["metric"]) == (25, 0, "accuracy")
    again = proxy_job(tasks.get("tiny-blobs"), "ce", "accuracy", 25, 0)  # the same training
    assert b["fitness"] == again["fitness"] and b["metrics"] == again["metrics"]
    assert b["seconds"] > 0


def test_show_states_the_baseline_next_to_the_best(tiny_study):
    shown = invoke("show", tiny_study, "--format", "json")
    assert shown.exit_code == 0, shown.output
    summary = json.loads(shown.stdout)
    assert math.isfinite(summary["baseline"]["fitness"]) and summary["baseline"]["loss"] == "ce"
    text = invoke("show", tiny_study)
    assert text.exit_code == 0, text.output
    best, base = summary["best"]["fitness"], summary["baseline"]["fitness"]
    assert (f"baseline ce = -sum_c(y * log(p)): fitness {base:.4f}; best found {best:.4f} "
            f"({best - base:+.4f} vs baseline)") in " ".join(text.stdout.split())


def test_an_old_study_file_says_not_measured(tiny_study, tmp_path):
    import shutil
    from lossforge.storage import Store

    old = tmp_path / "old.db"
    shutil.copy(tiny_study, old)
    store = Store.open(old)
    store._conn.execute("DELETE FROM meta WHERE key = 'baseline'")  # as written before baselines
    store._conn.commit()
    store.close()
    shown = invoke("show", old)
    assert shown.exit_code == 0 and "baseline: not measured" in shown.stdout
    assert json.loads(invoke("show", old, "--format", "json").stdout)["baseline"] is None
    page = R.write_report(old, tmp_path / "report").read_text()
    assert "baseline: not measured" in page


def test_measuring_the_baseline_changes_no_candidate(tmp_path, monkeypatch):
    """The candidates' rows are the same whether the baseline is trained or not (it must not
    consume random numbers the candidates use), and the global RNGs are as before."""
    def search(path):
        s = LossSearch(task="tiny-blobs", storage=path, budget=8, seed=3, funnel=H.NO_LRP,
                       strategy_options={"batch_size": 8}).run()
        rows = [(r.formula, r.status, r.fitness) for r in s.candidates]
        s.close()
        return rows

    with_baseline = search(tmp_path / "a.db")
    monkeypatch.setattr(B, "measure_baseline", lambda *a, **k: {"loss": "skipped"})
    assert search(tmp_path / "b.db") == with_baseline
    monkeypatch.undo()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    B.measure_baseline(tasks.get("tiny-blobs"), "accuracy", ProxyStageConfig(steps=5))
    assert torch.equal(torch.get_rng_state(), before)


def test_a_resumed_study_reuses_its_baseline(tiny_study, tmp_path, monkeypatch):
    import shutil

    path = tmp_path / "resumed.db"
    shutil.copy(tiny_study, path)
    stored = load_study(path, readonly=True)
    first = stored.baseline
    stored.close()

    def never(*args, **kwargs):
        raise AssertionError("the baseline was measured again")

    monkeypatch.setattr(B, "measure_baseline", never)
    study = resume(path, budget=10)
    try:
        assert study.explored == 10 and study.baseline == first
    finally:
        study.close()


def test_baseline_spec_of_a_multi_slot_task_uses_the_fixed_slots():
    det = tasks.get("shapes-det")
    assert B.baseline_spec(det) == {"cls": "focal", "box": "giou"}
    assert B.baseline_spec(det, {"cls": "ce"}) == {"cls": "ce", "box": "giou"}
    assert B.baseline_spec(tasks.get("diabetes")) == "mse"


class _WrongBaseline(H.TinyBlobs):
    name = "tiny-blobs-wrong-baseline"
    baseline = "huber"  # a regression loss on a classification task


def test_a_baseline_that_cannot_train_is_recorded_not_raised():
    b = B.measure_baseline(_WrongBaseline(), "accuracy", ProxyStageConfig(steps=5))
    assert b["status"] == "failed" and b["fitness"] is None
    assert "'huber' is a regression loss" in b["reason"]
    assert B.describe(b, 0.9).startswith("baseline huber: failed (ValueError: zoo loss 'huber'")


# ---- the report --------------------------------------------------------------------------------
def test_report_states_the_baseline_and_draws_it_on_the_progress_plot(tiny_study, tmp_path):
    data = R.read_study(tiny_study)
    fitness = data["baseline"]["fitness"]
    figures = Fig.make_figures(data, top=1)
    ax = figures["progress"].axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("baseline ce")]
    assert len(lines) == 1
    assert list(lines[0].get_ydata()) == [fitness, fitness]
    assert ax.get_ylim()[0] <= fitness <= ax.get_ylim()[1]
    assert f"baseline ce ({fitness:.4f})" in [t.get_text() for t in ax.get_legend().get_texts()]
    no_baseline = Fig.make_figures({**data, "baseline": None}, top=1)["progress"].axes[0]
    assert not [ln for ln in no_baseline.get_lines() if ln.get_label().startswith("baseline")]
    page = R.write_report(tiny_study, tmp_path / "report").read_text()
    assert re.search(r'<p class="baseline">baseline ce = -sum_c\(y \* log\(p\)\): fitness '
                     rf"{fitness:.4f}; best found", page)
    assert (tmp_path / "report" / "progress.png").stat().st_size > 0
