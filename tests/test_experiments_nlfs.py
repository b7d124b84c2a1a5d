"""``experiments/nlfs.py --quick`` runs end to end into a temporary RESULTS.md (never the repo's)
and writes its section: the three stages, the transfer tables with their seed counts, a figure."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_nlfs_quick(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# header\n\n<!-- begin other -->\nkeep me\n<!-- end other -->\n")
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "nlfs.py"), "--quick",
                           "--results", str(results)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = results.read_text()
    assert "keep me" in text  # other sections are left alone
    section = text.split("<!-- begin nlfs -->", 1)[1].split("<!-- end nlfs -->", 1)[0]
    for heading in ("### 1. Aging evolution on `shapes-cls`", "### 2. Elimination",
                    "### 3. Transfer of the best 3", "### Does the paper's claim reproduce?"):
        assert heading in section
    assert "--quick" in section and "(quick mode)" in section
    assert "CIFAR-10" in section and "test set" in section  # stand-in and selection notes
    raw = json.loads((tmp_path / "results" / "nlfs.json").read_text())
    second = raw["datasets"][1]
    assert raw["datasets"][0] == "shapes-cls" and second in ("fashion-mnist", "digits")
    if second == "digits":
        assert "not cached" in section
    for ds in raw["datasets"]:
        assert f"**Transfer to `{ds}`**" in section
        assert len(raw["transfer"][ds]) == 3  # three architectures
    # every transfer row: CE and Baikal present, mean ± std with the number of seeds (2 in quick)
    rows = [r for r in section.splitlines() if re.match(r"\| (mlp|lenet|cnn|resnet) \|", r)]
    assert len(rows) == 2 * 3 * (2 + len(raw["best"]))
    assert any("| CE |" in r for r in rows) and any("| Baikal |" in r for r in rows)
    assert all("(n=2)" in r for r in rows if r.rstrip(" |").split("|")[-1].strip() == "0")
    # automatic notes: chance level per transfer table, a note column, the per-data-set verdict
    assert section.count("; chance 0.10)") == 2 and "| note | invalid runs |" in section
    assert "| data set | settings (informative) |" in section and "**Caveats.**" in section
    assert ("was ranked by ties" in section) or ("No round was decided by ties" in section)
    # the losses were chosen on validation: halving never computed a test metric
    assert raw["halving"]["rounds"] and raw["best"] == raw["halving"]["survivors"][:3]
    assert (tmp_path / "results" / "nlfs_transfer.png").stat().st_size > 1000
