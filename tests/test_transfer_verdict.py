"""What the transfer panel tells the user (issue 18): the verdict ("recommended after the panel" or
"no searched loss transferred"), export's warning for a loss the panel ranked low, and a panel table
that fits an 80-column terminal. Panels are built from constructed numbers (no training)."""
import io

import pytest
from rich.console import Console

from lossforge.cli import tables, transfer_tables
from lossforge.transfer import panel_warning, summarize_panel, transfer_verdict, worse_under

LONG = "square(inv(mean_c(y * p)) * mean_c(sum_c(square(square(p)))))"
SETTINGS = ["task", "sgd", "lr x0.5", "lr x2", "steps x2", "arch=resnet"]


def panel(values: dict[str, dict[str, list]], losses: list[str], seeds: int = 3) -> dict:
    """A stored-panel header around ``values`` (as :func:`transfer_panel` writes it)."""
    settings = [{"name": n, "optimizer": "sgd" if n == "sgd" else None,
                 "lr": 0.03 if n == "sgd" else None, "momentum": 0.9 if n == "sgd" else None,
                 "steps": 300, "arch": "resnet" if n.startswith("arch") else None}
                for n in values]
    state = {"spec": {"seeds": list(range(1, seeds + 1)), "tie_seeds": 0}, "metric": "accuracy",
             "losses": losses, "reference": "ce", "higher_is_better": True,
             "task_optimizer": "adam", "task_lr": 0.001, "settings": settings, "skipped": [],
             "sgd_lr": {"loss": "ce", "grid": [0.01, 0.03]}, "tie_break": None,
             "baselines": ["ce"]}
    return summarize_panel(state, values)


def grid(rows: dict[str, list[float]]) -> dict[str, dict[str, list]]:
    """The same per-seed values under every setting of :data:`SETTINGS`."""
    return {s: dict(rows) for s in SETTINGS}


CE = [0.90, 0.91, 0.92]


def test_a_loss_as_good_as_ce_everywhere_is_recommended():
    values = grid({"A": [0.93, 0.94, 0.95], "ce": CE})
    p = panel(values, ["A", "ce"])
    assert p["recommended"] == "A" and p["verdict"]["transferred"] == ["A"]
    assert p["verdict"]["text"].startswith("recommended after the panel: A (worst rank 1, ce 2")
    assert panel_warning(p, "A") is None


def test_ce_first_means_no_searched_loss_transferred():
    values = grid({"A": [0.93, 0.94, 0.95], "B": [0.89, 0.90, 0.91], "ce": CE})
    values["sgd"] = {"A": [0.10, 0.11, 0.10], "B": [0.88, 0.89, 0.90], "ce": CE}
    p = panel(values, ["A", "B", "ce"])
    assert [r["loss"] for r in p["ranking"]] == ["ce", "B", "A"]
    assert p["recommended"] is None
    text = p["verdict"]["text"]
    assert text.startswith("no searched loss transferred: ce ranks first under task, sgd, ")
    assert "the best searched loss, B, has worst rank 3" in text
    # A collapses under SGD: worse than CE there, with Welch p < 0.05 (hand-checked: t ≈ 160)
    assert worse_under(p["cells"], "A", True) == ["sgd"]
    warn = panel_warning(p, "A")
    assert warn.startswith("the transfer panel ranked it 3 of 3 (last); worse than ce with p < "
                           "0.05 (or invalid) under sgd; no searched loss transferred")
    assert panel_warning(p, "C").startswith("not in the stored transfer panel; no searched loss")


def test_a_loss_ranked_first_but_significantly_worse_somewhere_does_not_transfer():
    # A ranks 1 under every setting but sgd (2, behind CE), CE ranks 3 everywhere but sgd: A is
    # first by worst rank (2 against 3), yet clearly worse than CE under sgd.
    values = grid({"A": [0.95, 0.96, 0.97], "B": [0.93, 0.94, 0.95], "ce": CE})
    values["sgd"] = {"A": [0.80, 0.81, 0.80], "ce": CE, "B": [0.70, 0.71, 0.70]}
    p = panel(values, ["A", "B", "ce"])
    assert p["ranking"][0]["loss"] == "A" and p["recommended"] is None
    assert p["verdict"]["text"] == ("no searched loss transferred: each searched loss ranked at "
                                    "or above ce is worse than it with p < 0.05 (or invalid) "
                                    "under some setting: A: sgd; B: sgd")


def test_an_invalid_run_fails_the_transfer_whatever_the_p_value():
    values = grid({"A": [0.93, 0.94, 0.95], "ce": CE})
    values["lr x2"] = {"A": [0.95, None, 0.95], "ce": CE}
    verdict = transfer_verdict(panel(values, ["A", "ce"])["ranking"],
                               panel(values, ["A", "ce"])["cells"],
                               {"reference": "ce", "higher_is_better": True, "losses": ["A", "ce"],
                                "baselines": ["ce"],
                                "settings": [{"name": n} for n in SETTINGS]})
    assert verdict["recommended"] is None and verdict["worse_under"]["A"] == ["lr x2"]


def test_incomplete_panel_has_no_verdict():
    values = grid({"A": [0.93, 0.94], "ce": CE})
    p = panel(values, ["A", "ce"])
    assert not p["complete"] and p["verdict"] is None and panel_warning(p, "A") is None


def render(p: dict, width: int = 80) -> tuple[io.StringIO, Console]:
    buf = io.StringIO()
    return buf, Console(file=buf, width=width, emoji=False, color_system=None)


def test_panel_table_fits_80_columns_without_wrapping_a_row(monkeypatch):
    values = grid({LONG: [0.93, 0.94, 0.95], "square(inv(p * y))": [0.2, 0.3, 0.1], "ce": CE})
    p = panel(values, [LONG, "square(inv(p * y))", "ce"])
    buf, con = render(p)
    monkeypatch.setattr(tables, "console", con)
    tables.print_panel(p)
    out = buf.getvalue().splitlines()
    table_lines = out[:out.index(next(x for x in out if x.startswith("seeds [1, 2, 3]")))]
    assert max(len(x) for x in table_lines) <= 80
    # every row's first line holds its label and the mean under all six settings
    for r in p["ranking"]:
        label = transfer_tables.loss_labels(p)[r["loss"]]
        means = [f"{p['cells'][s][r['loss']]['mean']:.3f}" for s in SETTINGS]
        assert any(f" {label} " in x and all(m in x for m in means) for x in table_lines), label
    header = next(x for x in table_lines if "worst" in x)
    for h in ("task", "sgd", "lr x0.5", "lr x2", "stepsx2", "arch"):
        assert h in header
    text = "\n".join(out)
    assert f"L1 = {LONG}" in text and "arch = arch=resnet: adam arch resnet, 300 steps" in text
    assert "recommended after the panel: " + LONG in " ".join(text.split())


@pytest.mark.parametrize("names,expected", [
    (["task", "steps x2", "arch=resnet"], ["task", "stepsx2", "arch"]),
    (["a very long name", "another long one"], ["S1", "S2"]),
])
def test_setting_headers_are_at_most_7_characters_and_distinct(names, expected):
    heads = transfer_tables.setting_headers([{"name": n} for n in names])
    assert list(heads.values()) == expected


def test_export_and_show_carry_the_panels_word_on_a_real_study(tmp_path):
    import lfhelpers as H
    from typer.testing import CliRunner

    from lossforge import cli
    from lossforge.study import LossSearch, load_study
    from lossforge.transfer import Setting, checked_under, transfer_panel

    path = tmp_path / "s.db"
    LossSearch(task=H.TinyBlobs.name, storage=path, budget=30, seed=1, funnel=H.FAST).run().close()
    settings = [Setting("task", steps=25),
                Setting("sgd", optimizer="sgd", lr=0.1, momentum=0.9, steps=25)]
    # a panel that does not hold the search's best: export must say so
    p = transfer_panel(path, seeds=2, settings=settings, tie_seeds=0,
                       losses=["square(inv(p * y))"])
    assert p["complete"] and p["verdict"]["text"]
    s = load_study(path)
    top = s.hall_of_fame[0].formula
    warn = checked_under(s, top)["panel_warning"]
    s.close()
    assert warn.startswith("not in the stored transfer panel; ")
    runner = CliRunner()
    out = runner.invoke(cli.app, ["export", str(path), "-o", str(tmp_path / "l.py")])
    assert out.exit_code == 0, out.output
    assert "not in the stored transfer panel" in " ".join(out.output.split())
    shown = runner.invoke(cli.app, ["show", str(path)])
    flat = " ".join(shown.output.split())
    assert p["verdict"]["text"].split(":")[0] in flat and "L1 = square(inv(p * y))" in flat
