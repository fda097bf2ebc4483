"""`kubewire bench dns`'s pure parts: dnsperf output parsing, the query files, unbound's config."""

from __future__ import annotations

from kubewire.bench.dns import (
    cluster_names,
    parse_summary,
    parse_verbose,
    percentile,
    search_list_queries,
    unbound_conf,
)

SUMMARY = """
Statistics:

  Queries sent:         52420
  Queries completed:    52410 (99.98%)
  Queries lost:         10 (0.02%)

  Response codes:       NOERROR 13102 (25.00%), NXDOMAIN 39308 (75.00%)
  Average packet size:  request 61, response 77
  Run time (s):         3.021967
  Queries per second:   17346.317812

  Average Latency (s):  0.002489 (min 0.000045, max 0.027310)
  Latency StdDev (s):   0.001861
"""


def test_parse_summary():
    s = parse_summary(SUMMARY)
    assert (s["sent"], s["completed"], s["lost"]) == (52420, 52410, 10)
    assert s["rcodes"] == {"NOERROR": 13102, "NXDOMAIN": 39308}
    assert s["qps"] == 17346.317812 and s["runtime_s"] == 3.021967
    assert (s["avg_s"], s["stddev_s"]) == (0.002489, 0.001861)


def test_parse_verbose_and_percentiles():
    out = "[Status] Sending\n> NOERROR a.b A 0.000425\n> NXDOMAIN c.d AAAA 0.000100\n> T e.f A\n> NOERROR g.h A 0.0002\n"
    lat, timeouts = parse_verbose(out)
    assert lat == [0.000425, 0.0001, 0.0002] and timeouts == 1
    assert percentile(lat, 50) == 0.0002 and percentile(lat, 99) == 0.000425 and percentile([], 50) == 0.0


def test_search_list_queries_are_what_glibc_sends_with_ndots5():
    assert search_list_queries("api.stripe.com", "bench") == [
        "api.stripe.com.bench.svc.cluster.local A", "api.stripe.com.bench.svc.cluster.local AAAA",
        "api.stripe.com.svc.cluster.local A", "api.stripe.com.svc.cluster.local AAAA",
        "api.stripe.com.cluster.local A", "api.stripe.com.cluster.local AAAA",
        "api.stripe.com A", "api.stripe.com AAAA"]


def test_unbound_serves_the_same_records():
    records = {"domain": "cluster.local", "services": [
        {"metadata": {"name": "web", "namespace": "a"}, "spec": {"clusterIP": "10.96.0.5"}},
        {"metadata": {"name": "db", "namespace": "a"}, "spec": {"clusterIP": "None"}},
        {"metadata": {"name": "ext", "namespace": "a"}, "spec": {"type": "ExternalName", "externalName": "x.y"}},
    ]}
    names = cluster_names(records)
    assert names == [("web.a.svc.cluster.local", "10.96.0.5")]
    conf = unbound_conf("/tmp/w", ["127.0.0.1", "10.244.0.2"], 5353, names, "198.51.100.53", "cluster.local", 5)
    assert '  local-zone: "cluster.local." static' in conf
    assert '  local-data: "web.a.svc.cluster.local. 5 IN A 10.96.0.5"' in conf
    assert "  interface: 127.0.0.1@5353\n  interface: 10.244.0.2@5353\n" in conf
    assert conf.endswith('forward-zone:\n  name: "."\n  forward-addr: 198.51.100.53\n')
