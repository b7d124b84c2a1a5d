"""Search spaces and variation operators: validity, round-trips, limits, DAG genomes."""
import json

import numpy as np
import pytest

from lossforge.expr import ops, parse, spaces
from lossforge.expr import dag as D
from lossforge.expr import variation as V
from lossforge.expr.expr import apply, var

TREE_SPACES = ["autoloss-zero", "glo"]
SIGNATURES = [("p", "y"), ("f", "y")]


def rng(seed=0):
    return np.random.default_rng(seed)


# ---- spaces -------------------------------------------------------------------------------------
def test_presets_hold_the_published_ops():
    alz = spaces.get("autoloss-zero")
    assert len(alz.unary) + len(alz.binary) == 10
    assert set(alz.binary) == {"add", "mul"}
    assert set(alz.aggregations) == {"mean_c", "sum_c", "mean_s", "mean_bs"}
    assert alz.constants is None
    nlfs = spaces.get("nlfs")
    assert (len(nlfs.unary), len(nlfs.binary)) == (27, 7)
    assert nlfs.kind == "dag" and nlfs.constants == (1.0, -1.0)
    assert (nlfs.dag_hidden, nlfs.hidden_unary_prob, nlfs.root_unary_prob) == (4, 0.7, 0.2)
    glo = spaces.get("glo")
    assert set(glo.unary + glo.binary) == {"add", "sub", "mul", "div", "aq", "log", "sqrt",
                                           "square", "abs", "tanh", "min", "max", "sign"}
    assert glo.constants == (1.0, -1.0)
    taylor = spaces.get("taylor")
    assert taylor.kind == "parametric" and taylor.n_params == 8
    assert set(spaces.names()) == {"autoloss-zero", "glo", "nlfs", "taylor"}


def test_space_variables_are_normalised_and_regression_works():
    s = spaces.get("glo", variables=frozenset({"y", "z", "p"}))
    assert s.variables == ("p", "z", "y")
    assert s.prediction_variables == ("p", "z")
    r = spaces.get("autoloss-zero", variables=frozenset({"f", "y"}))
    assert r.variables == ("f", "y")
    assert r.is_valid(parse("square(f + -y)"))
    assert not r.is_valid(parse("square(p - y)"))  # p is not a variable of the space


def test_space_dict_roundtrip():
    for name in spaces.names():
        s = spaces.get(name, variables=("f", "y"))
        d = json.loads(json.dumps(s.to_dict()))
        assert spaces.SearchSpace.from_dict(d) == s
        assert spaces.get(s) is s


def test_unknown_space_suggests_a_name():
    with pytest.raises(KeyError, match="did you mean 'glo'"):
        spaces.get("gl0")
    with pytest.raises(ValueError, match="label"):
        spaces.SearchSpace(name="x", variables=("p",), unary=("log",))


def test_is_valid_checks_dependence_limits_and_ops():
    s = spaces.get("autoloss-zero")
    assert s.is_valid(parse("-sum_c(y * slog(p))"))
    assert "label" in s.why_invalid(parse("slog(p)"))
    assert "prediction" in s.why_invalid(parse("square(y)"))
    assert "ops outside" in s.why_invalid(parse("-sum_c(y * log(p))"))  # log is not slog
    deep = var("p")
    for _ in range(12):
        deep = apply("exp", deep)
    assert "depth" in s.why_invalid(apply("mul", deep, var("y")))
    big = var("y")
    for _ in range(25):
        big = apply("add", big, var("p"))
    assert "size" in s.why_invalid(big)
    # constant values are never checked (tuned coefficients are fine)
    assert spaces.get("glo").is_valid(parse("0.123 * y * log(p)"))


# ---- random trees ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TREE_SPACES)
@pytest.mark.parametrize("variables", SIGNATURES)
def test_random_expressions_are_valid_roundtrip_and_within_limits(name, variables):
    space = spaces.get(name, variables=variables)
    r = rng(1)
    exprs = [V.random_expr(space, r) for _ in range(80)]
    for e in exprs:
        assert space.is_valid(e), (str(e), space.why_invalid(e))
        assert parse(str(e), variables=space.variables) is e
        assert e.size() <= space.max_size and e.depth() <= space.max_depth
        assert e.depth() <= 6  # default initial depth: plausible graphs
        assert {n.op for n in e.nodes() if n.args} <= space.ops
    assert len({str(e) for e in exprs}) > 60  # variety
    assert max(e.depth() for e in exprs) >= 5


def test_random_expr_is_seeded():
    s = spaces.get("autoloss-zero")
    assert V.random_expr(s, rng(7)) is V.random_expr(s, rng(7))
    r1, r2 = rng(3), rng(3)
    assert [V.random_expr(s, r1) for _ in range(20)] == [V.random_expr(s, r2) for _ in range(20)]


def test_autoloss_zero_uses_aggregations_and_no_constants():
    s = spaces.get("autoloss-zero")
    r = rng(2)
    exprs = [V.random_expr(s, r) for _ in range(100)]
    assert any(n.op in s.aggregations for e in exprs for n in e.nodes())
    assert not any(e.constants() for e in exprs)


# ---- AutoLoss-Zero mutations ------------------------------------------------------------------
@pytest.mark.parametrize("kind", V.MUTATIONS)
@pytest.mark.parametrize("name", TREE_SPACES)
def test_each_mutation_changes_and_keeps_validity(kind, name):
    space = spaces.get(name)
    r = rng(4)
    for _ in range(30):
        e = V.random_expr(space, r)
        child = V.mutate(e, space, r, kinds=(kind,))
        assert child is not e
        assert space.is_valid(child), (str(e), str(child))
        assert parse(str(child)) is child


def test_mutation_kinds_do_what_they_say():
    space = spaces.get("autoloss-zero")
    r = rng(5)
    e = parse("-sum_c(y * slog(p))")
    for _ in range(30):
        ins = V.mutate_insert(e, space, r)
        assert ins.size() > e.size()
        dele = V.mutate_delete(e, space, r)
        assert dele.size() < e.size()
        rep = V.mutate_replace(e, space, r)
        assert rep.size() == e.size() and rep is not e
        assert [n.op for n in rep.subexpressions() if not n.args] == ["var", "var"]
        leaf = V.mutate_leaf(e, space, r)
        assert leaf is None or ([n.op for n in leaf.subexpressions()]
                                == [n.op for n in e.subexpressions()])
    # a leaf-only expression has nothing to delete or replace
    assert V.mutate_delete(var("p"), space, r) is None
    assert V.mutate_replace(var("p"), space, r) is None


def test_replace_at_changes_one_position_of_a_shared_subtree():
    e = parse("p * y + p * y")
    left = V.replace_at(e, (0,), var("y"))
    assert str(left) == "y + p * y"
    assert [p for p, _ in V.positions(e)][:3] == [(), (0,), (0, 0)]


# ---- GP variation ---------------------------------------------------------------------------------
def test_subtree_crossover_swaps_subtrees_and_keeps_validity():
    space = spaces.get("glo")
    r = rng(6)
    swapped = 0
    for _ in range(60):
        a, b = V.random_expr(space, r), V.random_expr(space, r)
        c1, c2 = V.subtree_crossover(a, b, space, r)
        assert space.is_valid(c1) and space.is_valid(c2)
        if c1 is not a and c2 is not b:
            swapped += 1
        if c1 is not a:
            assert parse(str(c1)) is c1
    assert swapped > 30


def test_subtree_crossover_conserves_nodes_for_a_single_swap():
    space = spaces.get("glo", max_size=1000, max_depth=100)
    r = rng(8)
    a = parse("log(p) * y - 1")
    b = parse("tanh(y) + max(p, y)")
    for _ in range(20):
        c1, c2 = V.subtree_crossover(a, b, space, r, max_tries=1)
        if c1 is not a and c2 is not b:
            assert c1.size() + c2.size() == a.size() + b.size()


def test_subtree_mutation_changes_and_keeps_validity():
    space = spaces.get("glo")
    r = rng(9)
    for _ in range(60):
        e = V.random_expr(space, r)
        child = V.subtree_mutation(e, space, r)
        assert child is not e and space.is_valid(child)


# ---- NLFS DAG genomes ---------------------------------------------------------------------------
def _genome(nodes, orientation=1):
    return {"inputs": ["y", "p", "1", "-1"], "nodes": nodes, "aggregation": "sum_c",
            "orientation": orientation}


def test_dag_to_expr_by_hand():
    g = _genome([
        {"op": "log", "in": [1]},        # 4: log(p)
        {"op": "exp", "in": [3]},        # 5: unused
        {"op": "mul", "in": [0, 4]},     # 6: y * log(p)
        {"op": "add", "in": [2, 5]},     # 7: unused
        {"op": "neg", "in": [6]},        # 8 (root): -(y * log(p))
    ])
    assert str(D.dag_to_expr(g)) == "sum_c(-(y * log(p)))"
    g["orientation"] = -1
    e = D.dag_to_expr(g)
    assert e is apply("neg", apply("sum_c", parse("-(y * log(p))")))
    assert spaces.get("nlfs").is_valid(e)
    g2 = _genome([{"op": "sub", "in": [1, 3]}] + [{"op": "abs", "in": [4]}] * 3
                 + [{"op": "mul", "in": [0, 4]}])
    assert str(D.dag_to_expr(g2)) == "sum_c(y * (p - (-1)))"
    assert D.dag_to_expr(g2).constants() == [-1.0]


def test_random_dags_are_valid_json_and_acyclic():
    space = spaces.get("nlfs")
    r = rng(10)
    n_unary_hidden = n_hidden = n_unary_root = 0
    for _ in range(120):
        g = D.random_dag(space, r)
        assert json.loads(json.dumps(g)) == g
        assert len(g["nodes"]) == 5 and g["orientation"] == 1
        for k, node in enumerate(g["nodes"]):
            assert all(0 <= i < 4 + k for i in node["in"])
            assert len(node["in"]) == ops.get(node["op"]).arity
        e = D.dag_to_expr(g)
        assert space.is_valid(e) and e.op == "sum_c"
        assert parse(str(e)) is e
        n_hidden += 4
        n_unary_hidden += sum(len(n["in"]) == 1 for n in g["nodes"][:4])
        n_unary_root += len(g["nodes"][4]["in"]) == 1
    # rates before the validity filter are 0.7 / 0.2; the filter shifts them a little
    assert 0.55 < n_unary_hidden / n_hidden < 0.85
    assert n_unary_root / 120 < 0.45


def test_dag_mutation_changes_the_loss_and_stays_valid():
    space = spaces.get("nlfs", variables=("f", "y"))
    r = rng(11)
    g = D.random_dag(space, r)
    assert g["inputs"] == ["y", "f", "1", "-1"]
    for _ in range(80):
        child = D.mutate_dag(g, space, r)
        assert child is not g
        assert D.dag_to_expr(child) is not D.dag_to_expr(g)
        assert space.is_valid(D.dag_to_expr(child))
        for k, node in enumerate(child["nodes"]):
            assert all(0 <= i < 4 + k for i in node["in"])
            assert len(node["in"]) == ops.get(node["op"]).arity
        g = child


def test_dag_mutation_kinds():
    space = spaces.get("nlfs")
    r = rng(12)
    g = D.random_dag(space, r)
    # only op changes: arities of all nodes stay, wiring stays
    for _ in range(20):
        child = D.mutate_dag(g, space, r, probs=(1, 0, 0))
        assert [n["in"] for n in child["nodes"]] == [n["in"] for n in g["nodes"]]
        # only rewiring: ops stay
        child = D.mutate_dag(g, space, r, probs=(0, 1, 0))
        assert [n["op"] for n in child["nodes"]] == [n["op"] for n in g["nodes"]]
        # only switching: exactly one node changed arity
        child = D.mutate_dag(g, space, r, probs=(0, 0, 1))
        changed = [len(a["in"]) != len(b["in"]) for a, b in zip(child["nodes"], g["nodes"])]
        assert sum(changed) == 1
    assert g == json.loads(json.dumps(g))  # the parent is never modified in place


def test_random_expr_for_dag_space_goes_through_a_genome():
    space = spaces.get("nlfs")
    e = V.random_expr(space, rng(13))
    assert e.op == "sum_c" and space.is_valid(e)
    with pytest.raises(ValueError):
        V.random_expr(spaces.get("taylor"), rng(0))
