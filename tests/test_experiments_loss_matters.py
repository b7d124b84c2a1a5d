"""``experiments/loss_matters.py``: the quick mode of one family (heavy-tailed regression, the
fastest) runs end to end into a temporary RESULTS.md and JSON (never the repository's), and the
section generator turns a report into the tables and verdicts, negative results included."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import loss_matters as LM  # noqa: E402


def test_quick_heavy_family_writes_its_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# header\n\n<!-- begin other -->\nkeep me\n<!-- end other -->\n")
    report = LM.main(["--quick", "--families", "heavy", "--work", str(tmp_path / "work"),
                      "--results", str(results), "--json", str(tmp_path / "lm.json")])
    text = results.read_text()
    assert "<!-- begin other -->\nkeep me\n<!-- end other -->" in text
    sec = text.split("<!-- begin loss-matters -->", 1)[1].split("<!-- end loss-matters -->")[0]
    assert "(quick mode)" in sec and "### Heavy-tailed regression" in sec
    fam = report["families"]["heavy"]
    assert fam["experts"] == ["mae", "huber", "barron"]
    losses = [r["loss"] for r in fam["main"]["rows"]]
    assert losses[:4] == ["mse", "mae", "huber", "barron"]
    assert all(r["n"] == 2 for r in fam["main"]["rows"])
    assert "| `mse` |" in sec and "Transfer to" in sec
    assert json.loads((tmp_path / "lm.json").read_text())["families"]["heavy"]["winner"] == \
        fam["winner"]


def _row(loss, values, p_base, p_best):
    import numpy as np

    return {"loss": loss, "n": len(values), "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)), "values": values, "p_vs_baseline": p_base,
            "p_vs_best_expert": p_best}


def test_verdict_reports_negative_results():
    fam = {"winner": "w", "main": {"higher_is_better": True, "best_expert": "gce", "rows": [
        _row("ce", [0.70, 0.72], None, 1e-4), _row("gce", [0.95, 0.96], 1e-4, None),
        _row("w", [0.71, 0.73], 0.5, 1e-4)]}}
    text = LM.verdict(fam)
    assert "best expert `gce` vs `ce`: ahead" in text
    assert "searched loss vs `ce`: ahead by 0.0100 (p = 0.500; misses the target p < 0.01)" in text
    assert "searched loss vs best expert: behind" in text and "a significant difference" in text
