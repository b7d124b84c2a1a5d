"""``experiments/loss_matters.py --families X``: the families not rerun keep their stored results,
search settings and provenance line (from the JSON, or for files written before provenance was
kept per family, from the section in RESULTS.md)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import loss_matters as LM  # noqa: E402

OLD_LINE = "_Produced by `python experiments/loss_matters.py` (reduced mode) on 2026-01-01; x._"


def _family(name: str, with_meta: bool) -> dict:
    rows = [{"loss": "ce", "n": 2, "mean": 0.7, "std": 0.01, "values": [0.69, 0.71],
             "p_vs_baseline": None, "p_vs_best_expert": None}]
    fam = {"family": name, "title": f"Title {name}", "winner": None, "experts": [],
           "missing_experts": [], "search": {"explored": 300, "trained": 0,
                                             "search_seconds": 1.0, "refine_seconds": 0.0},
           "main": {"task": "digits", "options": {}, "metric": "accuracy", "steps": 10,
                    "higher_is_better": True, "best_expert": None, "rows": rows},
           "transfer": []}
    if with_meta:
        fam["search_config"] = {"budget": 1000, "generation": 20, "population": 20, "top": 6,
                                "initial": ["square(f + -y)"]}
        fam["provenance"] = "_Produced by the new run._\n"
    return fam


def test_stored_families_keep_their_settings_and_provenance(tmp_path):
    json_path, md = tmp_path / "lm.json", tmp_path / "RESULTS.md"
    md.write_text(f"# R\n\n<!-- begin {LM.SECTION} -->\n## T\n\n{OLD_LINE}\n\n"
                  f"<!-- end {LM.SECTION} -->\n")
    old_cfg = {**LM.MODES["reduced"], "population": 60}
    json_path.write_text(json.dumps({"mode": "reduced", "config": old_cfg,
                                     "families": {"noisy": _family("noisy", False)}}))
    assert LM.stored_families(json_path, md, "full") == {}          # another mode: not merged
    fams = LM.stored_families(json_path, md, "reduced")
    assert fams["noisy"]["provenance"] == OLD_LINE + "\n"
    assert fams["noisy"]["search_config"]["population"] == 60
    fams["heavy"] = _family("heavy", True)
    text = LM.render({"mode": "reduced", "config": LM.MODES["reduced"], "families": fams},
                     "reduced", LM.MODES["reduced"])
    noisy, heavy = text.split("### Title noisy")[1].split("### Title heavy")
    assert OLD_LINE in noisy and "population 60)" in noisy
    assert "_Produced by the new run._" in heavy
    assert "population 20, starting from `square(f + -y)`)" in heavy
