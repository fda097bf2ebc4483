"""Values printed as Go prints them, which kubectl's JSONPath output and custom columns show:
`fmt.Print` for scalars (`<nil>`, `1e+06`), encoding/json for maps and lists (sorted keys, `<>&`
escaped). Pure."""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any


def printed(v: Any) -> str:
    """PrintResults: maps and lists as JSON, everything else as fmt.Print prints it."""
    return go_json(v) if isinstance(v, (dict, list)) else go_text(v)


def _digits(f: float) -> tuple[str, int]:
    """The shortest decimal digits that round-trip, and the decimal point's position."""
    t = Decimal(repr(abs(f))).normalize().as_tuple()
    digits = "".join(map(str, t.digits)).rstrip("0") or "0"
    exp = int(t.exponent)
    return digits, len(t.digits) + exp


def _fixed(digits: str, dp: int) -> str:
    if dp <= 0:
        return "0." + "0" * -dp + digits
    if dp >= len(digits):
        return digits + "0" * (dp - len(digits))
    return digits[:dp] + "." + digits[dp:]


def _exponent(digits: str, dp: int, min_exp_digits: int) -> str:
    exp = dp - 1
    mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mant}e{'-' if exp < 0 else '+'}{abs(exp):0{min_exp_digits}d}"


def _go_float(f: float, for_json: bool) -> str:
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, f) < 0 else ""
    if f == 0:
        return sign + "0"
    digits, dp = _digits(f)
    if for_json:  # encoding/json: 'f' unless very small or large, exponents without a leading zero
        use_exp = abs(f) < 1e-6 or abs(f) >= 1e21
        return sign + (_exponent(digits, dp, 1) if use_exp else _fixed(digits, dp))
    exp = dp - 1  # fmt's %v: %g with the shortest digits, so %e below 1e-4 and from 1e6
    return sign + (_exponent(digits, dp, 2) if exp < -4 or exp >= 6 else _fixed(digits, dp))


def go_text(v: Any) -> str:
    """Go's fmt.Sprint of a value decoded from JSON (maps as map[k:v], lists as [a b])."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go_float(v, for_json=False)
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_text(v[k])}" for k in sorted(v, key=str)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(go_text(x) for x in v) + "]"
    return str(v)


_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _json_string(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _HTML[m.group()], out)


def go_json(v: Any, indent: bool = False, _level: int = 0) -> str:
    """Go's json.Marshal (compact) or json.MarshalIndent(v, "", "    "): sorted keys, HTML-safe."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go_float(v, for_json=True)
    if isinstance(v, str):
        return _json_string(v)
    if isinstance(v, dict):
        items = [(_json_string(str(k)), v[k]) for k in sorted(v, key=str)]
        if not items:
            return "{}"
        if not indent:
            return "{" + ",".join(f"{k}:{go_json(x)}" for k, x in items) + "}"
        pad, inner = "    " * _level, "    " * (_level + 1)
        body = ",\n".join(f"{inner}{k}: {go_json(x, True, _level + 1)}" for k, x in items)
        return "{\n" + body + "\n" + pad + "}"
    if isinstance(v, (list, tuple)):
        if not v:
            return "[]"
        if not indent:
            return "[" + ",".join(go_json(x) for x in v) + "]"
        pad, inner = "    " * _level, "    " * (_level + 1)
        return "[\n" + ",\n".join(inner + go_json(x, True, _level + 1) for x in v) + "\n" + pad + "]"
    return _json_string(str(v))
