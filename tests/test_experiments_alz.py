"""The AutoLoss-Zero reproduction's ``--quick`` mode runs end to end into a temporary RESULTS.md
(never the repository's) and writes its section: the six-metric table with the baselines over the
quick mode's two seeds, random search vs ours, the efficiency ablation, the claims."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_autoloss_zero_quick_writes_its_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# header\n\n<!-- begin other -->\nkeep me\n<!-- end other -->\n")
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "autoloss_zero.py"),
                           "--quick", "--results", str(results), "--work", str(tmp_path / "work")],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = results.read_text()
    assert "<!-- begin other -->\nkeep me\n<!-- end other -->" in text   # other sections kept
    begin, end = "<!-- begin autoloss-zero -->", "<!-- end autoloss-zero -->"
    assert text.count(begin) == 1 and text.count(end) == 1
    sec = text.split(begin, 1)[1].split(end, 1)[0]
    assert "--quick" in sec and "(quick mode)" in sec and "seeds [0, 1]" in sec
    assert "Where this differs from the paper" in sec
    assert "| loss | searched for | FWIoU | gAcc | mAcc | BIoU | mIoU | BF1 |" in sec
    for loss in ("| CE |", "| WCE |", "| Dice |", "| focal |", "| Lovász |"):
        assert loss in sec
    table = [line for line in sec.splitlines() if line.startswith("| CE |")][0]
    assert table.count("(n=2)") == 6                    # six metrics, two seeds each
    for heading in ("### Searched losses and baselines", "### Random search vs ours",
                    "### Search efficiency ablation", "### Claims"):
        assert heading in sec
    for row in ("| AutoLoss-Zero (ours) |", "| random + funnel |", "| naive random |",
                "| naive evolution |", "| + LRP |", "| + GEC |", "| + invalid-value stop |"):
        assert row in sec
    assert (tmp_path / "results" / "autoloss_zero_search.png").stat().st_size > 0
    raw = json.loads((tmp_path / "results" / "autoloss_zero.json").read_text())
    assert {s["metric"] for s in raw["searches"]} >= {"miou", "trimap_iou", "bf1"}
    assert all(r["seed"] in (0, 1) for r in raw["retraining"])
    # a second run resumes from --work: nothing is recomputed, the section is rewritten once
    again = subprocess.run([sys.executable, str(ROOT / "experiments" / "autoloss_zero.py"),
                            "--quick", "--results", str(results), "--work",
                            str(tmp_path / "work")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "  done " not in again.stdout
    assert results.read_text().count(begin) == 1
