"""The expert losses of the zoo against their published formulas, each written here independently
(plain torch in float64, from the paper's equation), through ``to_torch`` and the standalone
``to_source`` module."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lossforge import zoo
from lossforge.expr.interpret import ExprLoss

C = 5
PRIOR = torch.tensor([0.5, 0.25, 0.15, 0.08, 0.02], dtype=torch.float64)
COUNTS = (PRIOR * 20_000).round()   # class counts of a training set of 20,000


def _data(seed=0, n=64, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, C, generator=gen, dtype=torch.float64)
    target = torch.randint(0, C, (n,), generator=gen)
    return logits, target


def _pt(logits, target):
    return torch.softmax(logits, 1).gather(1, target[:, None])[:, 0]


def _both(expr, logits, target, prior=None):
    """(to_torch value, standalone-source value): they must agree."""
    kw = {} if prior is None else {"prior": prior}
    a = expr.to_torch(**kw)(logits, target).item()
    ns: dict = {}
    exec(expr.to_source("Exported"), ns)
    b = ns["Exported"](**kw)(logits, target).item()
    assert a == pytest.approx(b, rel=1e-12)
    return a


# ---- noisy labels -------------------------------------------------------------------------------
def test_mae_on_probabilities_is_ghosh_l1():
    """Ghosh et al. 2017: L1(e_t, p) = sum_k |e_t,k - p_k| = 2 - 2 p_t."""
    logits, target = _data(1)
    p = torch.softmax(logits, 1)
    ref = (p - F.one_hot(target, C)).abs().sum(1).mean().item()
    got = _both(zoo.get("mae", "classification").expr, logits, target)
    assert got == pytest.approx(ref, rel=1e-12)
    assert got == pytest.approx((2 - 2 * _pt(logits, target)).mean().item(), rel=1e-9)
    assert zoo.get("mae").kind == "regression"  # the name's default form stays regression


def test_gce_is_zhang_sabuncu_with_q_07():
    """Zhang & Sabuncu 2018, Eq. (6): L_q = (1 - p_t^q) / q."""
    logits, target = _data(2, scale=8.0)
    ref = ((1 - _pt(logits, target) ** 0.7) / 0.7).mean().item()
    assert _both(zoo.get("gce").expr, logits, target) == pytest.approx(ref, rel=1e-12)
    q = 0.3
    ref = ((1 - _pt(logits, target) ** q) / q).mean().item()
    assert _both(zoo.gce(q), logits, target) == pytest.approx(ref, rel=1e-12)
    with pytest.raises(ValueError, match="q must be in"):
        zoo.gce(0.0)


def _rce(logits, target, a=-4.0):
    """Wang et al. 2019, Eq. (4): -sum_k p_k log q(k|x), log 0 clipped to A."""
    p = torch.softmax(logits, 1)
    logq = torch.where(F.one_hot(target, C).bool(), torch.zeros_like(p), torch.full_like(p, a))
    return -(p * logq).sum(1)


def test_sce_is_alpha_ce_plus_beta_rce():
    logits, target = _data(3, scale=10.0)
    ce = F.cross_entropy(logits, target, reduction="none")
    ref = (0.01 * ce + 1.0 * _rce(logits, target)).mean().item()
    assert _both(zoo.get("sce").expr, logits, target) == pytest.approx(ref, rel=1e-12)
    ref = (0.1 * ce + 1.0 * _rce(logits, target)).mean().item()
    assert _both(zoo.sce(0.1, 1.0), logits, target) == pytest.approx(ref, rel=1e-12)


def test_nce_rce_is_ma_et_al():
    """Ma et al. 2020: NCE = -log p_t / -sum_k log p_k; NCE+RCE = alpha NCE + beta RCE."""
    logits, target = _data(4, scale=6.0)
    logp = torch.log_softmax(logits, 1)
    nce = logp.gather(1, target[:, None])[:, 0] / logp.sum(1)
    ref = (1.0 * nce + 100.0 * _rce(logits, target)).mean().item()
    # the protected '/' adds 1e-6 to sum_k log p_k (at most C log(1/C) = -8.05): ~1e-7 relative
    assert _both(zoo.get("nce+rce").expr, logits, target) == pytest.approx(ref, rel=1e-6)
    assert 0 < nce.min() and nce.max() <= 1  # normalised


# ---- long tails ---------------------------------------------------------------------------------
def test_logit_adjusted_is_cross_entropy_of_adjusted_logits():
    """Menon et al. 2021, Eq. (10): -log softmax(z + tau log pi)_t, tau = 1."""
    logits, target = _data(5, scale=20.0)  # confidently wrong samples included
    ref = F.cross_entropy(logits + PRIOR.log(), target).item()
    got = _both(zoo.get("logit-adjusted").expr, logits, target, prior=PRIOR)
    # the guarded log(sum_k p_k pi_k) is off by at most 1e-6 / min(pi) relative
    assert got == pytest.approx(ref, rel=1e-4)
    ref2 = F.cross_entropy(logits + 2.0 * PRIOR.log(), target).item()
    assert _both(zoo.logit_adjusted(2.0), logits, target, prior=PRIOR) == pytest.approx(ref2, rel=1e-4)


def test_balanced_softmax_uses_class_counts():
    """Ren et al. 2020, Eq. (4): -log(n_t e^{z_t} / sum_k n_k e^{z_k})."""
    logits, target = _data(6, scale=5.0)
    w = COUNTS[None, :] * logits.exp()
    ref = (-(w.gather(1, target[:, None])[:, 0] / w.sum(1)).log()).mean().item()
    prior = COUNTS / COUNTS.sum()
    assert _both(zoo.get("balanced-softmax").expr, logits, target, prior=prior) == \
        pytest.approx(ref, rel=1e-4)


def test_cb_focal_is_cui_et_al_with_effective_numbers():
    """Cui et al. 2019: weight (1 - beta) / (1 - beta^{n_y}), normalised to sum to C, times the
    focal loss -(1 - p_t)^gamma log p_t (softmax form), beta = 0.9999, gamma = 1."""
    logits, target = _data(7, scale=4.0)
    beta, gamma, n = 0.9999, 1.0, float(COUNTS.sum())
    w = (1 - beta) / (1 - beta ** COUNTS)
    w = w / w.sum() * C
    pt = _pt(logits, target)
    ref = (w[target] * -(1 - pt) ** gamma * pt.log()).mean().item()
    prior = COUNTS / COUNTS.sum()
    got = _both(zoo.cb_focal(int(n), beta, gamma), logits, target, prior=prior)
    assert got == pytest.approx(ref, rel=1e-6)


def test_cb_focal_takes_the_training_set_size_of_its_task():
    class Tiny:
        def data(self):
            class D:
                train = [0] * 123
            return D()

    entry = zoo.get("cb-focal")
    assert str(entry.expr_for(Tiny())) == str(zoo.cb_focal(123))
    assert entry.expr_for(None) is entry.expr


def test_a_prior_loss_without_a_prior_warns_and_uses_the_uniform_prior():
    logits, target = _data(8)
    with pytest.warns(UserWarning, match="uniform prior"):
        module = zoo.get("logit-adjusted").module()
    # a uniform prior shifts every logit alike: plain cross-entropy
    assert module(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-5)
    assert isinstance(module, ExprLoss) and module.prior is None


# ---- robust regression --------------------------------------------------------------------------
def _residuals():
    gen = torch.Generator().manual_seed(9)
    f = 3 * torch.randn(200, generator=gen, dtype=torch.float64)
    y = torch.randn(200, generator=gen, dtype=torch.float64)
    return f, y


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_huber_of_delta_matches_torch(delta):
    f, y = _residuals()
    ref = F.huber_loss(f, y, delta=delta).item()
    assert _both(zoo.huber(delta), f, y) == pytest.approx(ref, rel=1e-12)


def _barron(x, alpha, c):
    """Barron 2019, Eq. (1) and its limits."""
    z = (x / c) ** 2
    if alpha == 2:
        return 0.5 * z
    if alpha == 0:
        return torch.log(0.5 * z + 1)
    b = abs(alpha - 2)
    return b / alpha * ((z / b + 1) ** (alpha / 2) - 1)


@pytest.mark.parametrize("alpha, c", [(0.0, 1.0), (1.0, 1.0), (2.0, 0.5), (-2.0, 2.0), (0.5, 1.5)])
def test_barron_matches_the_general_robust_loss(alpha, c):
    f, y = _residuals()
    ref = _barron(f - y, alpha, c).mean().item()
    expr = zoo.get("barron").expr if (alpha, c) == (0.0, 1.0) else zoo.barron(alpha, c)
    # the power is exp(k log(arg)) with the guarded log: off by |alpha - 2| / 2 * 1e-6 at most
    assert _both(expr, f, y) == pytest.approx(ref, abs=abs(alpha - 2) * 1e-6)
    if alpha == 1.0:  # pseudo-Huber / Charbonnier: sqrt(x^2 + 1) - 1
        assert ref == pytest.approx((torch.sqrt((f - y) ** 2 + 1) - 1).mean().item(), rel=1e-12)


def test_ldam_is_left_out_with_its_reason():
    assert "ldam" not in zoo.names()
    assert "LDAM" in zoo.__doc__ and "minimum over" in zoo.__doc__
