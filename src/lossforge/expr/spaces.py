"""Search spaces: which variables, ops, constants and shapes a strategy may build losses from.

A :class:`SearchSpace` is a frozen description; strategies and :mod:`lossforge.expr.variation`
read it. Presets, by name (:func:`get`, :func:`names`):

``autoloss-zero``
    AutoLoss-Zero's 10 primitives (``add mul`` binary; ``neg abs inv slog exp tanh square ssqrt``
    unary, the protected ``Log``/``Sqrt`` of the third-party code), plus the aggregations
    ``mean_c sum_c mean_s mean_bs`` so that IoU/Dice-like ratios are expressible. Leaves: the
    prediction and the label only (no constants). Trees up to depth 12 / 40 nodes.
``glo``
    GLO / EvoMAL operators ``add sub mul div aq log sqrt square abs tanh min max sign``; leaves
    ``y``, the prediction and the constants ``1, -1``. Depth at most 10 (EvoMAL's max height).
``nlfs``
    NLFS's DAG cell (``kind="dag"``): inputs ``y``, the prediction, ``+1``, ``-1``; 4 hidden
    nodes and a root; a hidden node is unary with probability 0.7, the root with 0.2; 27 unary and
    7 binary ops; loss = ``sum_c`` of the root (then the mean), times an orientation ``±1``.
``taylor``
    TaylorGLO's fixed family of third-order Taylor polynomials (``kind="parametric"``, 8
    parameters); built by ``lossforge.zoo.taylorglo``.

Every preset adapts to the task's loss signature: ``get(name, variables=("f", "y"))`` gives the
regression variant (the prediction variable is ``f``). The class prior ``q`` (a classification
variable, constant over the batch) is left out of every preset by default, so a search reads it
only when asked: the variant ``<preset>+q`` (e.g. ``get("glo+q")``, ``--space glo+q``) adds
``q`` as a leaf (a DAG input for ``nlfs+q``), which the long-tail losses of the zoo
(``logit-adjusted``, ``balanced-softmax``, ``cb-focal``) need. ``q`` is neither the label nor a
prediction variable (:data:`CONTEXT_VARIABLES`). The variant ``<preset>+x`` adds the primitives
the expert losses are written with where a tree preset lacks them — ``exp``, ``inv``, ``neg``
and the class aggregations ``sum_c``, ``mean_c`` (GLO has none of these, so it cannot write
GCE's ``p_t^0.7``, NCE's ratio of class sums, or a class-balanced weight); suffixes combine
(``glo+x+q``). Defaults are unchanged: existing searches see neither ``q`` nor the extras.
``tests/test_space_expressiveness.py`` lists which expert loss each space can express. Variables other than the label ``y`` are
*prediction* variables; a valid loss reads ``y`` and at least one prediction variable. Box spaces
(``variables=("i", "u", "e")``) have no label: each of the intersection, union and enclosing areas
depends on both the predicted and the target box, so a valid loss reads at least one of them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Iterable

from lossforge._hints import did_you_mean
from lossforge.expr import ops as _ops
from lossforge.expr.expr import Expr

LABEL = "y"
#: Variables that are neither the label nor a prediction: the class prior ``q``.
CONTEXT_VARIABLES = frozenset({"q"})
#: Name suffix of the preset variants that add the class prior ``q``.
PRIOR_SUFFIX = "+q"
#: Name suffix of the tree-preset variants that add the expert losses' primitives.
EXTRA_SUFFIX = "+x"
EXTRA_OPS = ("exp", "inv", "neg")
EXTRA_AGGREGATIONS = ("sum_c", "mean_c")
#: Variables that depend on both the prediction and the label (box regression): a space made of
#: them only needs no separate label.
JOINT_VARIABLES = frozenset({"i", "u", "e"})
KINDS = ("tree", "dag", "parametric")

# Linear ops: scaling their output equals scaling their inputs (used by GLO's coefficient form).
LINEAR_OPS = frozenset({"add", "sub", "mul", "div", "neg", *_ops.AGGREGATIONS})


class VariationError(RuntimeError):
    """No valid expression of a space could be produced within the allowed number of tries
    (raised by :mod:`lossforge.expr.variation` and :mod:`lossforge.expr.dag`)."""


@dataclass(frozen=True)
class SearchSpace:
    """What candidate losses are made of.

    ``variables``: the loss-signature variables a candidate may read (the label ``y`` included).
    ``unary``/``binary``: op names by arity; ``aggregations``: aggregation ops allowed inside a
    tree (for ``kind="dag"``: the first one wraps the root). ``constants``: the constant leaves
    random generation may use (``None``: none). ``max_depth``/``max_size``: limits of
    :meth:`Expr.depth` / :meth:`Expr.size`. ``kind``: ``"tree"`` (GP / AutoLoss-Zero graphs),
    ``"dag"`` (the NLFS cell, see ``dag_*``) or ``"parametric"`` (a fixed family with
    ``n_params`` parameters, e.g. TaylorGLO).
    """

    name: str
    variables: tuple[str, ...] = ("p", LABEL)
    unary: tuple[str, ...] = ()
    binary: tuple[str, ...] = ()
    aggregations: tuple[str, ...] = ()
    constants: tuple[float, ...] | None = None
    max_depth: int = 10
    max_size: int = 40
    kind: str = "tree"
    # DAG cell (kind == "dag")
    dag_hidden: int = 4
    hidden_unary_prob: float = 0.7
    root_unary_prob: float = 0.2
    # parametric family (kind == "parametric")
    n_params: int = 0
    description: str = field(default="", compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if LABEL not in self.variables and not set(self.variables) <= JOINT_VARIABLES:
            raise ValueError(f"a search space needs the label variable {LABEL!r} among its "
                             f"variables (or box variables only: i, u, e), got {self.variables}")
        if not self.prediction_variables:
            raise ValueError(f"a search space needs a prediction variable besides {LABEL!r}, "
                             f"got {self.variables}")
        for name in self.unary + self.binary + self.aggregations:
            _ops.get(name)  # KeyError naming the known ops
        for name, arity in [(n, 1) for n in self.unary] + [(n, 2) for n in self.binary]:
            if _ops.OPS[name].arity != arity or _ops.OPS[name].aggregation:
                raise ValueError(f"op {name!r} is not a plain {arity}-ary op")
        for name in self.aggregations:
            if not _ops.OPS[name].aggregation:
                raise ValueError(f"op {name!r} is not an aggregation")
        if self.kind == "tree" and not (self.unary or self.binary):
            raise ValueError("a tree space needs at least one op")
        if self.kind == "dag" and not (self.unary and self.binary):
            raise ValueError("a DAG space needs unary and binary ops")

    # ---- derived -------------------------------------------------------------------------------
    @property
    def prediction_variables(self) -> tuple[str, ...]:
        """The variables other than the label and the prior (``p``, ``z``, or ``f``)."""
        return tuple(v for v in self.variables if v != LABEL and v not in CONTEXT_VARIABLES)

    @property
    def ops(self) -> frozenset[str]:
        """Every op a candidate of this space may contain."""
        extra = {"neg"} if self.kind == "dag" else set()  # the orientation -1
        return frozenset(self.unary + self.binary + self.aggregations) | extra

    @property
    def leaves(self) -> tuple[str | float, ...]:
        """Variables then constants: the terminals of random generation."""
        return tuple(self.variables) + tuple(self.constants or ())

    def to_dict(self) -> dict:
        """JSON-able description (``SearchSpace(**d)`` rebuilds it, after tuples are restored)."""
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "SearchSpace":
        tup = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**tup)

    # ---- validity ------------------------------------------------------------------------------
    def why_invalid(self, expr: Expr) -> str | None:
        """Why ``expr`` is not a valid candidate of this space (``None`` when it is).

        Structure only: it reads the label and a prediction variable and no variable outside the
        space; size and depth are within the limits; (tree and DAG spaces) every op belongs to
        the space. Constant *values* are not checked (tuned coefficients are fine).
        """
        used = expr.variables()
        if LABEL not in self.variables:  # box space: i, u, e each read prediction and label
            if not used & set(self.variables):
                return f"reads none of {', '.join(self.variables)}"
        elif LABEL not in used:
            return f"does not depend on the label {LABEL!r}"
        if not used & set(self.prediction_variables):
            return f"does not depend on the prediction ({', '.join(self.prediction_variables)})"
        foreign = sorted(used - set(self.variables))
        if foreign:
            return f"reads variables outside the space: {', '.join(foreign)}"
        if expr.size() > self.max_size:
            return f"size {expr.size()} exceeds max_size={self.max_size}"
        if expr.depth() > self.max_depth:
            return f"depth {expr.depth()} exceeds max_depth={self.max_depth}"
        if self.kind != "parametric":
            allowed = self.ops
            bad = sorted({n.op for n in expr.nodes() if n.args and n.op not in allowed})
            if bad:
                return f"uses ops outside the space: {', '.join(bad)}"
        return None

    def is_valid(self, expr: Expr) -> bool:
        """``True`` when :meth:`why_invalid` finds nothing."""
        return self.why_invalid(expr) is None


# ---- presets -----------------------------------------------------------------------------------
def _alz(variables):
    return SearchSpace(
        name="autoloss-zero",
        variables=variables,
        unary=tuple(_ops.names("autoloss-zero", arity=1)),
        binary=tuple(_ops.names("autoloss-zero", arity=2)),
        aggregations=("mean_c", "sum_c", "mean_s", "mean_bs"),
        constants=None,
        max_depth=12,
        max_size=40,
        kind="tree",
        description="AutoLoss-Zero: 10 primitives + class/spatial/batch mean aggregations",
    )


def _glo(variables):
    return SearchSpace(
        name="glo",
        variables=variables,
        unary=tuple(_ops.names("glo", arity=1)),
        binary=tuple(_ops.names("glo", arity=2)),
        aggregations=(),
        constants=(1.0, -1.0),
        max_depth=10,
        max_size=60,
        kind="tree",
        description="GLO/EvoMAL GP trees over y, the prediction and ±1",
    )


def _nlfs(variables):
    return SearchSpace(
        name="nlfs",
        variables=variables,
        unary=tuple(_ops.names("nlfs", arity=1)),
        binary=tuple(_ops.names("nlfs", arity=2)),
        aggregations=("sum_c",),
        constants=(1.0, -1.0),
        max_depth=10,
        max_size=100,
        kind="dag",
        dag_hidden=4,
        hidden_unary_prob=0.7,
        root_unary_prob=0.2,
        description="NLFS DAG cell: inputs y, prediction, +1, -1; 4 hidden nodes and a root",
    )


def _taylor(variables):
    return SearchSpace(
        name="taylor",
        variables=variables,
        kind="parametric",
        n_params=8,
        max_depth=64,
        max_size=1000,
        description="TaylorGLO third-order Taylor family, 8 parameters (lossforge.zoo.taylorglo)",
    )


_PRESETS = {"autoloss-zero": _alz, "glo": _glo, "nlfs": _nlfs, "taylor": _taylor}


def names() -> list[str]:
    """Names of the preset spaces (each tree/DAG preset also has its ``+q`` variant)."""
    return list(_PRESETS)


def normalize_variables(variables: Iterable[str] | None) -> tuple[str, ...]:
    """A deterministic order: prediction variables sorted, then the label ``y``.

    Accepts any iterable (a task's ``frozenset`` included: its iteration order is not stable
    between processes, so it is never used as is).
    """
    if variables is None:
        return ("p", LABEL)
    if isinstance(variables, str):
        variables = (variables,)
    vs = set(variables)
    context = tuple(sorted(vs & CONTEXT_VARIABLES))
    return tuple(sorted(vs - {LABEL} - CONTEXT_VARIABLES)) + context + \
        ((LABEL,) if LABEL in vs else ())


def get(name: str, variables: Iterable[str] | None = None, **overrides) -> SearchSpace:
    """The preset space ``name`` for the loss signature ``variables`` (default ``p, y``).

    ``overrides`` replace fields (e.g. ``max_depth=8``). Unknown names raise ``KeyError`` with the
    known ones and a close match.
    """
    if isinstance(name, SearchSpace):
        return replace(name, **overrides) if overrides else name
    base, suffixes = _split_variant(name)
    with_prior, extras = PRIOR_SUFFIX in suffixes, EXTRA_SUFFIX in suffixes
    try:
        factory = _PRESETS[base]
    except KeyError:
        known = list(_PRESETS) + [n + PRIOR_SUFFIX for n in _PRESETS if n != "taylor"]
        hint = did_you_mean(name, known)
        raise KeyError(f"unknown search space {name!r}{hint}; known spaces: "
                       f"{', '.join(known)} (tree presets also take +x)") from None
    vs = [v for v in normalize_variables(variables) if v not in CONTEXT_VARIABLES]
    if with_prior:
        if base == "taylor" or "p" not in vs:
            raise ValueError(f"space {name!r}: the class prior q is a variable of classification "
                             f"tree/DAG spaces (variables p, y), not of {base!r} with {vs}")
        vs.append("q")
    space = factory(normalize_variables(vs))
    if extras:
        if space.kind != "tree":
            raise ValueError(f"space {name!r}: {EXTRA_SUFFIX} applies to the tree presets "
                             "(autoloss-zero, glo)")
        space = replace(space, unary=space.unary + tuple(o for o in EXTRA_OPS if o not in space.unary),
                        aggregations=space.aggregations + tuple(
                            a for a in EXTRA_AGGREGATIONS if a not in space.aggregations))
    if suffixes:
        space = replace(space, name=name, description=space.description
                        + "".join({PRIOR_SUFFIX: "; + class prior q",
                                   EXTRA_SUFFIX: "; + exp, inv, neg, sum_c, mean_c"}[x]
                                  for x in suffixes))
    return replace(space, **overrides) if overrides else space


def _split_variant(name: str) -> tuple[str, tuple[str, ...]]:
    """``"glo+x+q"`` -> ``("glo", ("+x", "+q"))``; a name without variant suffixes is itself."""
    if not isinstance(name, str):
        return name, ()
    suffixes: list[str] = []
    while len(name) > 2 and name.endswith((PRIOR_SUFFIX, EXTRA_SUFFIX)):
        suffixes.insert(0, name[-2:])
        name = name[:-2]
    return name, tuple(dict.fromkeys(suffixes))


__all__ = ["SearchSpace", "VariationError", "get", "names", "normalize_variables", "LABEL",
           "LINEAR_OPS", "JOINT_VARIABLES", "CONTEXT_VARIABLES", "PRIOR_SUFFIX", "EXTRA_SUFFIX"]
