"""Text -> :class:`Expr`: our own recursive-descent parser (never ``eval``).

Grammar (``-`` binds tighter than ``*``/``/``, which bind tighter than ``+``/``-``; left-assoc)::

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := "-" NUMBER | "-" unary | primary
    primary := NUMBER | NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"

``-`` directly before a number makes a negative constant (``-1`` is the constant -1, ``-(1)`` is
``neg`` applied to 1), which is what the canonical text form relies on.

Limits (text beyond them raises :class:`ParseError`, never ``RecursionError``): at most
``MAX_LENGTH`` characters, ``MAX_NESTING`` nested parentheses / calls / unary minuses, and a result
no deeper than ``MAX_DEPTH`` nodes (long ``+``/``*`` chains included), so that every parsed
expression can be printed, pickled and parsed again.
"""
from __future__ import annotations

import re
from typing import Iterable

from lossforge._hints import did_you_mean
from lossforge.expr import ops as _ops
from lossforge.expr.expr import Expr, apply, const, var

MAX_LENGTH = 100_000
#: Nesting of the recursive descent (each level costs up to five Python frames).
MAX_NESTING = 100
#: Depth (:meth:`Expr.depth`) of a parsed expression: the recursive ``str``/``size``/``depth`` and
#: pickling of :class:`Expr` stay far from Python's recursion limit.
MAX_DEPTH = 200

_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<sym>[-+*/(),]))"
)


class ParseError(ValueError):
    """Raised for text that is not a valid loss expression.

    ``position`` is the 0-based character offset of the problem, ``expected`` says what would have
    been valid there.
    """

    def __init__(self, message: str, text: str, position: int, expected: str = ""):
        self.text = text
        self.position = position
        self.expected = expected
        pointer = f"\n  {text[:80]}\n  {' ' * min(position, 80)}^" if len(text) <= 80 else ""
        super().__init__(f"cannot parse loss at position {position}: {message}{pointer}")


class _Parser:
    def __init__(self, text: str, variables: frozenset[str] | None):
        self.text = text
        self.variables = variables
        self.tokens = self._tokenize(text)
        self.i = 0
        self.depth = 0

    def _tokenize(self, text: str) -> list[tuple[str, str, int]]:
        tokens, pos = [], 0
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                break
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise ParseError(f"unexpected character {text[pos]!r}", text, pos,
                                 "a number, a name, an operator or a parenthesis")
            kind = m.lastgroup
            tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        tokens.append(("end", "", len(text)))
        return tokens

    # helpers ------------------------------------------------------------------------------------
    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def take(self) -> tuple[str, str, int]:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def fail(self, expected: str, tok: tuple[str, str, int] | None = None) -> ParseError:
        kind, val, pos = tok or self.peek()
        found = "end of text" if kind == "end" else repr(val)
        return ParseError(f"expected {expected}, found {found}", self.text, pos, expected)

    def node(self, op: str, args: list[Expr], pos: int) -> Expr:
        """``apply(op, *args)``, refusing results deeper than ``MAX_DEPTH``."""
        out = apply(op, *args)
        if out.depth() > MAX_DEPTH:
            raise ParseError(f"expression deeper than {MAX_DEPTH} levels", self.text, pos,
                             "a shallower expression")
        return out

    def nest(self) -> None:
        """Enter one level of recursion; ``ParseError`` beyond ``MAX_NESTING``."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ParseError(f"expression nested deeper than {MAX_NESTING} levels", self.text,
                             self.peek()[2], "a shallower expression")

    def expect(self, sym: str) -> None:
        tok = self.peek()
        if tok[0] != "sym" or tok[1] != sym:
            raise self.fail(repr(sym))
        self.take()

    # grammar ------------------------------------------------------------------------------------
    def parse(self) -> Expr:
        if self.peek()[0] == "end":
            raise ParseError("empty text", self.text, 0, "a loss expression such as -sum_c(y * log(p))")
        e = self.expr()
        if self.peek()[0] != "end":
            raise self.fail("an operator or the end of the text")
        return e

    def expr(self) -> Expr:
        self.nest()
        left = self.term()
        while self.peek()[:2] in (("sym", "+"), ("sym", "-")):
            _, sym, pos = self.take()
            left = self.node(_ops.INFIX[sym].name, [left, self.term()], pos)
        self.depth -= 1
        return left

    def term(self) -> Expr:
        left = self.unary()
        while self.peek()[:2] in (("sym", "*"), ("sym", "/")):
            _, sym, pos = self.take()
            left = self.node(_ops.INFIX[sym].name, [left, self.unary()], pos)
        return left

    def unary(self) -> Expr:
        if self.peek()[:2] == ("sym", "-"):
            pos = self.take()[2]
            if self.peek()[0] == "num":
                return self.number(negative=True)
            self.nest()
            out = self.node("neg", [self.unary()], pos)
            self.depth -= 1
            return out
        return self.primary()

    def number(self, negative: bool = False) -> Expr:
        kind, val, pos = self.take()
        v = float(val)
        try:
            return const(-v if negative else v)
        except ValueError:
            raise ParseError(f"number {val!r} is out of range", self.text, pos, "a finite number") from None

    def primary(self) -> Expr:
        kind, val, pos = self.peek()
        if kind == "num":
            return self.number()
        if kind == "sym" and val == "(":
            self.take()
            e = self.expr()
            self.expect(")")
            return e
        if kind == "name":
            self.take()
            if self.peek()[:2] == ("sym", "("):
                return self.call(val, pos)
            return self.variable(val, pos)
        raise self.fail("a number, a name, '-' or '('")

    def variable(self, name: str, pos: int) -> Expr:
        if name in _ops.OPS:
            raise ParseError(f"{name!r} is a function: expected '(' after it", self.text,
                             pos + len(name), "'('")
        if self.variables is not None and name not in self.variables:
            hint = did_you_mean(name, list(self.variables) + list(_ops.OPS))
            raise ParseError(f"unknown name {name!r}{hint}; variables are "
                             f"{', '.join(sorted(self.variables))}", self.text, pos, "a variable")
        return var(name)

    def call(self, name: str, pos: int) -> Expr:
        if name not in _ops.OPS:
            hint = did_you_mean(name, list(_ops.OPS))
            raise ParseError(f"unknown function {name!r}{hint}", self.text, pos,
                             "a function from lossforge.expr.ops")
        spec = _ops.OPS[name]
        self.expect("(")
        args = [self.expr()]
        while self.peek()[:2] == ("sym", ","):
            self.take()
            args.append(self.expr())
        if self.peek()[:2] != ("sym", ")"):
            raise self.fail("',' or ')'")
        end = self.take()[2]
        if len(args) != spec.arity:
            raise ParseError(f"{name} takes {spec.arity} argument(s), got {len(args)}", self.text,
                             end, f"{spec.arity} argument(s)")
        return self.node(name, args, pos)


def parse(text: str, variables: Iterable[str] | None = None, *, strict: bool = True) -> Expr:
    """Parse ``text`` into an :class:`Expr`.

    ``variables``: the names allowed as variables (default: ``ops.VARIABLES``, i.e.
    ``p y z f i u e``); ``strict=False`` accepts any identifier as a variable.
    Raises :class:`ParseError` (a ``ValueError``) with the position and what was expected.
    """
    if not isinstance(text, str):
        raise ParseError(f"expected a string, got {type(text).__name__}", str(text), 0, "a string")
    if len(text) > MAX_LENGTH:
        raise ParseError(f"text longer than {MAX_LENGTH} characters", text[:80], MAX_LENGTH,
                         "a shorter expression")
    allowed = None if not strict else frozenset(variables if variables is not None else _ops.VARIABLES)
    return _Parser(text, allowed).parse()
