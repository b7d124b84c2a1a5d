"""AutoLoss-Zero's ``initial`` option: formulas proposed first; once one has a fitness, children are
mutations of the members (no waiting for a full population of random graphs)."""
from __future__ import annotations

import copy

import pytest

from lossforge.expr import parse, spaces
from lossforge.search.evolution import AutoLossZero

SPACE = spaces.get("autoloss-zero", variables=["f", "y"])


def test_initial_formulas_come_first_then_random_graphs_until_one_passes():
    s = AutoLossZero(SPACE, seed=0, initial=["square(f + -y)"], population_size=20, batch_size=4)
    first = s.ask(4)
    assert str(first[0]) == str(parse("square(f + -y)"))
    s.tell([(e, None) for e in first])            # all rejected: still random graphs
    assert not s.population
    still_random = copy.deepcopy(s)               # same generator state, no member
    s.tell([(first[0], -1.5)])                    # the baseline passes
    children = s.ask(6)
    assert [str(c) for c in children] != [str(c) for c in still_random.ask(6)]
    # every child is one mutation of the only member (not a fresh random graph): it keeps a
    # subtree of square(f + -y) or is a one-node change of it, so it is small
    assert all(c.size() <= parse("square(f + -y)").size() + 3 for c in children)
    assert not s.initialised                      # the population is still growing to 20


def test_without_initial_the_population_fills_with_random_graphs_first():
    s = AutoLossZero(SPACE, seed=0, population_size=3, batch_size=2)
    s.tell([(parse("square(f + -y)"), -1.5)])
    assert not s.initialised
    # the same draws as a fresh strategy: random graphs, not mutations
    fresh = AutoLossZero(SPACE, seed=0, population_size=3, batch_size=2)
    assert [str(e) for e in s.ask(3)] == [str(e) for e in fresh.ask(3)]


def test_an_initial_formula_outside_the_space_is_a_clear_error():
    with pytest.raises(ValueError, match="not a candidate of the space"):
        AutoLossZero(SPACE, seed=0, initial=["square(p + -y)"])


def test_one_formula_as_text_is_one_initial_formula():
    # --option initial=F gives text, not a list: it must not be read as one formula per character
    s = AutoLossZero(SPACE, seed=0, initial="square(f + -y)", population_size=20, batch_size=4)
    assert str(s.ask(1)[0]) == str(parse("square(f + -y)"))
