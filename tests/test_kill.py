"""Crash safety: a search killed with SIGKILL at random moments and resumed each time ends with
exactly the budgeted candidates, none missing or duplicated, identical to an uninterrupted run —
with the single-length proxy in-process, and with multi-fidelity rungs (ASHA) on 2 worker
processes (the rung results identical too)."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from lossforge.study import load_study

ARGS = ["--task", "digits", "--strategy", "autoloss-zero", "--budget", "36", "--seed", "3",
        "--proxy-steps", "8", "--lrp-steps", "40", "--generation-size", "6", "--format", "json"]


def run_cli(args, timeout=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "lossforge", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


#: multi-fidelity on 2 workers: rungs of 4, 12 and 36 steps (no LRP: more candidates train)
ASHA_ARGS = [*ARGS[:ARGS.index("--lrp-steps")], "--no-lrp",
             *ARGS[ARGS.index("--generation-size"):], "--fidelity", "asha", "--min-steps", "4",
             "--max-steps", "36"]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path):
    _kill_and_resume(tmp_path, ARGS, [])


@pytest.mark.slow
def test_sigkill_multi_fidelity_on_two_workers_then_resume(tmp_path):
    done, ref = _kill_and_resume(tmp_path, ASHA_ARGS, ["--workers", "2"])
    rung = lambda r: (r.generation, r.position, r.rung, r.steps, r.status, r.fitness)
    assert ref.store.rung_rows(), "no candidate was trained in rungs: make the search longer"
    assert list(map(rung, done.store.rung_rows())) == list(map(rung, ref.store.rung_rows()))


def _kill_and_resume(tmp_path, args, executor):
    reference = tmp_path / "reference.db"
    ARGS = args
    start = time.monotonic()
    proc = run_cli(["search", *ARGS, *executor, "--study", str(reference)])
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()
    whole = time.monotonic() - start  # kill moments are fractions of it: any machine speed

    path = tmp_path / "killed.db"
    rng = random.Random(7)
    kills = 0
    command = ["search", *ARGS, *executor, "--study", str(path)]
    for attempt in range(12):
        proc = run_cli(command)
        try:
            code = proc.wait(timeout=rng.uniform(0.5, 0.9) * whole if kills < 3 else 600)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            if path.exists():
                command = ["resume", str(path), "--format", "json", *executor]
            continue
        assert code == 0, proc.stderr.read().decode()
        break
    assert kills >= 1, "the search finished before it could be killed: make it longer"

    done, ref = load_study(path), load_study(reference)
    rows, ref_rows = done.candidates, ref.candidates
    assert done.explored == 36 == len(rows)
    assert len({(r.generation, r.position) for r in rows}) == 36
    key = lambda r: (r.generation, r.position, r.proposed, r.formula, r.status, r.fitness)
    assert sorted(map(key, rows)) == sorted(map(key, ref_rows))
    generations = [g for g, _ in done.store.checkpoints()]
    assert generations == list(range(len(generations))) and len(generations) == 6
    return done, ref
