"""`get --sort-by=JSONPATH`, as kubectl's SortingPrinter: items ordered by the first value the path
finds in each (numbers by value, strings in natural order so "pod-2" < "pod-10", RFC 3339 times
chronologically); items without the field first; an error when no item has it."""

from __future__ import annotations

import re
from typing import Any

from kubewire.cli.jsonpath import JSONPathError, parse
from kubewire.controllers.podutil import parse_quantity

_CHUNKS = re.compile(r"(\d+)")
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?$")


def relaxed(field: str) -> str:
    """RelaxedJSONPathExpression: `.a.b`, `a.b` and `{.a.b}` are one path."""
    field = field.strip()
    if field.startswith("{") and field.endswith("}"):
        return field
    return "{" + (field if field.startswith(".") else "." + field) + "}"


def _natural(s: str) -> tuple:
    """sortorder.NaturalLess: runs of digits compare as numbers, the rest as text."""
    return tuple((0, int(c), "") if c.isdigit() else (1, 0, c) for c in _CHUNKS.split(s) if c)


def _key(v: Any, quantities: bool) -> tuple:
    if isinstance(v, bool):
        return (1, _natural(str(v).lower()))
    if isinstance(v, int | float):
        return (0, v)
    if quantities:  # isLess: two resource quantities ("500m", "1Gi") compare by value
        return (0, parse_quantity(v))
    return (1, _natural(v if isinstance(v, str) else str(v)))


def api_order(kind: str, items: list[dict]) -> list[dict]:
    """The order the API lists a kind in, where kubewire's names differ from upstream's: Events are
    named <object>.<time> upstream, so each object's come in time order."""
    if kind != "Event":
        return items
    return sorted(items, key=lambda o: (o["metadata"].get("namespace", ""),
                                        (o.get("involvedObject") or {}).get("name", "") + ".", o.get("eventTime") or ""))


def chronological(events: list[dict]) -> list[dict]:
    """Events in the order things happened, as describe and kubectl events list them: last seen,
    then recorded (eventTime keeps one second's events in order)."""
    return sorted(events, key=lambda e: (e.get("lastTimestamp") or "", e.get("eventTime") or "", e["metadata"]["name"]))


def sort_items(items: list[dict], field: str) -> list[dict]:
    """The items in kubectl's --sort-by order (stable: ties keep the API's order)."""
    path = relaxed(field)
    try:
        template = parse(path)
    except JSONPathError as e:
        raise ValueError(str(e)) from None
    if len(items) <= 1:
        return items  # kubectl sorts (and can complain) only when there is something to order
    values = []
    for o in items:
        groups = template.execute(o, True)
        values.append(groups[0][0] if groups and groups[0] else None)
    if all(v is None for v in values):
        raise ValueError(f'couldn\'t find any field with path "{path}" in the list of objects')
    quantities = all(isinstance(v, str) and _QUANTITY.match(v) for v in values if v is not None)
    order = sorted(range(len(items)),
                   key=lambda i: (values[i] is not None, _key(values[i], quantities) if values[i] is not None else ()))
    return [items[i] for i in order]
