"""Strategies: the ask/tell contract (JSON state, exact resume, determinism) for every built-in
strategy, and evidence that each evolutionary strategy beats random search at equal budget."""
import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from lossforge import search
from lossforge.expr import parse, spaces
from lossforge.expr import kernels as K
from lossforge.expr.interpret import interpret
from lossforge.search._cma import CMAReplay
from lossforge.search.glo import coefficient_form
from lossforge.search.strategy import Scored, scored
from lossforge.search.taylor import invariant_holds, invariant_margin, taylor_coefficients
from lossforge.zoo import taylorglo

# ---- a synthetic fitness: how closely the per-sample loss matches a target loss on probes --------
_gen = torch.Generator().manual_seed(0)
_LOGITS = torch.randn(48, 5, generator=_gen, dtype=torch.float64) * 2
_TARGET = torch.randint(0, 5, (48,), generator=_gen)
ENV, _ = K.prepare_classification(_LOGITS, _TARGET)


def per_sample(expr):
    """Per-sample loss: the element-wise value, broadcast, averaged over classes."""
    v = interpret(expr, ENV)
    return v.expand(_LOGITS.shape).mean(dim=1)


def match_fitness(target):
    t = per_sample(target)

    def fitness(expr):
        v = per_sample(expr)
        if not bool(torch.isfinite(v).all()):
            return None
        mse = float(((v - t) ** 2).mean())
        return -math.log1p(mse) if math.isfinite(mse) else None

    return fitness


CE = match_fitness(parse("-sum_c(y * log(p))"))


def contract_fitness(expr):
    """Deterministic, with some rejections (None) so that every code path is exercised."""
    f = CE(expr)
    if f is None or len(str(expr)) % 5 == 0:
        return None
    return f


# options that make the phases short enough to cross within a few generations
SMALL = {
    "autoloss-zero": {"population_size": 6, "tournament_size": 3, "batch_size": 4},
    "aging": {"initial_size": 8, "population_size": 5, "sample_size": 3, "batch_size": 4},
    "glo": {"population_size": 6, "gp_generations": 2, "cma_generations": 2, "cma_trees": 2,
            "cma_popsize": 4},
    "taylor": {"popsize": 6, "num_classes": 5},
    "random": {"batch_size": 4},
}


def run(strategy, fitness, rounds, n=None):
    asked = []
    for _ in range(rounds):
        cands = strategy.ask(n or strategy.batch_size)
        asked.append([str(c) for c in cands])
        strategy.tell([(c, fitness(c)) for c in cands])
    return asked


def roundtrip(state):
    return json.loads(json.dumps(state, allow_nan=False))


# ---- registry -----------------------------------------------------------------------------------
def test_registry():
    assert set(search.names()) == {"autoloss-zero", "aging", "glo", "taylor", "random"}
    for name in search.names():
        s = search.get(name)
        assert isinstance(s, search.Strategy) and s.name == name
    with pytest.raises(KeyError, match="did you mean 'aging'"):
        search.get("agin")
    with pytest.raises(TypeError, match="population_size"):
        search.get("autoloss-zero", populaton_size=3)
    with pytest.raises(ValueError, match="kind"):
        search.get("aging", "glo")
    with pytest.raises(ValueError, match="kind"):
        search.get("taylor", "autoloss-zero")


# ---- strategies describe themselves; a user strategy runs a search ------------------------------
def test_strategies_declare_what_a_search_needs_to_know():
    from lossforge.evaluation.funnel import FunnelConfig

    assert {n for n, c in search.STRATEGIES.items() if c.can_search_jointly()} == \
        {"autoloss-zero", "random"}
    assert [n for n, c in search.STRATEGIES.items() if c.needs_label] == ["taylor"]
    assert {n: c.default_space for n, c in search.STRATEGIES.items()} == {
        "autoloss-zero": "autoloss-zero", "aging": "nlfs", "glo": "glo", "taylor": "taylor",
        "random": "autoloss-zero"}
    cfg = FunnelConfig()
    assert search.get_class("aging").funnel_overrides(cfg, "classification").checks.integrity
    for name in search.names():  # only NLFS changes the funnel, and only on classification slots
        assert search.get_class(name).funnel_overrides(cfg, "box") == cfg
        assert search.get_class(name).funnel_overrides(cfg, None) == cfg
    with pytest.raises(TypeError, match="Strategy subclass"):
        search.register(dict)


class CycleSearch(search.Strategy):
    """A user strategy defined only here: it cycles through hand-written losses, scaled by a
    growing factor on each lap; its state is two numbers."""

    name = "test-cycle"
    default_space = "autoloss-zero"
    space_kinds = ("tree",)
    FORMULAS = ["-sum_c(y * log(p))", "sum_c(square(p - y))", "sum_c(abs(p - y))",
                "-sum_c(y * square(1 - p) * log(p))", "-sum_c(y * p)"]

    def __init__(self, space=None, seed=0, classes=None, lap_scale=2.0):
        self.space, self.seed = space, seed
        self.classes, self.lap_scale = classes, lap_scale
        self.i, self.told = 0, 0

    @classmethod
    def task_options(cls, task):
        return {"classes": task.num_classes}

    @classmethod
    def funnel_overrides(cls, config, slot_kind):
        from dataclasses import replace

        return replace(config, use_lrp=False)

    @property
    def batch_size(self):
        return 3

    def ask(self, n):
        out = []
        for _ in range(n):
            lap, k = divmod(self.i, len(self.FORMULAS))
            out.append(parse(f"{self.lap_scale ** lap} * ({self.FORMULAS[k]})"))
            self.i += 1
        return out

    def tell(self, results):
        self.told += len(results)

    def state_dict(self):
        return {"i": self.i, "told": self.told}

    def load_state_dict(self, state):
        self.i, self.told = state["i"], state["told"]


def test_a_strategy_defined_in_a_test_file_searches_resumes_and_exports(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import lfhelpers as H
    from lossforge.cli import app
    from lossforge.study import LossSearch, load_study, resume

    monkeypatch.setattr(search, "STRATEGIES", dict(search.STRATEGIES))  # registered for this test
    assert search.register(CycleSearch) is CycleSearch
    assert "test-cycle" in search.names()
    path = tmp_path / "cycle.db"
    run = LossSearch(task="tiny-blobs", storage=path, strategy="test-cycle", budget=6,
                     funnel=H.FAST)
    assert run.space == "autoloss-zero" and run.funnel.use_lrp is False  # its declared traits
    run.check()
    assert not path.exists()  # checking writes nothing
    with pytest.raises(TypeError):
        LossSearch(task="tiny-blobs", storage=path, strategy="test-cycle",
                   strategy_options={"colour": 1}).check()
    with pytest.raises(ValueError, match="joint search supports autoloss-zero and random"):
        LossSearch(task="tiny-blobs", storage=path, strategy="test-cycle", joint=True)
    with pytest.raises(ValueError, match="did you mean 'test-cycle'"):
        LossSearch(task="tiny-blobs", storage=path, strategy="test-cycl")

    study = run.run()
    assert study.explored == 6 and study.settings["strategy"] == "test-cycle"
    assert study.settings["funnel"]["use_lrp"] is False
    study.close()
    LossSearch(task="tiny-blobs", storage=path, strategy="test-cycle", budget=6,
               funnel=H.FAST).check()  # the same settings: fine
    resumed = resume(path, budget=12)
    assert resumed.explored == 12
    proposed = [r.proposed for r in sorted(resumed.candidates, key=lambda r: (r.generation,
                                                                               r.position))]
    assert proposed == [str(e) for e in CycleSearch().ask(12)]  # the state carried on
    best = resumed.best
    assert best is not None
    resumed.close()

    out = tmp_path / "best_loss.py"
    result = CliRunner().invoke(app, ["export", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "class SearchedLoss" in out.read_text()
    reader = load_study(path, readonly=True)
    assert reader.hall_of_fame[0].formula == best.formula
    reader.close()


@pytest.mark.parametrize("name", ["glo", "taylor"])
def test_states_written_before_the_entries_rename_still_load(name):
    s = search.get(name, seed=3, **SMALL[name])
    run(s, contract_fitness, 3)
    s.ask(2)  # a generation half asked
    state = roundtrip(s.state_dict())
    state["slots"] = state.pop("entries")  # as checkpoints written before named them
    old = search.get(name, seed=9, **SMALL[name])
    old.load_state_dict(state)
    assert old.entries == s.entries
    assert [str(e) for e in old.ask(4)] == [str(e) for e in s.ask(4)]


# ---- the contract, for every strategy ----------------------------------------------------------
@pytest.mark.parametrize("name", list(SMALL))
def test_contract_state_resume_and_determinism(name):
    opts = SMALL[name]
    s = search.get(name, seed=3, **opts)
    history = run(s, contract_fitness, 9)
    assert all(history)

    # JSON state; a fresh strategy (other seed) that loads it asks exactly the same
    state = roundtrip(s.state_dict())
    s2 = search.get(name, seed=99, **opts)
    s2.load_state_dict(state)
    assert s.ask(0) == []
    for _ in range(4):
        a, b = s.ask(s.batch_size), s2.ask(s2.batch_size)
        assert [str(e) for e in a] == [str(e) for e in b] and a
        # a state saved between ask and tell resumes too
        s3 = search.get(name, seed=7, **opts)
        s3.load_state_dict(roundtrip(s.state_dict()))
        results = [(e, contract_fitness(e)) for e in a]
        for t in (s, s2, s3):
            t.tell(results)
        a2 = [[str(e) for e in t.ask(3)] for t in (s, s2, s3)]
        assert a2[0] == a2[1] == a2[2] and a2[0]
        results = [(parse(e), contract_fitness(parse(e))) for e in a2[0]]
        for t in (s, s2, s3):
            t.tell(results)
    assert json.dumps(s.state_dict(), sort_keys=True) == json.dumps(s2.state_dict(),
                                                                   sort_keys=True)

    # determinism per seed; another seed differs
    again = run(search.get(name, seed=3, **opts), contract_fitness, 9)
    assert again == history
    other = run(search.get(name, seed=4, **opts), contract_fitness, 3)
    assert other != history[:3]

    # every proposal is a valid candidate of the space (tuned coefficients may grow GLO trees)
    sp = s.space
    for gen in history:
        for text in gen:
            e = parse(text)
            assert e.variables() >= {"y"} and e.variables() & set(sp.prediction_variables)
            if name not in ("glo", "taylor"):
                assert sp.is_valid(e), text


def test_contract_regression_variables():
    for name in ("autoloss-zero", "aging", "glo", "random"):
        space = spaces.get(search.STRATEGIES[name].default_space, variables=("f", "y"))
        s = search.get(name, space, seed=1, **SMALL[name])
        fit = lambda e: -float(e.size())  # noqa: E731
        run(s, fit, 6)
        for e in s.ask(s.batch_size):
            assert "f" in e.variables() and "p" not in e.variables()
        s2 = search.get(name, space, seed=5, **SMALL[name])
        s2.load_state_dict(roundtrip(s.state_dict()))
        with pytest.raises(ValueError, match="space"):
            search.get(name, seed=5, **SMALL[name]).load_state_dict(s.state_dict())
    s = search.get("taylor", spaces.get("taylor", variables=("f", "y")))
    assert all("f" in e.variables() for e in s.ask(3))


# ---- strategy-specific behaviour ---------------------------------------------------------------
def test_autoloss_zero_regularised_population():
    s = search.get("autoloss-zero", seed=0, population_size=4, batch_size=3)
    first = s.ask(3)
    s.tell([(first[0], 1.0), (first[1], None), (first[2], float("nan"))])
    assert [f for _e, f in s.population] == [1.0]  # rejected never inserted
    while not s.initialised:
        s.tell([(e, 0.5) for e in s.ask(3)])
    assert len(s.population) == 4
    oldest = s.population[0]
    kids = s.ask(2)
    s.tell([(kids[0], -5.0), (kids[1], -6.0)])
    assert oldest not in s.population and len(s.population) == 4
    assert s.population[-1] == (kids[1], -6.0)


def test_autoloss_zero_warns_when_a_generation_would_replace_the_population(caplog):
    with caplog.at_level("WARNING", logger="lossforge.search.evolution"):
        search.get("autoloss-zero", seed=0, population_size=10, batch_size=25)
    assert "replace the whole population" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lossforge.search.evolution"):
        search.get("autoloss-zero", seed=0, population_size=10, batch_size=25, remove="worst")
        search.get("autoloss-zero", seed=0, population_size=40, batch_size=10)
    assert caplog.text == ""


def test_autoloss_zero_remove_worst_keeps_the_best_seen():
    s = search.get("autoloss-zero", seed=0, population_size=3, batch_size=4, remove="worst")
    while not s.initialised:
        s.tell([(e, 0.5) for e in s.ask(4)])
    kids = s.ask(4)
    s.tell([(kids[0], 0.9), (kids[1], 0.1), (kids[2], 0.8), (kids[3], 0.2)])
    assert sorted(f for _e, f in s.population) == [0.5, 0.8, 0.9]


def test_autoloss_zero_keeps_one_member_per_equivalence_class():
    s = search.get("autoloss-zero", seed=0, population_size=4, batch_size=4)
    big, small, other = (parse("-(y * log(p)) * (y + y * 0)"), parse("-(y * log(p))"),
                         parse("square(p - y)"))
    s.tell([(big, Scored(0.7, "A")), (other, Scored(0.5, "B"))])
    s.tell([(small, Scored(0.7, "A"))])           # same class, smaller: takes big's place
    assert s.population == [(small, 0.7), (other, 0.5)] and s.classes == ["A", "B"]
    s.tell([(big, Scored(0.7, "A"))])             # same class, larger: dropped
    assert s.population == [(small, 0.7), (other, 0.5)]
    s.tell([(big, 0.7), (big, scored(0.7, None))])  # class unknown: inserted as before
    assert len(s.population) == 4 and s.classes[2:] == [None, None]
    assert scored(None, "A") is None and isinstance(scored(0.1, "A"), float)
    s2 = search.get("autoloss-zero", seed=0, population_size=4, batch_size=4)
    s2.load_state_dict(roundtrip(s.state_dict()))
    assert s2.population == s.population and s2.classes == s.classes
    old = roundtrip(s.state_dict())               # a state saved before classes were kept
    old["population"] = [m[:2] for m in old["population"]]
    s2.load_state_dict(old)
    assert s2.population == s.population and s2.classes == [None] * 4
    plain = search.get("autoloss-zero", seed=0, population_size=4, batch_size=4, unique=False)
    plain.tell([(big, Scored(0.7, "A")), (small, Scored(0.7, "A"))])
    assert len(plain.population) == 2


def test_autoloss_zero_tournament_ties_go_to_the_smaller_expression():
    s = search.get("autoloss-zero", seed=3, population_size=2, batch_size=1, tournament_size=2)
    big, small = parse("-(y * log(p)) * (y + y * 0)"), parse("-(y * log(p))")
    s.tell([(big, 0.7), (small, 0.7)])
    assert all(s._tournament() is small for _ in range(5))
    s.population = [(big, 0.8), (small, 0.7)]
    assert s._tournament() is big                 # fitness first


def test_aging_screens_then_keeps_the_best():
    s = search.get("aging", seed=0, initial_size=6, population_size=3, batch_size=4)
    c = s.ask(4)
    s.tell([(c[0], 0.1), (c[1], None), (c[2], 0.9), (c[3], 0.5)])
    assert s.phase == "screen" and s.n_screened == 3
    c2 = s.ask(4)
    s.tell([(e, 0.2 + 0.1 * i) for i, e in enumerate(c2)])
    assert s.phase == "evolve"
    fits = [f for _t, _g, f in s.population]
    assert sorted(fits) == [0.5, 0.5, 0.9]
    assert fits == [0.9, 0.5, 0.5]  # aged in proposal order
    kids = s.ask(2)
    assert all(e.op == "sum_c" for e in kids)
    s.tell([(kids[0], 0.0), (kids[1], 0.05)])
    assert [f for _t, _g, f in s.population] == [0.5, 0.0, 0.05]  # the oldest left


def test_aging_orientation_hook():
    s = search.get("aging", seed=0, orient=lambda e: -1)
    assert all(e.op == "neg" for e in s.ask(3))


def test_glo_phases_elites_and_coefficient_form():
    s = search.get("glo", seed=2, population_size=8, gp_generations=3, cma_generations=3,
                   cma_popsize=5)
    n_asked = []
    while len(s.log) < 6:
        cands = s.ask(100)
        n_asked.append(len(cands))
        s.tell([(e, CE(e)) for e in cands])
    phases = [line["phase"] for line in s.log]
    assert phases == ["gp", "gp", "gp", "cma", "cma", "cma"]
    assert n_asked[0] == 8 and all(n < 8 for n in n_asked[1:3])  # elites/copies not re-asked
    assert n_asked[3:] == [5, 5, 5]
    gp_best = max(line["best"] for line in s.log[:3])
    # the best GP tree is what CMA-ES tunes; after the phase it joins the population
    assert s.log[3]["tree"] == s.tuned[0]
    assert s.best[1] >= gp_best
    s.tell([(e, CE(e)) for e in s.ask(100)])
    assert s.phase == "gp" and s.cycle == 1


def test_coefficient_form_starts_at_the_tree():
    e = parse("y * log(p) - 1")
    form = coefficient_form(e)
    assert str(form) == "1 * y * (1 * log(1 * p)) - 1"
    assert form.constants() == [1.0, 1.0, 1.0, 1.0]
    assert torch.allclose(per_sample(form), per_sample(e))
    tuned = form.with_constants([2.0, -1.0, 0.5, 3.0])
    assert torch.allclose(per_sample(tuned),
                          per_sample(parse("2 * y * (-1 * log(0.5 * p)) - 3")))


def test_cma_replay_is_exact():
    r = CMAReplay([0.0, 1.0, -1.0], 0.7, seed=11, popsize=5)
    for g in range(6):
        X = r.ask()
        r.tell([sum(v * v for v in x) + g for x in X])
    X = r.ask()
    state = roundtrip(r.state_dict())
    r2 = CMAReplay.from_state(state)
    assert not r2.replay_mismatch
    assert r2.asked == X
    f = [abs(x[0]) for x in X]
    r.tell(f)
    r2.tell(f)
    assert r.ask() == r2.ask()
    # a global numpy seed does not change anything (own generator)
    np.random.seed(123)
    a = CMAReplay([0.0, 0.0], 1.0, seed=5).ask()
    np.random.seed(456)
    assert CMAReplay([0.0, 0.0], 1.0, seed=5).ask() == a


# ---- TaylorGLO invariant --------------------------------------------------------------------------
def test_taylor_invariant_by_hand():
    # f = y * p, L = -sum_c(y p): only theta5 = 1; dL/dp coefficients: cy = 1, rest 0
    ce_like = [0, 0, 0, 0, 0, 1.0, 0, 0]
    c = taylor_coefficients(ce_like)
    assert c == {"c1": 0, "ch": 0, "chh": 0, "chy": 0, "cy": 1.0, "cyy": 0}
    assert invariant_margin(ce_like, 10) == 1.0 and invariant_holds(ce_like, 10)
    # second-order Taylor expansion of cross-entropy around p = 0.5: y log p ~ y (2(p-.5) - 2(p-.5)^2)
    # theta1 = 0.5, theta5 = 2, theta6 = -2: chy = -4, cy = -2 * 0.5 * (-2) + 2 = 4, the rest 0
    ce_taylor = [0, 0.5, 0, 0, 0, 2.0, -2.0, 0]
    c = taylor_coefficients(ce_taylor)
    assert (c["chy"], c["cy"], c["c1"], c["ch"], c["chh"], c["cyy"]) == (-4, 4, 0, 0, 0, 0)
    assert invariant_margin(ce_taylor, 10) == pytest.approx(4 - 4 / 10)  # 3.6: passes
    assert invariant_margin([0, 0.5, 0, 0, 0, -2.0, 2.0, 0], 10) == pytest.approx(-3.6)
    # wrongly oriented: rewards lowering the true class's probability
    assert invariant_margin([0, 0, 0, 0, 0, -1.0, 0, 0], 10) == -1.0
    assert not invariant_holds([0, 0, 0, 0, 0, -1.0, 0, 0], 10)
    # every coefficient in play, worked out by hand (n = 10):
    theta = [1, 0.5, 0.2, 0.3, 0.1, 1.0, 0.4, 0.2]
    c = taylor_coefficients(theta)
    expected = {"c1": -0.425, "ch": -0.5, "chh": 0.3, "chy": 0.8, "cy": 0.2, "cyy": 0.2}
    for k, v in expected.items():
        assert c[k] == pytest.approx(v)
    # lhs = 0.2 + 0.2 + 0.08 = 0.48; rhs = 8 * (-0.425 - 0.05 + 0.003) = -3.776
    assert invariant_margin(theta, 10) == pytest.approx(0.48 + 3.776)
    # with c1 large and positive the right side dominates: rejected
    assert not invariant_holds([0, 0, 1.0, 0, 0, 1.0, 0, 0], 10)  # 1 < 8 * 1


def test_taylor_asks_only_candidates_that_pass_and_penalises_the_rest():
    s = search.get("taylor", seed=0, popsize=8, num_classes=10)
    seen = 0
    for _ in range(6):
        cands = s.ask(8)
        asked = [e for e in s.entries if e["status"] == "asked"]
        assert len(asked) == len(cands)
        assert all(invariant_holds(sl["theta"], 10) for sl in asked)
        assert all(not invariant_holds(t, 10) for t in s.last_rejected)
        assert len(cands) + len(s.last_rejected) == 8
        assert all(str(e) == str(taylorglo(sl["theta"])) for e, sl in zip(cands, asked))
        seen += len(cands)
        s.tell([(e, CE(e)) for e in cands])
    assert s.n_rejected > 0 and seen + s.n_rejected == 8 * len(s._replay.history)
    off = search.get("taylor", seed=0, popsize=8, check_invariant=False)
    assert len(off.ask(8)) == 8 and off.n_rejected == 0


# ---- evolution beats random search at equal budget ------------------------------------------------
def best_of(name, space, seed, budget, fitness, **opts):
    s = search.get(name, space, seed=seed, **opts)
    best, used = -math.inf, 0
    while used < budget:
        cands = s.ask(min(s.batch_size, budget - used))
        used += len(cands)
        results = [(e, fitness(e)) for e in cands]
        best = max([best] + [f for _e, f in results if f is not None])
        s.tell(results)
    return best


def _bag(expr):
    return Counter(n.op if n.args else str(n) for n in expr.subexpressions())


def structure_fitness(target):
    """Similarity to a target tree: half Jaccard of the distinct subtrees (exact pieces), half
    Jaccard of the bags of ops and leaves (the right ingredients). 1 only for the target; random
    trees of the space rarely get far, hill-climbing does."""
    subtrees, bag = set(target.nodes()), _bag(target)

    def fitness(expr):
        s, b = set(expr.nodes()), _bag(expr)
        return (0.5 * len(s & subtrees) / len(s | subtrees)
                + 0.5 * sum((b & bag).values()) / sum((b | bag).values()))

    return fitness


def constants_fitness(target):
    """-log10 of the mean squared distance between constant vectors (same family: same layout)."""
    t = np.array(target.constants())

    def fitness(expr):
        c = np.array(expr.constants())
        return -math.log10(float(np.mean((c - t) ** 2)) + 1e-12)

    return fitness


TAYLOR_TARGET = [0.2, 0.3, -0.5, 0.4, 0.0, 1.5, -0.6, 0.3]


@pytest.mark.parametrize("name,space,target,budget,opts,margin", [
    ("autoloss-zero", "autoloss-zero", "-sum_c(y * slog(p)) + mean_bs(square(p + -y))", 150, {},
     0.05),
    ("aging", "nlfs", "sum_c(softplus(y - p) * log(p) + y)", 150, {"initial_size": 30}, 0.05),
    ("glo", "glo", "tanh(p - y) * log(p) - square(y) * sqrt(p)", 150,
     {"population_size": 15, "gp_generations": 10}, 0.05),
    ("taylor", "taylor", None, 120, {"popsize": 8, "num_classes": 5}, 0.3),
])
def test_evolution_beats_random_search(name, space, target, budget, opts, margin):
    if target is None:
        assert invariant_holds(TAYLOR_TARGET, 5)
        fitness = constants_fitness(taylorglo(TAYLOR_TARGET))
        seeds = (0, 1)
    else:
        target_expr = parse(target)
        assert spaces.get(space).is_valid(target_expr)
        fitness = structure_fitness(target_expr)
        seeds = (0, 1, 2)
    evo = [best_of(name, space, s, budget, fitness, **opts) for s in seeds]
    rnd = [best_of("random", space, s, budget, fitness) for s in seeds]
    assert np.mean(evo) > np.mean(rnd) + margin, (evo, rnd)


def test_glo_cma_phase_improves_on_its_first_generation():
    # coefficients the GP constants (+-1) cannot reach: only CMA-ES can fit them
    fitness = match_fitness(parse("2.7 * y * log(1.5 * p) * -1 + 0.3 * p"))
    s = search.get("glo", seed=0, population_size=16, gp_generations=6, cma_generations=12,
                   cma_popsize=8)
    while len([line for line in s.log if line["phase"] == "cma"]) < 12:
        cands = s.ask(100)
        s.tell([(e, fitness(e)) for e in cands])
    gp = [line["best"] for line in s.log if line["phase"] == "gp"]
    cma = [line["best"] for line in s.log if line["phase"] == "cma"]
    assert max(cma[6:]) > cma[0]
    assert max(cma) > max(gp)
