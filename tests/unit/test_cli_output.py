"""What the CLI prints besides tables: YAML as kubectl writes it, and hints where a user is stuck."""

from __future__ import annotations

import yaml

from kubewire.cli.curl import unreachable_hint
from kubewire.cli.printers import dump


def test_multi_line_strings_are_yaml_blocks_as_kubectl_writes_them() -> None:
    last = '{"apiVersion":"v1","kind":"ConfigMap"}\n'
    obj = {"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": last}},
           "data": {"file": "a\nb", "one": "line", "odd": "trailing \nspace"}}  # fmt: skip
    text = dump(obj, "yaml")
    assert text.splitlines() == [
        "metadata:",
        "  annotations:",
        "    kubectl.kubernetes.io/last-applied-configuration: |",
        '      {"apiVersion":"v1","kind":"ConfigMap"}',
        "data:",
        "  file: |-",
        "    a",
        "    b",
        "  one: line",
        '  odd: "trailing \\nspace"',  # a block cannot hold a trailing space: quoted, as go-yaml does
    ]
    assert yaml.safe_load(text) == obj


def test_curl_hint_names_cluster_and_pod_addresses_only() -> None:
    svc, pods = "10.96.0.0/12", "10.244.0.0/16"
    hint = unreachable_hint("http://10.100.1.2:8080/x", svc, pods)
    assert hint is not None and "10.100.1.2 is a ClusterIP (service CIDR 10.96.0.0/12)" in hint and "--from" in hint
    hint = unreachable_hint("10.244.3.4:8080", svc, pods)
    assert hint is not None and "is a pod IP (pod CIDR 10.244.0.0/16)" in hint
    for url in ("http://203.0.113.10/", "https://api.stripe.com/", "http://[fd00::1]/"):
        assert unreachable_hint(url, svc, pods) is None


def test_sort_by_orders_as_kubectl() -> None:
    import pytest

    from kubewire.cli.sortby import api_order, sort_items

    def names(items: list[dict]) -> list[str]:
        return [o["metadata"]["name"] for o in items]

    pods = [{"metadata": {"name": n}, "status": s} for n, s in
            [("web-10", {"restarts": 3}), ("web-2", {"restarts": 10}), ("web-1", {})]]  # fmt: skip
    assert names(sort_items(pods, ".metadata.name")) == ["web-1", "web-2", "web-10"]  # natural order
    assert names(sort_items(pods, "{.status.restarts}")) == ["web-1", "web-10", "web-2"]  # missing first, numbers by value
    assert names(sort_items(pods, "metadata.name")) == ["web-1", "web-2", "web-10"]  # relaxed path
    with pytest.raises(ValueError, match='couldn\'t find any field with path "{.spec.nope}" in the list of objects'):
        sort_items(pods, ".spec.nope")
    times = [{"metadata": {"name": n}, "lastTimestamp": t} for n, t in
             [("b", "2026-11-27T03:00:10Z"), ("a", "2026-11-27T03:00:09Z")]]  # fmt: skip
    assert names(sort_items(times, ".lastTimestamp")) == ["a", "b"]
    events = [{"metadata": {"name": f"e{i}", "namespace": "ns"}, "involvedObject": {"name": obj}, "eventTime": t}
              for i, (obj, t) in enumerate([("web", "2"), ("api", "3"), ("web", "1")])]  # fmt: skip
    assert names(api_order("Event", events)) == ["e1", "e2", "e0"]  # per object, in time order


def test_sort_by_quantities_and_a_single_item() -> None:
    from kubewire.cli.sortby import sort_items

    items = [{"metadata": {"name": n}, "mem": m} for n, m in [("a", "1Gi"), ("b", "100Mi"), ("c", "500m")]]
    assert [o["metadata"]["name"] for o in sort_items(items, ".mem")] == ["c", "b", "a"]
    assert sort_items(items[:1], ".nothing") == items[:1]  # one row: nothing to order, no error
