"""Typed reads from untyped (YAML-shaped) objects, recording type errors instead of raising.

The API server decodes JSON into Go structs before it validates anything, so `replicas: "3"` or
`labels: {version: 1.0}` never reach validation there. We work on plain dicts, so every read says
what type it expects and turns a mismatch into a FieldError at the right path; validators then see
only well-typed values or None.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kubewire.api.errors import FieldError, not_supported, required, type_invalid, unknown_field

Errs = list[FieldError]


def child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def key(path: str, k: str) -> str:
    return f"{path}[{k}]"


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def get_dict(obj: dict, name: str, path: str, errs: Errs) -> dict | None:
    v = obj.get(name)
    if v is None:
        return None
    if not isinstance(v, dict):
        errs.append(type_invalid(child(path, name), v, "object"))
        return None
    return v


def get_list(obj: dict, name: str, path: str, errs: Errs) -> list | None:
    v = obj.get(name)
    if v is None:
        return None
    if not isinstance(v, list):
        errs.append(type_invalid(child(path, name), v, "array"))
        return None
    return v


def get_str(obj: dict, name: str, path: str, errs: Errs) -> str | None:
    v = obj.get(name)
    if v is None:
        return None
    if not isinstance(v, str):
        errs.append(type_invalid(child(path, name), v, "string"))
        return None
    return v


def get_int(obj: dict, name: str, path: str, errs: Errs) -> int | None:
    v = obj.get(name)
    if v is None:
        return None
    if not is_int(v):
        errs.append(type_invalid(child(path, name), v, "integer"))
        return None
    return v


def get_bool(obj: dict, name: str, path: str, errs: Errs) -> bool | None:
    v = obj.get(name)
    if v is None:
        return None
    if not isinstance(v, bool):
        errs.append(type_invalid(child(path, name), v, "boolean"))
        return None
    return v


def get_enum(obj: dict, name: str, allowed: tuple[str, ...], path: str, errs: Errs) -> str | None:
    """A required enum (restartPolicy, protocol...): unset is Required, others Unsupported."""
    value = get_str(obj, name, path, errs)
    if obj.get(name) in (None, ""):
        errs.append(required(child(path, name)))
    elif value is not None and value not in allowed:
        errs.append(not_supported(child(path, name), value, allowed))
    return value


def get_int_or_str(obj: dict, name: str, path: str, errs: Errs) -> int | str | None:
    """An IntOrString field (ports, maxSurge): anything else is a decode error upstream."""
    v = obj.get(name)
    if v is None:
        return None
    if not (is_int(v) or isinstance(v, str)):
        errs.append(type_invalid(child(path, name), v, "integer or string"))
        return None
    return v


def get_str_map(obj: dict, name: str, path: str, errs: Errs) -> dict[str, str] | None:
    """A map[string]string (labels, annotations, data): the non-string entries are reported and dropped."""
    m = get_dict(obj, name, path, errs)
    if m is None:
        return None
    out: dict[str, str] = {}
    for k, v in m.items():
        if isinstance(v, str):
            out[str(k)] = v
        else:
            errs.append(type_invalid(key(child(path, name), str(k)), v, "string"))
    return out


def get_str_list(obj: dict, name: str, path: str, errs: Errs) -> list[str] | None:
    items = get_list(obj, name, path, errs)
    if items is None:
        return None
    out = []
    for i, v in enumerate(items):
        if isinstance(v, str):
            out.append(v)
        else:
            errs.append(type_invalid(index(child(path, name), i), v, "string"))
    return out


def dict_items(obj: dict, name: str, path: str, errs: Errs) -> list[tuple[int, str, dict]]:
    """The entries of a list of objects with their index and path; non-objects are reported and skipped."""
    items = get_list(obj, name, path, errs)
    if items is None:
        return []
    out = []
    lpath = child(path, name)
    for i, v in enumerate(items):
        if isinstance(v, dict):
            out.append((i, index(lpath, i), v))
        else:
            errs.append(type_invalid(index(lpath, i), v, "object"))
    return out


def check_known(obj: dict, known: Iterable[str], path: str, errs: Errs) -> None:
    """Strict field validation: report keys the type does not have, in document order."""
    allowed = known if isinstance(known, (set, frozenset)) else frozenset(known)
    for k in obj:
        if k not in allowed:
            errs.append(unknown_field(child(path, str(k))))
