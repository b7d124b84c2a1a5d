"""Population-vectorised screening: checks, GEC and LRP for many candidates at once.

``run_stage(stage, candidates)`` takes the same decisions as ``stage(candidates)`` (the
per-candidate reference path of :mod:`checks`, :mod:`gec` and :mod:`lrp`), updates the stage's
``stats`` the same way and sets the same candidate fields, but evaluates the whole population in
one vectorised pass instead of one Python loop per candidate.

How it works. The pending expressions are compiled into a :class:`Program`:

* *Shared nodes* (sub-expressions that do not read the prediction: label-only and constant-only
  sub-trees) are computed once per probe, whatever the number of candidates using them
  (``Expr`` is hash-consed, so a sub-expression shared by many candidates is one object).
* Every other node of every candidate is an *instance* (a row): each candidate has its own
  prediction (its own LRP trajectory), so its prediction-dependent values differ from every
  other candidate's. Identical candidates are evaluated once.
* Instances are scheduled by topological level and grouped by ``(level, op, argument shapes)``:
  one kernel call evaluates the op for every candidate of the group, on arguments gathered by
  index from per-shape value stores ``(rows, *shape)``. Values keep the reduced dimensions of
  aggregations (``sum_c`` gives ``(B, 1, *S)``), exactly as :func:`~lossforge.expr.export.evaluate`
  does, so masked means see the same fitted masks.
* The backward pass is explicit (no autograd graph): the group schedule is walked in reverse, each
  op's vector-Jacobian product follows PyTorch's own derivative formula for the kernel (ops
  without a hand-written one use autograd on the group) and gradients are scattered back with
  ``index_add_``. Rows never mix candidates, so a candidate whose values turn non-finite cannot
  poison the others; it is marked dead at the first non-finite loss value, like the reference.
* SGD (with momentum) and Adam are applied to the stacked ``(P, *pred_shape)`` predictions with
  the same tensor operations as ``torch.optim``'s single-tensor implementations.

Candidates the program cannot represent (a loss that reads no prediction variable, or a variable
the probe does not provide) go through the reference path, which keeps its exact behaviour
(including its errors). Populations are processed in chunks sized by a memory budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lossforge.evaluation.candidate import REJECTED_CHECKS, Candidate
from lossforge.evaluation.probes import Probe
from lossforge.evaluation.stage import timed
from lossforge.expr import apply
from lossforge.expr import kernels as K
from lossforge.expr import ops as _ops
from lossforge.expr.expr import Expr

__all__ = ["Program", "run_stage", "checks_reasons", "fingerprints", "lrp_scores", "chunk_size"]

EPS = K.EPS
_LN10 = 2.3025850929940456
LABEL = "y"

#: Default memory budget (bytes) for the value/gradient stores of one chunk.
MEMORY_BUDGET = 192 * 2**20
#: Upper bound on the candidates of one chunk (tiny probes).
MAX_CHUNK = 1024


# ---- per-op forward (value, saved) and backward (vector-Jacobian product) -----------------------
# Forward functions compute exactly what ``kernels.k_<op>`` computes (same torch calls in the
# same order); backward functions follow PyTorch's derivative formulas for those calls, so that
# gradients agree with autograd on the reference path (up to the order of accumulation).

def _kernel_fw(name):
    fn = getattr(K, "k_" + name)

    def fw(*args):
        return fn(*args), None

    return fw


def _fw_log(x):
    den = torch.abs(x) + EPS
    return torch.log(den), (den,)


def _fw_slog(x):
    s = torch.sign(x)
    den = torch.abs(x) + EPS
    return s * torch.log(den), (s, den)


def _fw_log10(x):
    den = torch.abs(x) + EPS
    return torch.log10(den), (den,)


def _fw_ssqrt(x):
    s = torch.sign(x)
    r = torch.sqrt(torch.abs(x) + EPS)
    return s * r, (s, r)


def _fw_div(a, b):
    t = b + EPS
    return a / t, (t,)


_FW = {
    "log": _fw_log, "slog": _fw_slog, "log10": _fw_log10, "ssqrt": _fw_ssqrt, "div": _fw_div,
}

# backward: bw(g, args, out, saved) -> tuple of gradients (None: exactly zero)
_BW = {
    "add": lambda g, a, o, s: (g, g),
    "sub": lambda g, a, o, s: (g, -g),
    "mul": lambda g, a, o, s: (g * a[1], g * a[0]),
    "div": lambda g, a, o, s: (g / s[0], -g * (o / s[0])),
    "max": lambda g, a, o, s: (torch.where(a[0] == a[1], g / 2, g).masked_fill_(a[0] < a[1], 0),
                               torch.where(a[0] == a[1], g / 2, g).masked_fill_(a[0] > a[1], 0)),
    "min": lambda g, a, o, s: (torch.where(a[0] == a[1], g / 2, g).masked_fill_(a[0] > a[1], 0),
                               torch.where(a[0] == a[1], g / 2, g).masked_fill_(a[0] < a[1], 0)),
    "neg": lambda g, a, o, s: (-g,),
    "abs": lambda g, a, o, s: (g * torch.sign(a[0]),),
    "sign": lambda g, a, o, s: (None,),
    "square": lambda g, a, o, s: (_twice(g * a[0]),),
    "sqrt": lambda g, a, o, s: ((g / (2 * o)) * torch.sign(a[0]),),
    "ssqrt": lambda g, a, o, s: (((g * s[0]) / (2 * s[1])) * s[0],),
    "inv": lambda g, a, o, s: (-g * (o * o),),
    "log": lambda g, a, o, s: ((g / s[0]) * torch.sign(a[0]),),
    "slog": lambda g, a, o, s: (((g * s[0]) / s[1]) * s[0],),
    "log10": lambda g, a, o, s: ((g / (s[0] * _LN10)) * torch.sign(a[0]),),
    "exp": lambda g, a, o, s: (g * o,),
    "tanh": lambda g, a, o, s: (g * (1 - o * o),),
    "sigmoid": lambda g, a, o, s: (g * (1 - o) * o,),
    "relu": lambda g, a, o, s: (torch.where(o <= 0, 0.0, g),),
}

#: ops whose backward returns the incoming gradient itself (a view of the gradient store)
_PASS_THROUGH = frozenset({"add", "sub"})


def _twice(t):
    return t + t


def _generic_bw(fn):
    """Vector-Jacobian product through autograd on the group (ops without a hand-written one)."""

    def bw(g, args, out, saved, needs):
        with torch.enable_grad():
            xs = [a.detach().requires_grad_(n) for a, n in zip(args, needs)]
            y = fn(*xs)
            wrt = [x for x, n in zip(xs, needs) if n]
            if not y.requires_grad:
                return tuple(None for _ in args)
            grads = iter(torch.autograd.grad(y, wrt, g, allow_unused=True))
        return tuple(next(grads) if n else None for n in needs)

    return bw


def _op_functions(name: str):
    spec = _ops.OPS[name]
    fw = _FW.get(name) or _kernel_fw(name)
    hand = _BW.get(name)
    if hand is not None:
        def bw(g, args, out, saved, needs, _h=hand):
            return _h(g, args, out, saved)
    else:
        bw = _generic_bw(spec.torch_fn)
    return fw, bw


_OPFN: dict[str, tuple] = {}


def _opfn(name: str):
    if name not in _OPFN:
        _OPFN[name] = _op_functions(name)
    return _OPFN[name]


# ---- shapes ----------------------------------------------------------------------------------
def _agg_dims(op: str, nd: int) -> tuple[int, ...]:
    spatial = tuple(range(2, nd))
    return {"sum_c": (1,), "mean_c": (1,), "mean_s": spatial, "mean_bs": (0,) + spatial,
            "mean_b": (0,)}[op]


def _reduced(shape: tuple[int, ...], dims: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if d in dims else n for d, n in enumerate(shape))


# ---- the compiled population ---------------------------------------------------------------------
@dataclass
class _Group:
    """Instances of one op at one level whose arguments live in the same stores."""

    op: str
    agg: bool
    arg_keys: tuple[int, ...]
    arg_idx: list               # per argument: LongTensor of rows, or a slice
    needs: tuple[bool, ...]     # per argument: does any instance need its gradient?
    out_key: int
    lo: int
    hi: int
    fw: object = None
    bw: object = None
    # aggregations
    dims: tuple[int, ...] = ()  # reduced dims of the stacked tensor
    mask: torch.Tensor | None = None
    count: torch.Tensor | None = None
    divisor: int = 1
    arg_shape: tuple[int, ...] = ()


class UnsupportedExpr(ValueError):
    """The expression cannot be vectorised (it goes through the reference path)."""


class Program:
    """A population of expressions compiled for one probe shape.

    ``Program(exprs, probe, device)`` compiles (and binds to ``probe``: label-dependent values,
    masks); :meth:`bind` re-binds to another probe of the same shape (e.g. alternative labels).
    :meth:`run` evaluates every loss value ``(P,)`` and the gradients ``(P, *pred_shape)`` with
    respect to each candidate's own prediction. Raises :class:`UnsupportedExpr` if an expression
    reads no prediction variable or a variable the probe does not provide.
    """

    def __init__(self, exprs: list[Expr], probe: Probe, device=None, dtype=torch.float32):
        self.exprs = list(exprs)
        self.P = len(self.exprs)
        self.kind = probe.kind
        self.shape = tuple(probe.pred_shape)
        self.nd = len(self.shape)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else probe.target.device
        env, _ = probe.variables(torch.zeros(self.shape, dtype=dtype, device=probe.target.device))
        self.provided = tuple(env)
        self.pred_vars = tuple(v for v in env if v != LABEL)
        self._compile()
        self.bind(probe)

    # ---- compile -----------------------------------------------------------------------------
    def _norm_key(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape if len(shape) == self.nd else (1,) * self.nd

    def _compile(self) -> None:
        R, nd = self.shape, self.nd
        pred = set(self.pred_vars)
        provided = set(self.provided)
        shape: dict[int, tuple] = {}
        level: dict[int, int] = {}
        is_pop: dict[int, bool] = {}
        alias: dict[int, Expr] = {}     # identity aggregations -> their argument
        for e in self.exprs:
            missing = e.variables() - provided
            if missing:
                raise UnsupportedExpr(f"{e} reads {sorted(missing)}, not provided by the probe")
            if not e.variables() & pred:
                raise UnsupportedExpr(f"{e} does not read a prediction variable")
            for n in e.nodes():
                k = id(n)
                if k in shape:
                    continue
                is_pop[k] = bool(n.variables() & pred)
                if n.is_var:
                    shape[k], level[k] = R, 0
                elif n.is_const:
                    shape[k], level[k] = (), 0
                else:
                    spec = _ops.OPS[n.op]
                    shapes = [shape[id(a)] for a in n.args]
                    if spec.aggregation:
                        s = shapes[0] if len(shapes[0]) == nd else R
                        dims = _agg_dims(n.op, nd)
                        shape[k] = _reduced(s, dims)
                        if not dims and is_pop[k]:
                            alias[k] = alias.get(id(n.args[0]), n.args[0])
                    else:
                        shape[k] = tuple(torch.broadcast_shapes(*shapes))
                    level[k] = (1 + max(level[id(a)] for a in n.args)) if is_pop[k] else 0
                    if k in alias:
                        level[k] = level[id(alias[k])]
        self._node_shape = shape

        def resolve(n: Expr) -> Expr:
            return alias.get(id(n), n)

        keys: dict[tuple, int] = {}

        def key_of(s) -> int:
            s = self._norm_key(s)
            if s not in keys:
                keys[s] = len(keys)
            return keys[s]

        rows: list[int] = []

        def alloc(key: int, n: int) -> int:
            while len(rows) <= key:
                rows.append(0)
            lo = rows[key]
            rows[key] += n
            return lo

        kR = key_of(R)
        # groups of instances, keyed by (level, op, argument stores)
        gmap: dict[tuple, list] = {}
        shared: dict[int, Expr] = {}
        used_vars: set[str] = set()
        for i, e in enumerate(self.exprs):
            for n in e.nodes():
                k = id(n)
                if not is_pop[k] or k in alias:
                    continue
                if n.is_var:
                    used_vars.add(n.value)
                    continue
                args = [resolve(a) for a in n.args]
                for a in args:
                    if not is_pop[id(a)]:
                        shared.setdefault(id(a), a)
                gk = (level[k], n.op, tuple(key_of(shape[id(a)]) for a in args),
                      key_of(shape[k]))
                gmap.setdefault(gk, []).append((i, n, args))
        # rows: shared values first, then the prediction variables, then the groups
        self._shared_rows: dict[int, tuple[int, int]] = {}
        self._shared_nodes: list[Expr] = []
        for k, n in shared.items():
            kk = key_of(shape[k])
            self._shared_rows[k] = (kk, alloc(kk, 1))
            self._shared_nodes.append(n)
        self.var_base = {v: alloc(kR, self.P) for v in self.pred_vars if v in used_vars}
        inst_row: dict[tuple[int, int], int] = {}
        order = sorted(gmap, key=lambda t: (t[0], t[1], t[2], t[3]))
        groups: list[_Group] = []
        for gk in order:
            lvl, op, akeys, okey = gk
            members = gmap[gk]
            lo = alloc(okey, len(members))
            for j, (i, n, _) in enumerate(members):
                inst_row[(i, id(n))] = lo + j
            spec = _ops.OPS[op]
            arg_rows = [[] for _ in akeys]
            needs = [False] * len(akeys)
            for i, n, args in members:
                for a_pos, a in enumerate(args):
                    arg_rows[a_pos].append(self._row(a, i, is_pop, inst_row))
                    needs[a_pos] |= is_pop[id(a)]
            g = _Group(op=op, agg=spec.aggregation, arg_keys=akeys,
                       arg_idx=[self._index(r) for r in arg_rows], needs=tuple(needs),
                       out_key=okey, lo=lo, hi=lo + len(members))
            if spec.aggregation:
                a0 = members[0][2][0]
                g.arg_shape = self._norm_key(shape[id(a0)])
                g.dims = tuple(d + 1 for d in _agg_dims(op, nd))
            else:
                g.fw, g.bw = _opfn(op)
            groups.append(g)
        self.groups = groups
        # roots, grouped by store
        roots: dict[int, tuple[list, list]] = {}
        for i, e in enumerate(self.exprs):
            r = resolve(e)
            kk = key_of(shape[id(r)])
            roots.setdefault(kk, ([], []))
            roots[kk][0].append(i)
            roots[kk][1].append(self._row(r, i, is_pop, inst_row))
        self._roots = [(kk, torch.tensor(c, device=self.device), self._index(r))
                       for kk, (c, r) in roots.items()]
        self.keys = [None] * len(keys)
        for s, kk in keys.items():
            self.keys[kk] = s
        while len(rows) < len(keys):
            rows.append(0)
        self.rows = rows
        self.kR = kR
        self.S = [torch.zeros((n, *s), dtype=self.dtype, device=self.device)
                  for n, s in zip(rows, self.keys)]
        self.G = [torch.zeros_like(t) for t in self.S]
        self.n_instances = sum(g.hi - g.lo for g in groups)

    def _row(self, a: Expr, i: int, is_pop, inst_row) -> int:
        if not is_pop[id(a)]:
            return self._shared_rows[id(a)][1]
        if a.is_var:
            return self.var_base[a.value] + i
        return inst_row[(i, id(a))]

    def _index(self, rows: list[int]):
        if rows == list(range(rows[0], rows[0] + len(rows))):
            return slice(rows[0], rows[0] + len(rows))
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    # ---- bind to a probe ---------------------------------------------------------------------
    def bind(self, probe: Probe) -> None:
        """Compute the label-dependent values, masks and counts for ``probe`` (same shape)."""
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
            for n in self._shared_nodes:
                kk, row = self._shared_rows[id(n)]
                v = value(n)
                self.S[kk][row].copy_(v.reshape(self.keys[kk]))
        for g in self.groups:
            if not g.agg:
                continue
            dims = tuple(d - 1 for d in g.dims)
            if mask is None or g.op in ("sum_c", "mean_c"):
                g.mask = g.count = None
                g.divisor = math.prod(g.arg_shape[d] for d in dims)
            else:
                m = K._fit_mask(mask, torch.empty(g.arg_shape, device=self.device))
                g.mask = m.unsqueeze(0)
                g.count = m.to(self.dtype).sum(dim=dims, keepdim=True).clamp_min(1.0).unsqueeze(0)
        self._root_w = []
        for kk, cands, ridx in self._roots:
            s = self.keys[kk]
            one = torch.ones((), dtype=self.dtype, device=self.device)
            if mask is None:
                w = one.expand(s) / math.prod(s)
                self._root_w.append((None, None, w.unsqueeze(0)))
            else:
                m = K._fit_mask(mask, torch.empty(s, device=self.device))
                cnt = m.sum().clamp_min(1)
                w = torch.where(m, one / cnt, 0.0)
                self._root_w.append((m.unsqueeze(0), cnt, w.unsqueeze(0)))

    # ---- evaluation ----------------------------------------------------------------------------
    def run(self, X: torch.Tensor, grad: bool = True):
        """Loss values ``(P,)`` and (``grad=True``) gradients ``(P, *pred_shape)`` at the
        predictions ``X (P, *pred_shape)`` (candidate ``i`` reads ``X[i]``)."""
        with torch.no_grad():
            return self._run(X, grad)

    def _run(self, X, grad):
        S, G = self.S, self.G
        SR = S[self.kR]
        soft = None
        for v, base in self.var_base.items():
            if v == "p":
                soft = torch.softmax(X, dim=2)
                SR[base:base + self.P].copy_(soft)
            else:
                SR[base:base + self.P].copy_(X)
        saved = []
        for g in self.groups:
            args = [S[k][i] if isinstance(i, slice) else S[k].index_select(0, i)
                    for k, i in zip(g.arg_keys, g.arg_idx)]
            if g.agg:
                out, sv = self._agg_fw(g, args[0])
            else:
                out, sv = g.fw(*args)
            S[g.out_key][g.lo:g.hi] = out
            saved.append((args, out, sv))
        values = torch.empty(self.P, dtype=self.dtype, device=self.device)
        for (kk, cands, ridx), (m, cnt, w) in zip(self._roots, self._root_w):
            x = S[kk][ridx] if isinstance(ridx, slice) else S[kk].index_select(0, ridx)
            dims = tuple(range(1, x.dim()))
            if m is None:
                v = x.mean(dim=dims)
            else:
                v = torch.where(m, x, 0.0).sum(dim=dims) / cnt
            values.index_copy_(0, cands, v)
        if not grad:
            return values, None
        for t in G:
            t.zero_()
        for (kk, cands, ridx), (m, cnt, w) in zip(self._roots, self._root_w):
            if isinstance(ridx, slice):
                G[kk][ridx] += w
            else:
                G[kk].index_add_(0, ridx, w.expand(len(cands), *w.shape[1:]))
        for g, (args, out, sv) in zip(reversed(self.groups), reversed(saved)):
            go = G[g.out_key][g.lo:g.hi]
            if g.agg:
                grads = (self._agg_bw(g, go, args[0]),)
            else:
                grads = g.bw(go, args, out, sv, g.needs)
                if g.op in _PASS_THROUGH:
                    grads = tuple(gr.clone() if gr is go else gr for gr in grads)
            for k, i, need, a, gr in zip(g.arg_keys, g.arg_idx, g.needs, args, grads):
                if not need or gr is None:
                    continue
                if gr.shape != a.shape:
                    gr = gr.sum_to_size(a.shape)
                if isinstance(i, slice):
                    G[k][i] += gr
                else:
                    G[k].index_add_(0, i, gr)
        dX = None
        for v, base in self.var_base.items():
            gv = G[self.kR][base:base + self.P]
            if v == "p":
                gv = torch._softmax_backward_data(gv, soft, 2, X.dtype)
            dX = gv.clone() if dX is None else dX + gv
        if dX is None:
            dX = torch.zeros_like(X)
        return values, dX

    @staticmethod
    def _agg_fw(g: _Group, x):
        if g.op == "sum_c":
            return x.sum(dim=2, keepdim=True), None
        if g.mask is None:
            return x.mean(dim=g.dims, keepdim=True), None
        total = torch.where(g.mask, x, 0.0).sum(dim=g.dims, keepdim=True)
        return total / g.count, None

    @staticmethod
    def _agg_bw(g: _Group, go, x):
        if g.op == "sum_c":
            return go.expand(x.shape).clone()
        if g.mask is None:
            return (go / g.divisor).expand(x.shape)
        return torch.where(g.mask, go / g.count, 0.0)


# ---- chunking ------------------------------------------------------------------------------------
def _instances(e: Expr, pred: frozenset) -> int:
    return sum(1 for n in e.nodes() if n.args and n.variables() & pred)


def chunk_size(exprs: list[Expr], probe: Probe, budget: int = MEMORY_BUDGET) -> int:
    """Candidates per chunk so that values, gradients and saved intermediates of one chunk stay
    within ``budget`` bytes (estimated: about 5 tensors of each instance's size)."""
    if not exprs:
        return 1
    pred = frozenset({"p", "z", "f"})
    numel = math.prod(probe.pred_shape)
    rows = sum(_instances(e, pred) + 2 for e in exprs) / len(exprs)
    per = max(1.0, rows * numel * 4 * 5)
    return int(max(1, min(MAX_CHUNK, budget // per)))


def _chunks(n: int, size: int):
    for lo in range(0, n, size):
        yield lo, min(n, lo + size)


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


def _compile_all(exprs, probe, device, chunk):
    """Yield (indices into exprs, Program) per chunk; unsupported expressions are left out."""
    size = chunk or chunk_size(exprs, probe)
    for lo, hi in _chunks(len(exprs), size):
        part = list(range(lo, hi))
        ok = []
        for j in part:
            try:
                Program._check(exprs[j], probe)
                ok.append(j)
            except UnsupportedExpr:
                pass
        if ok:
            yield ok, Program([exprs[j] for j in ok], probe, device)


def _check(e: Expr, probe: Probe) -> None:
    provided = {"p", "y", "z"} if probe.kind == "classification" else {"f", "y"}
    v = e.variables()
    if v - provided:
        raise UnsupportedExpr(f"{e} reads {sorted(v - provided)}")
    if not v & (provided - {LABEL}):
        raise UnsupportedExpr(f"{e} does not read a prediction variable")


Program._check = staticmethod(_check)


def supported(e: Expr, probe: Probe) -> bool:
    """Can :class:`Program` evaluate ``e`` on ``probe``?"""
    try:
        _check(e, probe)
        return True
    except UnsupportedExpr:
        return False


def _device_of(stage, device):
    if device is not None:
        return torch.device(device)
    dev = getattr(stage, "device", None)
    if dev is not None:
        return torch.device(dev)
    return stage.probe.target.device


# ---- stage 1: checks -------------------------------------------------------------------------------
def checks_reasons(exprs: list[Expr], probe: Probe, pred: torch.Tensor, alt: Probe,
                   device=None, chunk: int | None = None) -> list[str | None]:
    """:func:`~lossforge.evaluation.checks.numeric_reason` for every expression (``None`` where the
    expression is not supported here and must go through the reference)."""
    out: list[str | None] = [None] * len(exprs)
    uniq, where = _unique(exprs)
    res: list[str | None] = [None] * len(uniq)
    dev = torch.device(device) if device is not None else probe.target.device
    for idx, prog in _compile_all(uniq, probe.to(dev), dev, chunk):
        n = len(idx)
        X = pred.to(dev, prog.dtype).unsqueeze(0).expand(n, *pred.shape).contiguous()
        v1, g1 = prog.run(X)
        prog.bind(alt.to(dev))
        v2, g2 = prog.run(X)
        fin_v = torch.isfinite(v1)
        fin_g = torch.isfinite(g1).flatten(1).all(1)
        gmax = g1.abs().flatten(1).amax(1) if g1.numel() else torch.zeros(n)
        # dependence on the label: values (and, if equal, gradients) with other labels
        diff = (v2 - v1).abs().double()
        same_v = torch.isfinite(v2) & (diff <= 1e-9 * (1 + v1.abs().double()))
        close = ((g2 - g1).abs() <= 1e-8 + 1e-5 * g1.abs()).flatten(1).all(1)
        rows = torch.stack([fin_v, fin_g, gmax.double() <= 1e-12, same_v, close]).cpu().tolist()
        for j, (fv, fg, zero, sv, cl) in zip(idx, zip(*rows)):
            if not fv:
                why = "non-finite value on the probe"
            elif not fg:
                why = "non-finite gradient on the probe"
            elif zero:
                why = "zero gradient with respect to the prediction"
            elif sv and cl:
                why = "does not depend on the label"
            else:
                why = ""
            res[j] = why
    for k, w in enumerate(where):
        out[k] = res[w]
    return out


def _run_checks(stage, candidates: list[Candidate], device, chunk) -> None:
    from lossforge.evaluation.checks import integrity, numeric_reason, structural_reason

    with timed(stage.stats):
        todo: list[Candidate] = []
        pending = [c for c in candidates if not c.done]
        reasons: dict[int, str] = {}
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
                todo.append(c)
        batch = [c for c in todo if supported(c.expr, stage.probe)]
        found = checks_reasons([c.expr for c in batch], stage.probe, stage.pred, stage.alt,
                               device, chunk)
        for c, why in zip(batch, found):
            reasons[id(c)] = why
        for c in todo:
            if id(c) not in reasons or reasons[id(c)] is None:
                reasons[id(c)] = numeric_reason(c.expr, stage.probe, stage.pred, stage.alt)
        for c in pending:
            why = reasons[id(c)]
            if why:
                c.reject(REJECTED_CHECKS, why)
            else:
                stage.stats.n_out += 1


# ---- stage 2: GEC ------------------------------------------------------------------------------------
def fingerprints(exprs: list[Expr], probe: Probe, pred: torch.Tensor, device=None,
                 chunk: int | None = None) -> list[tuple[bool, str | None]]:
    """``(done, fingerprint)`` per expression; ``done`` is False for expressions the program does
    not support (the caller computes those with the reference)."""
    from lossforge.evaluation.gec import format_fingerprint

    uniq, where = _unique(exprs)
    res: list[tuple[bool, str | None]] = [(False, None)] * len(uniq)
    dev = torch.device(device) if device is not None else probe.target.device
    for idx, prog in _compile_all(uniq, probe.to(dev), dev, chunk):
        n = len(idx)
        X = pred.to(dev, prog.dtype).unsqueeze(0).expand(n, *pred.shape).contiguous()
        _, g = prog.run(X)
        norms = g.flatten(2).norm(dim=2).cpu()
        for j, row in zip(idx, norms):
            res[j] = (True, format_fingerprint(row))
    return [res[w] for w in where]


def _run_gec(stage, candidates: list[Candidate], device, chunk) -> None:
    with timed(stage.stats):
        pending = [c for c in candidates if not c.done]
        found = fingerprints([c.expr for c in pending], stage.probe, stage.pred, device, chunk)
        for c, (ok, fp) in zip(pending, found):
            c.fingerprint = fp if ok else stage.fingerprint(c.expr)
            stage.mark(c)


# ---- stage 3: LRP ------------------------------------------------------------------------------------
def _optimise(prog: Program, init: torch.Tensor, config) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the protocol's optimiser on every candidate of ``prog``; returns (final predictions,
    alive) where ``alive[i]`` is False once candidate ``i``'s loss value was non-finite."""
    P = prog.P
    X = init.unsqueeze(0).expand(P, *init.shape).contiguous()
    alive = torch.ones(P, dtype=torch.bool, device=X.device)
    lr, momentum = config.lr, config.momentum
    if config.optimizer == "sgd":
        buf = None
        for _ in range(config.steps):
            values, g = prog.run(X)
            alive &= torch.isfinite(values)
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
        for step in range(1, config.steps + 1):
            values, g = prog.run(X)
            alive &= torch.isfinite(values)
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            bc1 = 1 - beta1 ** step
            bc2 = 1 - beta2 ** step
            denom = (v.sqrt() / math.sqrt(bc2)).add_(eps)
            X.addcdiv_(m, denom, value=-(lr / bc1))
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}")
    return X, alive


def lrp_scores(exprs: list[Expr], probe: Probe, metric, config, init: torch.Tensor,
               device=None, chunk: int | None = None) -> list[tuple[bool, float | None]]:
    """``(done, score)`` per expression, as :func:`~lossforge.evaluation.lrp.lrp_score`;
    ``done`` is False for expressions the program does not support."""
    from lossforge.evaluation.lrp import metric_value

    uniq, where = _unique(exprs)
    res: list[tuple[bool, float | None]] = [(False, None)] * len(uniq)
    dev = torch.device(device) if device is not None else probe.target.device
    base = None
    for idx, prog in _compile_all(uniq, probe.to(dev), dev, chunk):
        X, alive = _optimise(prog, init.to(dev, prog.dtype), config)
        ok = (alive & torch.isfinite(X).flatten(1).all(1)).cpu().tolist()
        if base is None:
            base = metric_value(metric, probe, init)
        for j, good, x in zip(idx, ok, X):
            if not good:
                res[j] = (True, None)
            else:
                res[j] = (True, metric.sign * (metric_value(metric, probe, x) - base))
    return [res[w] for w in where]


def _run_lrp(stage, candidates: list[Candidate], device, chunk) -> None:
    with timed(stage.stats):
        pending = [c for c in candidates if not c.done]
        found = lrp_scores([c.expr for c in pending], stage.probe, stage.metric, stage.config,
                           stage.init, device, chunk)
        for c, (ok, score) in zip(pending, found):
            stage.decide(c, score if ok else stage.score(c.expr))


# ---- entry point -----------------------------------------------------------------------------------
def run_stage(stage, candidates: list[Candidate], device=None, chunk: int | None = None) -> None:
    """Run the screening ``stage`` on ``candidates`` with the vectorised path.

    ``stage``: a :class:`~lossforge.evaluation.checks.Checks`,
    :class:`~lossforge.evaluation.gec.GradientEquivalence` or
    :class:`~lossforge.evaluation.lrp.LossRejection`; any other stage runs as ``stage(candidates)``.
    ``device``: where to compute (default: the stage's ``device`` attribute if set, else the
    device of its probe); ``chunk``: candidates per vectorised pass (default: by memory budget).
    """
    from lossforge.evaluation.checks import Checks
    from lossforge.evaluation.gec import GradientEquivalence
    from lossforge.evaluation.lrp import LossRejection

    if isinstance(stage, Checks):
        _run_checks(stage, candidates, _device_of(stage, device), chunk)
    elif isinstance(stage, GradientEquivalence):
        _run_gec(stage, candidates, _device_of(stage, device), chunk)
    elif isinstance(stage, LossRejection):
        _run_lrp(stage, candidates, _device_of(stage, device), chunk)
    else:
        stage(candidates)
