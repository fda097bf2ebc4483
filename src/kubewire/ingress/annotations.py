"""The ingress-nginx annotations kubewire honours, parsed with ingress-nginx's meaning.

Upstream (internal/ingress/annotations/*): values are read from `nginx.ingress.kubernetes.io/<name>`;
an annotation that does not parse falls back to the controller default (it never fails the Ingress);
booleans are Go's strconv.ParseBool; timeouts are whole seconds. Defaults are the ConfigMap defaults
(internal/ingress/controller/config): connect 5 s, send and read 60 s, ssl-redirect on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PREFIX = "nginx.ingress.kubernetes.io/"
BACKEND_PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPCS")
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
# A rewrite target is a URI with at most numbered capture references ($1..$9): anything else
# (another nginx variable, quotes, spaces) would be configuration, not a path.
_TARGET = re.compile(r"^(?:[A-Za-z0-9/._~%!&'()*+,;=:@?-]|\$[0-9])*$")


@dataclass(frozen=True)
class Annotations:
    backend_protocol: str = "HTTP"
    connect_timeout: int = 5
    send_timeout: int = 60
    read_timeout: int = 60
    rewrite_target: str = ""
    use_regex: bool = False
    ssl_redirect: bool = True
    force_ssl_redirect: bool = False
    problems: tuple[str, ...] = field(default=(), compare=False)

    @property
    def regex(self) -> bool:
        """Paths are regular expressions when asked for, or when the rewrite target refers to
        capture groups (as ingress-nginx switches a server to regex locations for rewrite-target)."""
        return self.use_regex or "$" in self.rewrite_target


def _bool(raw: str, default: bool, name: str, problems: list[str]) -> bool:
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    problems.append(f"{PREFIX}{name}: {raw!r} is not a boolean; using {str(default).lower()}")
    return default


def _seconds(raw: str, default: int, name: str, problems: list[str]) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        problems.append(f"{PREFIX}{name}: {raw!r} is not a number of seconds; using {default}")
        return default
    if value < 0:
        problems.append(f"{PREFIX}{name}: {raw!r} is negative; using {default}")
        return default
    return value


def parse(annotations: dict | None) -> Annotations:
    a = {k[len(PREFIX):]: str(v) for k, v in (annotations or {}).items() if isinstance(k, str) and k.startswith(PREFIX)}
    problems: list[str] = []
    proto = "HTTP"
    if "backend-protocol" in a:
        p = a["backend-protocol"].strip().upper()
        if p in BACKEND_PROTOCOLS:
            proto = p
        else:
            problems.append(f"{PREFIX}backend-protocol: {a['backend-protocol']!r} is not one of "
                            f"{', '.join(BACKEND_PROTOCOLS)}; using HTTP")
    target = a.get("rewrite-target", "").strip()
    if target and (not target.startswith("/") or not _TARGET.match(target)):
        problems.append(f"{PREFIX}rewrite-target: {target!r} must be an absolute path (capture references "
                        f"$1..$9 allowed); ignored")
        target = ""
    return Annotations(
        backend_protocol=proto,
        connect_timeout=_seconds(a["proxy-connect-timeout"], 5, "proxy-connect-timeout", problems)
        if "proxy-connect-timeout" in a else 5,
        send_timeout=_seconds(a["proxy-send-timeout"], 60, "proxy-send-timeout", problems)
        if "proxy-send-timeout" in a else 60,
        read_timeout=_seconds(a["proxy-read-timeout"], 60, "proxy-read-timeout", problems)
        if "proxy-read-timeout" in a else 60,
        rewrite_target=target,
        use_regex=_bool(a["use-regex"], False, "use-regex", problems) if "use-regex" in a else False,
        ssl_redirect=_bool(a["ssl-redirect"], True, "ssl-redirect", problems) if "ssl-redirect" in a else True,
        force_ssl_redirect=_bool(a["force-ssl-redirect"], False, "force-ssl-redirect", problems)
        if "force-ssl-redirect" in a else False,
        problems=tuple(problems),
    )
