"""The golden runs: small fixed-seed searches and comparisons whose rows are committed as test data
(``tests/golden/*.json``) so that a restructure provably leaves behaviour unchanged.

``python tests/golden_runs.py`` rewrites the JSON files (only when behaviour is *meant* to change);
``tests/test_golden.py`` re-runs the same searches and compares row by row.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


def _round(x):
    if isinstance(x, float):
        return round(x, 6)
    if isinstance(x, dict):
        return {k: _round(v) for k, v in sorted(x.items())}
    if isinstance(x, (list, tuple)):
        return [_round(v) for v in x]
    return x


def study_rows(study) -> list[dict]:
    """One dict per stored candidate: position, formula, status, fitness and metrics, rounded."""
    return [{"generation": r.generation, "position": r.position, "proposed": r.proposed,
             "formula": r.formula, "status": r.status, "fitness": _round(r.fitness),
             "fingerprint": r.fingerprint, "same_as": r.same_as,
             "metrics": _round(r.details.get("metrics", {}))}
            for r in sorted(study.candidates, key=lambda r: (r.generation, r.position))]


def digits_search(path: Path) -> list[dict]:
    """autoloss-zero on ``digits``, budget 60, seed 0, short proxy trainings."""
    from lossforge.evaluation.funnel import FunnelConfig
    from lossforge.study import LossSearch

    cfg = FunnelConfig()
    cfg = replace(cfg, proxy=replace(cfg.proxy, steps=40))
    study = LossSearch(task="digits", storage=path, budget=60, seed=0, funnel=cfg,
                       strategy_options={"population_size": 20, "batch_size": 20}).run()
    rows = study_rows(study)
    study.close()
    return rows


def shapes_det_joint_search(path: Path) -> list[dict]:
    """A joint (cls + box) random search on ``shapes-det``: 4 candidates, tiny trainings."""
    from lossforge.evaluation.funnel import FunnelConfig
    from lossforge.study import LossSearch

    cfg = FunnelConfig(use_lrp=False)
    cfg = replace(cfg, proxy=replace(cfg.proxy, steps=4))
    study = LossSearch(task="shapes-det", storage=path, budget=4, seed=0, strategy="random",
                       joint=True, funnel=cfg, strategy_options={"batch_size": 4}).run()
    rows = study_rows(study)
    study.close()
    return rows


def evaluate_json() -> dict:
    """``lossforge evaluate --task digits --loss ce --loss 'square(slog(tanh(y * p)))' --seeds 2
    --steps 30 --format json`` (its JSON, rounded)."""
    from typer.testing import CliRunner

    from lossforge.cli import app

    r = CliRunner().invoke(app, ["evaluate", "--task", "digits", "--loss", "ce", "--loss",
                                 "square(slog(tanh(y * p)))", "--seeds", "2", "--steps", "30",
                                 "--format", "json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    return _round(_drop_seconds(out))


def _drop_seconds(x):
    if isinstance(x, dict):
        return {k: _drop_seconds(v) for k, v in x.items() if "second" not in k and "time" not in k}
    if isinstance(x, list):
        return [_drop_seconds(v) for v in x]
    return x


def glo_search(path: Path) -> list[dict]:
    """GLO (GP + CMA-ES) on ``digits`` without the LRP: 24 candidates, most of them trained."""
    from lossforge.evaluation.funnel import FunnelConfig
    from lossforge.study import LossSearch

    cfg = FunnelConfig(use_lrp=False)
    cfg = replace(cfg, proxy=replace(cfg.proxy, steps=15))
    study = LossSearch(task="digits", storage=path, budget=24, seed=1, strategy="glo", funnel=cfg,
                       strategy_options={"population_size": 8, "gp_generations": 2,
                                         "cma_generations": 2}).run()
    rows = study_rows(study)
    study.close()
    return rows


RUNS = {"digits_search": digits_search, "shapes_det_joint": shapes_det_joint_search,
        "glo_search": glo_search}


def main(out: Path = GOLDEN_DIR) -> None:
    import tempfile

    import torch

    torch.set_num_threads(1)
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in RUNS.items():
            rows = fn(Path(tmp) / f"{name}.db")
            (out / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
            print(name, len(rows), "rows")
    (out / "evaluate.json").write_text(json.dumps(evaluate_json(), indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN_DIR)
