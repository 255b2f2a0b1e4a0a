"""A small parser for the Graphviz DOT language (the subset a strict digraph needs).

Grammar (from the DOT spec, minus subgraphs and ports)::

    graph     : [strict] digraph [ID] '{' stmt_list '}'
    stmt_list : [stmt [';'] stmt_list]
    stmt      : ID '=' ID | (graph|node|edge) attr_list | ID ('->' ID)+ [attr_list] | ID [attr_list]
    attr_list : '[' [a_list] ']' [attr_list]
    a_list    : ID '=' ID [(';'|',')] [a_list]

IDs are identifiers, numerals or double-quoted strings (``\\"`` escapes a
quote). Raises ``DotError`` on anything else, so a test parsing ``wireframe
graph --format dot`` checks it is valid dot.
"""

from __future__ import annotations

import itertools
import re

import attrs


class DotError(ValueError):
    """The text is not valid dot (for this subset)."""


TOKEN = re.compile(
    r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<arrow>->)|(?P<punct>[{}\[\];,=])'
    r"|(?P<id>[A-Za-z_\x80-\uffff][A-Za-z_0-9\x80-\uffff]*|-?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)))",
    re.S,
)


@attrs.define
class Graph:
    """What the parser found: the graph's name, nodes with attributes, edges with attributes."""

    name: str | None = None
    nodes: dict[str, dict[str, str]] = attrs.Factory(dict)
    edges: list[tuple[str, str, dict[str, str]]] = attrs.Factory(list)
    attrs: dict[str, str] = attrs.Factory(dict)


def tokens(text: str) -> list[str]:
    """The text's tokens; strings keep their quotes."""
    out: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise DotError(f"unexpected character at {pos}: {text[pos : pos + 20]!r}")
        out.append(m.group(m.lastgroup or "id"))
        pos = m.end()
    return out


def _unquote(tok: str) -> str:
    return tok[1:-1].replace('\\"', '"') if tok.startswith('"') else tok


class _Parser:
    def __init__(self, toks: list[str]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise DotError(f"expected {expected or 'a token'} at token {self.i}, got {tok!r}")
        self.i += 1
        return tok

    def is_id(self, tok: str | None) -> bool:
        return tok is not None and (tok.startswith('"') or bool(re.match(r"[\w.\-]", tok)))

    def ident(self) -> str:
        tok = self.take()
        if not self.is_id(tok) or tok == "->":
            raise DotError(f"expected an ID at token {self.i - 1}, got {tok!r}")
        return _unquote(tok)

    def attr_list(self) -> dict[str, str]:
        found: dict[str, str] = {}
        while self.peek() == "[":
            self.take("[")
            while self.peek() != "]":
                key = self.ident()
                self.take("=")
                found[key] = self.ident()
                if self.peek() in (",", ";"):
                    self.take()
            self.take("]")
        return found

    def graph(self) -> Graph:
        g = Graph()
        if self.peek() == "strict":
            self.take()
        self.take("digraph")
        if self.peek() != "{":
            g.name = self.ident()
        self.take("{")
        while self.peek() != "}":
            self.stmt(g)
            if self.peek() == ";":
                self.take()
        self.take("}")
        if self.peek() is not None:
            raise DotError(f"text after the graph: {self.peek()!r}")
        return g

    def stmt(self, g: Graph) -> None:
        if self.peek() in ("graph", "node", "edge"):
            self.take()
            self.attr_list()
            return
        first = self.ident()
        if self.peek() == "=":
            self.take("=")
            g.attrs[first] = self.ident()
            return
        chain = [first]
        while self.peek() == "->":
            self.take("->")
            chain.append(self.ident())
        found = self.attr_list()
        if len(chain) == 1:
            g.nodes.setdefault(first, {}).update(found)
        else:
            for a, b in itertools.pairwise(chain):
                g.edges.append((a, b, found))


def parse_dot(text: str) -> Graph:
    """Parse a digraph; raises :class:`DotError` if it is not valid dot."""
    return _Parser(tokens(text)).graph()
