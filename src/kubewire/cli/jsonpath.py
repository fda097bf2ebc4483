"""kubectl's JSONPath templates, as client-go's util/jsonpath evaluates them.

Scripts depend on the quirks, so they are kept: `['a.b']` is the path `.a.b` (escape dots as
`a\\.b`), a missing key prints nothing unless missing keys are refused, an index out of range is an
error either way, maps and lists print as Go's compact JSON and scalars as Go's `fmt.Print`.
Pure: no I/O; `kubewire get` reads files and prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kubewire.cli.goformat import go_json, go_text, printed


class JSONPathError(Exception):
    """An execution error, worded as client-go words it ("x is not found")."""


class JSONPathParseError(JSONPathError):
    """A template client-go's parser refuses ("unterminated array")."""


# --- the parse tree (client-go's node types) ---------------------------------------------------

@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Param:
    known: bool
    value: int
    derived: bool = False


@dataclass(frozen=True)
class Array:
    params: tuple[Param, Param, Param]


@dataclass(frozen=True)
class Filter:
    left: tuple
    right: tuple
    op: str


@dataclass(frozen=True)
class Literal:
    """An int, float or bool in an action (the right side of a filter, mostly)."""
    value: Any


@dataclass(frozen=True)
class Wildcard:
    pass


@dataclass(frozen=True)
class Recursive:
    pass


@dataclass(frozen=True)
class Union:
    branches: tuple[tuple, ...]


@dataclass(frozen=True)
class Identifier:
    name: str


@dataclass(frozen=True)
class Action:
    """What is between `{` and `}`: steps applied left to right."""
    nodes: tuple


# --- the parser ---------------------------------------------------------------------------------

_EOF = ""
_DICT_KEY = re.compile(r"'([^']*)'")  # (all three used with fullmatch, as Go's ^...$)
_SLICE = re.compile(r"(-?[0-9]*)(:-?[0-9]*)?(:-?[0-9]*)?")
_COMPARISON = re.compile(r"([^!<>=]+)([!<>=]+)(.+?)")


def _terminator(r: str) -> bool:
    return r in (_EOF, " ", "\t", "\r", "\n", ".", ",", "[", "]", "$", "@", "{", "}")


def _alnum(r: str) -> bool:
    return r == "_" or r.isalpha() or r.isdecimal()


def _go_rune(r: str) -> str:
    """Go's %#U."""
    return f"U+{ord(r):04X}" + (f" '{r}'" if r.isprintable() else "")


class _Parser:
    def __init__(self, text: str) -> None:
        self.input, self.pos, self.start, self.width = text, 0, 0, 0

    def next(self) -> str:
        if self.pos >= len(self.input):
            self.width = 0
            return _EOF
        self.width = 1
        self.pos += 1
        return self.input[self.pos - 1]

    def peek(self) -> str:
        r = self.next()
        self.pos -= self.width
        return r

    def backup(self) -> None:
        self.pos -= self.width

    def consume(self) -> str:
        value, self.start = self.input[self.start:self.pos], self.pos
        return value

    def parse(self) -> list:
        root: list = []
        while True:
            at = self.input.find("{", self.pos)
            if at < 0:
                self.pos = len(self.input)
                if self.pos > self.start:
                    root.append(Text(self.consume()))
                return root
            self.pos = at
            if self.pos > self.start:
                root.append(Text(self.consume()))
            self.pos += 1
            self.consume()
            action: list = []
            root.append(action)
            self.inside_action(action)

    def inside_action(self, cur: list) -> None:
        while True:
            if self.input.startswith("}", self.pos):
                self.pos += 1
                self.consume()
                return
            if self.input.startswith("[?(", self.pos):
                self.filter(cur)
                continue
            if self.input.startswith("..", self.pos):
                self.recursive(cur)
                continue
            r = self.next()
            if r == _EOF or r in "\r\n":
                raise JSONPathParseError("unclosed action")
            if r in " @$":  # `@` and `$` are the current object: nothing to do
                self.consume()
            elif r == "[":
                self.array(cur)
            elif r in "\"'":
                self.quote(cur, r)
            elif r == ".":
                self.field(cur)
            elif r in "+-" or r.isdecimal():
                self.backup()
                self.number(cur)
            elif _alnum(r):
                self.backup()
                self.identifier(cur)
            else:
                raise JSONPathParseError(f"unrecognized character in action: {_go_rune(r)}")

    def identifier(self, cur: list) -> None:
        while not _terminator(self.next()):
            pass
        self.backup()
        value = self.consume()
        cur.append(Literal(value == "true") if value in ("true", "false") else Identifier(value))

    def recursive(self, cur: list) -> None:
        if cur and isinstance(cur[-1], Recursive):
            raise JSONPathParseError("invalid multiple recursive descent")
        self.pos += 2
        self.consume()
        cur.append(Recursive())
        if _alnum(self.peek()):
            self.field(cur)

    def number(self, cur: list) -> None:
        if self.peek() in ("+", "-"):
            self.next()
        while True:
            r = self.next()
            if r != "." and not r.isdecimal():
                self.backup()
                break
        value = self.consume()
        try:
            cur.append(Literal(int(value)))
            return
        except ValueError:
            pass
        try:
            cur.append(Literal(float(value)))
        except ValueError:
            raise JSONPathParseError(f"cannot parse number {value}") from None

    def array(self, cur: list) -> None:
        while True:
            r = self.next()
            if r in (_EOF, "\n"):
                raise JSONPathParseError("unterminated array")
            if r == "]":
                break
        text = self.consume()[1:-1]
        if text == "*":
            text = ":"
        parts = text.split(",")
        if len(parts) > 1:
            cur.append(Union(tuple(_action(f"[{p.strip(' ')}]") for p in parts)))
            return
        key = _DICT_KEY.fullmatch(text)
        if key:  # ['a.b'] is .a.b, as upstream parses it
            cur.extend(_action(f".{key.group(1)}"))
            return
        m = _SLICE.fullmatch(text)
        if m is None:
            raise JSONPathParseError(f"invalid array index {text}")
        groups = list(m.groups(""))
        params: list[Param] = []
        for i, g in enumerate(groups):
            if g:
                if i > 0:
                    g = g[1:]
                if i > 0 and g == "":
                    params.append(Param(False, 0))
                    continue
                try:
                    params.append(Param(True, int(g)))
                except ValueError:
                    raise JSONPathParseError(f"array index {g} is not a number") from None
            elif i == 1:  # [i]: the slice [i:i+1]
                params.append(Param(True, params[0].value + 1, derived=True))
            else:
                params.append(Param(False, 0))
        cur.append(Array((params[0], params[1], params[2])))

    def filter(self, cur: list) -> None:
        self.pos += 3
        self.consume()
        begin = end = False
        pair = ""
        while True:
            r = self.next()
            if r in (_EOF, "\n"):
                raise JSONPathParseError("unterminated filter")
            if r in "\"'":
                if not begin:
                    begin, pair = True, r
                    continue
                if self.input[self.pos - 2] != "\\" and r == pair:
                    end = True
            elif r == ")" and begin == end:
                break
        if self.next() != "]":
            raise JSONPathParseError("unclosed array expect ]")
        text = self.consume()[:-2]
        m = _COMPARISON.fullmatch(text)
        if m is None:
            cur.append(Filter(_action(text), (), "exists"))
        else:
            cur.append(Filter(_action(m.group(1)), _action(m.group(3)), m.group(2)))

    def quote(self, cur: list, end: str) -> None:
        while True:
            r = self.next()
            if r in (_EOF, "\n"):
                raise JSONPathParseError("unterminated quoted string")
            if r == end and self.input[self.pos - 2] != "\\":
                break
        value = self.consume()
        try:
            cur.append(Text(_unquote(value)))
        except ValueError:
            raise JSONPathParseError(f"unquote string {value} error invalid syntax") from None

    def field(self, cur: list) -> None:
        self.consume()
        while True:
            r = self.next()
            if r == "\\":
                self.next()
            elif _terminator(r):
                self.backup()
                break
        value = self.consume()
        cur.append(Wildcard() if value == "*" else Field(value.replace("\\", "")))


def _action(text: str) -> tuple:
    """client-go's parseAction: the steps of `{text}`."""
    return tuple(_Parser("{" + text + "}").parse()[0])


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _unquote(s: str) -> str:
    """Go's strconv.Unquote, for single quotes too (client-go's UnquoteExtend)."""
    if len(s) < 2 or s[0] != s[-1] or s[0] not in "\"'":
        raise ValueError(s)
    quote, body = s[0], s[1:-1]
    if "\\" not in body and quote not in body:
        return body
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        i += 1
        if c == quote:
            raise ValueError(s)
        if c != "\\":
            out += c.encode()
            continue
        if i >= len(body):
            raise ValueError(s)
        e = body[i]
        i += 1
        if e in _ESCAPES:
            out += _ESCAPES[e].encode()
        elif e in "'\"":
            if e != quote:
                raise ValueError(s)
            out += e.encode()
        elif e in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i:i + n]
            if len(digits) != n or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(s)
            i += n
            v = int(digits, 16)
            if e == "x":
                out.append(v)
            elif v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
                raise ValueError(s)
            else:
                out += chr(v).encode()
        elif e in "01234567":
            digits = body[i - 1:i + 2]
            if len(digits) != 3 or not all(d in "01234567" for d in digits) or int(digits, 8) > 255:
                raise ValueError(s)
            i += 2
            out.append(int(digits, 8))
        else:
            raise ValueError(s)
    return out.decode(errors="replace")


# --- evaluation ---------------------------------------------------------------------------------

def _go_type(v: Any) -> str:
    """The Go type of a value decoded from JSON, for error messages."""
    if isinstance(v, dict):
        return "map[string]interface {}"
    if isinstance(v, list):
        return "[]interface {}"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int64"
    if isinstance(v, float):
        return "float64"
    return "string" if isinstance(v, str) else type(v).__name__


def _children(v: Any) -> list:
    if isinstance(v, dict):
        return list(v.values())
    if isinstance(v, list):
        return list(v)
    if isinstance(v, str):  # Go ranges over a string's bytes
        return list(v.encode())
    return []


def _basic(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    raise JSONPathError("invalid type for comparison")


def _equal(a: Any, b: Any) -> bool:
    if _basic(a) != _basic(b):
        raise JSONPathError("incompatible types for comparison")
    return bool(a == b)


def _less(a: Any, b: Any) -> bool:
    ka, kb = _basic(a), _basic(b)
    if ka != kb:
        raise JSONPathError("incompatible types for comparison")
    if ka == "bool":
        raise JSONPathError("invalid type for comparison")
    return bool(a < b)


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    if op == "<":
        return _less(a, b)
    if op == "<=":
        return _less(a, b) or _equal(a, b)
    if op == ">":
        return not (_less(a, b) or _equal(a, b))
    if op == ">=":
        return not _less(a, b)
    raise JSONPathError(f"unrecognized filter operator {op}")


class _Run:
    """One execution: client-go's FindResults, with its range/end bookkeeping."""

    def __init__(self, segments: list, allow_missing: bool) -> None:
        self.segments = segments
        self.allow_missing = allow_missing
        self.last_end = -1
        self.range_started = self.range_ended = False

    def results(self, start: int, data: Any, depth: int) -> list[list]:
        out: list[list] = []
        i = start
        while i < len(self.segments):
            seg = self.segments[i]
            self.range_started = self.range_ended = False
            values = [seg.text] if isinstance(seg, Text) else self.steps([data], seg.nodes, depth)
            if self.range_ended:  # `{end}`: this iteration of the enclosing range is done
                self.last_end = i
                return out
            if self.range_started:
                for v in values or [None]:  # an empty range still walks its body, to find its end
                    groups = self.results(i + 1, v, depth + 1)
                    if values:
                        out += groups
                if self.last_end > i:
                    i = self.last_end
                i += 1
                continue
            out.append(values)
            i += 1
        return out

    def steps(self, values: list, nodes: tuple, depth: int) -> list:
        for node in nodes:
            values = self.step(values, node, depth)
        return values

    def step(self, values: list, node: Any, depth: int) -> list:
        if isinstance(node, Text):
            return [node.text]
        if isinstance(node, Literal):
            return [node.value for _ in values]
        if isinstance(node, Field):
            return self.field(values, node.name)
        if isinstance(node, Array):
            return self.array(values, node.params)
        if isinstance(node, Filter):
            return self.filter(values, node, depth)
        if isinstance(node, Wildcard):
            return [c for v in values if v is not None for c in _children(v)]
        if isinstance(node, Recursive):
            return self.recursive(values)
        if isinstance(node, Union):
            return [r for branch in node.branches for r in self.steps(values, branch, depth)]
        if isinstance(node, Identifier):
            if node.name == "range":
                self.range_started = True
                return values
            if node.name == "end":
                if depth == 0:
                    raise JSONPathError("not in range, nothing to end")
                self.range_ended = True
                return []
            raise JSONPathError(f"unrecognized identifier {node.name}")
        raise JSONPathError(f"unexpected Node {node}")

    def field(self, values: list, name: str) -> list:
        if not values:
            return []
        out = [v[name] for v in values if isinstance(v, dict) and name in v]
        if not out and not self.allow_missing:
            raise JSONPathError(f"{name} is not found")
        return out

    def array(self, values: list, params: tuple[Param, Param, Param]) -> list:
        out: list = []
        first, last, step = params
        for v in values:
            if v is None:
                continue
            if not isinstance(v, list):
                raise JSONPathError(f"{_go_type(v)} is not array or slice")
            n = len(v)
            start = first.value if first.known else 0
            if start < 0:
                start += n
            end = last.value if last.known else n
            if end < 0 or (end == 0 and last.derived):
                end += n
            if start == end:  # zero elements asked for: allowed (and, as upstream, the end of the walk)
                return out
            if start >= n or start < 0:
                raise JSONPathError(f"array index out of bounds: index {start}, length {n}")
            if end > n or end < 0:
                raise JSONPathError(f"array index out of bounds: index {end - 1}, length {n}")
            if start > end:
                raise JSONPathError(f"starting index {start} is greater than ending index {end}")
            if step.known and step.value <= 0:
                raise JSONPathError("step must be > 0")
            out += v[start:end:step.value if step.known else 1]
        return out

    def filter(self, values: list, node: Filter, depth: int) -> list:
        out: list = []
        for v in values:
            if not isinstance(v, list):
                raise JSONPathError(f"{go_text(v)} is not array or slice and cannot be filtered")
            for item in v:
                if node.op == "exists":
                    try:
                        if self.steps([item], node.left, depth):
                            out.append(item)
                    except JSONPathError:
                        pass
                    continue
                lefts = self.steps([item], node.left, depth)
                if not lefts:
                    continue
                if len(lefts) > 1:
                    raise JSONPathError("can only compare one element at a time")
                rights = self.steps([item], node.right, depth)
                if not rights:
                    continue
                if len(rights) > 1:
                    raise JSONPathError("can only compare one element at a time")
                if _compare(node.op, lefts[0], rights[0]):
                    out.append(item)
        return out

    def recursive(self, values: list) -> list:
        out: list = []
        for v in values:
            if v is None:
                continue
            kids = _children(v)
            if kids:
                out.append(v)
                out += self.recursive(kids)
        return out


@dataclass(frozen=True)
class Template:
    """A parsed template: text and actions, in order."""
    source: str
    segments: tuple

    def execute(self, data: Any, allow_missing_keys: bool = True) -> list[list]:
        """The result groups: one per action (and per text), as FindResults returns them."""
        return _Run(list(self.segments), allow_missing_keys).results(0, data, 0)

    def render(self, data: Any, allow_missing_keys: bool = True, as_json: bool = False) -> str:
        groups = self.execute(data, allow_missing_keys)
        if as_json:  # jsonpath-as-json: each group as an indented JSON array
            return "".join(go_json(g, indent=True) + "\n" for g in groups)
        return "".join(" ".join(printed(v) for v in g) for g in groups)


def parse(template: str) -> Template:
    """Parse a template, or raise JSONPathParseError with client-go's message."""
    segments = []
    for seg in _Parser(template).parse():
        segments.append(seg if isinstance(seg, Text) else Action(tuple(seg)))
    return Template(template, tuple(segments))


def render(template: str, data: Any, allow_missing_keys: bool = True, as_json: bool = False) -> str:
    return parse(template).render(data, allow_missing_keys, as_json)
