"""Several losses at once: a :class:`Bundle` (one :class:`Expr` per loss slot) and the
:class:`ProductSpace` a joint search draws bundles from.

A task with several loss slots (a detector: ``cls`` and ``box``) can be searched *jointly*: one
candidate is one expression per slot. Text form (canonical, used in the store and the CLI)::

    cls: -sum_c(y * log(p)) | box: 1 - i / u

slots in the task's slot order, ``": "`` after the slot name, ``" | "`` between slots; neither
``:`` nor ``|`` occurs in expression text, so :func:`parse_bundle` splits it back unambiguously.
A bundle's ``size()`` is the sum of its parts' sizes (the hall of fame's size axis).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterable, Iterator

import numpy as np

from lossforge.expr.expr import Expr
from lossforge.expr.parse import ParseError, parse
from lossforge.expr.spaces import SearchSpace


class Bundle(Mapping):
    """An immutable, hashable mapping slot name -> :class:`Expr`, in slot order.

    ``str(bundle)`` is canonical (``"cls: <expr> | box: <expr>"``) and
    ``parse_bundle(str(b)) == b``. ``texts()`` gives ``{slot: formula}``, what
    :func:`lossforge.training.train` takes as a multi-slot loss.
    """

    __slots__ = ("_parts", "_hash")

    def __init__(self, parts: Mapping[str, Expr] | Iterable[tuple[str, Expr]]):
        items = tuple(parts.items()) if isinstance(parts, Mapping) else tuple(parts)
        if not items:
            raise ValueError("a bundle needs at least one slot")
        names = [k for k, _ in items]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate slot names in a bundle: {names}")
        for k, e in items:
            if not isinstance(k, str) or not k.isidentifier():
                raise ValueError(f"slot name {k!r} is not an identifier")
            if not isinstance(e, Expr):
                raise TypeError(f"slot {k!r}: expected an Expr, got {type(e).__name__}")
        object.__setattr__(self, "_parts", items)
        object.__setattr__(self, "_hash", hash(items))

    def __setattr__(self, name, value):
        raise AttributeError("Bundle is immutable")

    # ---- mapping ---------------------------------------------------------------------------
    def __getitem__(self, slot: str) -> Expr:
        for k, e in self._parts:
            if k == slot:
                return e
        raise KeyError(f"bundle has no slot {slot!r}; its slots: {', '.join(self.slots)}")

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._parts)

    def __len__(self) -> int:
        return len(self._parts)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return isinstance(other, Bundle) and self._parts == other._parts

    def __ne__(self, other) -> bool:
        return not self == other

    def __reduce__(self):
        return (Bundle, (self._parts,))

    # ---- what an Expr offers, summed over the parts ------------------------------------------
    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self._parts)

    def size(self) -> int:
        """Sum of the parts' sizes."""
        return sum(e.size() for _, e in self._parts)

    def depth(self) -> int:
        """Largest depth of a part."""
        return max(e.depth() for _, e in self._parts)

    def variables(self) -> frozenset[str]:
        """Union of the parts' variables."""
        return frozenset().union(*(e.variables() for _, e in self._parts))

    def texts(self) -> dict[str, str]:
        """``{slot: canonical formula}`` (a multi-slot loss spec for ``train``)."""
        return {k: str(e) for k, e in self._parts}

    def loss_spec(self) -> dict[str, str]:
        """What the proxy stage trains with: :meth:`texts`."""
        return self.texts()

    def replace_part(self, slot: str, expr: Expr) -> "Bundle":
        """A bundle with slot ``slot`` set to ``expr`` (``KeyError`` for an unknown slot)."""
        self[slot]
        return Bundle(tuple((k, expr if k == slot else e) for k, e in self._parts))

    def to_latex(self) -> str:
        """The parts' LaTeX, ``\\mathrm{slot}: ...`` separated by ``\\quad``."""
        under = "_"
        escaped = "\\_"
        return r" \quad ".join(r"\mathrm{" + k.replace(under, escaped) + "}: " + e.to_latex()
                               for k, e in self._parts)

    def __str__(self) -> str:
        return " | ".join(f"{k}: {e}" for k, e in self._parts)

    def __repr__(self) -> str:
        return f"Bundle({str(self)!r})"


def parse_bundle(text: str, strict: bool = False) -> Bundle:
    """``"cls: <expr> | box: <expr>"`` -> :class:`Bundle`; ``ParseError`` (a ``ValueError``) for
    text that is not of that form. ``strict`` goes to :func:`~lossforge.expr.parse.parse`."""
    parts = []
    pos = 0
    for chunk in text.split("|"):
        name, sep, formula = chunk.partition(":")
        if not sep or not name.strip().isidentifier():
            raise ParseError("expected 'slot: formula' (slots separated by ' | ')", text, pos,
                             "a slot name and ':'")
        parts.append((name.strip(), parse(formula.strip(), strict=strict)))
        pos += len(chunk) + 1
    try:
        return Bundle(parts)
    except ValueError as err:
        raise ParseError(str(err), text, 0) from None


def write_sources(bundle: Bundle, output, name: str = "SearchedLoss") -> list[tuple]:
    """Export a bundle: one standalone file per slot, ``<output stem>_<slot>.py`` beside ``output``
    with class ``<name>_<slot>`` (each file has one ``nn.Module``, as ``load_loss`` expects).
    Returns ``[(path, class name, expr)]``."""
    from pathlib import Path

    out = Path(output)
    written = []
    for slot, expr in bundle.items():
        path = out.with_name(f"{out.stem}_{slot}{out.suffix or '.py'}")
        path.write_text(expr.to_source(name=f"{name}_{slot}"))
        written.append((path, f"{name}_{slot}", expr))
    return written


def is_bundle_text(text: str) -> bool:
    """Whether ``text`` is a bundle's text rather than one formula (formulas never hold ':')."""
    return ":" in text


class ProductSpace:
    """One :class:`~lossforge.expr.spaces.SearchSpace` per slot; its candidates are bundles.

    ``kind = "product"``. ``random_expr(rng, **kw)`` draws one random expression per slot (the
    ``kw`` of :func:`~lossforge.expr.variation.random_expr`); ``mutate(bundle, rng, **kw)``
    mutates one uniformly chosen slot with :func:`~lossforge.expr.variation.mutate`. The
    strategies ``autoloss-zero`` and ``random`` search it (variation dispatches on ``kind``).
    """

    kind = "product"

    def __init__(self, parts: Mapping[str, SearchSpace] | Iterable[tuple[str, SearchSpace]]):
        items = tuple(parts.items()) if isinstance(parts, Mapping) else tuple(parts)
        if not items:
            raise ValueError("a product space needs at least one slot")
        for k, sp in items:
            if sp.kind != "tree":
                raise ValueError(f"slot {k!r}: joint search needs tree spaces, got {sp.name!r} "
                                 f"(kind {sp.kind!r})")
        self.parts = items

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.parts)

    @property
    def name(self) -> str:
        return "product(" + ", ".join(f"{k}={sp.name}" for k, sp in self.parts) + ")"

    @property
    def variables(self) -> tuple[str, ...]:
        """``slot.variable`` names, slot by slot (identifies the space in strategy states)."""
        return tuple(f"{k}.{v}" for k, sp in self.parts for v in sp.variables)

    def space(self, slot: str) -> SearchSpace:
        return dict(self.parts)[slot]

    def random_expr(self, rng: np.random.Generator, **kwargs: Any) -> Bundle:
        from lossforge.expr import variation as V

        return Bundle(tuple((k, V.random_expr(sp, rng, **kwargs)) for k, sp in self.parts))

    def mutate(self, bundle: Bundle, rng: np.random.Generator, **kwargs: Any) -> Bundle:
        from lossforge.expr import variation as V

        k, sp = self.parts[int(rng.integers(len(self.parts)))]
        return bundle.replace_part(k, V.mutate(bundle[k], sp, rng, **kwargs))

    def why_invalid(self, bundle: Bundle) -> str | None:
        if not isinstance(bundle, Bundle) or bundle.slots != self.slots:
            return f"expected a bundle of slots {', '.join(self.slots)}"
        for k, sp in self.parts:
            why = sp.why_invalid(bundle[k])
            if why:
                return f"{k}: {why}"
        return None

    def is_valid(self, bundle: Bundle) -> bool:
        return self.why_invalid(bundle) is None

    def parse(self, text: str) -> Bundle:
        return parse_bundle(text)

    def __repr__(self) -> str:
        return f"<ProductSpace {self.name}>"


__all__ = ["Bundle", "ProductSpace", "is_bundle_text", "parse_bundle", "write_sources"]
