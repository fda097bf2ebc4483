"""`kubewire events`, as `kubectl events`: a namespace's (or every) Event in the order things
happened, optionally only those of one object (--for TYPE/NAME) or of some types (--types)."""

from __future__ import annotations

from kubewire.cli.context import fail
from kubewire.cli.objects import _resolve, handle
from kubewire.cli.printers import table
from kubewire.cli.sortby import chronological

TYPES = ("Normal", "Warning")


def events(namespace: str | None, all_ns: bool, for_: str | None, types: str | None, no_headers: bool) -> None:
    wanted = set()
    for t in (types or "").split(","):
        t = t.strip()
        if not t:
            continue
        match = next((k for k in TYPES if k.lower() == t.lower()), None)
        if match is None:
            fail(f'valid --types are Normal, Warning; got "{t}"')
        wanted.add(match)
    kind = name = None
    if for_:
        word, sep, name = for_.partition("/")
        if not sep or not word or not name:
            fail(f'--for must be in resource/name form, not "{for_}"')
        kind = _resolve(word).kind
    h = handle()
    items = h.store.list("Event", None if all_ns else (namespace or "default"))
    out = []
    for e in items:
        ref = e.get("involvedObject") or {}
        if kind and (ref.get("kind") != kind or ref.get("name") != name):
            continue
        if wanted and e.get("type") not in wanted:
            continue
        out.append(e)
    if not out:
        ns = "all namespaces" if all_ns else f"{namespace or 'default'} namespace"
        print(f"No events found in {ns}.")
        return
    text = table("Event", chronological(out), namespaced_all=all_ns)
    print("\n".join(text.splitlines()[1:]) if no_headers else text)
