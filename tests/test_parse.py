"""The parser: grammar, error messages, limits, and a fuzz test: whatever the text, only
``ParseError`` (a ``ValueError`` naming the position) ever comes out."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lossforge import zoo
from lossforge.expr import ParseError, apply, const, parse, var
from lossforge.expr import ops
from lossforge.expr.parse import MAX_LENGTH

from test_expr import all_var_exprs


def check_parse(text):
    """Parse ``text``: either an Expr that round-trips, or a ParseError describing the problem."""
    try:
        e = parse(text)
    except ParseError as err:
        assert isinstance(err, ValueError)
        assert f"position {err.position}" in str(err)
        assert 0 <= err.position <= max(len(text), MAX_LENGTH)
        assert err.expected
        return err
    assert parse(str(e)) is e
    return e


# ---- grammar ----------------------------------------------------------------------------------
def test_precedence_and_associativity():
    p, y, z = var("p"), var("y"), var("z")
    assert parse("p + y * z") is apply("add", p, apply("mul", y, z))
    assert parse("p - y - z") is apply("sub", apply("sub", p, y), z)
    assert parse("p / y / z") is apply("div", apply("div", p, y), z)
    assert parse("-p * y") is apply("mul", apply("neg", p), y)
    assert parse("-2 * p") is apply("mul", const(-2), p)
    assert parse("-(2)") is apply("neg", const(2))
    assert parse("p * -y") is apply("mul", p, apply("neg", y))
    assert parse("aq(p, y + 1)") is apply("aq", p, apply("add", y, const(1)))
    assert parse(" \t p\n+y ") is apply("add", p, y)
    assert parse("1.5e3 + .5 + 2. + 1E-2") is parse("1500 + 0.5 + 2 + 0.01")


def test_zoo_formulas_parse():
    for name in zoo.names():
        entry = zoo.get(name)
        if entry.formula is not None:
            assert parse(entry.formula) is entry.expr


def test_variables_argument():
    assert parse("f - y", variables=["f", "y"]).variables() == {"f", "y"}
    with pytest.raises(ParseError, match="unknown name 'p'"):
        parse("f - p", variables=["f", "y"])
    assert parse("foo + bar", strict=False).variables() == {"foo", "bar"}
    with pytest.raises(ParseError, match="unknown name 'foo'"):
        parse("foo + p")


# ---- error messages -----------------------------------------------------------------------------
def test_unknown_function_suggests_close_name():
    with pytest.raises(ParseError) as info:
        parse("-sum_c(y * lgo(p))")
    assert "unknown function 'lgo'" in str(info.value)
    assert "did you mean 'log'" in str(info.value)
    assert info.value.position == 11
    with pytest.raises(ParseError, match="did you mean 'mean_s'"):
        parse("mean_sb(p)")
    with pytest.raises(ParseError, match="did you mean 'softplus'"):
        parse("softpuls(z)")


def test_unknown_variable_suggests_close_name():
    with pytest.raises(ParseError, match="unknown name 'pp'") as info:
        parse("log(pp)")
    assert info.value.position == 4
    assert "variables are" in str(info.value)


def test_wrong_arity_names_the_op():
    with pytest.raises(ParseError, match=r"max takes 2 argument\(s\), got 1"):
        parse("max(p)")
    with pytest.raises(ParseError, match=r"log takes 1 argument\(s\), got 2"):
        parse("log(p, y)")
    with pytest.raises(ParseError, match=r"aq takes 2 argument\(s\), got 3"):
        parse("aq(p, y, z)")


@pytest.mark.parametrize("text, position, fragment", [
    ("", 0, "empty"),
    ("   ", 0, "empty"),
    ("p +", 3, "end of text"),
    ("(p + y", 6, "')'"),
    ("p + y)", 5, "')'"),
    ("log", 3, "is a function"),
    ("log()", 4, "')'"),
    ("max(p,)", 6, "')'"),
    ("p $ y", 2, "unexpected character '$'"),
    ("p y", 2, "'y'"),
    ("1e999", 0, "out of range"),
    ("-1e999", 1, "out of range"),
    ("2 ** p", 3, "'*'"),
    ("p + ü", 4, "unexpected character"),
])
def test_error_positions(text, position, fragment):
    with pytest.raises(ParseError) as info:
        parse(text)
    err = info.value
    assert err.position == position, str(err)
    assert fragment in str(err)
    assert f"position {position}" in str(err)
    if len(text) <= 80:  # a caret under the problem
        lines = str(err).splitlines()
        assert lines[-1].index("^") - 2 == position


def test_parse_error_is_exported():
    import lossforge
    from lossforge.expr.parse import ParseError as PE

    assert PE is ParseError and issubclass(ParseError, ValueError)
    assert lossforge.ParseError is ParseError


# ---- limits -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "(" * 10000,
    "(" * 10000 + "p" + ")" * 10000,
    ")" * 10000,
    "log(" * 10000 + "p" + ")" * 10000,
    "log(" * 150 + "p" + ")" * 150,
    "aq(" * 150 + "p" + ", y)" * 150,
    "-" * 10000 + "p",
    "-(" * 5000 + "p" + ")" * 5000,
    "p+" * 49999 + "p",
    "p*" * 300 + "p",
    "1" * 5000,
    "p" * 200_000,
    "1e999",
    "sum_c(" * 99,
])
def test_limits_raise_parse_error_never_recursion(text):
    err = check_parse(text)
    assert isinstance(err, ParseError)


def test_deep_but_allowed_expressions_round_trip():
    e = check_parse("log(" * 60 + "p" + ")" * 60)
    assert e.depth() == 61
    e = check_parse("p + " * 150 + "p")
    assert e.depth() == 151
    assert str(e).count("+") == 150


def test_non_string_input():
    with pytest.raises(ParseError):
        parse(None)  # type: ignore[arg-type]
    with pytest.raises(ParseError):
        parse(b"p + y")  # type: ignore[arg-type]


# ---- fuzzing -----------------------------------------------------------------------------------
TOKENS = (list(ops.OPS) + list(ops.VARIABLES) + ["x", "lgo", "mean_sb", "sum", "_", "pp"]
          + list("()+-*/,.") + [" ", "\t", "0", "1", "2.5", "1e-3", "1e999", "e", "E", "1e",
                                  ".5", "3.", "é", "$", "[", "]", "**", "^", "\x00", "inf", "nan"])

token_soup = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)
VALID = [e.formula for e in map(zoo.get, zoo.names()) if e.formula] + [
    "aq(p, max(y, z)) - 1e-3 * inv1pabs(-z)", "mean_b(mean_s(p * y)) / -(2)"]


@st.composite
def mutated_formulas(draw):
    """A valid formula with a few random cuts, deletions, insertions and duplications."""
    text = draw(st.one_of(st.sampled_from(VALID), all_var_exprs.map(str)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["truncate", "delete", "insert", "duplicate", "swap"]))
        if kind == "truncate":
            text = text[:i]
        elif kind == "delete":
            text = text[:i] + text[i + 1:]
        elif kind == "insert":
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]
        elif kind == "duplicate":
            j = draw(st.integers(i, len(text)))
            text = text[:j] + text[i:j] + text[j:]
        elif len(text) > 1:
            j = draw(st.integers(0, len(text) - 1))
            chars = list(text)
            chars[min(i, len(text) - 1)], chars[j] = chars[j], chars[min(i, len(text) - 1)]
            text = "".join(chars)
    return text


@settings(max_examples=400, deadline=None)
@given(token_soup)
def test_fuzz_token_soup(text):
    check_parse(text)


@settings(max_examples=400, deadline=None)
@given(mutated_formulas())
def test_fuzz_mutated_formulas(text):
    check_parse(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_arbitrary_text(text):
    check_parse(text)
