"""`kubewire get -w`: which events a watch delivers between two object sets, how each output format
prints them (as kubectl's get.go watch() and its printers do), and the loop against a real Store."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from kubewire.cli import custom_columns, objects
from kubewire.cli import watch as w
from kubewire.cli.main import app
from kubewire.cli.printers import table
from kubewire.controllers.types import Key, Op, SnapshotCache, key_of
from kubewire.store.db import Store


def pod(name: str, ns: str = "shop", rv: str = "1", uid: str | None = None, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels, "resourceVersion": rv, "uid": uid or f"u-{name}",
                         "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"phase": "Running"}}


def bump(obj: dict, rv: str, **labels: str) -> dict:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": rv, "labels": {**obj["metadata"]["labels"], **labels}}}


def keyed(*objs: dict) -> dict[Key, dict]:
    return {key_of(o): o for o in objs}


def kinds(events: list[w.Event]) -> list[tuple[str, str]]:
    return [(e.type, e.obj["metadata"]["name"]) for e in events]


# ---- which events ---------------------------------------------------------------------------
def test_added_modified_deleted_and_nothing_for_unchanged_objects() -> None:
    a, b = pod("a"), pod("b")
    seen = keyed(a, b)
    c = pod("c", rv="5")
    changed = [(key_of(c), c), (key_of(a), bump(a, "6", tier="x")), (key_of(b), None), (key_of(pod("zz")), None)]
    events = w.diff(seen, changed, w.Scope("Pod", "shop"))
    assert kinds(events) == [("ADDED", "c"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert events[2].obj is b  # a deleted object is printed as last seen
    assert w.diff(seen, [(key_of(a), a)], w.Scope("Pod", "shop")) == []  # same resourceVersion
    assert w.diff(seen, [(key_of(a), bump(a, "7"))], w.Scope("Pod", "shop")) == []  # a rewrite that changed nothing


def test_the_selector_decides_as_the_watch_cache_does() -> None:
    web = pod("web", app="web")
    scope = w.Scope("Pod", "shop", labels=lambda labels: labels.get("app") == "web")
    left = bump(web, "2", app="db")
    events = w.diff(keyed(web), [(key_of(web), left)], scope)
    assert kinds(events) == [("DELETED", "web")] and events[0].obj is web  # leaves: DELETED, as it was
    back = bump(left, "3", app="web")
    assert kinds(w.diff({}, [(key_of(web), back)], scope)) == [("ADDED", "web")]  # enters: ADDED


def test_namespace_name_and_a_new_incarnation() -> None:
    other = pod("a", ns="prod")
    assert w.diff({}, [(key_of(other), other)], w.Scope("Pod", "shop")) == []
    assert kinds(w.diff({}, [(key_of(other), other)], w.Scope("Pod"))) == [("ADDED", "a")]
    assert w.diff({}, [(key_of(pod("b")), pod("b"))], w.Scope("Pod", "shop", "a")) == []
    old, new = pod("a"), pod("a", rv="9", uid="u-2")
    assert kinds(w.diff(keyed(old), [(key_of(old), new)], w.Scope("Pod", "shop", "a"))) == [("DELETED", "a"), ("ADDED", "a")]


def test_advance_keeps_what_matches_and_the_newest_content() -> None:
    a, b = pod("a"), pod("b")
    same = bump(a, "7")
    held = w.advance(keyed(a, b), [(key_of(a), same), (key_of(b), None)], w.Scope("Pod", "shop"))
    assert held == keyed(same)


def test_changes_come_once_each_in_the_order_of_their_last_write() -> None:
    cache = SnapshotCache()
    a, b, svc = pod("a"), pod("b"), {"kind": "Service", "metadata": {"name": "s", "namespace": "shop"}}
    first = cache.apply([a, b], ())
    cache.apply([bump(a, "2"), svc], ())
    cache.apply([], [key_of(b)])
    last = cache.apply([bump(a, "3")], ())
    got = w.changes(keyed(a, b), first, last, "Pod")
    assert [(k[2], o and o["metadata"]["resourceVersion"]) for k, o in got] == [("b", None), ("a", "3")]
    foreign = SnapshotCache().apply([a], ())  # another cache's cursor: every key there is
    assert sorted(k[2] for k, _ in w.changes(keyed(b), foreign, last, "Pod")) == ["a", "b"]


# ---- how they print -------------------------------------------------------------------------
def render_all(fmt: w.Format, *batches: list[w.Event]) -> list[str]:
    return [fmt.render(b) for b in batches]


@pytest.mark.parametrize(("kind", "wide", "all_ns", "labels"), [
    ("Pod", False, False, False), ("Pod", True, True, True), ("Service", True, False, False), ("ConfigMap", False, True, False),
])
def test_the_first_batch_is_the_table_get_prints(kind: str, wide: bool, all_ns: bool, labels: bool) -> None:
    objs = [pod("a", app="web"), pod("a-much-longer-name", ns="production")] if kind == "Pod" else [
        {"apiVersion": "v1", "kind": kind, "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2024-01-01T00:00:00Z"},
         "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.1", "ports": [{"port": 80}]},
         "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}, {"ip": "203.0.113.11"}]}}}]
    fmt = w.table_format(kind, wide, all_ns, labels, False, False)
    assert fmt.render([w.Event("ADDED", o) for o in objs]) == table(kind, objs, wide, all_ns, labels) + "\n"


def test_table_rows_follow_without_a_header_and_keep_the_columns() -> None:
    fmt = w.table_format("Pod", False, False, False, False, False)
    first, mod, gone = render_all(fmt, [w.Event("ADDED", pod("a"))], [w.Event("MODIFIED", pod("a", rv="2"))],
                                  [w.Event("DELETED", pod("a-very-long-pod-name"))])
    assert first.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert mod.count("\n") == 1 and mod.startswith("a      0/1     Running")  # the widths of the first batch
    assert gone.split() == ["a-very-long-pod-name", "0/1", "Running", "0", gone.split()[-1]]
    assert w.table_format("Pod", False, False, False, True, False).render([w.Event("ADDED", pod("a"))]).startswith("a   ")


def test_the_header_waits_for_the_first_row_and_events_lead() -> None:
    fmt = w.table_format("Pod", False, True, False, False, True)
    assert fmt.render([]) == ""
    text = fmt.render([w.Event("ADDED", pod("a")), w.Event("DELETED", pod("b"))])
    head, added, deleted = text.splitlines()
    assert head.split()[:3] == ["EVENT", "NAMESPACE", "NAME"]
    assert added.startswith("ADDED      shop        a ") and deleted.startswith("DELETED    shop        b ")
    assert fmt.render([w.Event("MODIFIED", pod("a", rv="2"))]).startswith("MODIFIED   shop        a ")


def test_custom_columns_as_kubectl_with_and_without_events() -> None:
    cols = custom_columns.parse_columns("NAME:.metadata.name,RV:.metadata.resourceVersion")
    objs = [pod("a"), pod("bb", rv="12")]
    fmt = w.columns_format(cols, False, False)
    assert fmt.render([w.Event("ADDED", o) for o in objs]) == custom_columns.custom_columns(cols, objs)
    assert fmt.render([w.Event("MODIFIED", pod("a", rv="13"))]) == "a      13\n"
    evs = w.columns_format(custom_columns.parse_columns("T:.type,NAME:.object.metadata.name"), True, True)
    assert evs.render([w.Event("DELETED", pod("a"))]) == "DELETED   a\n"


def test_documents_json_yaml_name_jsonpath() -> None:
    def generic(fmt: str) -> Callable[[dict], str]:
        made = objects.printer(fmt)
        assert made is not None
        return made

    a, b = pod("a"), pod("b", rv="2")
    js = w.document_format("json", generic("json"), False).render([w.Event("ADDED", a), w.Event("MODIFIED", b)])
    assert js == json.dumps(a, indent=4) + "\n" + json.dumps(b, indent=4) + "\n"
    line = w.document_format("json", generic("json"), True).render([w.Event("DELETED", a)])
    assert line.count("\n") == 1 and line.startswith('{"type":"DELETED","object":{"apiVersion":"v1",')
    assert json.loads(line) == {"type": "DELETED", "object": a}
    ym = w.document_format("yaml", generic("yaml"), True)
    text = ym.render([w.Event("ADDED", a)]) + ym.render([w.Event("MODIFIED", b)])
    docs = list(yaml.safe_load_all(text))
    assert text.count("---\n") == 1 and docs == [{"object": a, "type": "ADDED"}, {"object": b, "type": "MODIFIED"}]
    assert w.document_format("name", generic("name"), True).render([w.Event("ADDED", a)]) == "pod/a\n"
    jp = w.document_format("jsonpath", generic("jsonpath={.type} {.object.metadata.name}{'\\n'}"), True)
    assert jp.render([w.Event("MODIFIED", b)]) == "MODIFIED b\n"


def test_request_timeout_as_client_go_reads_it() -> None:
    assert [w.request_timeout(v) for v in ("0", "5", "1s", "500ms", "1m30s", "1.5h", "0s", "-1s")] == \
        [None, 5.0, 1.0, 0.5, 90.0, 5400.0, None, None]
    for bad in ("", "1x", "s", "1 s", "-5", "0.1"):
        with pytest.raises(ValueError, match="Invalid timeout value"):
            w.request_timeout(bad)


# ---- the loop, against a real store ---------------------------------------------------------
def new_pod(name: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop", "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}


def wait_for(buf: io.StringIO, lines: int) -> list[str]:
    deadline = time.monotonic() + 5
    while len(buf.getvalue().splitlines()) < lines and time.monotonic() < deadline:
        time.sleep(0.01)
    return buf.getvalue().splitlines()


def test_the_loop_prints_each_change_once(tmp_path: Path) -> None:
    writer, reader = Store(f"{tmp_path}/state.db"), Store(f"{tmp_path}/state.db")
    writer.write([Op("create", new_pod("one", app="web")), Op("create", new_pod("db", app="db"))])
    buf = io.StringIO()
    scope = w.Scope("Pod", "shop", labels=lambda labels: labels.get("app") == "web")
    fmt = w.table_format("Pod", False, False, False, False, True)
    t = threading.Thread(target=w.follow, args=(reader, scope, fmt, buf), kwargs={"timeout": 2.0, "poll": 0.01})
    t.start()
    assert len(wait_for(buf, 2)) == 2  # header, one
    writer.write([Op("create", new_pod("two", app="web"))])
    wait_for(buf, 3)
    one = writer.get("Pod", "shop", "one")
    assert one is not None
    writer.write([Op("status", {**one, "status": {"phase": "Running"}})])
    wait_for(buf, 4)
    writer.write([Op("status", writer.get("Pod", "shop", "db") or {})])  # not selected: nothing
    writer.write([Op("update", {**one, "metadata": {**one["metadata"], "labels": {"app": "db"}}})])
    wait_for(buf, 5)
    two = writer.get("Pod", "shop", "two")
    writer.write([Op("delete", two or {})])
    t.join()
    rows = [line.split()[:4] for line in buf.getvalue().splitlines()]
    assert rows == [["EVENT", "NAME", "READY", "STATUS"], ["ADDED", "one", "0/1", "Pending"],
                    ["ADDED", "two", "0/1", "Pending"], ["MODIFIED", "one", "0/1", "Running"],
                    ["DELETED", "one", "0/1", "Running"], ["DELETED", "two", "0/1", "Pending"]]


@pytest.fixture
def kw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = Store(f"{tmp_path}/state.db")
    store.write([Op("create", new_pod("a", app="web")), Op("create", new_pod("b", app="web"))])
    monkeypatch.setattr(objects, "handle", lambda: SimpleNamespace(store=store))
    runner = CliRunner()
    return lambda *argv: runner.invoke(app, ["get", *argv])


def test_get_watch_until_the_request_timeout(kw) -> None:
    r = kw("pods", "-n", "shop", "-w", "--request-timeout=0.2s", "-o", "name")
    assert (r.exit_code, r.stdout) == (0, "pod/a\npod/b\n")
    r = kw("pods", "a", "-n", "shop", "--watch-only", "--request-timeout", "100ms")
    assert (r.exit_code, r.stdout) == (0, "")
    r = kw("pods", "-A", "-w", "--output-watch-events", "--request-timeout=100ms")
    assert r.exit_code == 0 and r.stdout.splitlines()[0].split()[:3] == ["EVENT", "NAMESPACE", "NAME"]


def test_get_watch_refuses_as_kubectl(kw) -> None:
    for argv, msg in [
        (["pods,svc", "-w"], "you may only specify a single resource type"),
        (["all", "-w"], "you may only specify a single resource type"),
        (["pod/a", "svc/b", "-w"], "watch is only supported on individual resources and resource collections"),
        (["pods", "--output-watch-events"], "--output-watch-events option can only be used with --watch or --watch-only"),
        (["pods", "-w", "--request-timeout=soon"], "Invalid timeout value"),
        (["pods", "nope", "-n", "shop", "-w"], 'Error from server (NotFound): pods "nope" not found'),
    ]:
        r = kw(*argv)
        assert r.exit_code == 1 and msg in r.stderr, (argv, r.stderr)
    r = kw("pods", "a", "b", "-n", "shop", "-w", "-o", "name")  # listed, then refused
    assert (r.exit_code, r.stdout) == (1, "pod/a\npod/b\n")
    assert "you may only watch a single resource or type of resource at a time" in r.stderr


def test_ctrl_c_ends_the_watch_with_success(kw, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(w, "follow", interrupted)
    r = kw("pods", "-n", "shop", "-w")
    assert (r.exit_code, r.stderr) == (0, "")
