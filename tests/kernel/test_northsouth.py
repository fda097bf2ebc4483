"""The north-south path on a real cluster: internet client -> cloud load balancer (cloud-lb namespace,
nftables DNAT to NodePorts on healthy nodes) -> kube-proxy -> ingress-nginx pods running real nginx ->
pods. Routing vectors from the ingress-controller-conformance features, TLS and the 308 redirect,
503/502/504, graceful reloads under load, a dying controller pod, the client address with
externalTrafficPolicy Local, loadBalancerSourceRanges, and the seed's manifests end to end.

Requests are sent from the internet namespace by tests/kernel/ingress_probe.py to the load
balancer's address, with the host as Host header and SNI (what a browser does after DNS), and with
`kubewire curl` where the whole user path (public DNS, the CA, curl) is the point.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, Cluster, make_cluster

PROBE = Path(__file__).with_name("ingress_probe.py")
DEMO = ROOT / "src/kubewire/manifests/demo"
SEED = ROOT / "src/kubewire/manifests/seed"
INTERNET_CLIENT = "198.51.100.10"
CONFORMANCE_SERVICES = ("foo-exact", "foo-prefix", "aaa-slash-bbb-prefix", "aaa-prefix", "aaa-slash-bbb-slash-prefix",
                        "foo-slash-exact", "wildcard-foo-com", "foo-bar-com", "echo-service")


def deployment(name: str, replicas: int = 1, extra: str = "") -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: edge}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
{extra}      containers:
      - name: echo
        image: registry.k8s.io/e2e-test-images/agnhost:2.52
        ports:
        - {{name: http, containerPort: 8080}}
---
"""


def service(name: str, app: str, target: str = "8080", port: int = 8080, extra: str = "") -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: edge}}
spec:
  selector: {{app: {app}}}
{extra}  ports:
  - {{name: http, port: {port}, targetPort: {target}}}
---
"""


def ingress(name: str, rules: str, annotations: dict | None = None, spec_extra: str = "") -> str:
    ann = "".join(f'\n    {k}: "{v}"' for k, v in (annotations or {}).items()) or " {}"
    return f"""
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: edge
  annotations:{ann}
spec:
{spec_extra}  rules:
{rules}
---
"""


def path(p: str, ptype: str, svc: str, port: str = "number: 8080") -> str:
    return f"""      - path: {p}
        pathType: {ptype}
        backend:
          service:
            name: {svc}
            port: {{{port}}}
"""


CONFORMANCE = (
    ingress("path-rules", "  - host: exact-path-rules\n    http:\n      paths:\n" + path("/foo", "Exact", "foo-exact")
            + "  - host: prefix-path-rules\n    http:\n      paths:\n" + path("/foo", "Prefix", "foo-prefix")
            + path("/aaa/bbb", "Prefix", "aaa-slash-bbb-prefix") + path("/aaa", "Prefix", "aaa-prefix")
            + "  - host: mixed-path-rules\n    http:\n      paths:\n" + path("/foo", "Prefix", "foo-prefix")
            + path("/foo", "Exact", "foo-exact")
            + "  - host: trailing-slash-path-rules\n    http:\n      paths:\n"
            + path("/aaa/bbb/", "Prefix", "aaa-slash-bbb-slash-prefix") + path("/foo/", "Exact", "foo-slash-exact"))
    + ingress("host-rules", '  - host: "*.foo.com"\n    http:\n      paths:\n' + path("/", "Prefix", "wildcard-foo-com")
              + "  - host: foo.bar.com\n    http:\n      paths:\n" + path("/", "Prefix", "foo-bar-com", "name: http"),
              spec_extra="  tls:\n  - hosts: [foo.bar.com]\n    secretName: conformance-tls\n")
    + ingress("test-ingress-class", "  - host: ingress-class\n    http:\n      paths:\n" + path("/", "Prefix", "foo-prefix"),
              spec_extra="  ingressClassName: some-invalid-class-name\n")
)

ERRORS = (
    ingress("errors", "  - host: errors.test\n    http:\n      paths:\n" + path("/missing", "Prefix", "empty")
            + path("/nosvc", "Prefix", "does-not-exist") + path("/refused", "Prefix", "refused")
            + path("/ok", "Prefix", "web"))
    + ingress("errors-slow", "  - host: errors.test\n    http:\n      paths:\n" + path("/delay", "Exact", "web"),
              {"nginx.ingress.kubernetes.io/proxy-read-timeout": "1"})
    + ingress("secure", "  - host: secure.test\n    http:\n      paths:\n" + path("/", "Prefix", "web"),
              {"cert-manager.io/cluster-issuer": "kubewire-ca"},
              spec_extra="  tls:\n  - hosts: [secure.test]\n    secretName: secure-test-tls\n")
    + ingress("forced", "  - host: forced.test\n    http:\n      paths:\n" + path("/", "Prefix", "web"),
              {"nginx.ingress.kubernetes.io/force-ssl-redirect": "true"})
    + ingress("web", "  - host: web.test\n    http:\n      paths:\n" + path("/", "Prefix", "web"))
    + ingress("rewrite", "  - host: rewrite.test\n    http:\n      paths:\n"
              + path("/something(/|$)(.*)", "ImplementationSpecific", "web"),
              {"nginx.ingress.kubernetes.io/rewrite-target": "/$2"})
    + ingress("rewrite-prefix", "  - host: rewrite.test\n    http:\n      paths:\n" + path("/v2", "Prefix", "web"),
              {"nginx.ingress.kubernetes.io/rewrite-target": "/api"})
)


@dataclass
class Env:
    c: Cluster
    lb_ip: str
    ca: str

    @property
    def state(self) -> str:
        return f"/run/kubewire/{self.c.name}"

    def probe(self, *args: str, timeout: float = 60) -> object:
        p = subprocess.run(["nsenter", f"--net=/run/netns/kw-{self.c.name}-internet", "--", sys.executable, str(PROBE),
                            *args], capture_output=True, text=True, timeout=timeout, check=True)
        return json.loads(p.stdout)

    def get(self, *urls: str, ip: str | None = None, **kw: object) -> list[dict]:
        def addr(u: str) -> str:  # a URL naming an address goes there; names go to the ingress LB
            host = u.split("/")[2].split(":")[0]
            return ip or (host if re.fullmatch(r"[\d.]+", host) else self.lb_ip)

        reqs = [{"url": u, "ip": addr(u), "ca": self.ca, **kw} for u in urls]
        return self.probe("requests", json.dumps(reqs))  # type: ignore[return-value]

    def served_by(self, url: str) -> str:
        r = self.get(url)[0]
        if r["status"] != 200:
            return str(r["status"])
        return str(r["body"]["pod"]).rsplit("-", 2)[0]

    def lb_rules(self) -> str:
        return subprocess.run(["ip", "netns", "exec", f"kw-{self.c.name}-cloud-lb", "nft", "list", "table", "ip",
                               "kubewire-lb"], capture_output=True, text=True, check=True).stdout

    def chain_targets(self, chain: str) -> list[str]:
        """The nodes (as chain-name tokens) a load balancer frontend chain sends new connections to."""
        rules = self.lb_rules()
        body = rules[rules.index(f"chain {chain} {{"):]
        return sorted(set(re.findall(r"goto to-(\S+)-(?:tcp|udp)-\d+", body[:body.index("}")])))

    def controller_pods(self) -> list[dict]:
        return self.c.pods("ingress-nginx", "app.kubernetes.io/component=controller")


def _issue_secret(state: str, name: str, hosts: list[str]) -> str:
    sys.path.insert(0, str(ROOT / "src"))
    from kubewire.northsouth.pki import CA, tls_secret

    ca = CA.load_or_create(f"{state}/pki", "test")
    secret = tls_secret("edge", name, ca.issue(hosts), hosts)
    secret["metadata"].pop("annotations")  # a user's own Secret, not one the controller manages
    return json.dumps(secret)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    c = make_cluster(tmp_path_factory.mktemp("ns"))
    try:
        c.kw("apply", "-f", str(DEMO))
        c.kw("apply", "-f", str(SEED))
        c.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: edge}\n")
        docs = "".join(deployment(n) + service(n, n) for n in CONFORMANCE_SERVICES)
        docs += deployment("web", 2) + service("web", "web") + service("refused", "web", target="9999")
        docs += service("empty", "nobody")
        docs += deployment("local", 1) + service("local-lb", "local", port=80,
                                                 extra="  type: LoadBalancer\n  externalTrafficPolicy: Local\n")
        c.apply(docs + CONFORMANCE + ERRORS)
        c.apply(_issue_secret(f"/run/kubewire/{c.name}", "conformance-tls", ["foo.bar.com"]))
        c.ready_pods("ingress-nginx", "app.kubernetes.io/component=controller", 2, timeout=60)
        c.ready_pods("edge", "app=web", 2, timeout=60)
        svc = c.wait("an address for the ingress controller", lambda: (c.json(
            "get", "service", "ingress-nginx-controller", "-n", "ingress-nginx").get("status", {})
            .get("loadBalancer", {}).get("ingress")), timeout=30)
        e = Env(c, svc[0]["ip"], f"/run/kubewire/{c.name}/pki/ca.crt")
        c.wait("the seed's path", lambda: e.get("https://api.codesprintpro.com/v1/payments")[0]["status"] == 200,
               timeout=30)
        c.wait("the conformance backends", lambda: all(
            r["status"] == 200 for r in e.get("http://exact-path-rules/foo", "https://foo.bar.com/",
                                              "http://errors.test/ok", "https://secure.test/")), timeout=30)
        yield e
    finally:
        c.kw("down", check=False)


# --- the seed, end to end ------------------------------------------------------------------------


def test_seed_request_from_the_internet_end_to_end(env: Env) -> None:
    """`kubewire curl https://api.codesprintpro.com/v1/payments`: public DNS -> LB address, TLS
    verified against the cluster CA, routed by the seed's Ingress to a payment-processor pod."""
    r = json.loads(env.c.kw("curl", "https://api.codesprintpro.com/v1/payments", "-o", "json").stdout)
    assert r["status"] == 200 and r["exitCode"] == 0 and r["error"] is None, r
    assert r["remote"] == f"{env.lb_ip}:443"
    body = r["body"]
    assert body["pod"].startswith("payment-processor-") and body["path"] == "/v1/payments"
    assert body["headers"]["x-real-ip"] == INTERNET_CLIENT  # eTP Local: nginx saw the client itself
    assert body["headers"]["x-forwarded-proto"] == "https"
    ing = env.c.json("get", "ingress", "dynamic-api-gateway", "-n", "production")
    assert ing["status"]["loadBalancer"]["ingress"] == [{"ip": env.lb_ip}]
    # the seed's annotations, as nginx applies them
    conf = next(Path(env.state, "ingress-nginx").glob("*/nginx.conf")).read_text()
    block = conf[conf.index("location = /v1/payments"):]
    block = block[:block.index("}")]
    assert "proxy_connect_timeout 5s;" in block and "proxy_read_timeout 15s;" in block


def test_access_log_has_upstream_address_and_timings(env: Env) -> None:
    rid = f"kw-test-{time.time_ns()}"
    r = env.get("http://api.codesprintpro.com/v1/payments", headers={"X-Request-ID": rid})[0]
    assert r["status"] == 200
    ip = r["body"]["podIP"]

    def line() -> str | None:
        for p in env.controller_pods():
            out = env.c.kw("logs", "-n", "ingress-nginx", p["metadata"]["name"]).stdout
            found = [ln for ln in out.splitlines() if rid in ln]
            if found:
                return found[0]
        return None

    ln = env.c.wait("the access log line", line, timeout=5)
    m = re.search(r"\[production-payment-service-8080\] \[\] (\S+) (\d+) ([\d.]+) 200 " + rid + r" ([\d.]+) ([\d.]+)$", ln)
    assert m and m.group(1) == f"{ip}:8080", ln
    assert ln.startswith(f"{INTERNET_CLIENT} - - [")


# --- routing: ingress-controller-conformance vectors ---------------------------------------------

PATH_VECTORS = [
    ("http://exact-path-rules/foo", "foo-exact"),
    ("http://exact-path-rules/foo/", "404"),
    ("http://exact-path-rules/FOO", "404"),
    ("http://exact-path-rules/bar", "404"),
    ("http://prefix-path-rules/foo", "foo-prefix"),
    ("http://prefix-path-rules/foo/", "foo-prefix"),
    ("http://prefix-path-rules/FOO", "404"),
    ("http://prefix-path-rules/aaa/bbb", "aaa-slash-bbb-prefix"),
    ("http://prefix-path-rules/aaa/bbb/ccc", "aaa-slash-bbb-prefix"),
    ("http://prefix-path-rules/aaa/ccc", "aaa-prefix"),
    ("http://prefix-path-rules/aaaccc", "404"),
    ("http://prefix-path-rules/aaa/bbbxyz", "aaa-prefix"),
    ("http://mixed-path-rules/foo", "foo-exact"),
    ("http://mixed-path-rules/foo/x", "foo-prefix"),
    ("http://trailing-slash-path-rules/aaa/bbb", "aaa-slash-bbb-slash-prefix"),
    ("http://trailing-slash-path-rules/aaa/bbb/", "aaa-slash-bbb-slash-prefix"),
    ("http://trailing-slash-path-rules/foo", "404"),
    ("http://trailing-slash-path-rules/foo/", "foo-slash-exact"),
    ("http://foo.bar.com/", "308"),  # a TLS host: ssl-redirect (the conformance client follows it)
    ("https://foo.bar.com/", "foo-bar-com"),
    ("https://FOO.Bar.com/x", "foo-bar-com"),
    ("http://subdomain.bar.com/", "404"),
    ("http://bar.foo.com/", "wildcard-foo-com"),
    ("http://baz.bar.foo.com/", "404"),
    ("http://foo.com/", "404"),
    ("http://ingress-class/", "404"),
]


def test_path_and_host_rules(env: Env) -> None:
    got = env.get(*(u for u, _ in PATH_VECTORS))
    seen = {u: (str(r["body"]["pod"]).rsplit("-", 2)[0] if r["status"] == 200 else str(r["status"]))
            for (u, _), r in zip(PATH_VECTORS, got, strict=True)}
    assert seen == dict(PATH_VECTORS)
    for (u, want), r in zip(PATH_VECTORS, got, strict=True):
        if want not in ("404", "308"):  # the backend sees the request as sent: path and host untouched
            assert r["body"]["path"] == "/" + u.split("/", 3)[3]
            assert r["body"]["host"] == u.split("/")[2]


def test_tls_with_a_users_secret_verifies_the_hostname(env: Env) -> None:
    r = env.get("https://foo.bar.com/")[0]
    assert r["status"] == 200 and r["body"]["pod"].startswith("foo-bar-com-"), r
    # a wildcard host without a TLS section still gets TLS: the default certificate covers it
    assert env.get("https://bar.foo.com/")[0]["status"] == 200


def test_ingress_class_other_controller_gets_no_status(env: Env) -> None:
    ing = env.c.json("get", "ingress", "test-ingress-class", "-n", "edge")
    assert not ing.get("status", {}).get("loadBalancer", {}).get("ingress")
    ok = env.c.json("get", "ingress", "path-rules", "-n", "edge")  # no class: the default IngressClass
    assert ok["status"]["loadBalancer"]["ingress"] == [{"ip": env.lb_ip}]
    # what kubectl describe shows of it: ingress-nginx scheduled the one it serves for sync, not the other
    served = env.c.kw("describe", "ingress", "path-rules", "-n", "edge").stdout
    assert re.search(r"^  Normal +Sync +\S+.* +nginx-ingress-controller +Scheduled for sync$", served, re.M), served
    other = env.c.kw("describe", "ingress", "test-ingress-class", "-n", "edge").stdout
    assert "Scheduled for sync" not in other, other


def test_default_backend_takes_everything_unmatched(env: Env) -> None:
    doc = ("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: default-backend, namespace: edge}\n"
           "spec:\n  defaultBackend:\n    service: {name: echo-service, port: {number: 8080}}\n")
    env.c.apply(doc)
    try:
        env.c.wait("the catch-all", lambda: env.served_by("http://my-host/") == "echo-service", timeout=15)
        for m, host, p in (("GET", "my-host", "/sub-path"), ("POST", "some-host", "/"), ("PUT", "", "/resource"),
                           ("DELETE", "some-host", "/resource"), ("PATCH", "my-host", "/resource")):
            r = env.get(f"http://{host or env.lb_ip}{p}", method=m)[0]
            assert r["status"] == 200 and r["body"]["pod"].startswith("echo-service-"), (m, host, r)
            assert r["body"]["method"] == m and r["body"]["path"] == p and r["body"]["proto"] == "HTTP/1.1"
            assert {"content-length", "content-type", "date", "server"} <= set(r["headers"])
        assert env.served_by("https://foo.bar.com/") == "foo-bar-com"  # hosts with rules keep them
    finally:
        env.c.kw("delete", "ingress", "default-backend", "-n", "edge")
    env.c.wait("404 again", lambda: env.served_by("http://my-host/") == "404", timeout=15)


# --- TLS, redirects, rewrites ---------------------------------------------------------------------


def test_tls_host_redirects_http_with_308_and_serves_an_issued_certificate(env: Env) -> None:
    secret = env.c.json("get", "secret", "secure-test-tls", "-n", "edge")
    assert secret["type"] == "kubernetes.io/tls" and set(secret["data"]) == {"tls.crt", "tls.key"}
    pem = base64.b64decode(secret["data"]["tls.crt"]).decode()
    r = env.get("http://secure.test/some/path?q=1")[0]
    assert r["status"] == 308 and r["headers"]["location"] == "https://secure.test/some/path?q=1", r
    r = env.get("https://secure.test/some/path?q=1")[0]
    assert r["status"] == 200 and r["body"]["path"] == "/some/path?q=1", r
    # the certificate nginx presents is the Secret's, verified by curl against the cluster CA
    out = subprocess.run(["nsenter", f"--net=/run/netns/kw-{env.c.name}-internet", "--", "openssl", "s_client",
                          "-connect", f"{env.lb_ip}:443", "-servername", "secure.test", "-CAfile", env.ca],
                         input="", capture_output=True, text=True, timeout=10).stdout
    assert "Verify return code: 0 (ok)" in out
    assert pem.split("-----")[2].strip().replace("\n", "")[:64] in out.replace("\n", "")
    # HTTP to a host without TLS is served as is; force-ssl-redirect redirects anyway
    assert env.get("http://errors.test/ok")[0]["status"] == 200
    r = env.get("http://forced.test/x")[0]
    assert r["status"] == 308 and r["headers"]["location"] == "https://forced.test/x"


def test_rewrite_target(env: Env) -> None:
    got = env.get("http://rewrite.test/something/new/x", "http://rewrite.test/something", "http://rewrite.test/v2/a/b",
                  "http://rewrite.test/v2")
    assert [r["body"]["path"] for r in got] == ["/new/x", "/", "/api/a/b", "/api"]


# --- errors ---------------------------------------------------------------------------------------


def test_no_endpoints_503_refused_502_timeout_504(env: Env) -> None:
    t0 = time.monotonic()
    missing, nosvc, refused, slow = env.get("http://errors.test/missing", "http://errors.test/nosvc",
                                            "http://errors.test/refused", "http://errors.test/delay?ms=3000")
    assert (missing["status"], nosvc["status"], refused["status"], slow["status"]) == (503, 503, 502, 504)
    assert slow["secs"] < 3.0 + 0.5  # proxy-read-timeout 1 s, up to 3 tries, never the full 3 s backend wait
    assert time.monotonic() - t0 < 10
    assert env.get("http://errors.test/delay?ms=200", timeout=5)[0]["status"] == 200


# --- the load balancer ------------------------------------------------------------------------------


def test_external_traffic_policy_local_keeps_the_client_address(env: Env) -> None:
    svc = env.c.wait("an LB address", lambda: env.c.json("get", "service", "local-lb", "-n", "edge")
                     .get("status", {}).get("loadBalancer", {}).get("ingress"), timeout=15)
    ip = svc[0]["ip"]
    assert ip != env.lb_ip and ip.startswith("203.0.113.")
    node = env.c.pods("edge", "app=local")[0]["spec"]["nodeName"]
    env.c.wait("only the pod's node in the LB rules",
               lambda: env.chain_targets("svc-edge-local-lb-tcp-80") == [node.replace(".", "-")], timeout=15)
    rs = env.get(*[f"http://{ip}/"] * 20)
    assert {r["status"] for r in rs} == {200}
    assert {r["body"]["client"].split(":")[0] for r in rs} == {INTERNET_CLIENT}
    # the LB's public name
    r = json.loads(env.c.kw("curl", "http://local-lb.edge.lb.kubewire.test/", "-o", "json").stdout)
    assert r["status"] == 200 and r["remote"] == f"{ip}:80"


def test_load_balancer_source_ranges(env: Env) -> None:
    def apply(ranges: str) -> None:
        env.c.apply(service("ranged", "local", port=80, extra=f"  type: LoadBalancer\n  loadBalancerSourceRanges: {ranges}\n"))

    apply("[10.0.0.0/8]")
    ip = env.c.wait("an LB address", lambda: env.c.json("get", "service", "ranged", "-n", "edge")
                    .get("status", {}).get("loadBalancer", {}).get("ingress"), timeout=15)[0]["ip"]
    env.c.wait("the filter", lambda: "fw-svc-edge-ranged-tcp-80" in env.lb_rules(), timeout=10)
    assert env.get(f"http://{ip}/", timeout=1.5)[0]["status"] == 0  # dropped at the edge
    apply("[198.51.100.0/24]")
    env.c.wait("the client admitted", lambda: env.get(f"http://{ip}/", timeout=1.5)[0]["status"] == 200, timeout=15)
    env.c.kw("delete", "service", "ranged", "-n", "edge")
    env.c.wait("the address released", lambda: ip not in env.lb_rules(), timeout=10)


def test_container_native_load_balancer_without_node_ports(env: Env) -> None:
    """allocateLoadBalancerNodePorts: false: no NodePort to forward to, so the load balancer sends
    LB-IP:port straight to the ready pods (as GKE's NEGs and AWS's NLB IP targets do), client address
    kept; no ready endpoint resets new connections; the pod CIDR cloud-lb now routes stays closed to
    the internet except through a frontend."""
    env.c.apply(deployment("direct", 2) + service("direct-lb", "direct", port=80,
                                                  extra="  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n"))
    try:
        env.c.ready_pods("edge", "app=direct", 2, timeout=60)
        spec = env.c.json("get", "service", "direct-lb", "-n", "edge")["spec"]
        assert spec["allocateLoadBalancerNodePorts"] is False and not spec["ports"][0].get("nodePort")
        ip = env.c.wait("an LB address", lambda: env.c.json("get", "service", "direct-lb", "-n", "edge")
                        .get("status", {}).get("loadBalancer", {}).get("ingress"), timeout=15)[0]["ip"]
        pods = {p["status"]["podIP"]: p["metadata"]["name"] for p in env.c.pods("edge", "app=direct")}
        env.c.wait("both pods in the LB rules", lambda: all(f"dnat to {a}:8080" in env.lb_rules() for a in pods),
                   timeout=15)
        r = json.loads(env.c.kw("curl", f"http://{ip}:80/", "-o", "json").stdout)
        assert r["status"] == 200 and r["exitCode"] == 0 and r["remote"] == f"{ip}:80", r
        assert r["body"]["podIP"] in pods and r["body"]["pod"] == pods[r["body"]["podIP"]]
        assert r["body"]["client"].split(":")[0] == INTERNET_CLIENT  # no SNAT anywhere on the way
        rs = env.get(*[f"http://{ip}/"] * 20)
        assert {r["status"] for r in rs} == {200}
        assert {r["body"]["client"].split(":")[0] for r in rs} == {INTERNET_CLIENT}
        assert {r["body"]["pod"] for r in rs} == set(pods.values())  # per connection over both (2^-19 to fail)

        # a pod address straight from the internet: cloud-lb routes it now, and drops it
        def dropped() -> int:
            m = re.search(r"counter packets (\d+) bytes \d+ drop comment \"pod addresses", env.lb_rules())
            return int(m.group(1)) if m else -1

        before = dropped()
        assert before >= 0
        for pod_ip in pods:
            assert env.get(f"http://{pod_ip}:8080/", timeout=1.5)[0]["status"] == 0
        assert dropped() > before

        env.c.kw("scale", "deployment/direct", "--replicas", "0", "-n", "edge")
        env.c.wait("no ready endpoint in the LB rules", lambda: "direct-lb:http: no ready endpoint" in env.lb_rules(),
                   timeout=30)
        r = json.loads(env.c.kw("curl", f"http://{ip}/", "-o", "json", "--max-time", "5", check=False).stdout)
        assert r["exitCode"] == 7 and r["status"] == 0, r  # refused (reset by the load balancer), not a timeout
    finally:
        env.c.kw("delete", "service", "direct-lb", "-n", "edge", check=False)
        env.c.kw("delete", "deployment", "direct", "-n", "edge", check=False)


def test_dying_ingress_pod_is_taken_out_of_the_load_balancer(env: Env) -> None:
    """Its container crashes twice (the kubelet then backs off 10 s): the pod is not ready, kube-proxy's
    health check NodePort on its node answers 503, and the load balancer stops sending new connections
    there until it is back."""
    victim = env.controller_pods()[0]
    name, node = victim["metadata"]["name"], victim["spec"]["nodeName"]
    chain = "svc-ingress-nginx-ingress-nginx-controller-tcp-80"

    def targets() -> list[str]:
        return env.chain_targets(chain)

    def running_pid() -> int:
        p = next(p for p in env.controller_pods() if p["metadata"]["name"] == name)
        cs = p["status"]["containerStatuses"][0]
        return int(cs["containerID"].split("//")[1]) if "running" in cs.get("state", {}) else 0

    assert len(targets()) == 2
    first = running_pid()
    os.killpg(first, signal.SIGKILL)  # the whole container: nginx master and workers
    second = env.c.wait("the immediate restart", lambda: (p := running_pid()) not in (0, first) and p, timeout=15)
    env.c.wait("nginx up again", lambda: Path(env.state, "ingress-nginx", name, "nginx.pid").exists()
               and int(Path(env.state, "ingress-nginx", name, "nginx.pid").read_text()) == second, timeout=10)
    os.killpg(second, signal.SIGKILL)
    t0 = time.monotonic()
    env.c.wait(f"{node} out of the load balancer", lambda: len(targets()) == 1, timeout=10)
    assert time.monotonic() - t0 < 6
    assert targets() != [node.replace(".", "-")]
    r = env.probe("load", env.lb_ip, "api.codesprintpro.com", "/v1/payments", "2", "4", "new")
    assert set(r) == {"200"}, r  # every new connection goes to the healthy node
    env.c.wait(f"{node} back in the load balancer", lambda: len(targets()) == 2, timeout=40)


# --- graceful reloads ------------------------------------------------------------------------------


def test_reloads_under_load_lose_no_request(env: Env) -> None:
    results: dict[str, object] = {}

    def load(mode: str) -> None:
        results[mode] = env.probe("load", env.lb_ip, "api.codesprintpro.com", "/v1/payments", "6", "4", mode)

    def slow() -> None:  # requests in flight while nginx reloads
        results["slow"] = [env.get("http://web.test/delay?ms=700", timeout=10)[0]["status"] for _ in range(6)]

    threads = [threading.Thread(target=load, args=(m,)) for m in ("new", "keepalive")] + [threading.Thread(target=slow)]
    for t in threads:
        t.start()
    reloads_before = _reloads(env)
    for i in range(6):  # configuration changes: a new host each time, then it goes again
        env.c.apply(ingress(f"churn-{i}", f"  - host: churn-{i}.test\n    http:\n      paths:\n" + path("/", "Prefix", "web")))
        time.sleep(0.4)
        env.c.kw("delete", "ingress", f"churn-{i}", "-n", "edge")
        time.sleep(0.3)
    for t in threads:
        t.join()
    assert _reloads(env) - reloads_before >= 6
    assert results["slow"] == [200] * 6
    for mode in ("new", "keepalive"):
        counts = dict(results[mode])  # type: ignore[call-overload]
        counts.pop("retried-idle-close", None)
        assert set(counts) == {"200"} and counts["200"] > 100, (mode, results[mode])


def test_request_in_flight_survives_a_reload(env: Env) -> None:
    out: list[dict] = []
    t = threading.Thread(target=lambda: out.extend(env.get("http://web.test/delay?ms=1500", timeout=10)))
    t.start()
    time.sleep(0.4)
    before = _reloads(env)
    env.c.apply(ingress("inflight", "  - host: inflight.test\n    http:\n      paths:\n" + path("/", "Prefix", "web")))
    env.c.wait("a reload", lambda: _reloads(env) > before, timeout=10)
    t.join()
    env.c.kw("delete", "ingress", "inflight", "-n", "edge")
    assert out[0]["status"] == 200, out


def _reloads(env: Env) -> int:
    log = Path(env.state, "daemon.log").read_text()
    return log.count("reloading gracefully")
