"""Which expert losses each search space can express (issue 17, part 4).

A space *expresses* a loss when a formula made only of the space's primitives — its ops, its
variables, and constants only where the space has them (none in ``autoloss-zero``; ``±1`` leaves
in ``nlfs``; any value in ``glo``, whose constants CMA-ES tunes) — is a valid candidate of the
space (``SearchSpace.why_invalid``) and equals the zoo loss up to a positive factor on random
logits (GLO trees have no class aggregation: their loss is the mean over classes, ``1 / C`` of
the class sum). ``nlfs`` DAGs are one ``sum_c`` around at most 5 element-wise op nodes.
The translations below are written by hand; ``None`` means not expressible, with the reason.
"""
from __future__ import annotations

import pytest
import torch

from lossforge import parse, zoo
from lossforge.expr import spaces

PRIOR = torch.tensor([0.4, 0.3, 0.2, 0.07, 0.03], dtype=torch.float64)

#: space -> expert -> formula in the space's primitives, or the reason it cannot be written.
TRANSLATIONS: dict[str, dict[str, str | None]] = {
    "autoloss-zero": {
        "mae": "sum_c(abs(p + -y))",
        "gce": "no constants: p_t^0.7 needs 0.7",
        "sce": "no constants: the weights 0.01 and 4 of CE and RCE",
        "nce+rce": "no constants: the weight 400 of RCE",
        "logit-adjusted": "no class prior q (autoloss-zero+q)",
        "balanced-softmax": "no class prior q (autoloss-zero+q)",
        "cb-focal": "no constants: beta^n",
    },
    "autoloss-zero+q": {
        "logit-adjusted": "-sum_c(y * (slog(p) + slog(q))) + slog(sum_c(p * q))",
        "balanced-softmax": "-sum_c(y * (slog(p) + slog(q))) + slog(sum_c(p * q))",
        "cb-focal": "no constants: beta^n",
    },
    "glo": {
        "mae": "abs(p - y)",
        "gce": "no exp (p_t^0.7) and no class aggregation",
        "sce": "4 * (y - y * p) - 0.01 * (y * log(p))",
        "nce+rce": "no class aggregation: NCE divides two class sums",
        "logit-adjusted": "no class prior q and no class aggregation",
        "balanced-softmax": "no class prior q and no class aggregation",
        "cb-focal": "no class prior q, exp or class aggregation",
    },
    "glo+x+q": {
        "gce": "1.4285714285714286 * (1 - sum_c(y * exp(0.7 * log(p))))",
        "nce+rce": "sum_c(y * log(p)) / sum_c(log(p)) + 400 * (1 - sum_c(y * p))",
        "logit-adjusted": "-sum_c(y * (log(p) + log(q))) + log(sum_c(p * q))",
        "balanced-softmax": "-sum_c(y * (log(p) + log(q))) + log(sum_c(p * q))",
        "cb-focal": "sum_c(y * inv(1 - exp(-1.0000500033334732 * q))) / "
                    "mean_c(inv(1 - exp(-1.0000500033334732 * q))) * "
                    "-sum_c(y * (1 - p) * log(p))",
    },
    "nlfs": {
        "mae": "sum_c(abs(p - y))",
        "gce": "only ±1 constants: p_t^0.7 needs 0.7",
        "sce": "only ±1 constants: the weights 0.01 and 4",
        "nce+rce": "one sum_c at the root: NCE divides two class sums",
        "logit-adjusted": "one sum_c at the root: log(sum_c(p q)) is inside",
        "balanced-softmax": "one sum_c at the root: log(sum_c(p q)) is inside",
        "cb-focal": "one sum_c at the root, only ±1 constants",
    },
}
EXPERTS = ("mae", "gce", "sce", "nce+rce", "logit-adjusted", "balanced-softmax", "cb-focal")


def _is_formula(text: str) -> bool:
    try:
        parse(text)
        return True
    except ValueError:
        return False


def _space(name: str):
    return spaces.get(name, variables=["p", "q", "y", "z"])  # a classification task's signature


def _constants_ok(space, expr) -> bool:
    values = {n.value for n in expr.nodes() if n.is_const}
    if space.name.startswith("autoloss-zero"):
        return not values
    if space.name.startswith("nlfs"):
        return values <= {1.0, -1.0}
    return True


def _value(expr, logits, target):
    return expr.to_torch(prior=PRIOR)(logits, target).item()


def expressible(space_name: str, expert: str) -> bool:
    """Whether the hand translation is a valid candidate equal to the zoo loss (up to a factor)."""
    text = TRANSLATIONS[space_name].get(expert)
    if text is None or not _is_formula(text):
        return False
    space, expr = _space(space_name), parse(text)
    if space.why_invalid(expr) is not None or not _constants_ok(space, expr):
        return False
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(32, 5, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 5, (32,), generator=gen)
    ref = _value(zoo.get(expert, "classification").expr, logits, target)
    got = _value(expr, logits, target)
    ratio = got / ref
    other = (logits.flip(0), target)
    return ratio > 0 and _value(expr, *other) == pytest.approx(
        ratio * _value(zoo.get(expert, "classification").expr, *other), rel=1e-6)


EXPECTED = {  # space -> experts it expresses
    "autoloss-zero": {"mae"},
    "autoloss-zero+q": {"mae", "logit-adjusted", "balanced-softmax"},
    "glo": {"mae", "sce"},
    "glo+x+q": {"mae", "sce", "gce", "nce+rce", "logit-adjusted", "balanced-softmax", "cb-focal"},
    "nlfs": {"mae"},
}


@pytest.mark.parametrize("space_name", sorted(EXPECTED))
def test_the_expert_losses_each_space_expresses(space_name):
    inherited = {"autoloss-zero+q": "autoloss-zero", "glo+x+q": "glo"}
    table = dict(TRANSLATIONS.get(inherited.get(space_name, ""), {}))
    table.update(TRANSLATIONS[space_name])
    TRANSLATIONS[space_name] = table
    got = {e for e in EXPERTS if expressible(space_name, e)}
    assert got == EXPECTED[space_name]
    for e in EXPERTS:  # what is not expressible says why (a reason, not a formula)
        if e not in got:
            assert not _is_formula(table[e]), (space_name, e)


def test_every_expert_loss_is_expressible_in_some_space():
    assert set(EXPERTS) <= set().union(*EXPECTED.values())


def test_the_variants_are_off_by_default():
    sig = ["p", "q", "y", "z"]  # what a classification task's signature now holds
    for name in ("autoloss-zero", "glo", "nlfs"):
        assert "q" not in spaces.get(name, variables=sorted(set(sig) - {"z"})).variables
        assert spaces.get(name, variables=["p", "y"]) == spaces.get(name, variables=["p", "q", "y"])
    with_q = spaces.get("nlfs+q", variables=["p", "q", "y"])
    assert "q" in with_q.variables and with_q.prediction_variables == ("p",)
    from lossforge.expr.dag import dag_inputs
    assert "q" in dag_inputs(with_q)
    with pytest.raises(ValueError, match="class prior"):
        spaces.get("glo+q", variables=["f", "y"])
