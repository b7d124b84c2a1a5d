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
