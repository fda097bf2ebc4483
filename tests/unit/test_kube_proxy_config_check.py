"""A KubeProxyConfiguration refused as kube-proxy refuses it (wrong types, its validation), unknown
fields warned about; and `proxy render --config` stops on the errors, naming file and field."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from kubewire.cli.proxy_cmd import proxy_app
from kubewire.proxy.kpconfig import check

HEAD = {"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration"}


def test_a_valid_configuration_passes() -> None:
    doc = {**HEAD, "clusterCIDR": "10.244.0.0/16,fd00:10::/64", "mode": "iptables",
           "iptables": {"masqueradeAll": False, "masqueradeBit": 14, "localhostNodePorts": True},
           "detectLocalMode": "BridgeInterface", "detectLocal": {"bridgeInterface": "cni0"},
           "nodePortAddresses": ["primary", "172.18.0.0/16"], "conntrack": {"tcpBeLiberal": False},
           "featureGates": {"PreferSameTrafficDistribution": True}}  # fmt: skip
    assert check(doc) == ([], [])


def test_wrong_types_and_invalid_values_are_errors() -> None:
    errors, warnings = check({**HEAD, "clusterCIDR": "not-a-cidr", "iptables": {"masqueradeAll": "false", "masqueradeBit": 40},
                              "detectLocalMode": "Magic", "nodePortAddresses": ["10.0.0.1"], "bogus": 1})  # fmt: skip
    assert errors == [
        "iptables.masqueradeAll: must be a boolean (true or false), not a string ('false')",
        "iptables.masqueradeBit: Invalid value: 40: must be within the range [0, 31]",
        "clusterCIDR: Invalid value: 'not-a-cidr': must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)",
        'detectLocalMode: Unsupported value: \'Magic\': supported values: "ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix"',
        "nodePortAddresses[0]: Invalid value: '10.0.0.1': must be a valid CIDR",
    ]
    assert warnings == ["bogus: unknown field (ignored)"]
    assert check({**HEAD, "clusterCIDR": "10.0.0.0/8,10.1.0.0/16"})[0] == [
        "clusterCIDR: Invalid value: '10.0.0.0/8,10.1.0.0/16': must be a valid DualStack CIDR (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)"]
    assert check({**HEAD, "detectLocalMode": "InterfaceNamePrefix"})[0] == [
        "detectLocal.interfaceNamePrefix: Required value: must not be empty"]


def test_render_stops_on_a_bad_configuration_and_names_file_and_field(tmp_path) -> None:
    (tmp_path / "kp.yaml").write_text("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
                                      "iptables: {masqueradeAll: 'false'}\nfoo: 1\n")  # fmt: skip
    app = typer.Typer()
    app.add_typer(proxy_app, name="proxy")
    result = CliRunner().invoke(app, ["proxy", "render", "--node", "n1", "--config", str(tmp_path / "kp.yaml"), "-f", "-"],
                                input="")  # fmt: skip
    assert result.exit_code == 1 and "*nat" not in result.stdout
    assert "kp.yaml: document 0: KubeProxyConfiguration: foo: unknown field (ignored)" in result.output
    assert "kp.yaml: document 0: KubeProxyConfiguration: iptables.masqueradeAll: must be a boolean" in result.output
