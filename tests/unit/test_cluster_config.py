"""The Cluster config document: defaults, fields, and errors that name the field."""

from __future__ import annotations

import pytest

from kubewire.api.errors import ManifestError
from kubewire.cluster.config import load_config, parse_config, to_doc


def test_default_config() -> None:
    cfg = load_config(None, "kubewire")
    assert len(cfg.nodes) == 3 and cfg.zones == ["us-east-1a", "us-east-1b"]
    assert (cfg.pod_subnet, cfg.service_subnet, cfg.dns_domain) == ("10.244.0.0/16", "10.96.0.0/12", "cluster.local")
    assert parse_config(to_doc(cfg), "kubewire") == cfg


def test_nodes_and_modes() -> None:
    cfg = parse_config({"apiVersion": "kubewire.io/v1alpha1", "kind": "Cluster",
                        "networking": {"kubeProxyMode": "nftables", "routing": "direct", "kubeProxyNftablesLayout": "flat"},
                        "nodes": [{"name": "n1", "zone": "a", "allocatable": {"pods": 50, "cpu": "4"}}]}, "x")
    assert cfg.proxy_mode == "nftables" and cfg.routing == "direct" and cfg.nftables_layout == "flat"
    assert cfg.nodes[0].pods == 50 and cfg.nodes[0].cpu == "4"


def test_an_overlay_is_refused_not_ignored() -> None:
    """`routing: vxlan` is not built: the document is refused, naming the field, not silently run direct."""
    import pytest

    from kubewire.api.errors import ManifestError

    with pytest.raises(ManifestError, match='networking.routing: Unsupported value: "vxlan": supported values: "direct"'):
        parse_config({"apiVersion": "kubewire.io/v1alpha1", "kind": "Cluster", "networking": {"routing": "vxlan"}}, "x")


@pytest.mark.parametrize(("doc", "path", "text"), [
    ({"networking": {"kubeProxyMode": "ipvs"}}, "networking.kubeProxyMode", 'Unsupported value: "ipvs"'),
    ({"networking": {"kubeProxyNftablesLayout": "tree"}}, "networking.kubeProxyNftablesLayout", 'Unsupported value: "tree"'),
    ({"networking": {"podSubnet": "10.244.0.0/33"}}, "networking.podSubnet", "Invalid value"),
    ({"nodes": [{"name": "Bad_Name"}]}, "nodes[0].name", "DNS-1123"),
    ({"nodes": [{"name": "a"}, {"name": "a"}]}, "nodes[1].name", "Duplicate value"),
    ({"nodes": [{"name": "a", "allocatable": {"pods": 500}}]}, "nodes[0].allocatable.pods", "between 1 and 250"),
    ({"networkin": {}}, "networkin", "unknown field"),
])
def test_errors_name_the_field(doc: dict, path: str, text: str) -> None:
    with pytest.raises(ManifestError) as e:
        parse_config({"apiVersion": "kubewire.io/v1alpha1", "kind": "Cluster", **doc}, "x", "cluster.yaml")
    msg = str(e.value)
    assert "cluster.yaml" in msg and path in msg and text in msg
