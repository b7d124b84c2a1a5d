"""Compiling a population of expressions into a schedule: grouped levels, stores and plans.

Contract. ``Schedule(exprs, kind, shape, materialize, device)`` turns a population of expressions
(for a probe kind and prediction shape) into a plain description that
:class:`~lossforge.evaluation.batched.program.Program` executes:

* shared values (prediction-free sub-expressions, one row each: ``shared``, filled by
  ``Program.bind``);
* the storage shapes (``keys``) and the rows of the value and edge stores per shape
  (``value_rows``, ``edge_rows``; the program allocates them; row 0 of every edge store is a
  zero row);
* ``levels``: per topological level, the groups of instances of one op sharing argument and
  result stores (:class:`Group`), the gathers of their arguments and the pull plans of their
  results' gradients;
* the root reductions (:class:`Roots`) and the candidate order (``order``, ``row_exprs``).

It reads nothing from any tensor value: only expression structure and shapes (its index tensors
live on ``device``). Groups and roots also carry the fields that binding to a probe sets (masks,
counts). Expressions are lowered in their exact form
(:func:`lossforge.expr.exact.exact_form`): ``log(p)`` becomes the prediction variable ``logp``,
which the program computes as ``log_softmax`` of the prediction, with its own backward. Per-expression
templates are cached in :data:`_TEMPLATES` (weakly keyed by the exact form; :func:`clear_cache`). An expression the program cannot represent raises
:class:`~lossforge.evaluation.batched.support.UnsupportedExprError`.
"""
from __future__ import annotations

import weakref

import torch

from lossforge.evaluation.batched.store_shapes import (
    AGGREGATIONS, agg_dims, broadcast_shape, copy_dims, reduced_shape, representative)
from lossforge.evaluation.batched.support import check_supported, probe_variables
from lossforge.evaluation.batched.vjp import ZERO_GRAD, op_kernels
from lossforge.expr import ops as _ops
from lossforge.expr.exact import exact_form
from lossforge.expr.expr import Expr


class Group:
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


class Level:
    """The groups of one topological level, the gathers of their arguments
    (``gather_rows``: (argument position, store, rows)) and the pulls of their results'
    gradients (``pulls``: (store, first row, rows, plan))."""

    __slots__ = ("gather_rows", "groups", "pulls")

    def __init__(self):
        self.gather_rows = []
        self.groups = []
        self.pulls = []


class _Template:
    """One expression compiled for a probe shape (see :meth:`Schedule._template`)."""

    __slots__ = ("items", "root", "root_ts", "shared", "uses")

    def __init__(self, items, root, root_ts, shared, uses):
        self.items, self.root, self.root_ts, self.shared = items, root, root_ts, shared
        self.uses = uses


#: Expr -> {(kind, shape, materialize): _Template}; entries go with their expression.
_TEMPLATES: "weakref.WeakKeyDictionary[Expr, dict]" = weakref.WeakKeyDictionary()


def clear_cache() -> None:
    """Forget the compiled templates of every expression (benchmarks; memory)."""
    _TEMPLATES.clear()


class Roots:
    """The ``n`` candidates ``cands`` whose roots (value rows ``idx`` of store ``key``, true
    shape ``tshape``) are reduced alike; their constant gradients are edge rows ``e_lo:e_lo+n``.
    ``rep``: the representative copy of a stored root; ``mask``/``count``: the reference's
    ``reduce_loss`` mask fitted to the root and its count (set by ``bind``)."""

    __slots__ = ("key", "tshape", "cands", "idx", "e_lo", "n", "rep", "mask", "count")

    def __init__(self, key, tshape, cands, idx, e_lo, n):
        self.key, self.tshape, self.cands, self.idx, self.e_lo, self.n = \
            key, tshape, cands, idx, e_lo, n
        self.rep = self.mask = self.count = None


class Schedule:
    """A population of expressions compiled for one probe kind and prediction shape (see the
    module docstring). ``materialize``: store every value at the full prediction shape (fewest
    groups) instead of at its true shape."""

    def __init__(self, exprs: list[Expr], kind: str, shape: tuple[int, ...], materialize: bool,
                 device: torch.device):
        self.exprs = [exact_form(e) for e in exprs]
        self.P = len(self.exprs)
        self.kind = kind
        self.shape = tuple(shape)
        self.nd = len(self.shape)
        self.materialize = materialize
        self.device = device
        _, self.pred_vars = probe_variables(kind)
        self._build()

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
        check_supported(e, self.kind)
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
        if n.op in AGGREGATIONS:
            dims = agg_dims(n.op, nd)
            t0 = a_info[0][1]
            ts = reduced_shape(t0 if len(t0) == nd else R, dims)
            if not dims and pop:     # identity (mean_s without spatial dims)
                x = a_info[0]
                return (True, ts, x[2], x[3] if x[3] is not None else n.args[0], None)
            agg_in = t0
        else:
            ts = broadcast_shape([x[1] for x in a_info])
            agg_in = None
        gk = (lvl, n.op, tuple([key(x[1]) for x in a_info]), key(ts), agg_in) if pop else None
        return (pop, ts, lvl, None, gk)

    @staticmethod
    def _root_ts(e: Expr, info: dict):
        nf = info[id(e)]
        return nf[1] if nf[3] is None else info[id(nf[3])][1]

    def _build(self) -> None:
        R, P, dev = self.shape, self.P, self.device
        info: dict[int, tuple] = {}
        tpls = [self._template(e, info) for e in self.exprs]
        # candidates reading the prediction equally often side by side: the gradient of the
        # prediction then sums runs of contiguous rows (see _plan). ``order[i]``: the position in
        # the given list of the candidate in row ``i``; ``exprs`` is in row order.
        self.order = sorted(range(P), key=lambda i: tpls[i].uses)
        self.row_exprs = [self.exprs[i] for i in self.order]
        self.order_index = torch.tensor(self.order, dtype=torch.long, device=dev)
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
        self.shared = []
        for k, (n, ts) in shared.items():
            kk = kid(ts)
            shared_row[k] = alloc(nrows, kk, 1)
            self.shared.append((n, kk, shared_row[k]))
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
        levels: dict[int, Level] = {}
        per_level: dict[int, list] = {}
        nd = self.nd
        for gk in order:
            lvl, op, akeys_s, okey_s, agg_in = gk
            akeys = tuple(keys[a] for a in akeys_s)
            okey = keys[okey_s]
            members = gmap[gk]
            g = Group(op, len(members))
            g.out_key = okey
            g.lo = alloc(nrows, okey, g.n)
            g.hi = g.lo + g.n
            for j, (i, t) in enumerate(members):
                cand_rows[i][t] = g.lo + j
            levels.setdefault(lvl, Level()).groups.append(g)
            per_level.setdefault(lvl, []).append((g, akeys, akeys_s, members))
            g.key_out = okey_s
            if g.agg:
                g.ts_in = agg_in
                g.ts_out = reduced_shape(agg_in, agg_dims(op, nd))
                g.rep_in = representative(akeys_s[0], g.ts_in)
                g.copy_out = copy_dims(okey_s, g.ts_out)
                g.dims = tuple(d + 1 for d in agg_dims(op, nd))
            else:
                g.fw, g.bw = op_kernels(op)
        # gathers of the arguments, per level and argument position/store; edges of the gradients
        for lvl in sorted(levels):
            L = levels[lvl]
            per: dict[tuple[int, int], list[int]] = {}
            for g, akeys, akeys_s, members in per_level[lvl]:
                g.args = []
                g.dest, g.direct = [], []
                zero = g.op in ZERO_GRAD
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
        self.roots = []
        for (kk, tshape), cands in root_cls.items():
            e_lo = alloc(nedges, kk, len(cands))
            rrows = []
            for j, i in enumerate(cands):
                r = tpls[i].root
                rrows.append(row(r, i))
                add_edge(r, i, kk, e_lo + j)
            self.roots.append(Roots(kk, tshape, torch.tensor(cands, device=dev),
                                      self._index(rrows), e_lo, len(cands)))
            self.roots[-1].rep = representative(self._key(tshape), tshape)
        self.root_order = torch.cat([r.cands for r in self.roots])
        # pull plans: for each level and output store, the edges into each value row
        for lvl, L in levels.items():
            by_key: dict[int, list[Group]] = {}
            for g in L.groups:
                by_key.setdefault(g.out_key, []).append(g)
            for kk, gs in by_key.items():
                lo = min(g.lo for g in gs)
                hi = max(g.hi for g in gs)
                for g in gs:
                    g.glo, g.ghi = g.lo - lo, g.hi - lo
                table = [edges_to.get((kk, r), []) for r in range(lo, hi)]
                L.pulls.append((kk, lo, hi - lo, self._plan(table)))
        self.var_pulls = [(v, base, self._plan(var_edges[v])) for v, base in var_base.items()]
        self.levels = [levels[k] for k in sorted(levels)]
        self.keys = [None] * len(keys)
        for sh, kk in keys.items():
            self.keys[kk] = sh
        while len(nrows) < len(keys):
            nrows.append(0)
        while len(nedges) < len(keys):
            nedges.append(1)
        self.kR = kR
        self.value_rows, self.edge_rows = nrows, nedges
        self.n_instances = sum(g.n for L in self.levels for g in L.groups)
        self.n_groups = sum(len(L.groups) for L in self.levels)

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


__all__ = ["Group", "Level", "Roots", "Schedule", "clear_cache"]
