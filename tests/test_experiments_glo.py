"""The GLO and TaylorGLO reproductions' ``--quick`` modes run end to end into a temporary
RESULTS.md (never the repository's), on the bundled digits task when MNIST is not cached."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, tmp_path: Path) -> str:
    results = tmp_path / "RESULTS.md"
    empty = tmp_path / "no-data"  # MNIST absent, as in CI: the scripts fall back to digits
    empty.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / script), "--quick",
                           "--results", str(results), "--data-dir", str(empty)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "fell back to digits" in proc.stdout
    return results.read_text()


def _section(text: str, name: str) -> str:
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    assert text.count(begin) == 1 and text.count(end) == 1
    return text.split(begin, 1)[1].split(end, 1)[0]


@pytest.mark.slow
def test_glo_quick_writes_its_section(tmp_path):
    sec = _section(_run("glo.py", tmp_path), "glo")
    assert "falls back to the bundled `digits` task" in sec
    assert "--quick" in sec and "seeds [0, 1]" in sec
    for heading in ("### Search", "### Test accuracy", "### Training speed",
                    "### Data utilisation", "### Claims"):
        assert heading in sec
    for loss in ("| CE |", "| Baikal |", "| BaikalCMA |"):
        assert loss in sec
    assert sec.count("(n=2)") >= 3            # the comparison: 2 seeds per loss in quick mode
    assert "| 10% | 20% | 50% | 100% |" in sec
    figs = tmp_path / "results"
    assert (figs / "glo_speed.png").stat().st_size > 0
    assert (figs / "glo_data_utilisation.png").stat().st_size > 0
    raw = json.loads((figs / "glo.json").read_text())
    assert raw["dataset"] == "digits" and raw["fell_back"] is True
    assert all(len(runs) == 2 for runs in raw["final"].values())
    assert all(r["val_curve"] for r in raw["final"]["CE"])


@pytest.mark.slow
def test_taylorglo_quick_writes_its_section(tmp_path):
    text = _run("taylorglo.py", tmp_path)
    sec = _section(text, "taylorglo")
    assert "falls back to the bundled `digits` task" in sec
    assert "| with invariant |" in sec and "| without invariant |" in sec
    assert "| CE | " in sec and "(n=2)" in sec
    assert "### Claims" in sec and "Welch p vs CE" in sec
    raw = json.loads((tmp_path / "results" / "taylorglo.json").read_text())
    assert [r["n_rejected"] for r in raw["searches"]["without invariant"]] == [0]
    assert len(raw["searches"]["with invariant"]) == 1   # one search seed per variant in quick
    assert (tmp_path / "results" / "taylorglo_search.png").stat().st_size > 0
