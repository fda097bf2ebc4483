"""`kubewire get -w`: the objects, then one more row (or document) per change, as kubectl's get.go
watch() prints a watch: ADDED for what appears (or enters the selector), MODIFIED for a new
resourceVersion with new content, DELETED with the object as last seen (or leaving the selector).

The store has no watch stream: the loop asks SQLite whether anyone committed (PRAGMA data_version,
~20 times a second) and, only then, reads the rows written since its last snapshot through the
store's change log. Deciding what to print from two object sets is pure, and so is the printing."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TextIO

from kubewire.cli.custom_columns import cell
from kubewire.cli.goformat import go_json
from kubewire.cli.printers import table_columns
from kubewire.controllers.types import Key, Snapshot, key_of

if TYPE_CHECKING:
    from kubewire.cli.jsonpath import Template
    from kubewire.store.db import Store

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
EVENT_CELL = {ADDED: "ADDED   ", MODIFIED: "MODIFIED", DELETED: "DELETED "}  # tableprinter's formatEventType
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Event:
    type: str
    obj: dict

    def body(self) -> dict:
        """metav1.WatchEvent as printers see it with --output-watch-events."""
        return {"type": self.type, "object": self.obj}


def _everything(_labels: dict) -> bool:
    return True


@dataclass(frozen=True)
class Scope:
    """What one watch follows: one kind, in one namespace (None: all, or cluster-scoped), one name or
    the objects whose labels the selector takes."""

    kind: str
    namespace: str | None = None
    name: str | None = None
    labels: Callable[[dict], bool] = _everything

    def matches(self, obj: dict) -> bool:
        meta = obj.get("metadata") or {}
        if obj.get("kind") != self.kind:
            return False
        if self.namespace is not None and (meta.get("namespace") or "") != self.namespace:
            return False
        if self.name is not None:
            return meta.get("name") == self.name
        return self.labels(meta.get("labels") or {})


# ---- what to print ---------------------------------------------------------------------------
def _without_rv(obj: dict) -> dict:
    meta = obj.get("metadata") or {}
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}


def _changed(old: dict, new: dict) -> bool:
    """A new resourceVersion with new content: the API server skips writes that change nothing, so a
    watcher never sees them; the store stamps every write, so the content decides."""
    rv = (old.get("metadata") or {}).get("resourceVersion")
    if rv == (new.get("metadata") or {}).get("resourceVersion"):
        return False
    return _without_rv(old) != _without_rv(new)


def diff(seen: Mapping[Key, dict], changed: Iterable[tuple[Key, dict | None]], scope: Scope) -> list[Event]:
    """The events a watch of `scope` delivers for these writes (key: object now, None when gone), given
    the objects it has delivered so far. An object that leaves the selector is DELETED with its last
    content, one that enters it ADDED, as the API server's watch cache filters; a name deleted and
    created again between two polls is both events."""
    out: list[Event] = []
    for key, obj in changed:
        new = obj if obj is not None and scope.matches(obj) else None
        old = seen.get(key)
        if old is None:
            out += [Event(ADDED, new)] if new is not None else []
        elif new is None:
            out.append(Event(DELETED, old))
        elif (old["metadata"].get("uid") or new["metadata"].get("uid")) != new["metadata"].get("uid"):
            out += [Event(DELETED, old), Event(ADDED, new)]
        elif _changed(old, new):
            out.append(Event(MODIFIED, new))
    return out


def advance(seen: Mapping[Key, dict], changed: Iterable[tuple[Key, dict | None]], scope: Scope) -> dict[Key, dict]:
    """The objects a watch holds after these writes (same-content rewrites included, so a later DELETED
    shows the newest content)."""
    out = dict(seen)
    for key, obj in changed:
        if obj is not None and scope.matches(obj):
            out[key] = obj
        else:
            out.pop(key, None)
    return out


def changes(seen: Mapping[Key, dict], old: Snapshot, new: Snapshot, kind: str) -> list[tuple[Key, dict | None]]:
    """The keys of `kind` written between two snapshots, each once in the order of its last write, with
    its object now; every key there is when the change log cannot tell."""
    keys = new.changed_keys(old.cursor)
    if keys is None:
        keys = sorted(set(seen) | {(kind, ns, name) for ns, name in new.index(kind)})
    last = {k: i for i, k in enumerate(keys) if k[0] == kind}
    return [(k, new.objects.get(k)) for k in sorted(last, key=last.__getitem__)]


# ---- how to print it -------------------------------------------------------------------------
@dataclass
class Aligner:
    """kubectl's tabwriter with RememberWidths: cells padded to their column's width (the widest cell
    so far plus 3, at least `min_width`), columns never narrower than before. `strip`: the lines of
    kubewire's tables (printers.table), whose last column is padded and then stripped."""

    min_width: int = 0
    strip: bool = False
    widths: dict[int, int] = field(default_factory=dict)

    def lines(self, rows: list[list[str]]) -> str:
        for r in rows:
            for i, c in enumerate(r[:-1]):
                self.widths[i] = max(self.widths.get(i, self.min_width), len(c) + 3)
        text = ["".join(c.ljust(self.widths[i]) for i, c in enumerate(r[:-1])) + (r[-1] if r else "") for r in rows]
        return "".join((t.rstrip() if self.strip else t) + "\n" for t in text)


class Format(Protocol):
    def render(self, events: list[Event]) -> str: ...


@dataclass
class Rows:
    """Tables and custom columns: the header once, with the first row printed (none while nothing is),
    then rows aligned with everything printed before."""

    header: list[str]
    cells: Callable[[Event], list[str]]
    aligner: Aligner
    no_headers: bool = False
    headed: bool = False

    def render(self, events: list[Event]) -> str:
        if not events:
            return ""
        rows = [] if self.no_headers or self.headed else [self.header]
        self.headed = True
        return self.aligner.lines(rows + [self.cells(e) for e in events])


@dataclass
class Documents:
    """One document per event (json, yaml, name, jsonpath); yaml separates them with `---`."""

    one: Callable[[Event], str]
    separator: str = ""
    printed: int = 0

    def render(self, events: list[Event]) -> str:
        out = []
        for e in events:
            out.append((self.separator if self.printed else "") + self.one(e))
            self.printed += 1
        return "".join(out)


def table_format(kind: str, wide: bool, namespaced_all: bool, show_labels: bool, no_headers: bool,
                 with_events: bool) -> Rows:
    """kubectl's table for a watch; --output-watch-events puts EVENT first (before NAMESPACE)."""
    cols = table_columns(kind, wide, namespaced_all, show_labels)
    lead = ["EVENT"] if with_events else []

    def cells(e: Event) -> list[str]:
        return ([EVENT_CELL[e.type]] if with_events else []) + [f(e.obj) for _, f in cols]

    return Rows(lead + [h for h, _ in cols], cells, Aligner(0, strip=True), no_headers)


def columns_format(columns: list[tuple[str, Template]], no_headers: bool, with_events: bool) -> Rows:
    """-o custom-columns: the paths read the object, or {type, object} with --output-watch-events."""
    def cells(e: Event) -> list[str]:
        body = e.body() if with_events else e.obj
        return [cell(t, body) for _, t in columns]

    return Rows([h for h, _ in columns], cells, Aligner(6), no_headers)


def event_json(e: Event) -> str:
    """What kubectl's JSON printer writes for a metav1.WatchEvent: json.Marshal, one line."""
    return '{"type":' + go_json(e.type) + ',"object":' + go_json(e.obj) + "}\n"


def document_format(fmt: str, generic: Callable[[dict], str], with_events: bool) -> Documents:
    """-o json|yaml|name|jsonpath...: `generic` prints one object (or {type, object}); names never show
    the event, as kubectl's name printer unwraps it; JSON events are one compact line each."""
    if fmt == "json" and with_events:
        return Documents(event_json)
    if fmt == "name" or not with_events:
        return Documents(lambda e: generic(e.obj), "---\n" if fmt == "yaml" else "")
    return Documents(lambda e: generic(e.body()), "---\n" if fmt == "yaml" else "")


# ---- the loop --------------------------------------------------------------------------------
def _initial(snap: Snapshot, scope: Scope) -> dict[Key, dict]:
    return {key_of(o): o for o in snap.list(scope.kind, scope.namespace) if scope.matches(o)}


def follow(store: Store, scope: Scope, fmt: Format, out: TextIO, list_first: bool = True,
           timeout: float | None = None, poll: float = POLL_SECONDS) -> None:
    """Print the objects (unless --watch-only), then every change, until `timeout` seconds have passed
    (None: until interrupted)."""
    clock = time.monotonic
    deadline = None if not timeout else clock() + timeout
    version = store.data_version()  # before the snapshot: a commit in between is seen at the next poll
    snap = store.snapshot()
    seen = _initial(snap, scope)
    if list_first:
        _write(out, fmt.render([Event(ADDED, o) for o in seen.values()]))
    while deadline is None or clock() < deadline:
        time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - clock())))
        now = store.data_version()
        if now == version:
            continue
        version, new = now, store.snapshot()
        written = changes(seen, snap, new, scope.kind)
        events = diff(seen, written, scope)
        seen, snap = advance(seen, written, scope), new
        _write(out, fmt.render(events))


def _write(out: TextIO, text: str) -> None:
    if text:
        out.write(text)
        out.flush()


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
BAD_TIMEOUT = ("Invalid timeout value. Timeout must be a single integer in seconds, or an integer followed by a "
               "corresponding time unit (e.g. 1s | 2m | 3h)")


def request_timeout(value: str) -> float | None:
    """kubectl's --request-timeout (client-go's ParseTimeout): whole seconds, or a Go duration (1s,
    500ms, 1m30s); zero (or negative, as Go's HTTP client reads it) is no timeout. ValueError, with
    client-go's message, for anything else."""
    if re.fullmatch(r"\+?\d+", value):
        return float(int(value)) or None
    body = value[1:] if value[:1] in "+-" else value
    parts = _DURATION.findall(body)
    if body != "0" and (not parts or "".join(n + u for n, u in parts) != body):
        raise ValueError(BAD_TIMEOUT)
    secs = sum(float(n) * _UNIT[u] for n, u in parts)
    return secs if secs > 0 and not value.startswith("-") else None
