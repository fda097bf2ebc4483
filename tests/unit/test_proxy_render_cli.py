"""`kubewire proxy render` as a user runs it: the real command, in its own process, with no cluster and
no privilege (run as root, the test first strips every capability and root's special powers)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

MANIFESTS = """apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abcde, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
- addresses: [10.244.1.5]
  conditions: {ready: true}
  nodeName: node-b
ports: [{name: http, port: 8080, protocol: TCP}]
"""


def unprivileged(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop root's capabilities"
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all",
            "--securebits=+noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked", *argv]


def test_proxy_render_needs_no_root_and_no_cluster(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(MANIFESTS)
    cluster = f"no-such-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-m", "kubewire.cli.main", "proxy", "render", "--mode", "iptables", "--node", "node-a",
            "--node-ip", "172.18.1.10", "-f", str(tmp_path / "web.yaml")]
    cap_check = subprocess.run(unprivileged(["grep", "^CapEff:", "/proc/self/status"]), capture_output=True, text=True)
    assert cap_check.stdout.split() == ["CapEff:", "0000000000000000"]
    p = subprocess.run(unprivileged(argv), capture_output=True, text=True, timeout=60,
                       env={**os.environ, "KUBEWIRE_CLUSTER": cluster})
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("*filter\n") and p.stdout.count("COMMIT\n") == 2 and "\n*nat\n" in p.stdout
    assert ('-A KUBE-SERVICES -m comment --comment "shop/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 '
            "--dport 80 -j KUBE-SVC-") in p.stdout
    assert "-j DNAT --to-destination 10.244.1.5:8080\n" in p.stdout
    assert not Path(f"/run/kubewire/{cluster}").exists()
