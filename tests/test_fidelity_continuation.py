"""Training continuation (multi-fidelity rungs): s1 steps, then continued to s2, gives exactly the
weights and metrics of one straight run of s2 steps — also through a state file, with a model
that draws random numbers in training (dropout), and on a ``Dataset`` split."""
from __future__ import annotations

import pytest
import torch

from lossforge import tasks
from lossforge.training import TrainState, train



@pytest.mark.parametrize("loss", ["ce", "-mean_c(log(p) - y / p)"])
def test_continued_run_equals_straight_run(loss):
    task = tasks.get("digits")
    straight = train(task, loss, steps=30, seed=2, splits=("val",), keep_state=True)
    first = train(task, loss, steps=11, seed=2, splits=("val",), keep_state=True)
    assert first.state.steps_done == 11
    second = train(task, loss, steps=30, seed=2, splits=("val",), state=first.state, keep_state=True)
    assert second.steps_done == 30
    for k, w in straight.state.model.items():
        assert torch.equal(w, second.state.model[k]), k
    assert second.val == straight.val
    # Adam's step counters continued too
    assert torch.equal(straight.state.optimizer["state"][0]["exp_avg"],
                       second.state.optimizer["state"][0]["exp_avg"])


def test_state_file_and_three_segments(tmp_path):
    task = tasks.get("digits")
    straight = train(task, "focal", steps=27, seed=0, splits=("val",))
    a = train(task, "focal", steps=3, seed=0, splits=("val",), keep_state=True)
    a.state.save(tmp_path / "a.pt")
    b = train(task, "focal", steps=9, seed=0, splits=("val",), keep_state=True,
              state=TrainState.load(tmp_path / "a.pt"))
    c = train(task, "focal", steps=27, seed=0, splits=("val",), state=b.state)
    assert c.val == straight.val


def test_dropout_rng_is_continued():
    class Drop(tasks.get("digits").__class__):
        name = "digits-dropout"

        def make_model(self):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                       torch.nn.Dropout(0.5), torch.nn.Linear(32, 10))
    task = Drop()
    straight = train(task, "ce", steps=20, seed=1, splits=("val",))
    half = train(task, "ce", steps=7, seed=1, splits=("val",), keep_state=True)
    torch.manual_seed(123)  # whatever ran in between
    rest = train(task, "ce", steps=20, seed=1, splits=("val",), state=half.state)
    assert rest.val == straight.val


def test_bad_state_is_refused():
    task = tasks.get("digits")
    s = train(task, "ce", steps=5, seed=0, splits=(), keep_state=True).state
    with pytest.raises(ValueError, match="seed"):
        train(task, "ce", steps=10, seed=1, state=s)
    with pytest.raises(ValueError, match="more than steps"):
        train(task, "ce", steps=3, seed=0, state=s)


# ---- the stacked engine (in-process rungs train a generation's candidates together) ----------
BATCH = ["ce", "brier", "focal"]


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in b)


def test_stacked_continuation_equals_straight_runs_to_float_noise():
    from lossforge.training.stacked import train_batched

    task = tasks.get("digits")
    straight = train_batched(task, BATCH, steps=20, seed=3, keep_state=True)
    half = train_batched(task, BATCH, steps=8, seed=3, keep_state=True)
    steps_before = [h.state.optimizer["state"][0]["step"].clone() for h in half]
    resumed = train_batched(task, BATCH, steps=20, seed=3, keep_state=True,
                            states=[h.state for h in half])
    # the given states are left as they were (Adam's step counter is not aliased)
    assert all(torch.equal(h.state.optimizer["state"][0]["step"], s)
               for h, s in zip(half, steps_before))
    for loss, s, r in zip(BATCH, straight, resumed):
        seq = train(task, loss, steps=20, seed=3, splits=("val",), keep_state=True)
        assert r.steps_done == 20 and r.state.steps_done == 20
        assert _max_diff(r.state.model, seq.state.model) < 1e-5, loss
        assert _max_diff(s.state.model, seq.state.model) < 1e-5, loss
        assert r.val["accuracy"] == pytest.approx(seq.val["accuracy"], abs=0.01)
        assert r.state.optimizer["param_groups"] == seq.state.optimizer["param_groups"]
        assert torch.equal(r.state.rng, seq.state.rng)


def test_stacked_and_sequential_states_continue_each_other():
    from lossforge.training.stacked import train_batched

    task = tasks.get("digits")
    seq8 = [train(task, loss, steps=8, seed=1, splits=(), keep_state=True) for loss in BATCH]
    on_stack = train_batched(task, BATCH, steps=20, seed=1, states=[r.state for r in seq8],
                             keep_state=True)
    stacked8 = train_batched(task, BATCH, steps=8, seed=1, keep_state=True)
    for loss, r, st in zip(BATCH, on_stack, stacked8):
        seq = train(task, loss, steps=20, seed=1, splits=("val",), keep_state=True)
        off_stack = train(task, loss, steps=20, seed=1, splits=("val",), state=st.state,
                          keep_state=True)
        assert _max_diff(r.state.model, seq.state.model) < 1e-5, loss
        assert _max_diff(off_stack.state.model, seq.state.model) < 1e-5, loss


def test_stacked_states_must_share_their_step_and_an_invalid_copy_keeps_none():
    from lossforge.training.stacked import train_batched

    task = tasks.get("digits")
    a = train(task, "ce", steps=4, seed=0, splits=(), keep_state=True).state
    b = train(task, "ce", steps=6, seed=0, splits=(), keep_state=True).state
    with pytest.raises(ValueError, match="one seed and step"):
        train_batched(task, ["ce", "brier"], steps=10, seed=0, states=[a, b])
    with pytest.raises(ValueError, match="all given or all None"):
        train_batched(task, ["ce", "brier"], steps=10, seed=0, states=[a, None])
    out = train_batched(task, ["ce", "exp(1000 * z) * y", "brier"], steps=6, seed=0, keep_state=True)
    assert [r.status for r in out] == ["ok", "invalid", "ok"]
    assert out[1].state is None and out[0].state.steps_done == 6 and out[2].state is not None
