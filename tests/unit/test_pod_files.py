"""/etc/resolv.conf and /etc/hosts as kubelet writes them."""

from __future__ import annotations

from kubewire.kubelet.files import NodeDNS, render_hosts, render_resolv, resolv_settings

NODE = NodeDNS(["198.51.100.53"], [], [])


def pod(**spec: object) -> dict:
    return {"metadata": {"name": "web-0", "namespace": "production"}, "spec": dict(spec)}


def test_cluster_first() -> None:
    s = resolv_settings(pod(), ["10.96.0.10"], "cluster.local", NODE)
    assert render_resolv(s) == ("search production.svc.cluster.local svc.cluster.local cluster.local\n"
                                "nameserver 10.96.0.10\noptions ndots:5\n")


def test_default_policy_uses_the_node() -> None:
    assert render_resolv(resolv_settings(pod(dnsPolicy="Default"), ["10.96.0.10"], "cluster.local", NODE)) == \
        "nameserver 198.51.100.53\n"


def test_none_with_dns_config_and_option_merge() -> None:
    p = pod(dnsPolicy="None", dnsConfig={"nameservers": ["1.2.3.4"], "searches": ["a.example"],
                                         "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]})
    assert render_resolv(resolv_settings(p, ["10.96.0.10"], "cluster.local", NODE)) == \
        "search a.example\nnameserver 1.2.3.4\noptions ndots:2 edns0\n"


def test_cluster_first_dns_config_overrides_ndots() -> None:
    p = pod(dnsConfig={"options": [{"name": "ndots", "value": "2"}]})
    assert render_resolv(resolv_settings(p, ["10.96.0.10"], "cluster.local", NODE)).endswith("options ndots:2\n")


def test_kubelet_limits() -> None:
    p = pod(dnsConfig={"nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3"], "searches": [f"s{i}.example" for i in range(40)]})
    s = resolv_settings(p, ["10.96.0.10"], "cluster.local", NODE)
    assert s.nameservers == ["10.96.0.10", "1.1.1.1", "2.2.2.2"]
    assert len(s.searches) == 32


def test_hosts_file() -> None:
    assert render_hosts(pod(), "10.244.1.5", "cluster.local").endswith("10.244.1.5\tweb-0\n")
    h = render_hosts(pod(hostname="db-0", subdomain="db"), "10.244.1.6", "cluster.local")
    assert h.endswith("10.244.1.6\tdb-0.db.production.svc.cluster.local\tdb-0\n")
