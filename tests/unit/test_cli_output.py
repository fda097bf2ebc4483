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
