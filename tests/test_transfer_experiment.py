"""``experiments/transfer.py --quick`` (issue 18): both tasks end to end into a temporary RESULTS.md
and JSON (never the repository's): search, panel, the adam,sgd search and the check of its best."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import transfer as TX  # noqa: E402


@pytest.mark.slow
def test_quick_mode_writes_its_section_and_json(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# header\n\n<!-- begin other -->\nkeep me\n<!-- end other -->\n")
    report = TX.main(["--quick", "--work", str(tmp_path / "work"), "--results", str(results),
                      "--json", str(tmp_path / "t.json")])
    text = results.read_text()
    assert "<!-- begin other -->\nkeep me\n<!-- end other -->" in text
    sec = text.split("<!-- begin transfer -->", 1)[1].split("<!-- end transfer -->")[0]
    assert "(quick mode)" in sec and "### digits" in sec and "### shapes-seg" in sec
    assert json.loads((tmp_path / "t.json").read_text())["tasks"].keys() == {"digits",
                                                                             "shapes-seg"}
    for name, t in report["tasks"].items():
        s = t["search"]
        assert s["explored"] == 4 and s["cpu_s"] >= 0
        if t["panel"] is None:
            continue
        p = t["panel"]
        assert [st["name"] for st in p["settings"]] == ["task", "sgd"]
        # the search's pick without the panel is in the panel, with a cell per setting
        assert set(p["losses"][s["best"]]["cells"]) == {"task", "sgd"}
        flat = " ".join(sec.split())
        assert " ".join(p["verdict"]["text"].split()) in flat
        m = t["multi"]
        assert m["search"]["optimizers"] == "adam,sgd" and m["search"]["explored"] == 4
        if m["search"]["best"] is not None:  # trained in the same panel, judged against CE
            assert set(m["losses"][m["search"]["best"]]["cells"]) == {"task", "sgd"}
            assert m["transferred"] == (m["verdict"].startswith("recommended"))
        assert "Adam + SGD during the search" in sec


def test_table_rows_say_when_no_searched_loss_transferred():
    cell = {"mean": 0.9, "std": 0.01, "delta": 0.0, "p": None, "invalid": 0}
    worse = {"mean": 0.1, "std": 0.0, "delta": -0.8, "p": 1e-5, "invalid": 0}
    t = {"search": {"best": "A"}, "multi": None,
         "panel": {"reference": "ce", "settings": [{"name": "task"}, {"name": "sgd"}],
                   "recommended": None,
                   "losses": {"ce": {"cells": {"task": cell, "sgd": cell}},
                              "A": {"cells": {"task": cell, "sgd": worse}}}}}
    table = TX.task_table(t)
    assert "| CE | `ce` | 0.9000 ± 0.0100 | 0.9000 ± 0.0100 |" in table
    assert "0.1000 ± 0.0000 (Δ -0.8000, p < 0.001)" in table
    assert "| with the panel | — (no searched loss transferred) |" in table


def test_summary_counts_recommendations_and_the_settings_that_reject():
    def task(name, recommended, worse_under):
        return {"task": name, "panel": {"verdict": {"recommended": recommended,
                                                    "worse_under": worse_under}}}
    report = {"tasks": {"a": task("a", None, {"L1": ["sgd"], "L2": ["sgd", "lr x2"]}),
                        "b": task("b", "L3", {"L3": [], "L4": ["sgd"]}),
                        "c": {"task": "c", "panel": None}}}
    text = TX.summary(report)
    assert text.startswith("**Summary**: 1 of 2 tasks get a recommendation with the panel (b).")
    assert "Of the 4 searched losses put through the panels, 1 is worse than CE" in text
    assert "3 under `sgd`, 1 under `lr x2`" in text
