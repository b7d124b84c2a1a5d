"""The class-prior variable ``q``: the training set's class frequencies, constant over the batch,
read wherever a variable is — parser, sympy/LaTeX, interpreter, ``to_torch`` (a buffer),
standalone source (a buffer, passed at construction), probes and the screening stages (batched and
reference alike), proxy training (sequential and stacked). ``Task.class_prior`` computes it."""
from __future__ import annotations

import pytest
import sympy
import torch
from torch.utils.data import Dataset

from lossforge import parse, zoo
from lossforge.data import DataSplits, Split
from lossforge.evaluation import batched
from lossforge.evaluation.candidate import Candidate
from lossforge.evaluation.checks import Checks
from lossforge.evaluation.gec import GradientEquivalence
from lossforge.evaluation.lrp import LossRejection, LRPConfig
from lossforge.evaluation.probes import synthetic_probe, task_probe
from lossforge.tasks import Metric
from lossforge.training import train
from lossforge.training.loss_spec import load_loss
from lossforge.training.stacked import train_batched

from lfhelpers import TinyBlobs

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

PRIOR = torch.tensor([0.6, 0.3, 0.1])
LA = "-sum_c(y * (log(p) + log(q))) + log(sum_c(p * q))"


def _logits(seed=0, n=12, c=3):
    gen = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(n, c, generator=gen, dtype=torch.float64), \
        torch.randint(0, c, (n,), generator=gen)


def test_q_round_trips_parse_sympy_torch_source():
    e = parse(LA)
    assert parse(str(e)) is e and "q" in e.variables()
    s = e.to_sympy()
    q, p = sympy.Symbol("q", real=True), sympy.Symbol("p", real=True)
    assert q in s.free_symbols and s.has(sympy.log(p))
    assert "q" in e.to_latex()
    logits, target = _logits()
    ref = torch.nn.functional.cross_entropy(logits + PRIOR.double().log(), target).item()
    module = e.to_torch(prior=PRIOR)
    assert torch.equal(module.state_dict()["prior"], PRIOR)      # a buffer of the module
    assert module(logits, target).item() == pytest.approx(ref, rel=1e-5)
    ns: dict = {}
    exec(e.to_source("LogitAdjusted"), ns)
    standalone = ns["LogitAdjusted"](prior=PRIOR)
    assert torch.equal(standalone.state_dict()["prior"], PRIOR)
    assert standalone(logits, target).item() == pytest.approx(module(logits, target).item(),
                                                              rel=1e-12)
    assert ns["LogitAdjusted"]()(logits, target).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, target).item(), rel=1e-5)  # uniform prior


def test_q_broadcasts_over_samples_and_positions():
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    value = parse("sum_c(q * y) + p * 0").to_torch(prior=PRIOR)(logits, target)
    expected = PRIOR[target].mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="one entry per class"):
        parse("q * y + p").to_torch(prior=torch.tensor([0.5, 0.5]))(logits, target)
    with pytest.raises(ValueError, match="summing to 1"):
        parse("q * y + p").to_torch(prior=torch.tensor([0.5, 0.6, 0.1]))


class _Seg(TinyBlobs):
    """Class maps with ignored pixels: the prior counts the labelled pixels only."""

    name = "tiny-seg-prior"

    def data(self):
        y = torch.tensor([[[0, 0], [1, 255]], [[2, 0], [255, 255]]])
        x = torch.zeros(2, 1, 2, 2)
        return DataSplits(Split(x, y), Split(x, y), Split(x, y), 3, "seg")


class _Items(Dataset):
    def __init__(self, labels, with_targets: bool):
        self.labels = labels
        self.reads = 0
        if with_targets:
            self.targets = list(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.reads += 1
        return torch.zeros(2), int(self.labels[i])


def test_task_class_prior_counts_training_labels_without_the_ignore_index():
    blobs = TinyBlobs()
    counts = torch.bincount(blobs.data().train.y, minlength=3).float()
    torch.testing.assert_close(blobs.class_prior(), counts / counts.sum())
    assert blobs.class_prior() is blobs.class_prior()                    # computed once
    torch.testing.assert_close(_Seg().class_prior(), torch.tensor([3 / 5, 1 / 5, 1 / 5]))
    from lossforge import tasks
    assert tasks.get("diabetes").class_prior() is None                    # regression


@pytest.mark.parametrize("with_targets", [True, False])
def test_class_prior_of_a_dataset_split(with_targets):
    labels = [0] * 1500 + [1] * 500 + [2] * 100
    ds = _Items(labels, with_targets)

    class T(TinyBlobs):
        name = "tiny-dataset-prior"

        def data(self):
            return DataSplits(Split(ds), Split(ds), Split(ds), 3, "items")

    before = ds.reads
    prior = T().class_prior()
    torch.testing.assert_close(prior, torch.tensor([1500, 500, 100]) / 2100.0)
    # 3: item 0 of each split, read when data() builds the splits (the layout check); then the
    # labels are counted from the dataset's targets attribute, or read in chunks of 1024 items
    assert ds.reads - before == 3 + (0 if with_targets else len(labels))


def test_loss_spec_passes_the_task_prior_and_probes_read_it_lazily():
    task = TinyBlobs()
    loaded = load_loss("logit-adjusted", task)
    torch.testing.assert_close(loaded.module.prior, task.class_prior())
    assert load_loss("ce", task).module.prior is None        # losses without q get no prior
    probe = task_probe(task, 8, seed=0)
    assert probe.prior is None and probe.prior_source is not None
    env, _ = probe.variables(torch.zeros(probe.pred_shape))
    torch.testing.assert_close(env["q"][0, :], task.class_prior())


def test_training_with_q_sequential_and_stacked_agree():
    task = TinyBlobs()
    seq = train(task, "logit-adjusted", steps=6, seed=0)
    stacked = train_batched(task, ["logit-adjusted", "ce"], steps=6, seed=0)
    assert seq.status == "ok" and stacked[0].status == "ok"
    assert stacked[0].loss_curve == pytest.approx(seq.loss_curve, rel=1e-5)
    assert stacked[0].loss_curve != pytest.approx(stacked[1].loss_curve, rel=1e-3)


EXPRS = [LA, "-sum_c(y * log(p)) * sum_c(q * y)", "sum_c(square(p - q) * y)",
         "sum_c(y * inv(q)) * p", "q * y", "-sum_c(y * log(p) / q)"]


def _stage_pairs(make):
    probe = synthetic_probe("classification", 6, 3, seed=1)
    probe.prior = PRIOR
    ref_stage, bat_stage = make(probe), make(probe)
    texts = EXPRS if make is Checks else [t for t in EXPRS if t != "q * y"]  # GEC/LRP: after checks
    ref = [Candidate(parse(t)) for t in texts]
    bat = [Candidate(parse(t)) for t in texts]
    ref_stage(ref)
    batched.run_stage(bat_stage, bat)
    return ref, bat


@pytest.mark.parametrize("make", [
    Checks, GradientEquivalence,
    lambda pr: LossRejection(pr, Metric("accuracy", lambda a, b: float((a == b).mean())),
                             LRPConfig(steps=40, lr=0.1, threshold=0.0)),
], ids=["checks", "gec", "lrp"])
def test_screening_reads_q_alike_batched_and_reference(make):
    ref, bat = _stage_pairs(make)
    for r, b in zip(ref, bat):
        assert (r.status, r.reason, r.fingerprint, r.same_as) == \
            (b.status, b.reason, b.fingerprint, b.same_as), str(r.expr)
        if r.lrp_score is not None or b.lrp_score is not None:
            assert r.lrp_score == pytest.approx(b.lrp_score)
    if make is Checks:  # q is not a prediction: 'q * y' cannot be a loss
        assert ref[4].reason == "does not depend on the prediction"
