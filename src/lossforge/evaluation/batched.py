"""Population-vectorised screening: checks, GEC and LRP for many candidates at once.

``run_stage(stage, candidates)`` takes the same decisions as ``stage(candidates)`` (the
per-candidate reference path of :mod:`~lossforge.evaluation.checks`, :mod:`~.gec` and
:mod:`~.lrp`), updates the stage's ``stats`` the same way and sets the same candidate fields, but
evaluates the whole population in a few vectorised passes instead of a Python loop per candidate.

How it works. The pending expressions are compiled into a :class:`Program`:

* *Shared values* (sub-expressions that do not read the prediction: label-only and
  constant-only sub-trees) are computed once per probe, with the reference's own kernels,
  whatever the number of candidates using them (``Expr`` is hash-consed, so a sub-expression
  common to many candidates is one object). Identical candidates are evaluated once.
* Every other node of every candidate is an *instance* (a row): each candidate has its own
  prediction (its own LRP trajectory), so its prediction-dependent values differ from every
  other candidate's.
* Instances are scheduled by topological level and grouped by ``(level, op, argument stores)``:
  one kernel call evaluates an op for all candidates of a group, on arguments gathered (one
  ``index_select`` per level and argument position) from value stores ``(rows, *shape)``.
  Small probes store every value broadcast to the full prediction shape (fewest groups; a
  reduced value's copies are summed where its gradient is needed); large probes store values
  at their true shape. Either way aggregations see the reference's shapes and fitted masks.
* The backward pass is explicit (no autograd graph): the groups are walked in reverse; each
  op's vector-Jacobian product is PyTorch's own derivative formula for the kernel's calls (bit
  for bit; ops without a hand-written one use autograd on the group) and is written to an *edge*
  row; a value's gradient is the sum of its edges, gathered once per level. Rows never mix
  candidates, so a candidate whose values turn non-finite cannot poison the others.
* SGD (with momentum) and Adam are applied to the stacked ``(P, *pred_shape)`` predictions with
  the same tensor operations as ``torch.optim``'s single-tensor implementations; a candidate is
  dead from its first non-finite loss value, like the reference's early stop.

Candidates the program cannot represent (a loss that reads no prediction variable, or a variable
the probe does not provide) go through the reference path, which keeps its exact behaviour
(including its errors). Populations are processed in chunks sized by a memory budget. Differences
from the reference come only from the order of floating-point sums; the label-dependence test of
``checks``, which compares two loss values bit for bit, recomputes near-ties with the reference.
"""
from __future__ import annotations

import math
import weakref

import torch

from lossforge.evaluation.candidate import REJECTED_CHECKS, Candidate
from lossforge.evaluation.probes import Probe
from lossforge.evaluation.stage import timed
from lossforge.expr import apply
from lossforge.expr import kernels as K
from lossforge.expr import ops as _ops
from lossforge.expr.expr import Expr

__all__ = ["Program", "UnsupportedExpr", "run_stage", "checks_reasons", "fingerprints",
           "lrp_scores", "optimise", "chunk_size", "supported", "clear_cache"]

EPS = K.EPS
_LN10 = 2.3025850929940456
LABEL = "y"

#: Default memory budget (bytes) for the value/gradient stores of one chunk.
MEMORY_BUDGET = 512 * 2**20
#: Upper bound on the candidates of one chunk (tiny probes).
MAX_CHUNK = 1024
#: Predictions with at most this many elements: every value is stored at the full shape.
MATERIALIZE_NUMEL = 4096


# ---- per-op forward and backward ---------------------------------------------------------------
# A forward ``fw(args, out)`` writes exactly what ``kernels.k_<op>(*args)`` computes (same torch
# calls in the same order) into ``out`` and returns what its backward needs. A backward
# ``bw(g, args, out, saved, dest, direct)`` writes each argument's vector-Jacobian product into
# ``dest[k]`` (``None``: not needed) with PyTorch's own derivative formula for the kernel's calls:
# per op, bit for bit what autograd gives on the reference path (tests/test_batched.py checks it).
# ``direct[k]``: ``dest[k]`` has the full shape of the product (no broadcast reduction needed).

class _Consts:
    """0-dim tensors of the scalars the kernels use: an operation with a Python number converts
    it to a tensor on every call (same values, same results, more work)."""

    def __init__(self, dtype, device):
        def t(v):
            return torch.tensor(v, dtype=dtype, device=device)

        self.eps, self.one, self.two, self.zero = t(EPS), t(1.0), t(2.0), t(0.0)


_CONSTS: dict = {}


def _c(x: torch.Tensor) -> _Consts:
    key = (x.dtype, x.device)
    c = _CONSTS.get(key)
    if c is None:
        c = _CONSTS[key] = _Consts(x.dtype, x.device)
    return c


def _put(dest, v) -> None:
    """``dest <- v`` reduced (summed) over the dimensions where ``dest`` was broadcast."""
    if v.shape == dest.shape:
        dest.copy_(v)
    else:
        dims = [d for d in range(v.dim()) if dest.shape[d] == 1 and v.shape[d] != 1]
        torch.sum(v, dims, keepdim=True, out=dest)


def _emit(dest, direct, fn, *xs) -> None:
    if direct:
        fn(*xs, out=dest)
    else:
        _put(dest, fn(*xs))


def _fw_kernel(name):
    fn = getattr(K, "k_" + name)

    def fw(a, o):
        o.copy_(fn(*a))

    return fw


def _fw_add(a, o):
    torch.add(a[0], a[1], out=o)


def _fw_sub(a, o):
    torch.sub(a[0], a[1], out=o)


def _fw_mul(a, o):
    torch.mul(a[0], a[1], out=o)


def _fw_div(a, o):
    t = a[1] + _c(a[1]).eps
    torch.div(a[0], t, out=o)
    return t


def _fw_max(a, o):
    torch.maximum(a[0], a[1], out=o)


def _fw_min(a, o):
    torch.minimum(a[0], a[1], out=o)


def _fw_neg(a, o):
    torch.neg(a[0], out=o)


def _fw_abs(a, o):
    torch.abs(a[0], out=o)


def _fw_sign(a, o):
    torch.sign(a[0], out=o)


def _fw_square(a, o):
    torch.mul(a[0], a[0], out=o)


def _fw_sqrt(a, o):
    torch.sqrt(torch.abs(a[0]) + _c(o).eps, out=o)


def _fw_ssqrt(a, o):
    s = torch.sign(a[0])
    r = torch.sqrt(torch.abs(a[0]) + _c(o).eps)
    torch.mul(s, r, out=o)
    return s, r


def _fw_inv(a, o):
    # k_inv is ``1.0 / (x + EPS)``, which torch computes as ``reciprocal(x + EPS) * 1.0``
    torch.reciprocal(a[0] + _c(o).eps, out=o)


def _fw_log(a, o):
    den = torch.abs(a[0]) + _c(o).eps
    torch.log(den, out=o)
    return den


def _fw_slog(a, o):
    s = torch.sign(a[0])
    den = torch.abs(a[0]) + _c(o).eps
    torch.mul(s, torch.log(den), out=o)
    return s, den


def _fw_log10(a, o):
    den = torch.abs(a[0]) + _c(o).eps
    torch.log10(den, out=o)
    return den


def _unary_out(fn):
    def fw(a, o):
        fn(a[0], out=o)

    return fw


def _bw_add(g, a, o, s, d, direct):
    for k in (0, 1):
        if d[k] is not None:
            _put(d[k], g)


def _bw_sub(g, a, o, s, d, direct):
    if d[0] is not None:
        _put(d[0], g)
    if d[1] is not None:
        _emit(d[1], direct[1], torch.neg, g)


def _bw_mul(g, a, o, s, d, direct):
    if d[0] is not None:
        _emit(d[0], direct[0], torch.mul, g, a[1])
    if d[1] is not None:
        _emit(d[1], direct[1], torch.mul, g, a[0])


def _bw_div(g, a, o, t, d, direct):
    if d[0] is not None:
        _emit(d[0], direct[0], torch.div, g, t)
    if d[1] is not None:
        _put(d[1], -g * (o / t))


def _bw_max(g, a, o, s, d, direct):
    eq = a[0] == a[1]
    if d[0] is not None:
        _put(d[0], torch.where(eq, g / 2, g).masked_fill_(a[0] < a[1], 0))
    if d[1] is not None:
        _put(d[1], torch.where(eq, g / 2, g).masked_fill_(a[0] > a[1], 0))


def _bw_min(g, a, o, s, d, direct):
    eq = a[0] == a[1]
    if d[0] is not None:
        _put(d[0], torch.where(eq, g / 2, g).masked_fill_(a[0] > a[1], 0))
    if d[1] is not None:
        _put(d[1], torch.where(eq, g / 2, g).masked_fill_(a[0] < a[1], 0))


def _bw_neg(g, a, o, s, d, direct):
    _emit(d[0], direct[0], torch.neg, g)


def _bw_abs(g, a, o, s, d, direct):
    _emit(d[0], direct[0], torch.mul, g, torch.sign(a[0]))


def _bw_square(g, a, o, s, d, direct):
    t = g * a[0]                       # x * x: both operands receive g * x
    _emit(d[0], direct[0], torch.add, t, t)


def _bw_sqrt(g, a, o, s, d, direct):
    _emit(d[0], direct[0], torch.mul, g / (_c(g).two * o), torch.sign(a[0]))


def _bw_ssqrt(g, a, o, sr, d, direct):
    s, r = sr
    _emit(d[0], direct[0], torch.mul, (g * s) / (_c(g).two * r), s)


def _bw_inv(g, a, o, s, d, direct):
    _emit(d[0], direct[0], torch.mul, -g, o * o)


def _bw_log(g, a, o, den, d, direct):
    _emit(d[0], direct[0], torch.mul, g / den, torch.sign(a[0]))


def _bw_slog(g, a, o, sd, d, direct):
    s, den = sd
    _emit(d[0], direct[0], torch.mul, (g * s) / den, s)


def _bw_log10(g, a, o, den, d, direct):
    _emit(d[0], direct[0], torch.mul, g / (den * _LN10), torch.sign(a[0]))


def _bw_exp(g, a, o, s, d, direct):
    _emit(d[0], direct[0], torch.mul, g, o)


def _tanh_backward(g, o, out=None):
    # autograd's own kernel (a hand-written ``g * (1 - o * o)`` differs in the last bit)
    if out is None:
        return torch.ops.aten.tanh_backward(g, o)
    return torch.ops.aten.tanh_backward.grad_input(g, o, grad_input=out)


def _sigmoid_backward(g, o, out=None):
    if out is None:
        return torch.ops.aten.sigmoid_backward(g, o)
    return torch.ops.aten.sigmoid_backward.grad_input(g, o, grad_input=out)


def _bw_tanh(g, a, o, s, d, direct):
    _emit(d[0], direct[0], _tanh_backward, g, o)


def _bw_sigmoid(g, a, o, s, d, direct):
    _emit(d[0], direct[0], _sigmoid_backward, g, o)


def _bw_relu(g, a, o, s, d, direct):
    _put(d[0], torch.where(o <= 0, 0.0, g))


def _generic_bw(fn):
    """Vector-Jacobian product through autograd on the group (ops without a hand-written one)."""

    def bw(g, args, out, saved, dest, direct):
        needs = [x is not None for x in dest]
        # (screening runs in inference mode: autograd needs ordinary tensors)
        with torch.inference_mode(False), torch.enable_grad():
            xs = [a.clone().requires_grad_(n) for a, n in zip(args, needs)]
            g = g.clone()
            y = fn(*xs)
            if not y.requires_grad:
                grads = [torch.zeros_like(x) for x in xs]
            else:
                wrt = [x for x, n in zip(xs, needs) if n]
                it = iter(torch.autograd.grad(y, wrt, g, allow_unused=True))
                grads = [next(it) if n else None for n in needs]
        for dst, gr, x in zip(dest, grads, xs):
            if dst is not None:
                _put(dst, torch.zeros_like(x) if gr is None else gr)

    return bw


_FW = {"add": _fw_add, "sub": _fw_sub, "mul": _fw_mul, "div": _fw_div, "max": _fw_max,
       "min": _fw_min, "neg": _fw_neg, "abs": _fw_abs, "sign": _fw_sign, "square": _fw_square,
       "sqrt": _fw_sqrt, "ssqrt": _fw_ssqrt, "inv": _fw_inv, "log": _fw_log, "slog": _fw_slog,
       "log10": _fw_log10, "exp": _unary_out(torch.exp), "tanh": _unary_out(torch.tanh),
       "sigmoid": _unary_out(torch.sigmoid), "sin": _unary_out(torch.sin),
       "cos": _unary_out(torch.cos), "sinh": _unary_out(torch.sinh),
       "asinh": _unary_out(torch.asinh), "atan": _unary_out(torch.atan),
       "erf": _unary_out(torch.erf), "erfc": _unary_out(torch.erfc)}
_BW = {"add": _bw_add, "sub": _bw_sub, "mul": _bw_mul, "div": _bw_div, "max": _bw_max,
       "min": _bw_min, "neg": _bw_neg, "abs": _bw_abs, "square": _bw_square, "sqrt": _bw_sqrt,
       "ssqrt": _bw_ssqrt, "inv": _bw_inv, "log": _bw_log, "slog": _bw_slog, "log10": _bw_log10,
       "exp": _bw_exp, "tanh": _bw_tanh, "sigmoid": _bw_sigmoid, "relu": _bw_relu}
#: ops whose derivative is exactly zero everywhere (no gradient flows through them)
_ZERO_GRAD = frozenset({"sign"})


def _opfn(name: str):
    spec = _ops.OPS[name]
    return _FW.get(name) or _fw_kernel(name), _BW.get(name) or _generic_bw(spec.torch_fn)


# ---- shapes ----------------------------------------------------------------------------------
_AGGREGATIONS = frozenset(_ops.AGGREGATIONS)


def _agg_dims(op: str, nd: int) -> tuple[int, ...]:
    spatial = tuple(range(2, nd))
    return {"sum_c": (1,), "mean_c": (1,), "mean_s": spatial, "mean_bs": (0,) + spatial,
            "mean_b": (0,)}[op]


def _reduced(shape: tuple[int, ...], dims: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if d in dims else n for d, n in enumerate(shape))


def _rep(key: tuple[int, ...], true: tuple[int, ...]):
    """Index of the representative copy of a value of shape ``true`` stored broadcast to ``key``
    (with a leading population dimension); ``None`` when the two shapes are equal."""
    if key == true:
        return None
    return (slice(None),) + tuple(slice(0, 1) if t == 1 and k != 1 else slice(None)
                                  for k, t in zip(key, true))


def _broadcast(shapes) -> tuple[int, ...]:
    """Broadcast shape of ``shapes`` (each ``()`` or of one common length, sizes 1 or n)."""
    full = [s for s in shapes if s]
    if not full:
        return ()
    return tuple(max(d) for d in zip(*full))


def _copy_dims(key, true) -> list[int]:
    """Dimensions (population dim first) along which ``key`` holds copies of a ``true`` value."""
    return [d + 1 for d, (k, t) in enumerate(zip(key, true)) if t == 1 and k != 1]


# ---- the compiled population --------------------------------------------------------------------
class UnsupportedExpr(ValueError):
    """The expression cannot be vectorised (it goes through the reference path)."""


class _Group:
    """The instances of one op at one level whose arguments and result share stores.

    ``args[k] = (k, store, lo, hi)``: rows ``lo:hi`` of the level's gather for argument ``k``;
    result rows ``lo:hi`` of store ``out_key`` (``glo:ghi`` in the level's pulled gradients);
    ``dest[k]``: the edge rows receiving argument ``k``'s gradient (``None``: not needed).
    Aggregations also know the true shapes of their argument and result (``ts_in``,
    ``ts_out``), the representative copy of the argument (``rep_in``), the dimensions holding
    copies of the result (``copy_out``) and, once bound to a probe, the fitted mask and counts.
    """

    __slots__ = ("op", "agg", "n", "args", "out_key", "lo", "hi", "glo", "ghi", "dest", "direct",
                 "fw", "bw", "dims", "mask", "count", "divisor", "ts_in", "ts_out", "rep_in",
                 "copy_out", "key_out", "zero")

    def __init__(self, op: str, n: int):
        self.op, self.n = op, n
        self.agg = _ops.OPS[op].aggregation
        self.mask = self.count = None
        self.divisor = 1


class _Level:
    """The groups of one topological level, the gathers of their arguments
    (``gather_rows``: (argument position, store, rows)) and the pulls of their results'
    gradients (``pulls``: (store, first row, rows, plan))."""

    __slots__ = ("gather_rows", "groups", "pulls")

    def __init__(self):
        self.gather_rows = []
        self.groups = []
        self.pulls = []


class Program:
    """A population of expressions compiled for one probe shape.

    ``Program(exprs, probe, device)`` compiles and binds to ``probe`` (label-dependent values,
    masks); :meth:`bind` re-binds to another probe of the same kind and shape (other labels).
    :meth:`run` gives every loss value ``(P,)`` and the gradients ``(P, *pred_shape)`` with respect
    to each candidate's own prediction ``X[i]``. ``materialize``: store every value at the full
    prediction shape (fewest groups: best for small probes); default when the prediction has at
    most :data:`MATERIALIZE_NUMEL` elements. Raises :class:`UnsupportedExpr` for an expression that
    reads no prediction variable or a variable the probe does not provide.
    """

    def __init__(self, exprs: list[Expr], probe: Probe, device=None, dtype=torch.float32,
                 materialize: bool | None = None):
        self.exprs = list(exprs)
        self.P = len(self.exprs)
        self.kind = probe.kind
        self.shape = tuple(probe.pred_shape)
        self.nd = len(self.shape)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else probe.target.device
        if materialize is None:
            materialize = math.prod(self.shape) <= MATERIALIZE_NUMEL
        self.materialize = materialize
        _, self.pred_vars = _variables(probe.kind)
        self._compile()
        self.bind(probe)

    # ---- compile -----------------------------------------------------------------------------
    def _key(self, ts: tuple[int, ...]) -> tuple[int, ...]:
        if self.materialize or len(ts) != self.nd:
            return self.shape if self.materialize else (1,) * self.nd
        return ts

    def _template(self, e: Expr, info: dict) -> "_Template":
        """The instances of one expression, independent of its position in the population:
        ``items[t] = (group key, argument refs)`` in topological order; a ref is an item index,
        a prediction variable's name, or a prediction-free node (a shared value).

        ``info[id(node)]`` (shared by the expressions of a population) caches per node: reads
        the prediction, true shape, level, alias (identity aggregations: the node they stand
        for), group key."""
        ck = (self.kind, self.shape, self.materialize)
        cached = _TEMPLATES.get(e)
        if cached is not None and ck in cached:
            return cached[ck]
        _check(e, self.kind)
        R, nd = self.shape, self.nd
        pred = self.pred_vars
        key = self._key
        index: dict[int, object] = {}    # id(node) -> its ref
        items = []
        shared = []
        uses = [0] * len(pred)
        for n in e.nodes():
            k = id(n)
            nf = info.get(k)
            if nf is None:
                nf = info[k] = self._node_info(n, info, R, nd, pred, key)
            if not nf[0]:
                index[k] = n
            elif n.is_var:
                index[k] = n.value
            elif nf[3] is not None:
                index[k] = index[id(nf[3])]
            else:
                refs = tuple([index[id(a)] for a in n.args])
                for r in refs:
                    tr = type(r)
                    if tr is Expr:
                        shared.append(r)
                    elif tr is str:
                        uses[pred.index(r)] += 1
                index[k] = len(items)
                items.append((nf[4], refs))
        tpl = _Template(items, index[id(e)], self._root_ts(e, info),
                        [(n, info[id(n)][1]) for n in dict.fromkeys(shared)], tuple(uses))
        _TEMPLATES.setdefault(e, {})[ck] = tpl
        return tpl

    @staticmethod
    def _node_info(n: Expr, info: dict, R, nd, pred, key) -> tuple:
        if n.is_var:
            return (n.value in pred, R, 0, None, None)
        if n.is_const:
            return (False, (), 0, None, None)
        a_info = [info[id(a)] for a in n.args]
        pop = any(x[0] for x in a_info)
        lvl = 1 + max(x[2] for x in a_info) if pop else 0
        if n.op in _AGGREGATIONS:
            dims = _agg_dims(n.op, nd)
            t0 = a_info[0][1]
            ts = _reduced(t0 if len(t0) == nd else R, dims)
            if not dims and pop:     # identity (mean_s without spatial dims)
                x = a_info[0]
                return (True, ts, x[2], x[3] if x[3] is not None else n.args[0], None)
            agg_in = t0
        else:
            ts = _broadcast([x[1] for x in a_info])
            agg_in = None
        gk = (lvl, n.op, tuple([key(x[1]) for x in a_info]), key(ts), agg_in) if pop else None
        return (pop, ts, lvl, None, gk)

    @staticmethod
    def _root_ts(e: Expr, info: dict):
        nf = info[id(e)]
        return nf[1] if nf[3] is None else info[id(nf[3])][1]

    def _compile(self) -> None:
        R, P, dev = self.shape, self.P, self.device
        info: dict[int, tuple] = {}
        tpls = [self._template(e, info) for e in self.exprs]
        # candidates reading the prediction equally often side by side: the gradient of the
        # prediction then sums runs of contiguous rows (see _plan). ``order[i]``: the position in
        # the given list of the candidate in row ``i``; ``exprs`` is in row order.
        self.order = sorted(range(P), key=lambda i: tpls[i].uses)
        self.row_exprs = [self.exprs[i] for i in self.order]
        self._order = torch.tensor(self.order, dtype=torch.long, device=dev)
        tpls = [tpls[i] for i in self.order]
        keys: dict[tuple, int] = {}

        def kid(shape) -> int:
            kk = self._key(shape)
            if kk not in keys:
                keys[kk] = len(keys)
            return keys[kk]

        nrows: list[int] = []
        nedges: list[int] = []

        def alloc(counter: list[int], key: int, n: int) -> int:
            while len(counter) <= key:
                counter.append(0)
            lo = counter[key]
            counter[key] += n
            return lo

        kR = kid(R)
        # instances, grouped by (level, op, argument stores, output store, true input shape)
        gmap: dict[tuple, list] = {}
        shared: dict[int, tuple] = {}
        used_vars: set[str] = set()
        for i, tpl in enumerate(tpls):
            for t, (gk, refs) in enumerate(tpl.items):
                members = gmap.get(gk)
                if members is None:
                    gmap[gk] = [(i, t)]
                else:
                    members.append((i, t))
                for r in refs:
                    if type(r) is str:
                        used_vars.add(r)
            if type(tpl.root) is str:
                used_vars.add(tpl.root)
            for n, ts in tpl.shared:
                shared.setdefault(id(n), (n, ts))
        # value rows: shared values, prediction variables, then the groups level by level
        shared_row: dict[int, int] = {}
        self._shared = []
        for k, (n, ts) in shared.items():
            kk = kid(ts)
            shared_row[k] = alloc(nrows, kk, 1)
            self._shared.append((n, kk, shared_row[k]))
        self.var_base = {v: alloc(nrows, kR, P) for v in self.pred_vars if v in used_vars}
        var_base = self.var_base
        cand_rows = [[0] * len(tpl.items) for tpl in tpls]

        def row(r, i: int) -> int:
            if type(r) is int:
                return cand_rows[i][r]
            if type(r) is str:
                return var_base[r] + i
            return shared_row[id(r)]

        # gradient edges: row 0 of every edge store is a zero row (padding of the pull tables)
        edges_to: dict[tuple[int, int], list[int]] = {}   # (key, value row) -> edge rows
        var_edges: dict[str, list[list[int]]] = {v: [[] for _ in range(P)] for v in var_base}

        def add_edge(r, i: int, key: int, e_row: int) -> None:
            if type(r) is int:
                k2 = (key, cand_rows[i][r])
                lst = edges_to.get(k2)
                if lst is None:
                    edges_to[k2] = [e_row]
                else:
                    lst.append(e_row)
            elif type(r) is str:
                var_edges[r][i].append(e_row)

        for gk in gmap:
            kid(gk[3])
            for a in gk[2]:
                kid(a)
        for tpl in tpls:
            kid(tpl.root_ts)
        for kk in range(len(keys)):
            alloc(nedges, kk, 1)
        order = sorted(gmap, key=lambda t: (t[0], t[1], tuple(keys[a] for a in t[2]),
                                            keys[t[3]], str(t[4])))
        levels: dict[int, _Level] = {}
        per_level: dict[int, list] = {}
        nd = self.nd
        for gk in order:
            lvl, op, akeys_s, okey_s, agg_in = gk
            akeys = tuple(keys[a] for a in akeys_s)
            okey = keys[okey_s]
            members = gmap[gk]
            g = _Group(op, len(members))
            g.out_key = okey
            g.lo = alloc(nrows, okey, g.n)
            g.hi = g.lo + g.n
            for j, (i, t) in enumerate(members):
                cand_rows[i][t] = g.lo + j
            levels.setdefault(lvl, _Level()).groups.append(g)
            per_level.setdefault(lvl, []).append((g, akeys, akeys_s, members))
            g.key_out = okey_s
            if g.agg:
                g.ts_in = agg_in
                g.ts_out = _reduced(agg_in, _agg_dims(op, nd))
                g.rep_in = _rep(akeys_s[0], g.ts_in)
                g.copy_out = _copy_dims(okey_s, g.ts_out)
                g.dims = tuple(d + 1 for d in _agg_dims(op, nd))
            else:
                g.fw, g.bw = _opfn(op)
        # gathers of the arguments, per level and argument position/store; edges of the gradients
        for lvl in sorted(levels):
            L = levels[lvl]
            per: dict[tuple[int, int], list[int]] = {}
            for g, akeys, akeys_s, members in per_level[lvl]:
                g.args = []
                g.dest, g.direct = [], []
                zero = g.op in _ZERO_GRAD
                for pos, akey in enumerate(akeys):
                    refs = [tpls[i].items[t][1][pos] for i, t in members]
                    rows_ = per.setdefault((pos, akey), [])
                    a_lo = len(rows_)
                    rows_.extend(row(r, i) for r, (i, _) in zip(refs, members))
                    g.args.append((pos, akey, a_lo, a_lo + g.n))
                    need = not zero and any(type(r) is not Expr for r in refs)
                    if need:
                        e_lo = alloc(nedges, akey, g.n)
                        for j, (r, (i, _)) in enumerate(zip(refs, members)):
                            add_edge(r, i, akey, e_lo + j)
                        g.dest.append((akey, e_lo, e_lo + g.n))
                    else:
                        g.dest.append(None)
                    g.direct.append(akeys_s[pos] == g.key_out)
            L.gather_rows = [(pos, akey, self._index(r)) for (pos, akey), r in per.items()]
        # root edges (constant weights)
        root_cls: dict[tuple, list] = {}
        for i, tpl in enumerate(tpls):
            root_cls.setdefault((kid(tpl.root_ts), tpl.root_ts), []).append(i)
        self._roots = []
        for (kk, tshape), cands in root_cls.items():
            e_lo = alloc(nedges, kk, len(cands))
            rrows = []
            for j, i in enumerate(cands):
                r = tpls[i].root
                rrows.append(row(r, i))
                add_edge(r, i, kk, e_lo + j)
            self._roots.append(_Roots(kk, tshape, torch.tensor(cands, device=dev),
                                      self._index(rrows), e_lo, len(cands)))
            self._roots[-1].rep = _rep(self._key(tshape), tshape)
        self.root_order = torch.cat([r.cands for r in self._roots])
        # pull plans: for each level and output store, the edges into each value row
        for lvl, L in levels.items():
            by_key: dict[int, list[_Group]] = {}
            for g in L.groups:
                by_key.setdefault(g.out_key, []).append(g)
            for kk, gs in by_key.items():
                lo = min(g.lo for g in gs)
                hi = max(g.hi for g in gs)
                for g in gs:
                    g.glo, g.ghi = g.lo - lo, g.hi - lo
                table = [edges_to.get((kk, r), []) for r in range(lo, hi)]
                L.pulls.append((kk, lo, hi - lo, self._plan(table)))
        self._var_pulls = [(v, base, self._plan(var_edges[v])) for v, base in var_base.items()]
        self.levels = [levels[k] for k in sorted(levels)]
        self.keys = [None] * len(keys)
        for sh, kk in keys.items():
            self.keys[kk] = sh
        while len(nrows) < len(keys):
            nrows.append(0)
        while len(nedges) < len(keys):
            nedges.append(1)
        self.kR = kR
        # values are written before they are read; edge rows too, except the zero rows
        self.S = [torch.empty((n, *sh), dtype=self.dtype, device=dev)
                  for n, sh in zip(nrows, self.keys)]
        self.E = [torch.empty((n, *sh), dtype=self.dtype, device=dev)
                  for n, sh in zip(nedges, self.keys)]
        for t in self.E:
            t[0].zero_()
        self.n_instances = sum(g.n for L in self.levels for g in L.groups)
        self.n_groups = sum(len(L.groups) for L in self.levels)
        self._views()

    def _views(self) -> None:
        """The per-step views of the persistent buffers (the eager path)."""
        dev = self.device
        self._zero = torch.zeros((), dtype=self.dtype, device=dev)
        self._bound = self._bind_buffers(self.S, self.E)
        for L in self.levels:
            for g in L.groups:
                g.zero = self._zero

    def _bind_buffers(self, S, E) -> "_Bound":
        """Gather buffers and every view a step reads or writes, for value stores ``S`` and edge
        stores ``E`` (made once: a step then only calls kernels)."""
        dt, dev = self.dtype, self.device
        b = _Bound()
        b.var_views = [(v, S[self.kR][base:base + self.P]) for v, base in self.var_base.items()]
        b.levels = []
        for L in self.levels:
            bufs = {}
            gathers = []
            for pos, kk, idx in L.gather_rows:
                if type(idx) is slice:
                    bufs[(pos, kk)] = S[kk][idx]
                else:
                    buf = torch.empty((len(idx), *self.keys[kk]), dtype=dt, device=dev)
                    bufs[(pos, kk)] = buf
                    gathers.append((S[kk], idx, buf))
            pulled = {}
            pulls = []
            for kk, lo, n, plan in L.pulls:
                buf = torch.empty((n, *self.keys[kk]), dtype=dt, device=dev)
                pulled[kk] = buf
                pulls.append((E[kk], _bind_plan(plan, buf), buf))
            groups = []
            for g in L.groups:
                argv = [bufs[(pos, kk)][lo:hi] for pos, kk, lo, hi in g.args]
                outv = S[g.out_key][g.lo:g.hi]
                gv = pulled[g.out_key][g.glo:g.ghi]
                destv = [None if d is None else E[d[0]][d[1]:d[2]] for d in g.dest]
                if g.agg:
                    # aggregations read the representative copy of their argument and write the
                    # gradient to the representative copy of their edge (the rest stays zero)
                    if g.rep_in is not None:
                        argv = [argv[0][g.rep_in]]
                        if destv[0] is not None:
                            destv[0].zero_()
                            destv = [destv[0][g.rep_in]]
                groups.append((g, argv, outv, gv, destv))
            b.levels.append((gathers, pulls, groups))
        b.var_pulls = []
        for v, base, plan in self._var_pulls:
            buf = torch.empty((self.P, *self.shape), dtype=dt, device=dev)
            b.var_pulls.append((v, E[self.kR], _bind_plan(plan, buf), buf))
        b.roots = []
        for r in self._roots:
            rep = _rep(self.keys[r.key], r.tshape)
            if type(r.idx) is slice:
                src, buf = None, S[r.key][r.idx]
            else:
                src = S[r.key]
                buf = torch.empty((r.n, *self.keys[r.key]), dtype=dt, device=dev)
            b.roots.append((r, src, buf, buf if rep is None else buf[rep]))
        return b

    def _index(self, rows: list[int]):
        if rows and rows == list(range(rows[0], rows[0] + len(rows))):
            return slice(rows[0], rows[0] + len(rows))
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def _plan(self, lists: list[list[int]]):
        """How to sum the gradient edges ``lists[r]`` of value rows ``r``: a gather of every row's
        first edge (edge row 0, the zero row, for none), then per count ``c > 1`` of edges, the
        rows with ``c`` edges and their other ``c - 1`` edges."""
        dev = self.device
        primary = torch.tensor([x[0] if x else 0 for x in lists], dtype=torch.long, device=dev)
        by_count: dict[int, list[int]] = {}
        for r, x in enumerate(lists):
            if len(x) > 1:
                by_count.setdefault(len(x), []).append(r)
        extras = []
        for c, rows in sorted(by_count.items()):
            table = torch.tensor([e for r in rows for e in lists[r][1:]], dtype=torch.long,
                                 device=dev)
            extras.append((self._index(rows), table, c - 1))
        return primary, extras

    # ---- bind to a probe ---------------------------------------------------------------------
    def bind(self, probe: Probe) -> None:
        """Compute the label-dependent values, masks, counts and root weights for ``probe``."""
        if tuple(probe.pred_shape) != self.shape or probe.kind != self.kind:
            raise ValueError("bind() needs a probe of the compiled kind and shape")
        probe = probe.to(self.device)
        dummy = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        env, mask = probe.variables(dummy)
        self.mask = mask
        ref = next(iter(env.values()))
        values: dict[int, torch.Tensor] = {}

        def value(n: Expr) -> torch.Tensor:
            # the reference ``evaluate`` on a prediction-free sub-expression
            if id(n) in values:
                return values[id(n)]
            if n.is_var:
                out = env[n.value]
            elif n.is_const:
                out = torch.tensor(n.value, dtype=ref.dtype, device=ref.device)
            else:
                spec = _ops.OPS[n.op]
                args = [value(a) for a in n.args]
                if spec.aggregation:
                    arg = args[0]
                    if arg.dim() < ref.dim():
                        arg = arg.expand_as(ref)
                    out = spec.torch_fn(arg, mask)
                else:
                    out = spec.torch_fn(*args)
            values[id(n)] = out
            return out

        with torch.no_grad():
            for n, kk, r in self._shared:
                v = value(n)
                self.S[kk][r].copy_(v.reshape((1,) * self.nd) if v.dim() == 0 else v)
            for L in self.levels:
                for g in L.groups:
                    if not g.agg:
                        continue
                    dims = tuple(d - 1 for d in g.dims)
                    if mask is None or g.op in ("sum_c", "mean_c"):
                        g.mask = g.count = None
                        g.divisor = math.prod(g.ts_in[d] for d in dims)
                    else:
                        m = K._fit_mask(mask, torch.empty(g.ts_in, device=self.device))
                        g.mask = m.unsqueeze(0)
                        g.count = m.to(self.dtype).sum(dim=dims, keepdim=True).clamp_min(1.0) \
                            .unsqueeze(0)
            one = torch.ones((), dtype=self.dtype, device=self.device)
            for r in self._roots:
                if mask is None:
                    w = one.expand(r.tshape) / math.prod(r.tshape)
                    r.mask = r.count = None
                else:
                    m = K._fit_mask(mask, torch.empty(r.tshape, device=self.device))
                    r.count = m.sum().clamp_min(1)
                    w = torch.where(m, one / r.count, 0.0)
                    r.mask = m.unsqueeze(0)
                dest = self.E[r.key][r.e_lo:r.e_lo + r.n]
                dest.zero_()
                rep = dest if r.rep is None else dest[r.rep]
                rep.copy_(w.unsqueeze(0).expand(r.n, *r.tshape))

    # ---- evaluation ----------------------------------------------------------------------------
    def run(self, X: torch.Tensor, grad: bool = True):
        """Loss values ``(P,)`` and (``grad=True``) gradients ``(P, *pred_shape)`` at the
        predictions ``X (P, *pred_shape)``: ``X[i]`` is the prediction of ``exprs[i]``."""
        with torch.no_grad():
            v, dX = self._step(X.index_select(0, self._order), grad)
            return self.to_given(self.roots_to_rows(v)), (None if dX is None else
                                                          self.to_given(dX))

    def roots_to_rows(self, v: torch.Tensor) -> torch.Tensor:
        """Per-candidate values from the step's root order to row order."""
        out = torch.empty_like(v)
        out[self.root_order] = v
        return out

    def to_given(self, t: torch.Tensor) -> torch.Tensor:
        """Per-candidate rows (row order) to the order of the expressions given."""
        out = torch.empty_like(t)
        out[self._order] = t
        return out

    def _step(self, X, grad, bound=None):
        """(values in root order, gradients in candidate order)."""
        b = bound or self._bound
        soft = None
        for v, view in b.var_views:
            if v == "p":
                soft = torch.softmax(X, dim=2)
                view.copy_(soft)
            else:
                view.copy_(X)
        index_select = torch.index_select
        saved = []
        for gathers, _, groups in b.levels:
            for src, idx, buf in gathers:
                index_select(src, 0, idx, out=buf)
            for g, argv, outv, _, _ in groups:
                saved.append(_agg_fw(g, argv[0], outv) if g.agg else g.fw(argv, outv))
        vals = []
        for r, src, buf, x in b.roots:
            if src is not None:
                index_select(src, 0, r.idx, out=buf)
            # one flat reduction per candidate, as the reference's ``x.mean()`` / ``x.sum()``
            if r.mask is None:
                vals.append(x.reshape(r.n, -1).mean(1))
            else:
                vals.append(torch.where(r.mask, x, self._zero).reshape(r.n, -1).sum(1) / r.count)
        values = vals[0] if len(vals) == 1 else torch.cat(vals)
        if not grad:
            return values, None
        k = len(saved)
        for _, pulls, groups in reversed(b.levels):
            for E, plan, buf in pulls:
                _pull(E, plan, buf)
            k -= len(groups)
            for (g, argv, outv, gv, destv), sv in zip(groups, saved[k:k + len(groups)]):
                if g.agg:
                    _agg_bw(g, gv, destv[0])
                else:
                    g.bw(gv, argv, outv, sv, destv, g.direct)
        dX = None
        for v, E, plan, buf in b.var_pulls:
            gv = _pull(E, plan, buf)
            if v == "p":
                gv = torch._softmax_backward_data(gv, soft, 2, X.dtype)
            dX = gv.clone() if dX is None and v != "p" else (gv if dX is None else dX + gv)
        if dX is None:
            dX = torch.zeros_like(X)
        return values, dX


class _Bound:
    """Per-step buffers and views of a :class:`Program` (see ``_bind_buffers``)."""

    __slots__ = ("var_views", "levels", "var_pulls", "roots")


class _Template:
    """One expression compiled for a probe shape (see :meth:`Program._template`)."""

    __slots__ = ("items", "root", "root_ts", "shared", "uses")

    def __init__(self, items, root, root_ts, shared, uses):
        self.items, self.root, self.root_ts, self.shared = items, root, root_ts, shared
        self.uses = uses


#: Expr -> {(kind, shape, materialize): _Template}; entries go with their expression.
_TEMPLATES: "weakref.WeakKeyDictionary[Expr, dict]" = weakref.WeakKeyDictionary()


def clear_cache() -> None:
    """Forget the compiled templates of every expression (benchmarks; memory)."""
    _TEMPLATES.clear()


class _Roots:
    """The ``n`` candidates ``cands`` whose roots (value rows ``idx`` of store ``key``, true
    shape ``tshape``) are reduced alike; their constant gradients are edge rows ``e_lo:e_lo+n``.
    ``rep``: the representative copy of a stored root; ``mask``/``count``: the reference's
    ``reduce_loss`` mask fitted to the root and its count (set by ``bind``)."""

    __slots__ = ("key", "tshape", "cands", "idx", "e_lo", "n", "rep", "mask", "count")

    def __init__(self, key, tshape, cands, idx, e_lo, n):
        self.key, self.tshape, self.cands, self.idx, self.e_lo, self.n = \
            key, tshape, cands, idx, e_lo, n
        self.rep = self.mask = self.count = None


def _bind_plan(plan, buf):
    primary, extras = plan
    return primary, [(rows, buf[rows] if type(rows) is slice else None, table, d)
                     for rows, table, d in extras]


def _pull(E, plan, buf):
    """``buf[r] = sum of the edge rows of value row r`` (the gradient of the value in row ``r``)."""
    primary, extras = plan
    torch.index_select(E, 0, primary, out=buf)
    for rows, view, table, d in extras:
        t = torch.index_select(E, 0, table)
        if d > 1:
            t = t.view(-1, d, *t.shape[1:]).sum(1)
        if view is not None:
            view.add_(t)
        else:
            buf.index_put_((rows,), buf.index_select(0, rows).add_(t))
    return buf


def _agg_fw(g: _Group, x, out):
    """``out`` <- the aggregation of ``x`` (the representative copy of the argument)."""
    if g.op == "sum_c":
        r = x.sum(dim=2, keepdim=True)
    elif g.mask is None:
        r = x.mean(dim=g.dims, keepdim=True)
    else:
        r = torch.where(g.mask, x, g.zero).sum(dim=g.dims, keepdim=True) / g.count
    out.copy_(r)


def _agg_bw(g: _Group, go, dest):
    """``go`` holds the gradients of every stored copy of the (reduced) result: their sum is the
    gradient of the result. ``dest``: the representative copy of the argument's edge slot."""
    if dest is None:
        return
    if g.copy_out:
        go = go.sum(dim=g.copy_out, keepdim=True)
    if g.op == "sum_c":
        dest.copy_(go)
    elif g.mask is None:
        dest.copy_(go / g.divisor)
    else:
        torch.where(g.mask, go / g.count, g.zero, out=dest)


def _variables(kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(variables a probe of ``kind`` provides, the prediction variables among them)."""
    if kind == "classification":
        return ("p", "y", "z"), ("p", "z")
    return ("f", "y"), ("f",)


def _check(e: Expr, kind: str) -> None:
    provided, pred = _variables(kind)
    v = e.variables()
    if v - set(provided):
        raise UnsupportedExpr(f"{e} reads {sorted(v - set(provided))}, which the probe does "
                              "not provide")
    if not v & set(pred):
        raise UnsupportedExpr(f"{e} does not read a prediction variable")


def supported(e: Expr, probe: Probe) -> bool:
    """Can :class:`Program` evaluate ``e`` on ``probe``?"""
    try:
        _check(e, probe.kind)
        return True
    except UnsupportedExpr:
        return False


# ---- chunking -----------------------------------------------------------------------------------
def chunk_size(exprs: list[Expr], probe: Probe, budget: int = MEMORY_BUDGET) -> int:
    """Candidates per chunk so that one chunk's buffers stay within ``budget`` bytes.

    Estimate: every node of a candidate (its tree size, an upper bound on its rows) costs about
    6 tensors of the prediction's size (value, gathered arguments, gradient edges, pulled
    gradients, saved intermediates).
    """
    if not exprs:
        return 1
    numel = math.prod(probe.pred_shape)
    sizes = [e.size() for e in exprs[:4096]]
    rows = sum(sizes) / len(sizes) + 0.05 * max(sizes) + 2
    per = rows * numel * 4 * 6
    return int(max(1, min(MAX_CHUNK, budget // per)))


def _unique(exprs: list[Expr]) -> tuple[list[Expr], list[int]]:
    first: dict[Expr, int] = {}
    uniq: list[Expr] = []
    where = []
    for e in exprs:
        if e not in first:
            first[e] = len(uniq)
            uniq.append(e)
        where.append(first[e])
    return uniq, where


def _programs(exprs: list[Expr], probe: Probe, device, chunk: int | None):
    """Yield (indices into ``exprs``, Program) per chunk; unsupported expressions are left out
    (their result stays ``None`` for the caller to compute with the reference)."""
    ok = [j for j, e in enumerate(exprs) if supported(e, probe)]
    size = chunk or chunk_size([exprs[j] for j in ok], probe)
    for lo in range(0, len(ok), size):
        idx = ok[lo:lo + size]
        yield idx, Program([exprs[j] for j in idx], probe, device)


def _resolve_device(stage, device) -> torch.device:
    if device is None:
        device = getattr(stage, "device", None)
    if device is None:
        return stage.probe.target.device
    return torch.device(device)


def _stacked(pred: torch.Tensor, n: int, device, dtype) -> torch.Tensor:
    return pred.to(device=device, dtype=dtype).unsqueeze(0).expand(n, *pred.shape).contiguous()


def _reference_value(expr: Expr, probe: Probe, pred: torch.Tensor) -> torch.Tensor:
    from lossforge.expr.export import loss_value

    env, mask = probe.variables(pred)
    return loss_value(expr, env, mask)


# ---- stage 1: checks ----------------------------------------------------------------------------
def checks_reasons(exprs: list[Expr], probe: Probe, pred: torch.Tensor, alt: Probe,
                   device=None, chunk: int | None = None) -> list[str | None]:
    """:func:`~lossforge.evaluation.checks.numeric_reason` of every expression, vectorised
    (``None`` for an expression the program does not support: use the reference for it)."""
    uniq, where = _unique(exprs)
    res: list[str | None] = [None] * len(uniq)
    dev = torch.device(device) if device is not None else probe.target.device
    with torch.inference_mode():
        for idx, prog in _programs(uniq, probe, dev, chunk):
            X = _stacked(pred, len(idx), dev, prog.dtype)
            v1, g1 = prog.run(X)
            prog.bind(alt)
            v2, g2 = prog.run(X)
            flat1, flat2 = g1.flatten(1), g2.flatten(1)
            fin_v = torch.isfinite(v1)
            fin_g = torch.isfinite(flat1).all(1)
            zero = flat1.abs().amax(1).double() <= 1e-12
            close = ((flat2 - flat1).abs() <= 1e-8 + 1e-5 * flat1.abs()).all(1)
            # label dependence: the reference compares the two values to ~1e-9, i.e. bit for bit
            # in float32, and its last bits depend on the summation order (even on the memory
            # layout). Values that are equal up to rounding are recomputed with the reference.
            v1d, v2d = v1.double(), v2.double()
            diff = (v2d - v1d).abs()
            same_v = torch.isfinite(v2) & (diff <= 1e-9 * (1 + v1d.abs()))
            near = torch.isfinite(v2) & fin_v & (diff <= 1e-4 * (1 + v1d.abs())) & close
            for j in near.nonzero().flatten().tolist():
                e = prog.exprs[j]   # run() answers in the given order
                a, b = _reference_value(e, probe, pred), _reference_value(e, alt, pred)
                same_v[j] = bool(torch.isfinite(b)) and \
                    abs(float(b - a)) <= 1e-9 * (1 + abs(float(a)))
            flags = torch.stack([fin_v, fin_g, zero, same_v & close]).cpu().tolist()
            for j, (fv, fg, zg, nodep) in zip(idx, zip(*flags)):
                if not fv:
                    res[j] = "non-finite value on the probe"
                elif not fg:
                    res[j] = "non-finite gradient on the probe"
                elif zg:
                    res[j] = "zero gradient with respect to the prediction"
                elif nodep:
                    res[j] = "does not depend on the label"
                else:
                    res[j] = ""
    return [res[w] for w in where]


def _run_checks(stage, candidates: list[Candidate], device, chunk) -> None:
    from lossforge.evaluation.checks import integrity, numeric_reason, structural_reason

    with timed(stage.stats):
        pending = [c for c in candidates if not c.done]
        reasons: dict[int, str | None] = {}
        numeric: list[Candidate] = []
        for c in pending:
            stage.stats.n_in += 1
            why = structural_reason(c.expr)
            if not why and stage.config.integrity and stage.probe.kind == "classification":
                why, flip = integrity(c.expr, stage.config.integrity_points)
                if not why and flip:
                    c.expr = apply("neg", c.expr)
            if why:
                reasons[id(c)] = why
            else:
                numeric.append(c)
        found = checks_reasons([c.expr for c in numeric], stage.probe, stage.pred, stage.alt,
                               device, chunk)
        for c, why in zip(numeric, found):
            if why is None:  # not vectorisable: the reference decides (and raises what it raises)
                why = numeric_reason(c.expr, stage.probe, stage.pred, stage.alt)
            reasons[id(c)] = why
        for c in pending:
            why = reasons[id(c)]
            if why:
                c.reject(REJECTED_CHECKS, why)
            else:
                stage.stats.n_out += 1


# ---- stage 2: GEC -------------------------------------------------------------------------------
def fingerprints(exprs: list[Expr], probe: Probe, pred: torch.Tensor, device=None,
                 chunk: int | None = None) -> list[tuple[bool, str | None]]:
    """``(done, fingerprint)`` per expression, vectorised; ``done`` is False for an expression the
    program does not support (compute it with the reference)."""
    uniq, where = _unique(exprs)
    res: list[tuple[bool, str | None]] = [(False, None)] * len(uniq)
    dev = torch.device(device) if device is not None else probe.target.device
    with torch.inference_mode():
        for idx, prog in _programs(uniq, probe, dev, chunk):
            _, g = prog.run(_stacked(pred, len(idx), dev, prog.dtype))
            norms = g.flatten(2).norm(dim=2).cpu().tolist()
            for j, row in zip(idx, norms):
                res[j] = (True, _format_fingerprint(row))
    return [res[w] for w in where]


def _format_fingerprint(norms: list[float]) -> str | None:
    """:func:`~lossforge.evaluation.gec.format_fingerprint` of a row of floats."""
    if not all(math.isfinite(v) for v in norms):
        return None
    return ",".join(f"{v:.1e}" for v in norms)


def _run_gec(stage, candidates: list[Candidate], device, chunk) -> None:
    with timed(stage.stats):
        pending = [c for c in candidates if not c.done]
        found = fingerprints([c.expr for c in pending], stage.probe, stage.pred, device, chunk)
        for c, (ok, fp) in zip(pending, found):
            c.fingerprint = fp if ok else stage.fingerprint(c.expr)
            stage.mark(c)


# ---- stage 3: LRP -------------------------------------------------------------------------------
def optimise(prog: Program, init: torch.Tensor, config) -> tuple[torch.Tensor, torch.Tensor]:
    """The protocol's optimisation for every candidate of ``prog`` at once, from the common
    initial predictions ``init``. Returns (final predictions ``(P, *shape)``, ``alive (P,)``):
    ``alive[i]`` is False once candidate ``i``'s loss value was non-finite at some step (its
    predictions are then meaningless; the other candidates are unaffected).

    ``config.optimizer``: ``"sgd"`` (momentum, no dampening/Nesterov/weight decay, as
    ``torch.optim.SGD``) or ``"adam"`` (``torch.optim.Adam`` defaults), applied with the same
    tensor operations as torch's single-tensor implementations.
    """
    P = prog.P
    with torch.inference_mode():
        X = _stacked(init, P, prog.device, prog.dtype)
        alive = torch.ones(P, dtype=torch.bool, device=prog.device)   # in root order
        lr, momentum = config.lr, config.momentum
        step = prog._step
        if config.optimizer == "sgd":
            buf = None
            for _ in range(config.steps):
                values, g = step(X, True)
                alive.logical_and_(torch.isfinite(values))
                if momentum != 0:
                    if buf is None:
                        buf = g.clone()
                    else:
                        buf.mul_(momentum).add_(g)
                    g = buf
                X.add_(g, alpha=-lr)
        elif config.optimizer == "adam":
            beta1, beta2, eps = 0.9, 0.999, 1e-8
            m = torch.zeros_like(X)
            v = torch.zeros_like(X)
            for t in range(1, config.steps + 1):
                values, g = step(X, True)
                alive.logical_and_(torch.isfinite(values))
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                bias1 = 1 - beta1 ** t
                bias2 = 1 - beta2 ** t
                denom = (v.sqrt() / bias2 ** 0.5).add_(eps)
                X.addcdiv_(m, denom, value=-(lr / bias1))
        else:
            raise ValueError(f"unknown optimizer {config.optimizer!r}; use 'sgd' or 'adam'")
        alive = prog.to_given(prog.roots_to_rows(alive))
    return prog.to_given(X), alive


def lrp_scores(exprs: list[Expr], probe: Probe, metric, config, init: torch.Tensor,
               device=None, chunk: int | None = None) -> list[tuple[bool, float | None]]:
    """``(done, score)`` per expression as :func:`~lossforge.evaluation.lrp.lrp_score`, vectorised;
    ``done`` is False for an expression the program does not support (use the reference)."""
    from lossforge.evaluation.lrp import metric_value

    uniq, where = _unique(exprs)
    res: list[tuple[bool, float | None]] = [(False, None)] * len(uniq)
    dev = torch.device(device) if device is not None else probe.target.device
    target = probe.target.cpu().numpy()
    base = metric_value(metric, probe, init)
    with torch.inference_mode():
        for idx, prog in _programs(uniq, probe, dev, chunk):
            X, alive = optimise(prog, init, config)
            ok = (alive & torch.isfinite(X).flatten(1).all(1)).cpu().tolist()
            # each candidate's metric, as lrp.metric_value (argmax of the logits)
            labels = (X.argmax(dim=2) if probe.kind == "classification" else X).cpu().numpy()
            for j, good, lab in zip(idx, ok, labels):
                if good:
                    res[j] = (True, metric.sign * (float(metric.fn(lab, target)) - base))
                else:
                    res[j] = (True, None)
    return [res[w] for w in where]


def _run_lrp(stage, candidates: list[Candidate], device, chunk) -> None:
    with timed(stage.stats):
        pending = [c for c in candidates if not c.done]
        found = lrp_scores([c.expr for c in pending], stage.probe, stage.metric, stage.config,
                           stage.init, device, chunk)
        for c, (ok, score) in zip(pending, found):
            stage.decide(c, score if ok else stage.score(c.expr))


# ---- entry point --------------------------------------------------------------------------------
def run_stage(stage, candidates: list[Candidate], device=None, chunk: int | None = None) -> None:
    """Run the screening ``stage`` on ``candidates`` with the vectorised path.

    ``stage``: a :class:`~lossforge.evaluation.checks.Checks`,
    :class:`~lossforge.evaluation.gec.GradientEquivalence` or
    :class:`~lossforge.evaluation.lrp.LossRejection` (any other stage runs as
    ``stage(candidates)``). Same decisions, candidate fields and ``stage.stats`` as the reference
    path. ``device``: where to compute (default: the stage's ``device`` attribute when it has one,
    else the device of its probe), e.g. ``"cuda"``; ``chunk``: candidates per vectorised pass
    (default: sized by :data:`MEMORY_BUDGET`).
    """
    from lossforge.evaluation.checks import Checks
    from lossforge.evaluation.gec import GradientEquivalence
    from lossforge.evaluation.lrp import LossRejection

    if isinstance(stage, Checks):
        _run_checks(stage, candidates, _resolve_device(stage, device), chunk)
    elif isinstance(stage, GradientEquivalence):
        _run_gec(stage, candidates, _resolve_device(stage, device), chunk)
    elif isinstance(stage, LossRejection):
        _run_lrp(stage, candidates, _resolve_device(stage, device), chunk)
    else:
        stage(candidates)
