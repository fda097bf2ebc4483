"""kubectl's `-o custom-columns` and `-o custom-columns-file`: a header row and one row per object,
each cell a JSONPath (relaxed: `.a.b`, `a.b` or `{.a.b}`). Pure."""

from __future__ import annotations

import re

from kubewire.cli.goformat import go_text
from kubewire.cli.jsonpath import JSONPathParseError, Template, parse

_RELAXED = re.compile(r"\{\.?([^{}]+)\}|\.?([^{}]+)")


def relaxed(expr: str) -> str:
    """kubectl's RelaxedJSONPathExpression: `a.b`, `.a.b`, `{a.b}` and `{.a.b}` all mean `{.a.b}`."""
    if not expr:
        return expr
    m = _RELAXED.fullmatch(expr)
    if m is None:
        raise JSONPathParseError("unexpected path string, expected a 'name1.name2' or '.name1.name2' or "
                                 "'{name1.name2}' or '{.name1.name2}'")
    return "{." + (m.group(1) or m.group(2)) + "}"


def parse_columns(spec: str) -> list[tuple[str, Template]]:
    """`-o custom-columns=HEADER:PATH,...`."""
    if not spec:
        raise JSONPathParseError("custom-columns format specified but no custom columns given")
    cols = []
    for part in spec.split(","):
        header, sep, expr = part.partition(":")
        if not sep:
            raise JSONPathParseError(f"unexpected custom-columns spec: {part}, expected <header>:<json-path-expr>")
        cols.append((header, parse(relaxed(expr))))
    return cols


def parse_columns_file(text: str) -> list[tuple[str, Template]]:
    """`-o custom-columns-file=FILE`: a line of headers, a line of paths, whitespace-separated."""
    lines = text.split("\n")
    if not lines or (len(lines) == 1 and not lines[0]):
        raise JSONPathParseError("invalid template, missing header line. Expected format is one line of space "
                                 "separated headers, one line of space separated column specs.")
    if len(lines) < 2 or (len(lines) == 2 and not lines[1]):
        raise JSONPathParseError("invalid template, missing spec line. Expected format is one line of space "
                                 "separated headers, one line of space separated column specs.")
    headers, specs = lines[0].rstrip("\r").split(), lines[1].rstrip("\r").split()
    if len(headers) != len(specs):
        raise JSONPathParseError(f"number of headers ({len(headers)}) and field specifications ({len(specs)}) don't match")
    return [(h, parse(relaxed(s))) for h, s in zip(headers, specs, strict=True)]


def cell(template: Template, obj: dict) -> str:
    groups = template.execute(obj, allow_missing_keys=True)
    values = [] if groups and groups[0] else ["<none>"]
    return ",".join(values + [go_text(v) for g in groups for v in g])


def tabulate(rows: list[list[str]]) -> str:
    """kubectl's tabwriter (minwidth 6, padding 3): every cell but a line's last is padded."""
    widths: dict[int, int] = {}
    for r in rows:
        for i, c in enumerate(r[:-1]):
            widths[i] = max(widths.get(i, 6), len(c) + 3)
    return "".join("".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1])) + (r[-1] if r else "") + "\n"
                   for r in rows)


def custom_columns(columns: list[tuple[str, Template]], objs: list[dict], no_headers: bool = False) -> str:
    """The rows kubectl prints for -o custom-columns: `<none>` where a path finds nothing, several
    values joined with commas, each as Go's %v prints it."""
    rows = [] if no_headers else [[h for h, _ in columns]]
    rows += [[cell(t, o) for _, t in columns] for o in objs]
    return tabulate(rows)
