"""Spec vectors for ClusterRecords: the Kubernetes DNS specification (schema 1.1.0) as CoreDNS's
kubernetes plugin answers it, positive and negative (NXDOMAIN vs NODATA-with-SOA)."""

from __future__ import annotations

import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from kubewire.dns.records import Answer, ClusterRecords, reverse_zones

SOA = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1499347823 7200 1800 86400 5"


def svc(name, ns, ip="", ports=(), **spec):
    ports = [{"name": p[0], "port": p[1], **({"protocol": p[2]} if len(p) > 2 else {})} for p in ports]
    body = {"ports": ports, **spec}
    if ip:
        body["clusterIP"] = ip
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": body}


def eps(service, ns, endpoints, ports=(), name=None, family="IPv4"):
    return {
        "kind": "EndpointSlice",
        "metadata": {"name": name or f"{service}-abcde", "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": family,
        "endpoints": endpoints,
        "ports": [{"name": p[0], "port": p[1], "protocol": p[2] if len(p) > 2 else "TCP"} for p in ports],
    }


def ep(ip, ready=True, hostname=None):
    out = {"addresses": [ip], "conditions": {"ready": ready}}
    if hostname:
        out["hostname"] = hostname
    return out


SERVICES = [
    svc("kubernetes", "default", "10.96.0.1", [("https", 443)]),
    svc("kube-dns", "kube-system", "10.96.0.10", [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153)]),
    svc("payment-service", "production", "10.96.0.50", [("http", 8080), ("grpc", 9090)]),
    svc("unnamed", "production", "10.96.0.51", [("", 80)]),
    svc("noports", "production", "10.96.0.52"),
    svc("dual", "production", "10.96.0.60", [("http", 80)], clusterIPs=["10.96.0.60", "fd00::60"]),
    svc("db", "production", "None", [("pg", 5432)]),
    svc("empty-headless", "production", "None", [("http", 80)]),
    svc("pubnr", "production", "None", [("http", 80)], publishNotReadyAddresses=True),
    svc("stripe", "production", "", type="ExternalName", externalName="api.stripe.com"),
    svc("alias", "production", "", type="ExternalName", externalName="payment-service.production.svc.cluster.local"),
    svc("web", "staging", "10.96.1.5", [("http", 80)]),
]
SLICES = [
    eps("kube-dns", "kube-system", [ep("10.244.0.2"), ep("10.244.0.3")], [("dns", 53, "UDP")]),
    eps("payment-service", "production", [ep("10.244.1.10"), ep("10.244.2.11"), ep("10.244.2.12", ready=False)],
        [("http", 8080), ("grpc", 9090)]),
    eps("db", "production", [ep("10.244.1.5", hostname="db-0"), ep("10.244.2.6", hostname="db-1"),
                             ep("10.244.3.7"), ep("10.244.3.8", ready=False, hostname="db-3")], [("pg", 5432)]),
    eps("pubnr", "production", [ep("10.244.1.20", ready=False)], [("http", 80)]),
]
PODS = [{"kind": "Pod", "metadata": {"name": "client", "namespace": "production"},
         "status": {"podIP": "10.244.1.30", "podIPs": [{"ip": "10.244.1.30"}]}}]


@pytest.fixture(scope="module")
def records() -> ClusterRecords:
    return ClusterRecords(SERVICES, SLICES, PODS, serial=1499347823, local_ips=["10.244.0.2"])


def ask(records: ClusterRecords, name: str, qtype: str) -> Answer | None:
    return records.answer(dns.name.from_text(name), dns.rdatatype.from_text(qtype))


def texts(rrsets) -> list[str]:
    return [line for rrset in rrsets for line in rrset.to_text().splitlines()]


def positive(answer: Answer | None) -> list[str]:
    assert answer is not None
    assert answer.rcode == dns.rcode.NOERROR and answer.authority == ()
    assert answer.answer, "expected records"
    return texts(answer.answer)


def assert_nxdomain(answer: Answer | None, soa: str = SOA) -> None:
    assert answer is not None
    assert answer.rcode == dns.rcode.NXDOMAIN
    assert answer.answer == ()
    assert texts(answer.authority) == [soa]


def assert_nodata(answer: Answer | None, soa: str = SOA) -> None:
    assert answer is not None
    assert answer.rcode == dns.rcode.NOERROR
    assert answer.answer == ()
    assert texts(answer.authority) == [soa]


# -- 2.2 schema version --------------------------------------------------------------------


def test_dns_version_txt(records):
    assert positive(ask(records, "dns-version.cluster.local.", "TXT")) == [
        'dns-version.cluster.local. 28800 IN TXT "1.1.0"']


def test_txt_elsewhere_is_nodata_for_existing_names_and_nxdomain_otherwise(records):
    assert_nodata(ask(records, "payment-service.production.svc.cluster.local.", "TXT"))
    assert_nxdomain(ask(records, "nope.production.svc.cluster.local.", "TXT"))
    # CoreDNS quirk: namespace and apex names are NODATA for A but NXDOMAIN for TXT.
    assert_nxdomain(ask(records, "production.svc.cluster.local.", "TXT"))
    assert_nxdomain(ask(records, "cluster.local.", "TXT"))


# -- 2.3 ClusterIP services -------------------------------------------------------------------


def test_clusterip_a(records):
    assert positive(ask(records, "kubernetes.default.svc.cluster.local.", "A")) == [
        "kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"]


def test_names_are_case_insensitive_and_answers_keep_the_askers_case(records):
    assert positive(ask(records, "Payment-Service.PRODUCTION.svc.Cluster.Local.", "A")) == [
        "Payment-Service.PRODUCTION.svc.Cluster.Local. 5 IN A 10.96.0.50"]


def test_aaaa_for_an_ipv4_only_service_is_nodata(records):
    assert_nodata(ask(records, "payment-service.production.svc.cluster.local.", "AAAA"))


def test_unsupported_type_for_an_existing_name_is_nodata(records):
    assert_nodata(ask(records, "payment-service.production.svc.cluster.local.", "MX"))
    assert_nodata(ask(records, "payment-service.production.svc.cluster.local.", "HINFO"))
    assert_nxdomain(ask(records, "nope.production.svc.cluster.local.", "HINFO"))


def test_missing_service_and_missing_namespace_are_nxdomain(records):
    assert_nxdomain(ask(records, "nope.production.svc.cluster.local.", "A"))
    assert_nxdomain(ask(records, "nope.production.svc.cluster.local.", "AAAA"))
    assert_nxdomain(ask(records, "payment-service.nope.svc.cluster.local.", "A"))


def test_dual_stack(records):
    assert positive(ask(records, "dual.production.svc.cluster.local.", "A")) == [
        "dual.production.svc.cluster.local. 5 IN A 10.96.0.60"]
    assert positive(ask(records, "dual.production.svc.cluster.local.", "AAAA")) == [
        "dual.production.svc.cluster.local. 5 IN AAAA fd00::60"]
    answer = ask(records, "_http._tcp.dual.production.svc.cluster.local.", "SRV")
    # Two candidates (one per ClusterIP) share the weight, then dedupe to one SRV.
    assert positive(answer) == [
        "_http._tcp.dual.production.svc.cluster.local. 5 IN SRV 0 50 80 dual.production.svc.cluster.local."]
    assert texts(answer.additional) == ["dual.production.svc.cluster.local. 5 IN A 10.96.0.60",
                                        "dual.production.svc.cluster.local. 5 IN AAAA fd00::60"]


def test_srv_named_port(records):
    answer = ask(records, "_http._tcp.payment-service.production.svc.cluster.local.", "SRV")
    assert positive(answer) == [
        "_http._tcp.payment-service.production.svc.cluster.local. 5 IN SRV 0 100 8080 "
        "payment-service.production.svc.cluster.local."]
    assert texts(answer.additional) == ["payment-service.production.svc.cluster.local. 5 IN A 10.96.0.50"]


def test_srv_protocol_must_match(records):
    assert positive(ask(records, "_dns._udp.kube-dns.kube-system.svc.cluster.local.", "SRV")) == [
        "_dns._udp.kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 100 53 kube-dns.kube-system.svc.cluster.local."]
    assert_nxdomain(ask(records, "_dns._tcp.kube-dns.kube-system.svc.cluster.local.", "SRV"))
    assert_nxdomain(ask(records, "_http._udp.payment-service.production.svc.cluster.local.", "SRV"))
    assert_nxdomain(ask(records, "_nope._tcp.payment-service.production.svc.cluster.local.", "SRV"))


def test_srv_without_port_prefix_lists_every_port_as_coredns_does(records):
    assert positive(ask(records, "payment-service.production.svc.cluster.local.", "SRV")) == [
        "payment-service.production.svc.cluster.local. 5 IN SRV 0 50 8080 payment-service.production.svc.cluster.local.",
        "payment-service.production.svc.cluster.local. 5 IN SRV 0 50 9090 payment-service.production.svc.cluster.local.",
    ]
    # An unnamed port has no _port._proto name (nothing to ask for) but shows up here.
    assert positive(ask(records, "unnamed.production.svc.cluster.local.", "SRV")) == [
        "unnamed.production.svc.cluster.local. 5 IN SRV 0 100 80 unnamed.production.svc.cluster.local."]
    # A service without ports still has its A record, and no SRV (NODATA).
    assert positive(ask(records, "noports.production.svc.cluster.local.", "A"))
    assert_nodata(ask(records, "noports.production.svc.cluster.local.", "SRV"))


def test_port_names_also_answer_a_as_coredns_does(records):
    assert positive(ask(records, "_http._tcp.payment-service.production.svc.cluster.local.", "A")) == [
        "_http._tcp.payment-service.production.svc.cluster.local. 5 IN A 10.96.0.50"]


def test_ptr_for_cluster_ip(records):
    assert positive(ask(records, "50.0.96.10.in-addr.arpa.", "PTR")) == [
        "50.0.96.10.in-addr.arpa. 5 IN PTR payment-service.production.svc.cluster.local."]
    assert positive(ask(records, "0.6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", "PTR")) == [
        "0.6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 5 IN PTR dual.production.svc.cluster.local."]


# -- 2.4 headless services ---------------------------------------------------------------------


def test_headless_a_lists_ready_endpoints_only(records):
    assert positive(ask(records, "db.production.svc.cluster.local.", "A")) == [
        "db.production.svc.cluster.local. 5 IN A 10.244.1.5",
        "db.production.svc.cluster.local. 5 IN A 10.244.2.6",
        "db.production.svc.cluster.local. 5 IN A 10.244.3.7",
    ]
    assert_nodata(ask(records, "db.production.svc.cluster.local.", "AAAA"))


def test_headless_without_ready_endpoints_is_nxdomain(records):
    assert_nxdomain(ask(records, "empty-headless.production.svc.cluster.local.", "A"))


def test_publish_not_ready_addresses(records):
    assert positive(ask(records, "pubnr.production.svc.cluster.local.", "A")) == [
        "pubnr.production.svc.cluster.local. 5 IN A 10.244.1.20"]


def test_hostname_subdomain_records(records):
    assert positive(ask(records, "db-0.db.production.svc.cluster.local.", "A")) == [
        "db-0.db.production.svc.cluster.local. 5 IN A 10.244.1.5"]
    assert positive(ask(records, "DB-1.db.production.svc.cluster.local.", "A")) == [
        "DB-1.db.production.svc.cluster.local. 5 IN A 10.244.2.6"]
    assert_nxdomain(ask(records, "db-3.db.production.svc.cluster.local.", "A"))  # not ready
    assert_nxdomain(ask(records, "db-9.db.production.svc.cluster.local.", "A"))


def test_endpoint_ip_names(records):
    assert positive(ask(records, "10-244-3-7.db.production.svc.cluster.local.", "A")) == [
        "10-244-3-7.db.production.svc.cluster.local. 5 IN A 10.244.3.7"]
    # An endpoint with a hostname is named by it, not by its IP.
    assert_nxdomain(ask(records, "10-244-1-5.db.production.svc.cluster.local.", "A"))
    # CoreDNS serves endpoint names for ClusterIP services' endpoints too.
    assert positive(ask(records, "10-244-1-10.payment-service.production.svc.cluster.local.", "A")) == [
        "10-244-1-10.payment-service.production.svc.cluster.local. 5 IN A 10.244.1.10"]


def test_headless_srv(records):
    answer = ask(records, "_pg._tcp.db.production.svc.cluster.local.", "SRV")
    assert positive(answer) == [
        "_pg._tcp.db.production.svc.cluster.local. 5 IN SRV 0 33 5432 db-0.db.production.svc.cluster.local.",
        "_pg._tcp.db.production.svc.cluster.local. 5 IN SRV 0 33 5432 db-1.db.production.svc.cluster.local.",
        "_pg._tcp.db.production.svc.cluster.local. 5 IN SRV 0 33 5432 10-244-3-7.db.production.svc.cluster.local.",
    ]
    assert texts(answer.additional) == [
        "db-0.db.production.svc.cluster.local. 5 IN A 10.244.1.5",
        "db-1.db.production.svc.cluster.local. 5 IN A 10.244.2.6",
        "10-244-3-7.db.production.svc.cluster.local. 5 IN A 10.244.3.7",
    ]


def test_ptr_for_endpoints(records):
    assert positive(ask(records, "5.1.244.10.in-addr.arpa.", "PTR")) == [
        "5.1.244.10.in-addr.arpa. 5 IN PTR db-0.db.production.svc.cluster.local."]
    assert positive(ask(records, "7.3.244.10.in-addr.arpa.", "PTR")) == [
        "7.3.244.10.in-addr.arpa. 5 IN PTR 10-244-3-7.db.production.svc.cluster.local."]
    assert positive(ask(records, "10.1.244.10.in-addr.arpa.", "PTR")) == [
        "10.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-10.payment-service.production.svc.cluster.local."]


def test_unknown_reverse_names_fall_through_or_are_nxdomain(records):
    assert ask(records, "9.9.9.9.in-addr.arpa.", "PTR") is None  # fallthrough in-addr.arpa ip6.arpa
    assert ask(records, "8.3.244.10.in-addr.arpa.", "PTR") is None  # a not-ready endpoint
    strict = ClusterRecords(SERVICES, SLICES, serial=1499347823, fallthrough=())
    assert_nxdomain(ask(strict, "9.9.9.9.in-addr.arpa.", "PTR"),
                    "in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. 1499347823 7200 1800 86400 5")


def test_reverse_zones_from_cidrs():
    assert reverse_zones("10.244.0.0/16") == ["244.10.in-addr.arpa."]
    assert reverse_zones("10.0.0.0/8") == ["10.in-addr.arpa."]
    twelve = reverse_zones("10.96.0.0/12")
    assert len(twelve) == 16 and twelve[0] == "96.10.in-addr.arpa." and twelve[-1] == "111.10.in-addr.arpa."
    assert reverse_zones("fd00::/64") == ["0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."]
    records = ClusterRecords(SERVICES, SLICES, serial=1, reverse=("10.96.0.0/12", "10.244.0.0/16"), fallthrough=())
    assert positive(ask(records, "50.0.96.10.in-addr.arpa.", "PTR"))
    assert ask(records, "1.0.0.192.in-addr.arpa.", "PTR") is None  # not a zone of ours
    answer = ask(records, "9.9.244.10.in-addr.arpa.", "PTR")
    assert answer is not None and answer.rcode == dns.rcode.NXDOMAIN
    assert answer.authority[0].name == dns.name.from_text("244.10.in-addr.arpa.")


# -- 2.5 ExternalName --------------------------------------------------------------------------


def test_external_name_cname(records):
    assert positive(ask(records, "stripe.production.svc.cluster.local.", "CNAME")) == [
        "stripe.production.svc.cluster.local. 5 IN CNAME api.stripe.com."]


def test_external_name_a_needs_the_server_to_chase_the_target(records):
    answer = ask(records, "stripe.production.svc.cluster.local.", "A")
    assert positive(answer) == ["stripe.production.svc.cluster.local. 5 IN CNAME api.stripe.com."]
    assert answer.chase is not None
    assert answer.chase.target == dns.name.from_text("api.stripe.com.")
    assert answer.chase.rdtype == dns.rdatatype.A
    assert texts([answer.soa]) == [SOA]


def test_external_name_inside_the_zone_is_resolved_here(records):
    answer = ask(records, "alias.production.svc.cluster.local.", "A")
    assert positive(answer) == [
        "alias.production.svc.cluster.local. 5 IN CNAME payment-service.production.svc.cluster.local.",
        "payment-service.production.svc.cluster.local. 5 IN A 10.96.0.50",
    ]
    assert answer.chase is None


def test_external_name_has_no_srv_and_no_subnames(records):
    assert_nodata(ask(records, "stripe.production.svc.cluster.local.", "SRV"))
    assert_nxdomain(ask(records, "endpoint.stripe.production.svc.cluster.local.", "CNAME"))
    assert_nxdomain(ask(records, "_https._tcp.stripe.production.svc.cluster.local.", "A"))


# -- names that exist only as prefixes, and search-list expansions -----------------------------


@pytest.mark.parametrize("name", ["cluster.local.", "svc.cluster.local.", "pod.cluster.local.",
                                  "production.svc.cluster.local.", "default.svc.cluster.local.",
                                  "production.pod.cluster.local."])
def test_prefix_names_are_nodata(records, name):
    assert_nodata(ask(records, name, "A"))
    assert_nodata(ask(records, name, "AAAA"))


@pytest.mark.parametrize("name", ["foo.cluster.local.", "nope.svc.cluster.local.", "nope.pod.cluster.local.",
                                  "a.b.c.payment-service.production.svc.cluster.local."])
def test_names_outside_the_schema_are_nxdomain(records, name):
    assert_nxdomain(ask(records, name, "A"))


SEARCH = ["production.svc.cluster.local", "svc.cluster.local", "cluster.local"]


@pytest.mark.parametrize("qtype", ["A", "AAAA"])
def test_search_list_expansions_of_an_external_name(records, qtype):
    # What glibc asks, with ndots:5, for api.stripe.com from a pod in "production": every
    # expansion must be NXDOMAIN (a NODATA would stop musl), then the name itself is forwarded.
    for suffix in SEARCH:
        assert_nxdomain(ask(records, f"api.stripe.com.{suffix}.", qtype))
    assert ask(records, "api.stripe.com.", qtype) is None


def test_search_list_expansion_of_a_short_service_name(records):
    assert positive(ask(records, f"payment-service.{SEARCH[0]}.", "A"))
    assert_nxdomain(ask(records, f"payment-service.{SEARCH[1]}.", "A"))  # namespace "payment-service"
    assert_nxdomain(ask(records, f"payment-service.{SEARCH[2]}.", "A"))
    assert positive(ask(records, f"web.staging.{SEARCH[1]}.", "A"))  # web.staging from production


# -- pods ---------------------------------------------------------------------------------------


def test_pods_insecure(records):
    assert positive(ask(records, "10-244-1-30.production.pod.cluster.local.", "A")) == [
        "10-244-1-30.production.pod.cluster.local. 5 IN A 10.244.1.30"]
    # insecure: any IP in an existing namespace, pod or not
    assert positive(ask(records, "1-2-3-4.staging.pod.cluster.local.", "A")) == [
        "1-2-3-4.staging.pod.cluster.local. 5 IN A 1.2.3.4"]
    assert positive(ask(records, "fd00--1.production.pod.cluster.local.", "AAAA")) == [
        "fd00--1.production.pod.cluster.local. 5 IN AAAA fd00::1"]
    assert_nodata(ask(records, "1-2-3-4.production.pod.cluster.local.", "AAAA"))
    assert_nxdomain(ask(records, "1-2-3-4.nope.pod.cluster.local.", "A"))  # namespace must exist
    assert_nxdomain(ask(records, "blah.production.pod.cluster.local.", "A"))
    assert_nxdomain(ask(records, "1-2-3-400.production.pod.cluster.local.", "A"))


def test_pods_disabled_and_verified():
    disabled = ClusterRecords(SERVICES, SLICES, PODS, pods_mode="disabled", serial=1499347823)
    assert_nxdomain(ask(disabled, "10-244-1-30.production.pod.cluster.local.", "A"))
    verified = ClusterRecords(SERVICES, SLICES, PODS, pods_mode="verified", serial=1499347823)
    assert positive(ask(verified, "10-244-1-30.production.pod.cluster.local.", "A"))
    assert_nxdomain(ask(verified, "10-244-1-30.staging.pod.cluster.local.", "A"))
    assert_nxdomain(ask(verified, "1-2-3-4.production.pod.cluster.local.", "A"))


# -- zone apex: SOA, NS, transfers ----------------------------------------------------------------


def test_soa(records):
    assert positive(ask(records, "cluster.local.", "SOA")) == [SOA]
    assert_nodata(ask(records, "payment-service.production.svc.cluster.local.", "SOA"))
    assert_nodata(ask(records, "nope.production.svc.cluster.local.", "SOA"))  # never NXDOMAIN


def test_soa_ttl_is_capped_at_300_and_minimum_is_the_ttl():
    records = ClusterRecords(SERVICES, SLICES, ttl=600, serial=7)
    assert texts(ask(records, "nope.production.svc.cluster.local.", "A").authority) == [
        "cluster.local. 300 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 7 7200 1800 86400 600"]
    assert positive(ask(records, "kubernetes.default.svc.cluster.local.", "A")) == [
        "kubernetes.default.svc.cluster.local. 600 IN A 10.96.0.1"]


def test_ns_records_point_at_the_dns_service(records):
    answer = ask(records, "cluster.local.", "NS")
    assert positive(answer) == ["cluster.local. 5 IN NS kube-dns.kube-system.svc.cluster.local."]
    assert texts(answer.additional) == ["kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10"]
    assert positive(ask(records, "ns.dns.cluster.local.", "A")) == ["ns.dns.cluster.local. 5 IN A 10.96.0.10"]
    assert_nodata(ask(records, "production.svc.cluster.local.", "NS"))
    assert_nxdomain(ask(records, "foo.svc.cluster.local.", "NS"))


def test_transfers_are_refused(records):
    answer = ask(records, "cluster.local.", "AXFR")
    assert answer is not None and answer.rcode == dns.rcode.REFUSED and not answer.authoritative


def test_names_outside_our_zones_are_not_answered(records):
    assert ask(records, "api.stripe.com.", "A") is None
    assert ask(records, "local.", "A") is None


def test_wildcards_are_not_supported_as_in_coredns_1_9_and_later(records):
    assert_nxdomain(ask(records, "*.production.svc.cluster.local.", "A"))
    assert_nxdomain(ask(records, "any.production.svc.cluster.local.", "A"))


def test_from_dict_and_namespaces():
    records = ClusterRecords.from_dict({"services": SERVICES, "endpointslices": SLICES, "pods": [],
                                        "domain": "example.internal", "ttl": 30, "namespaces": ["production"],
                                        "serial": 3})
    assert positive(ask(records, "payment-service.production.svc.example.internal.", "A")) == [
        "payment-service.production.svc.example.internal. 30 IN A 10.96.0.50"]
    # Namespaces are what the caller says exist: "staging" is not one of them here.
    assert_nxdomain(ask(records, "web.staging.svc.example.internal.", "A"),
                    "example.internal. 30 IN SOA ns.dns.example.internal. hostmaster.example.internal. 3 7200 1800 86400 30")
    assert ask(records, "payment-service.production.svc.cluster.local.", "A") is None
