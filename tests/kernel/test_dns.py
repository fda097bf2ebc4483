"""Cluster DNS on a real cluster, as a user sees it: vectors built from the Kubernetes DNS
specification (kubernetes/dns docs/specification.md, schema 1.1.0) and from what CoreDNS's
kubernetes plugin answers where the specification leaves the choice open.

Every question is asked from inside a pod, through the pod's own resolv.conf and kube-proxy's
rules for kube-dns 10.96.0.10: with `kubewire dig`, with dnspython (dns_probe.py) or with the
real glibc resolver (getent, curl). The search-list sequences are read from the coredns pods'
JSON query logs. One cluster serves every test but the NodeLocal DNSCache ones, which share a
second cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import KW, ROOT, Cluster, is_ready, make_cluster

PROBE = str(Path(__file__).with_name("dns_probe.py"))
DEMO = str(ROOT / "manifests" / "demo")
NS = "dnstest"

CONFIG = """
apiVersion: kubewire.io/v1alpha1
kind: Cluster
externalHosts:
- {name: api.stripe.com, address: 198.51.100.20}
- {name: ndots5.stripe.com, address: 198.51.100.21}
- {name: ndots2.stripe.com, address: 198.51.100.22}
- {name: fqdn.stripe.com, address: 198.51.100.23}
"""

OBJECTS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: agnhost
        ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: 8080, protocol: TCP}}
  - {{name: syslog, port: 514, targetPort: 514, protocol: UDP}}
---
apiVersion: v1
kind: Service
metadata: {{name: web-headless, namespace: {NS}}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{name: http, port: 8080, protocol: TCP}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: db-0, namespace: {NS}, labels: {{app: db}}}}
spec:
  hostname: db-0
  subdomain: db
  containers: [{{name: db, image: agnhost, ports: [{{name: pg, containerPort: 5432}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {NS}}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{name: pg, port: 5432, protocol: TCP}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: lonely, namespace: {NS}, labels: {{app: lonely}}}}
spec:
  hostname: lonely
  subdomain: nosvc
  containers: [{{name: main, image: agnhost, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: mixed-ready, namespace: {NS}, labels: {{group: mixed}}}}
spec:
  containers: [{{name: main, image: agnhost, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: mixed-unready, namespace: {NS}, labels: {{group: mixed}}}}
spec:
  containers:
  - name: main
    image: agnhost
    ports: [{{containerPort: 8080}}]
    readinessProbe:
      exec: {{command: [test, -e, /nonexistent]}}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: mixed, namespace: {NS}}}
spec:
  clusterIP: None
  selector: {{group: mixed}}
  ports: [{{port: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: nobody, namespace: {NS}}}
spec:
  clusterIP: None
  selector: {{app: nobody}}
  ports: [{{port: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: stripe, namespace: {NS}}}
spec:
  type: ExternalName
  externalName: api.stripe.com
---
apiVersion: v1
kind: Service
metadata: {{name: payments-alias, namespace: {NS}}}
spec:
  type: ExternalName
  externalName: payment-service.production.svc.cluster.local
---
apiVersion: v1
kind: Pod
metadata: {{name: gone-0, namespace: {NS}, labels: {{app: gone}}}}
spec:
  hostname: gone-0
  subdomain: gone
  containers: [{{name: main, image: agnhost, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: gone, namespace: {NS}}}
spec:
  clusterIP: None
  selector: {{app: gone}}
  ports: [{{name: http, port: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {NS}, labels: {{role: client}}}}
spec:
  containers: [{{name: sh, image: busybox, command: [sleep, infinity]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client-ndots2, namespace: {NS}, labels: {{role: client}}}}
spec:
  dnsConfig:
    options: [{{name: ndots, value: "2"}}]
  containers: [{{name: sh, image: busybox, command: [sleep, infinity]}}]
"""


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def ask(c: Cluster, pod: str, questions: list[list[str]], ns: str = NS) -> dict[tuple[str, ...], dict]:
    """dnspython from inside the pod, to the pod's nameserver: {(name, type[, "tcp"]): reply}."""
    out = c.kw("exec", "-n", ns, pod, "--", sys.executable, PROBE, "ask", json.dumps(questions)).stdout
    return {tuple(q): r for q, r in zip(questions, json.loads(out), strict=True)}


def rdata(reply: dict, rdtype: str, section: str = "answer") -> list[str]:
    """The rdata texts of one type in a section (`name ttl IN TYPE rdata` lines)."""
    return [line.split(None, 4)[4] for line in reply[section] if line.split()[3] == rdtype]


def owners(reply: dict, rdtype: str, section: str = "answer") -> list[str]:
    return [line.split()[0] for line in reply[section] if line.split()[3] == rdtype]


def assert_nxdomain(reply: dict, zone: str = "cluster.local.") -> None:
    assert reply["rcode"] == "NXDOMAIN", reply
    assert reply["answer"] == [], reply
    assert owners(reply, "SOA", "authority") == [zone], f"NXDOMAIN carries the zone's SOA: {reply}"


def assert_nodata(reply: dict, zone: str = "cluster.local.") -> None:
    assert reply["rcode"] == "NOERROR", reply
    assert reply["answer"] == [], f"NODATA: the name exists, no records of this type: {reply}"
    assert owners(reply, "SOA", "authority") == [zone], f"NODATA carries the zone's SOA: {reply}"


def dig(c: Cluster, name: str, qtype: str, pod: str, ns: str = NS) -> tuple[str, list[str], list[str]]:
    """`kubewire dig` as a user runs it: (status, answer lines, authority lines)."""
    out = c.kw("dig", name, qtype, "--from", f"{ns}/{pod}", check=False).stdout
    status = next(line.split("status: ")[1].split(",")[0] for line in out.splitlines() if "status: " in line)
    sections: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith(";; ") and line.endswith(" SECTION:"):
            current = line[3:-9]
            sections[current] = []
        elif not line.strip():
            current = None
        elif current:
            sections[current].append(line)
    return status, sections.get("ANSWER", []), sections.get("AUTHORITY", [])


def query_log(c: Cluster, client_pod: str | None, prefix: str, pattern: str = "coredns-*.jsonl") -> list[dict]:
    """The queries a pod sent for names starting with `prefix`, from every matching JSON log, in the order
    they were asked: by arrival (a log line's ts is when the reply went out; a forwarded question
    answered slowly would otherwise sort after the questions the client asked next)."""
    entries = []
    for path in Path(f"/run/kubewire/{c.name}/dns").glob(pattern):
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line still being written
            if (client_pod is None or e["client_pod"] == client_pod) and e["name"].startswith(prefix):
                entries.append(e)
    return sorted(entries, key=lambda e: e["ts"] - e["duration_ms"] / 1000)


def settled_log(c: Cluster, client_pod: str, prefix: str, last: str, types: tuple[str, ...]) -> list[dict]:
    """The query log once the last expected question (each type) is in it, plus a moment for strays."""
    def done() -> list[dict] | None:
        log = query_log(c, client_pod, prefix)
        return log if all(any(e["name"] == last and e["type"] == t for e in log) for t in types) else None

    c.wait(f"{last} in the query log", done, timeout=5, interval=0.05)
    time.sleep(0.3)  # the servers flush their logs every 50 ms: anything sent after would show
    return query_log(c, client_pod, prefix)


def names_by_type(log: list[dict], rdtype: str) -> list[str]:
    return [e["name"] for e in log if e["type"] == rdtype]


def pod_ip(c: Cluster, name: str, ns: str = NS) -> str:
    return c.json("get", "pod", name, "-n", ns)["status"]["podIP"]


def cluster_ip(c: Cluster, name: str, ns: str = NS) -> str:
    return c.json("get", "service", name, "-n", ns)["spec"]["clusterIP"]


def reverse(ip: str) -> str:
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa."


@pytest.fixture(scope="module", params=["iptables", "ebpf"])
def dns_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Cluster DNS behind the kube-dns VIP: DNATed by kube-proxy, or translated at connect()/sendmsg()
    by the eBPF socket load balancer (replies must then show the VIP as their source)."""
    c = make_cluster(tmp_path_factory.mktemp(f"dns-{request.param}"), CONFIG, "-f", DEMO, "--proxy-mode", request.param)
    try:
        c.apply(OBJECTS)
        c.ready_pods(NS, "app=web", 2)
        for label in ("app=db", "app=gone", "app=lonely", "role=client"):
            c.ready_pods(NS, label, 2 if label == "role=client" else 1)
        c.ready_pods("production", "app=payment-processor", 2)
        c.ready_pods("kube-system", "k8s-app=kube-dns", 2)
        c.wait("mixed-ready Ready, mixed-unready running", lambda: sorted(
            (p["metadata"]["name"], is_ready(p)) for p in c.pods(NS, "group=mixed") if p["status"].get("podIP"))
            == [("mixed-ready", True), ("mixed-unready", False)])
        c.wait("DNS has the objects", lambda: ask(c, "client", [["db-0.db.dnstest.svc.cluster.local.", "A"]])[
            ("db-0.db.dnstest.svc.cluster.local.", "A")]["rcode"] == "NOERROR", timeout=10, interval=0.2)
        yield c
    finally:
        c.kw("down", check=False)


# ---------------------------------------------------------------------------------------------
# record types, positive and negative
# ---------------------------------------------------------------------------------------------


def test_clusterip_service_a_and_negative_answers(dns_cluster: Cluster) -> None:
    c = dns_cluster
    ip = cluster_ip(c, "web")
    fqdn = "web.dnstest.svc.cluster.local."
    # `kubewire dig` walks the pod's search list: the short name is found in <ns>.svc.cluster.local
    status, answer, _ = dig(c, "web", "A", "client")
    assert status == "NOERROR"
    assert [line.split() for line in answer] == [[fqdn, "5", "IN", "A", ip]], "TTL is CoreDNS's default 5 s"
    status, answer, authority = dig(c, "api.stripe.com.production.svc.cluster.local.", "A", "client")
    assert status == "NXDOMAIN" and answer == []
    assert authority and authority[0].split()[0] == "cluster.local." and authority[0].split()[3] == "SOA"

    r = ask(c, "client", [
        [fqdn, "A"], [fqdn, "A", "tcp"], [fqdn, "AAAA"], [fqdn, "TXT"], [fqdn, "MX"],
        ["WEB.DnsTest.svc.Cluster.Local.", "A"],
        ["api.stripe.com.production.svc.cluster.local.", "A"],
        ["api.stripe.com.production.svc.cluster.local.", "AAAA"],
        ["nosuch.dnstest.svc.cluster.local.", "A"],
        ["web.nosuchns.svc.cluster.local.", "A"],
        ["dnstest.svc.cluster.local.", "A"],
        ["svc.cluster.local.", "A"],
        ["cluster.local.", "SOA"],
        ["cluster.local.", "NS"],
    ])
    a = r[(fqdn, "A")]
    assert a["rcode"] == "NOERROR" and "AA" in a["flags"] and rdata(a, "A") == [ip]
    assert rdata(r[(fqdn, "A", "tcp")], "A") == [ip], "DNS over TCP too"
    # an IPv4-only Service has no AAAA: NODATA (NOERROR, no answer, the SOA), never NXDOMAIN
    assert_nodata(r[(fqdn, "AAAA")])
    assert_nodata(r[(fqdn, "TXT")])
    assert_nodata(r[(fqdn, "MX")])
    # names are case-insensitive; the answer keeps the question's case
    mixed = r[("WEB.DnsTest.svc.Cluster.Local.", "A")]
    assert rdata(mixed, "A") == [ip] and owners(mixed, "A") == ["WEB.DnsTest.svc.Cluster.Local."]
    # a search-list expansion of an external name is NXDOMAIN for every type (a NODATA here would
    # stop a musl resolver's walk before it ever asks for api.stripe.com itself)
    assert_nxdomain(r[("api.stripe.com.production.svc.cluster.local.", "A")])
    assert_nxdomain(r[("api.stripe.com.production.svc.cluster.local.", "AAAA")])
    assert_nxdomain(r[("nosuch.dnstest.svc.cluster.local.", "A")])
    assert_nxdomain(r[("web.nosuchns.svc.cluster.local.", "A")])
    # a namespace, `svc` and the zone apex exist as names: NODATA (CoreDNS)
    assert_nodata(r[("dnstest.svc.cluster.local.", "A")])
    assert_nodata(r[("svc.cluster.local.", "A")])
    soa = r[("cluster.local.", "SOA")]
    assert soa["rcode"] == "NOERROR" and rdata(soa, "SOA")[0].split()[:2] == ["ns.dns.cluster.local.", "hostmaster.cluster.local."]
    # NS at the apex: kube-dns, the Service in front of the DNS pods, with its address
    ns = r[("cluster.local.", "NS")]
    assert rdata(ns, "NS") == ["kube-dns.kube-system.svc.cluster.local."]
    assert rdata(ns, "A", "additional") == ["10.96.0.10"]


def test_headless_service_answers_ready_endpoints(dns_cluster: Cluster) -> None:
    c = dns_cluster
    web_ips = sorted(p["status"]["podIP"] for p in c.pods(NS, "app=web"))
    ready_ip, unready_ip = pod_ip(c, "mixed-ready"), pod_ip(c, "mixed-unready")
    endpoint = f"{web_ips[0].replace('.', '-')}.web-headless.dnstest.svc.cluster.local."
    r = ask(c, "client", [
        ["web-headless.dnstest.svc.cluster.local.", "A"],
        ["web-headless.dnstest.svc.cluster.local.", "AAAA"],
        ["mixed.dnstest.svc.cluster.local.", "A"],
        [endpoint, "A"],
        [f"{unready_ip.replace('.', '-')}.mixed.dnstest.svc.cluster.local.", "A"],
        ["nobody.dnstest.svc.cluster.local.", "A"],
        ["nobody.dnstest.svc.cluster.local.", "AAAA"],
    ])
    headless = r[("web-headless.dnstest.svc.cluster.local.", "A")]
    assert sorted(rdata(headless, "A")) == web_ips, "a headless Service answers its pods' IPs, no ClusterIP"
    assert_nodata(r[("web-headless.dnstest.svc.cluster.local.", "AAAA")])
    assert rdata(r[("mixed.dnstest.svc.cluster.local.", "A")], "A") == [ready_ip], "only ready endpoints"
    assert unready_ip != ready_ip
    assert rdata(r[(endpoint, "A")], "A") == [web_ips[0]], "an endpoint without hostname is named by its IP"
    assert_nxdomain(r[(f"{unready_ip.replace('.', '-')}.mixed.dnstest.svc.cluster.local.", "A")])
    # no ready endpoint at all: the name does not exist (the specification and CoreDNS agree)
    assert_nxdomain(r[("nobody.dnstest.svc.cluster.local.", "A")])
    assert_nxdomain(r[("nobody.dnstest.svc.cluster.local.", "AAAA")])


def test_pod_hostname_and_subdomain(dns_cluster: Cluster) -> None:
    c = dns_cluster
    ip = pod_ip(c, "db-0")
    status, answer, _ = dig(c, "db-0.db", "A", "client")
    assert status == "NOERROR" and [line.split()[::4] for line in answer] == [["db-0.db.dnstest.svc.cluster.local.", ip]]
    r = ask(c, "client", [
        ["db-0.db.dnstest.svc.cluster.local.", "A"],
        ["db-0.db.dnstest.svc.cluster.local.", "AAAA"],
        ["db-1.db.dnstest.svc.cluster.local.", "A"],
        ["db.dnstest.svc.cluster.local.", "A"],
        ["lonely.nosvc.dnstest.svc.cluster.local.", "A"],
    ])
    assert rdata(r[("db-0.db.dnstest.svc.cluster.local.", "A")], "A") == [ip]
    assert_nodata(r[("db-0.db.dnstest.svc.cluster.local.", "AAAA")])
    assert_nxdomain(r[("db-1.db.dnstest.svc.cluster.local.", "A")])
    assert rdata(r[("db.dnstest.svc.cluster.local.", "A")], "A") == [ip]
    # hostname and subdomain without a headless Service of that name: no record
    assert_nxdomain(r[("lonely.nosvc.dnstest.svc.cluster.local.", "A")])
    # inside the pod, its own FQDN is in /etc/hosts, as kubelet writes it
    assert c.kw("exec", "-n", NS, "db-0", "--", "hostname").stdout.strip() == "db-0"
    hosts = c.kw("exec", "-n", NS, "db-0", "--", "getent", "hosts", "db-0.db.dnstest.svc.cluster.local").stdout
    assert hosts.split() == [ip, "db-0.db.dnstest.svc.cluster.local", "db-0"]


def test_srv_for_named_ports(dns_cluster: Cluster) -> None:
    c = dns_cluster
    ip = cluster_ip(c, "web")
    db_ip = pod_ip(c, "db-0")
    svc = "web.dnstest.svc.cluster.local."
    r = ask(c, "client", [
        [f"_http._tcp.{svc}", "SRV"],
        [f"_syslog._udp.{svc}", "SRV"],
        [f"_http._udp.{svc}", "SRV"],
        [f"_nosuch._tcp.{svc}", "SRV"],
        [svc, "SRV"],
        [f"_http._tcp.{svc}", "A"],
        ["_pg._tcp.db.dnstest.svc.cluster.local.", "SRV"],
        [f"_http._tcp.{svc}", "AAAA"],
    ])
    http = r[(f"_http._tcp.{svc}", "SRV")]
    assert rdata(http, "SRV") == [f"0 100 80 {svc}"]
    assert [line.split()[::4] for line in http["additional"] if line.split()[3] == "A"] == [[svc, ip]]
    assert rdata(r[(f"_syslog._udp.{svc}", "SRV")], "SRV") == [f"0 100 514 {svc}"]
    assert_nxdomain(r[(f"_http._udp.{svc}", "SRV")])  # port name right, protocol wrong
    assert_nxdomain(r[(f"_nosuch._tcp.{svc}", "SRV")])
    # SRV on the Service name itself lists every port (CoreDNS); each weight is 100/2 of 100
    assert sorted(rdata(r[(svc, "SRV")], "SRV")) == [f"0 50 514 {svc}", f"0 50 80 {svc}"]
    assert rdata(r[(f"_http._tcp.{svc}", "A")], "A") == [ip]
    assert_nodata(r[(f"_http._tcp.{svc}", "AAAA")])
    # a headless Service's SRV points at each endpoint's own name
    pg = r[("_pg._tcp.db.dnstest.svc.cluster.local.", "SRV")]
    assert rdata(pg, "SRV") == ["0 100 5432 db-0.db.dnstest.svc.cluster.local."]
    assert [line.split()[::4] for line in pg["additional"] if line.split()[3] == "A"] == [
        ["db-0.db.dnstest.svc.cluster.local.", db_ip]]


def test_ptr_for_service_and_endpoint_ips(dns_cluster: Cluster) -> None:
    c = dns_cluster
    svc_ip, pay_ip, db_ip = cluster_ip(c, "web"), cluster_ip(c, "payment-service", "production"), pod_ip(c, "db-0")
    status, answer, _ = dig(c, reverse(pay_ip), "PTR", "client")
    assert status == "NOERROR" and [line.split()[4] for line in answer] == ["payment-service.production.svc.cluster.local."]
    r = ask(c, "client", [[reverse(svc_ip), "PTR"], [reverse(db_ip), "PTR"], ["10.0.96.10.in-addr.arpa.", "PTR"],
                          [reverse("10.111.254.254"), "PTR"]])
    assert rdata(r[(reverse(svc_ip), "PTR")], "PTR") == ["web.dnstest.svc.cluster.local."]
    assert rdata(r[(reverse(db_ip), "PTR")], "PTR") == ["db-0.db.dnstest.svc.cluster.local."]
    assert rdata(r[("10.0.96.10.in-addr.arpa.", "PTR")], "PTR") == ["kube-dns.kube-system.svc.cluster.local."]
    # an address nothing has falls through to upstream (CoreDNS: fallthrough in-addr.arpa), NXDOMAIN there
    nx = r[(reverse("10.111.254.254"), "PTR")]
    assert nx["rcode"] == "NXDOMAIN" and nx["answer"] == []


def test_externalname_is_a_cname(dns_cluster: Cluster) -> None:
    c = dns_cluster
    r = ask(c, "client", [
        ["stripe.dnstest.svc.cluster.local.", "CNAME"],
        ["stripe.dnstest.svc.cluster.local.", "A"],
        ["payments-alias.dnstest.svc.cluster.local.", "A"],
        ["_http._tcp.stripe.dnstest.svc.cluster.local.", "SRV"],
        ["web.dnstest.svc.cluster.local.", "CNAME"],
    ])
    cname = r[("stripe.dnstest.svc.cluster.local.", "CNAME")]
    assert cname["rcode"] == "NOERROR" and rdata(cname, "CNAME") == ["api.stripe.com."]
    a = r[("stripe.dnstest.svc.cluster.local.", "A")]
    # the CNAME, then the target's A record resolved upstream (the internet's public DNS)
    assert [line.split()[::3] for line in a["answer"]] == [
        ["stripe.dnstest.svc.cluster.local.", "CNAME"], ["api.stripe.com.", "A"]]
    assert rdata(a, "A") == ["198.51.100.20"]
    alias = r[("payments-alias.dnstest.svc.cluster.local.", "A")]
    assert rdata(alias, "CNAME") == ["payment-service.production.svc.cluster.local."]
    assert rdata(alias, "A") == [cluster_ip(c, "payment-service", "production")]
    assert_nxdomain(r[("_http._tcp.stripe.dnstest.svc.cluster.local.", "SRV")])
    assert_nodata(r[("web.dnstest.svc.cluster.local.", "CNAME")])
    # a program in the pod follows the CNAME out of the cluster: curl reaches the external server
    body = json.loads(c.kw("exec", "-n", NS, "client", "--", "curl", "-sS", "-m", "5", "http://stripe/").stdout)
    assert body["pod"] == "api.stripe.com" and body["namespace"] == "internet"


def test_dns_version_txt(dns_cluster: Cluster) -> None:
    c = dns_cluster
    status, answer, _ = dig(c, "dns-version.cluster.local.", "TXT", "client")
    assert status == "NOERROR" and [line.split()[1:] for line in answer] == [["28800", "IN", "TXT", '"1.1.0"']]
    r = ask(c, "client", [["dns-version.cluster.local.", "A"], ["cluster.local.", "TXT"],
                          ["nosuch.cluster.local.", "TXT"]])
    assert_nxdomain(r[("dns-version.cluster.local.", "A")])
    assert_nxdomain(r[("cluster.local.", "TXT")])  # CoreDNS: TXT at the apex is NXDOMAIN
    assert_nxdomain(r[("nosuch.cluster.local.", "TXT")])


def test_pods_insecure_records(dns_cluster: Cluster) -> None:
    c = dns_cluster
    ip = pod_ip(c, "db-0")
    dashed = ip.replace(".", "-")
    r = ask(c, "client", [[f"{dashed}.dnstest.pod.cluster.local.", "A"], [f"{dashed}.dnstest.pod.cluster.local.", "AAAA"],
                          ["1-2-3-4.dnstest.pod.cluster.local.", "A"], ["not-an-ip.dnstest.pod.cluster.local.", "A"],
                          [f"{dashed}.nosuchns.pod.cluster.local.", "A"]])
    assert rdata(r[(f"{dashed}.dnstest.pod.cluster.local.", "A")], "A") == [ip]
    assert_nodata(r[(f"{dashed}.dnstest.pod.cluster.local.", "AAAA")])
    # `pods insecure` (kube-dns compatible): any address is answered, without checking for a pod
    assert rdata(r[("1-2-3-4.dnstest.pod.cluster.local.", "A")], "A") == ["1.2.3.4"]
    assert_nxdomain(r[("not-an-ip.dnstest.pod.cluster.local.", "A")])
    assert_nxdomain(r[(f"{dashed}.nosuchns.pod.cluster.local.", "A")])


# ---------------------------------------------------------------------------------------------
# real resolvers: glibc through the search list
# ---------------------------------------------------------------------------------------------


def test_getent_and_curl_resolve_through_the_search_list(dns_cluster: Cluster) -> None:
    c = dns_cluster
    gw = c.pods("production", "app=api-gateway")[0]["metadata"]["name"]
    ip = cluster_ip(c, "payment-service", "production")
    out = c.kw("exec", "-n", "production", gw, "--", "getent", "hosts", "payment-service").stdout
    assert out.split() == [ip, "payment-service.production.svc.cluster.local"]
    body = json.loads(c.kw("exec", "-n", "production", gw, "--", "curl", "-sS", "-m", "5",
                           "http://payment-service:8080/").stdout)
    assert body["pod"].startswith("payment-processor-") and body["namespace"] == "production"
    body = json.loads(c.kw("exec", "-n", "production", gw, "--", "curl", "-sS", "-m", "5",
                           "http://order-service:8080/").stdout)  # the seed's other Service
    assert body["pod"].startswith("order-processor-") and body["namespace"] == "production"
    # from another namespace the short name is not found; <svc>.<ns> is, through svc.cluster.local
    miss = c.kw("exec", "-n", NS, "client", "--", "getent", "hosts", "payment-service", check=False)
    assert miss.returncode == 2 and miss.stdout == ""
    out = c.kw("exec", "-n", NS, "client", "--", "getent", "hosts", "payment-service.production").stdout
    assert out.split() == [ip, "payment-service.production.svc.cluster.local"]


def search_expansions(name: str, ns: str = NS) -> list[str]:
    return [f"{name}.{ns}.svc.cluster.local.", f"{name}.svc.cluster.local.", f"{name}.cluster.local."]


def assert_pairs_in_step(log: list[dict], order: list[str]) -> None:
    """glibc sends A and AAAA together and waits for both before the next name."""
    position = {name: i for i, name in enumerate(order)}
    steps = [position[e["name"]] for e in log]
    assert steps == sorted(steps), [(e["name"], e["type"]) for e in log]


def test_glibc_search_sequence_ndots5(dns_cluster: Cluster) -> None:
    c = dns_cluster
    out = c.kw("exec", "-n", NS, "client", "--", "getent", "ahosts", "ndots5.stripe.com").stdout
    assert out.split()[0] == "198.51.100.21"
    log = settled_log(c, f"{NS}/client", "ndots5.stripe.com.", "ndots5.stripe.com.", ("A", "AAAA"))
    # 2 dots < ndots:5: every search domain first, the name as given last
    expected = [*search_expansions("ndots5.stripe.com"), "ndots5.stripe.com."]
    assert names_by_type(log, "A") == expected
    assert names_by_type(log, "AAAA") == expected
    assert [e["rcode"] for e in log if e["type"] == "A"] == ["NXDOMAIN"] * 3 + ["NOERROR"]
    assert_pairs_in_step(log, expected)
    assert all(e["proto"] == "udp" for e in log)


def test_glibc_search_sequence_ndots2(dns_cluster: Cluster) -> None:
    c = dns_cluster
    assert "options ndots:2" in c.kw("exec", "-n", NS, "client-ndots2", "--", "cat", "/etc/resolv.conf").stdout
    # 2 dots >= ndots:2: the name as given first, and it exists: one question per type
    out = c.kw("exec", "-n", NS, "client-ndots2", "--", "getent", "ahosts", "ndots2.stripe.com").stdout
    assert out.split()[0] == "198.51.100.22"
    log = settled_log(c, f"{NS}/client-ndots2", "ndots2.stripe.com.", "ndots2.stripe.com.", ("A", "AAAA"))
    assert names_by_type(log, "A") == ["ndots2.stripe.com."]
    assert names_by_type(log, "AAAA") == ["ndots2.stripe.com."]
    # as given first; when that does not exist, the search list after it
    miss = c.kw("exec", "-n", NS, "client-ndots2", "--", "getent", "ahosts", "absent.stripe.com", check=False)
    assert miss.returncode == 2
    expected = ["absent.stripe.com.", *search_expansions("absent.stripe.com")]
    log = settled_log(c, f"{NS}/client-ndots2", "absent.stripe.com.", expected[-1], ("A", "AAAA"))
    assert names_by_type(log, "A") == expected and names_by_type(log, "AAAA") == expected
    assert {e["rcode"] for e in log} == {"NXDOMAIN"}
    assert_pairs_in_step(log, expected)
    # 1 dot < ndots:2: the search list first, stopping at the first name that has an address
    out = c.kw("exec", "-n", NS, "client-ndots2", "--", "getent", "ahosts", "web.dnstest").stdout
    assert out.split()[0] == cluster_ip(c, "web")
    expected = ["web.dnstest.dnstest.svc.cluster.local.", "web.dnstest.svc.cluster.local."]
    log = settled_log(c, f"{NS}/client-ndots2", "web.dnstest.", expected[-1], ("A", "AAAA"))
    assert names_by_type(log, "A") == expected and names_by_type(log, "AAAA") == expected
    assert [(e["type"], e["rcode"]) for e in log if e["name"] == expected[-1]] in (
        [("A", "NOERROR"), ("AAAA", "NOERROR")], [("AAAA", "NOERROR"), ("A", "NOERROR")])


def test_glibc_trailing_dot_asks_once(dns_cluster: Cluster) -> None:
    c = dns_cluster
    out = c.kw("exec", "-n", NS, "client", "--", "getent", "ahosts", "fqdn.stripe.com.").stdout
    assert out.split()[0] == "198.51.100.23"
    log = settled_log(c, f"{NS}/client", "fqdn.stripe.com.", "fqdn.stripe.com.", ("A", "AAAA"))
    assert names_by_type(log, "A") == ["fqdn.stripe.com."]
    assert names_by_type(log, "AAAA") == ["fqdn.stripe.com."]
    # the public DNS has the A record only: AAAA is NODATA there, relayed as is
    assert sorted((e["type"], e["rcode"]) for e in log) == [("A", "NOERROR"), ("AAAA", "NOERROR")]


def test_text_query_log_names_the_asker(dns_cluster: Cluster) -> None:
    c = dns_cluster
    client_ip = pod_ip(c, "client")
    ask(c, "client", [["logged-name.dnstest.svc.cluster.local.", "A"]])

    dns_pods = [p["metadata"]["name"] for p in c.pods("kube-system", "k8s-app=kube-dns")]
    assert "[INFO] " in c.kw("logs", "-n", "kube-system", "deploy/coredns").stdout

    def line() -> str | None:
        out = "".join(c.kw("logs", "-n", "kube-system", p).stdout for p in dns_pods)
        return next((x for x in out.splitlines() if "logged-name.dnstest.svc.cluster.local." in x), None)

    text = c.wait("the query in the coredns log", line, timeout=5, interval=0.2)
    assert text.startswith(f"[INFO] {client_ip}:")
    assert '"A IN logged-name.dnstest.svc.cluster.local. udp ' in text and " NXDOMAIN qr,aa,rd " in text


# ---------------------------------------------------------------------------------------------
# a deleted pod's names
# ---------------------------------------------------------------------------------------------


def test_deleted_pod_records_disappear_within_a_second(dns_cluster: Cluster) -> None:
    c = dns_cluster
    ip = pod_ip(c, "gone-0")
    name = "gone-0.gone.dnstest.svc.cluster.local."
    before = ask(c, "client", [[name, "A"], [reverse(ip), "PTR"], ["gone.dnstest.svc.cluster.local.", "A"]])
    assert rdata(before[(name, "A")], "A") == [ip]
    assert rdata(before[(reverse(ip), "PTR")], "PTR") == [name]
    # a poller in the client pod notes when the hostname record is gone
    poller = subprocess.Popen([*KW, "--name", c.name, "exec", "-n", NS, "client", "--", sys.executable, PROBE,
                               "until", name, "A", "NXDOMAIN", "10"], stdout=subprocess.PIPE, text=True)
    try:
        assert poller.stdout is not None
        assert json.loads(poller.stdout.readline()) == {"ready": True}
        t0 = time.time()
        c.kw("delete", "pod", "gone-0", "-n", NS, "--no-wait")
        gone_at = json.loads(poller.stdout.readline())["ts"]
    finally:
        poller.wait(timeout=15)
    assert gone_at is not None, "the hostname record never went away"
    assert gone_at - t0 < 1.0, f"gone {gone_at - t0:.2f}s after `kubewire delete` started"
    after = ask(c, "client", [[name, "A"], [reverse(ip), "PTR"], ["gone.dnstest.svc.cluster.local.", "A"],
                              [f"{ip.replace('.', '-')}.dnstest.pod.cluster.local.", "A"]])
    assert_nxdomain(after[(name, "A")])
    assert_nxdomain(after[("gone.dnstest.svc.cluster.local.", "A")]), "no ready endpoint left"
    assert after[(reverse(ip), "PTR")]["rcode"] == "NXDOMAIN"
    # `pods insecure` answers from the name alone, pod or no pod (CoreDNS: "without checking k8s")
    assert rdata(after[(f"{ip.replace('.', '-')}.dnstest.pod.cluster.local.", "A")], "A") == [ip]


# ---------------------------------------------------------------------------------------------
# NodeLocal DNSCache
# ---------------------------------------------------------------------------------------------

NODELOCAL_CONFIG = """
apiVersion: kubewire.io/v1alpha1
kind: Cluster
dns: {nodeLocalDNSCache: true, ttl: 2}
"""

NODELOCAL_OBJECTS = """
apiVersion: v1
kind: Pod
metadata: {name: echo, labels: {app: echo}}
spec:
  containers: [{name: main, image: agnhost, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  containers: [{name: sh, image: busybox, command: [sleep, infinity]}]
"""


@pytest.fixture(scope="module", params=["iptables", "ebpf"])
def nodelocal_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = make_cluster(tmp_path_factory.mktemp(f"nodelocal-{request.param}"), NODELOCAL_CONFIG, "--proxy-mode",
                     request.param)
    try:
        c.apply(NODELOCAL_OBJECTS)
        c.ready_pods("default", "app=echo", 1)
        c.ready_pods("default", "app=client", 1)
        c.ready_pods("kube-system", "k8s-app=kube-dns", 2)
        yield c
    finally:
        c.kw("down", check=False)


def node_netns(c: Cluster, pod: str) -> str:
    return f"kw-{c.name}-node-{c.json('get', 'pod', pod)['spec']['nodeName']}"


def test_nodelocal_cache_hit_on_second_lookup(nodelocal_cluster: Cluster) -> None:
    c = nodelocal_cluster
    resolv = c.kw("exec", "client", "--", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 169.254.20.10\n" in resolv and "10.96.0.10" not in resolv
    svc = "echo.default.svc.cluster.local."
    client_ip = pod_ip(c, "client", "default")
    r = ask(c, "client", [[svc, "A"], ["nosuch.default.svc.cluster.local.", "A"], [svc, "A"],
                          ["nosuch.default.svc.cluster.local.", "A"]], ns="default")
    assert rdata(r[(svc, "A")], "A") == [cluster_ip(c, "echo", "default")]
    assert r[("nosuch.default.svc.cluster.local.", "A")]["rcode"] == "NXDOMAIN"

    node = c.json("get", "pod", "client")["spec"]["nodeName"]
    pattern = f"node-local-{node}.jsonl"

    def local_log() -> list[dict] | None:
        entries = [e for prefix in (svc, "nosuch.default.") for e in query_log(c, None, prefix, pattern)
                   if e["client"].startswith(client_ip + ":")]
        return sorted(entries, key=lambda e: e["ts"] - e["duration_ms"] / 1000) if len(entries) == 4 else None

    log = c.wait("4 queries in the node-local log", local_log, timeout=5, interval=0.05)
    assert [(e["name"], e["cache_hit"]) for e in log] == [
        (svc, False), ("nosuch.default.svc.cluster.local.", False),
        (svc, True), ("nosuch.default.svc.cluster.local.", True)], "positive and negative answers are cached"
    assert [e["rcode"] for e in log] == ["NOERROR", "NXDOMAIN", "NOERROR", "NXDOMAIN"]
    # cluster DNS saw each name once, over TCP, from the node (the cache's own connection)
    time.sleep(0.2)
    upstream = query_log(c, None, svc) + query_log(c, None, "nosuch.default.")
    assert sorted((e["name"], e["proto"]) for e in upstream) == [
        (svc, "tcp"), ("nosuch.default.svc.cluster.local.", "tcp")]
    node_obj = c.json("get", "node", node)
    node_ips = {node_obj["status"]["addresses"][0]["address"], node_obj["spec"]["podCIDR"].rsplit(".", 1)[0] + ".1"}
    assert {e["client"].split(":")[0] for e in upstream} <= node_ips, "the node's address, masqueraded to the VIP"
    assert {e["client_pod"] for e in upstream} == {""}
    # TTL honoured (2 s here): after it, the next lookup goes upstream again
    time.sleep(2.2)
    ask(c, "client", [[svc, "A"]], ns="default")

    def third() -> list[dict] | None:
        entries = [e for e in query_log(c, None, svc, pattern) if e["client"].startswith(client_ip + ":")]
        return entries if len(entries) == 3 else None

    assert c.wait("third lookup logged", third, timeout=5, interval=0.05)[-1]["cache_hit"] is False


def test_nodelocal_traffic_skips_conntrack(nodelocal_cluster: Cluster) -> None:
    c = nodelocal_cluster
    netns = node_netns(c, "client")
    raw = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "--", "iptables", "-t", "raw", "-S"],
                         capture_output=True, text=True, check=True).stdout
    assert "-A PREROUTING -d 169.254.20.10/32 -p udp -m udp --dport 53" in raw and "-j NOTRACK" in raw
    ask(c, "client", [["notrack-check.default.svc.cluster.local.", "A"]], ns="default")
    ct = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "--", "conntrack", "-L", "-d", "169.254.20.10"],
                        capture_output=True, text=True)
    assert "169.254.20.10" not in ct.stdout, ct.stdout
    # a getent through the cache and the search list resolves a Service by its short name
    out = c.kw("exec", "client", "--", "getent", "hosts", "echo").stdout
    assert out.split() == [cluster_ip(c, "echo", "default"), "echo.default.svc.cluster.local"]
