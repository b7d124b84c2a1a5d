"""Behaviour is pinned: small fixed-seed searches (autoloss-zero and GLO on ``digits``, a joint
random search on ``shapes-det``) and one ``lossforge evaluate --format json`` give exactly the
rows committed in ``tests/golden/`` (formula, status, fitness and metrics to 6 digits). The files
were written by ``python tests/golden_runs.py`` before the code was restructured; a refactor that
changes any row fails here."""
from __future__ import annotations

import json

import pytest

import golden_runs


@pytest.mark.parametrize("name", sorted(golden_runs.RUNS))
def test_search_gives_the_golden_rows(name, tmp_path):
    expected = json.loads((golden_runs.GOLDEN_DIR / f"{name}.json").read_text())
    got = golden_runs.RUNS[name](tmp_path / f"{name}.db")
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g == e, f"{name}: generation {e['generation']} position {e['position']} differs"


def test_evaluate_json_gives_the_golden_comparison():
    expected = json.loads((golden_runs.GOLDEN_DIR / "evaluate.json").read_text())
    assert golden_runs.evaluate_json() == expected
