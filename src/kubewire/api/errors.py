"""Errors worded the way the Kubernetes API server words them.

Users paste these messages into search engines and compare them with what a real cluster said, so
the bodies follow apimachinery's `field.Error` exactly: `<path>: <Type>[: <value>][: <detail>]`,
with values printed the way Go's `%q` / `%v` / `%#v` print them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One problem with one field; `message` is everything after the path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class GoValue(str):
    """Text already rendered the way Go would print a value; printed verbatim."""


_GO_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def go_quote(s: str) -> str:
    """Go's strconv.Quote: printable runes kept, the rest escaped."""
    out = []
    for ch in s:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _go_elem(v: Any) -> str:
    return go_quote(v) if isinstance(v, str) else render_value(v)


def go_string_map(m: dict[str, str] | None) -> str:
    """`%#v` of a map[string]string (keys sorted, as Go's fmt sorts them)."""
    if not isinstance(m, dict):
        return "map[string]string(nil)"
    items = ", ".join(
        f"{go_quote(str(k))}:{_go_elem(v)}" for k, v in sorted(m.items(), key=lambda kv: str(kv[0]))
    )
    return "map[string]string{" + items + "}"


def go_string_slice(values: Sequence[str] | None) -> str:
    """`%#v` of a []string."""
    if not isinstance(values, (list, tuple)):
        return "[]string(nil)"
    return "[]string{" + ", ".join(_go_elem(v) for v in values) + "}"


def render_value(value: Any) -> str:
    """The bad value as field.Error prints it."""
    if isinstance(value, GoValue):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return go_string_map(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return go_string_slice(value)
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return repr(value)


def _with_detail(body: str, detail: str) -> str:
    return f"{body}: {detail}" if detail else body


def required(path: str, detail: str = "") -> FieldError:
    return FieldError(path, _with_detail("Required value", detail))


def forbidden(path: str, detail: str = "") -> FieldError:
    return FieldError(path, _with_detail("Forbidden", detail))


def invalid(path: str, value: Any, detail: str = "") -> FieldError:
    return FieldError(path, _with_detail(f"Invalid value: {render_value(value)}", detail))


def not_supported(path: str, value: Any, supported: Iterable[str]) -> FieldError:
    quoted = ", ".join(go_quote(v) for v in supported)
    detail = f"supported values: {quoted}" if quoted else ""
    return FieldError(path, _with_detail(f"Unsupported value: {render_value(value)}", detail))


def duplicate(path: str, value: Any) -> FieldError:
    return FieldError(path, f"Duplicate value: {render_value(value)}")


def not_found(path: str, value: Any) -> FieldError:
    return FieldError(path, f"Not found: {render_value(value)}")


def too_long(path: str, max_bytes: int) -> FieldError:
    return FieldError(path, f"Too long: must have at most {max_bytes} bytes")


def type_invalid(path: str, value: Any, type_name: str) -> FieldError:
    """What the API server's decoder rejects before validation even runs (e.g. `replicas: "3"`)."""
    return FieldError(path, f"Invalid value: {render_value(value)}: must be of type {type_name}")


def unknown_field(path: str) -> FieldError:
    """Strict field validation (kubectl's default): a typo like `prots:` is an error, not a no-op."""
    return FieldError(path, "Unknown field")


class ManifestError(Exception):
    """A document that cannot be applied, with enough context to find it in its file."""

    def __init__(
        self,
        source: str,
        index: int,
        kind: str | None,
        name: str | None,
        errors: list[FieldError],
        *,
        namespace: str | None = None,
        item: int | None = None,
    ) -> None:
        self.source = source
        self.index = index
        self.kind = kind
        self.name = name
        self.namespace = namespace
        self.item = item
        self.errors = list(errors)
        super().__init__(str(self))

    def where(self) -> str:
        """`<file>: document N [item M] (Kind ns/name)`; N is the 0-based index."""
        text = f"{self.source}: document {self.index}"
        if self.item is not None:
            text += f" item {self.item}"
        if self.kind:
            who = self.kind
            if self.name:
                who += f" {self.namespace}/{self.name}" if self.namespace else f" {self.name}"
            text += f" ({who})"
        return text

    def lines(self) -> list[str]:
        where = self.where()
        if not self.errors:
            return [f"error: {where}"]
        return [f"error: {where}: {e}" for e in self.errors]

    def __str__(self) -> str:
        return "\n".join(self.lines())

    @property
    def per_document(self) -> list[ManifestError]:
        """One error per failing document (here, just this one), so handlers need not tell a
        single error from ManifestErrors."""
        return [self]


class ManifestErrors(ManifestError):
    """Several documents that cannot be applied, reported together as kubectl reports an error per
    failing object. A ManifestError (its own fields are the first document's), so every existing
    handler catches it and prints every line; each line is exactly what that document's error alone
    would print."""

    def __init__(self, errors: Sequence[ManifestError]) -> None:
        self._all = [one for e in errors for one in e.per_document]
        if not self._all:
            raise ValueError("ManifestErrors needs at least one error")
        first = self._all[0]
        super().__init__(
            first.source,
            first.index,
            first.kind,
            first.name,
            first.errors,
            namespace=first.namespace,
            item=first.item,
        )

    @property
    def per_document(self) -> list[ManifestError]:
        return list(self._all)

    def lines(self) -> list[str]:
        return [line for e in self._all for line in e.lines()]


def raise_if_any(errors: Sequence[ManifestError]) -> None:
    """Raise what was collected: a lone error unchanged (so its message and type are what they were
    before errors were collected), several as one ManifestErrors, in the order given."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ManifestErrors(errors)


class ManifestPathError(Exception):
    """A path given on the command line that is not a readable manifest file or directory."""

    def __init__(self, path: str, message: str | None = None) -> None:
        self.path = path
        self.message = message or f'the path "{path}" does not exist'
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"error: {self.message}"
