"""The benchmarks' ``--quick`` runs work end to end and end with their JSON summary line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _last_json(script: str, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    last = proc.stdout.strip().splitlines()[-1]
    return json.loads(last)


@pytest.mark.slow
def test_search_efficiency_quick():
    out = _last_json("search_efficiency.py")
    speedup = out["speedup"]
    for key in ("naive", "lrp", "gec", "invalid_stop", "batched"):
        assert isinstance(speedup[key], (int, float)) and speedup[key] > 0
    assert speedup["naive"] == 1.0
    assert set(speedup) <= set(out["s_per_candidate"])
    assert speedup["multi_fidelity"] > 0  # the "+ multi-fidelity" row: batched_proxy + ASHA rungs
    assert out["fidelity_ladder"] == [[3, 10, 30], [10, 30]]  # quick: 30 steps, the defaults
    spent = out["proxy_steps_spent"]
    assert spent["naive"] == 3 * 30 and spent["multi_fidelity"] <= 30 * out["trained"]["multi_fidelity"]


@pytest.mark.slow
def test_screening_quick():
    out = _last_json("screening.py")
    for key in ("gec_speedup", "lrp_cls_speedup", "lrp_seg_speedup", "agreement", "checks_speedup",
                "n", "threads"):
        assert key in out
    assert out["agreement"] > 0.9


def test_search_vs_random_quick():
    out = _last_json("search_vs_random.py")
    assert out["seeds"] == [0] and len(out["autoloss_zero_best_per_seed"]) == 1
    for key in ("autoloss_zero_best", "random_best"):
        assert 0.0 <= out[key] <= 1.0  # accuracies of trained losses
    assert out["autoloss_zero_trained"][0] >= 1 and out["random_trained"][0] >= 1


@pytest.mark.slow
def test_proxy_batched_quick_with_the_roofline():
    out = _last_json("proxy_batched.py", "--tasks", "digits", "--roofline")
    assert out["digits_same_status"] == out["digits_candidates"] and out["digits_speedup"] > 0
    assert out["shapes_seg_speedup"] is None  # not run: the key is there for scripts
    roof = {k: v for k, v in out.items() if k.startswith("roofline_")}
    assert all(v > 0 for v in roof.values()) and len(roof) == 4
    seq, grouped = out["roofline_sequential_conv_gflops"], out["roofline_grouped_conv_gflops"]
    assert out["roofline_grouped_vs_sequential"] == pytest.approx(grouped / seq, rel=0.01)


def test_data_paths_quick():
    out = _last_json("data_paths.py")
    for task in ("digits", "shapes_seg"):
        assert out[f"{task}_tensors_ms_per_step"] > 0
        for path in ("dataset", "files", "memmap"):
            assert out[f"{task}_{path}_ratio"] > 0 and out[f"{task}_{path}_ms_per_step"] > 0
            assert out[f"{task}_{path}_max_loss_diff"] < 1e-4  # the same batches, the same run
        assert out[f"{task}_dataset_max_loss_diff"] == 0.0  # the very tensors: bit for bit


@pytest.mark.slow
def test_fidelity_rank_quick():
    out = _last_json("fidelity_rank.py")
    r = out["digits"]
    assert r["rungs"] == [2, 6, 18] and len(r["spearman"]) == 3 and r["losses"] >= 3
    assert all(0.0 <= s <= 1.0 for s in r["top3_survival"])


@pytest.mark.slow
def test_multifidelity_quick():
    out = _last_json("multifidelity.py")
    r = out["digits"]
    assert len(r["none"]) == len(r["asha"]) == 2 and r["throughput_ratio"] > 0
    assert r["ladder"] == [[3, 9, 27], [9, 27]]  # FidelityConfig's defaults at max 27
    assert r["lrp_steps"] == 500  # the protocol's length unless --lrp-steps
    assert r["proxy_throughput_ratio"] > 0 and r["median_diff"] == r["median_diff"]
    for row in r["none"] + r["asha"]:
        assert row["evaluated"] == sum(row["stopped_at"].values())  # each counted once
        assert 0.0 <= row["screening_share"] <= 1.0


def test_the_multi_fidelity_row_trains_rungs_and_counts_their_steps():
    """The ablation's ``multi_fidelity`` configuration races its candidates up the rungs, and
    ``proxy_steps_spent`` counts each rung's own steps: 3 candidates on rungs 3/9 with η = 3 —
    all three train 3 steps, the best one continues 6 more: 15 steps, not 3 × 9."""
    from dataclasses import replace

    from lossforge.ablation import Configured, proxy_steps_spent
    from lossforge.evaluation.funnel import FunnelConfig
    from lossforge.evaluation.proxy import ProxyStageConfig
    from lossforge.evaluation.rungs import FidelityConfig
    from lossforge.expr import parse

    cfg = replace(FunnelConfig(), use_lrp=False, use_gec=False,
                  proxy=ProxyStageConfig(steps=9, batch=1,
                                         fidelity=FidelityConfig("asha", 3, 9, brackets=1)))
    from lossforge import tasks

    runner = Configured("multi_fidelity", tasks.get("digits"), "accuracy", cfg, no_stop=False)
    runner.run([parse("-sum_c(y * log(p))"), parse("sum_c(square(p - y))"),
                parse("-sum_c(y * square(1 - p) * log(p))")])
    assert [c.status for c in runner.cands] == ["trained"] * 3
    assert sorted(c.fidelity["steps"] for c in runner.cands) == [3, 3, 9]
    assert proxy_steps_spent(runner) == 3 * 3 + (9 - 3)


def test_lrp_steps_quick():
    out = _last_json("lrp_steps.py", "--tasks", "digits", "--spatial", "8")
    r = out["digits"]
    n = r["candidates"]
    assert n >= 10 and 0 <= r["accepted"] <= n and r["reference"]["steps"] == 500
    # one 50-step protocol at the calibrated lr, one at lr * 500 / 50
    assert [(s["steps"], round(s["lr"] / r["reference"]["lr"], 6)) for s in r["short"]] == \
        [(50, 1.0), (50, 10.0)]
    for s in r["short"]:
        assert s["agreement"] == pytest.approx((n - s["lost"] - s["extra"]) / n)
        assert s["seconds_per_candidate"] > 0
    # digits' probe is not dense: a width limit leaves it, and the 500-step decisions, unchanged
    full, short = r["spatial"]
    assert (full["spatial_size"], full["steps"], full["agreement"]) == (8, 500, 1.0)
    assert short["steps"] == 50 and short["agreement"] == r["short"][1]["agreement"]


def test_lrp_steps_compare_counts_lost_and_extra_decisions():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import lrp_steps

    got = lrp_steps.compare([True, True, False, False, True], [True, False, True, False, True])
    assert got == {"agreement": 0.6, "lost": 1, "extra": 1}


@pytest.mark.slow
def test_multifidelity_quick_auto():
    """``--min-steps auto``: each asha search runs its rung check, charged to its budget."""
    out = _last_json("multifidelity.py", "--seeds", "1", "--min-steps", "auto")
    r = out["digits"]
    assert r["ladder"] == "auto"
    (row,) = r["asha"]
    assert row["check_s"] > 0 and row["chosen"]["brackets"] == 1
    assert row["chosen"]["min_steps"] in (1, 3, 9, 27)  # a rung of the grid 27·3^-k
    assert row["per_cpu_hour_after_check"] >= row["per_cpu_hour"]
    assert set(row["stopped_at"]) <= {"1", "3", "9", "27", 1, 3, 9, 27}
