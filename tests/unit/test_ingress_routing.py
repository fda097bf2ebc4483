"""Ingress routing as the model builds it and nginx will apply it (kubewire.ingress.model): vectors
from the Ingress API documentation (the path-matching table of
https://kubernetes.io/docs/concepts/services-networking/ingress/#examples) and the
ingress-controller-conformance features (path_rules, host_rules, default_backend, ingress_class).

`route_of` follows nginx's own server and location choice over the locations the model emits, so
these vectors check that the emitted `=`, `^~` and regex locations implement the API's semantics.
"""

from __future__ import annotations

import pytest

from kubewire.ingress import model
from kubewire.ingress.model import build, classes_of, owns, route_of

NGINX_CLASS = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
               "metadata": {"name": "nginx", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
               "spec": {"controller": "k8s.io/ingress-nginx"}}


def svc(name: str, ns: str = "default", port: int = 8080, port_name: str = "http") -> dict:
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ClusterIP", "ports": [{"name": port_name, "port": port, "targetPort": 8080}]}}


def eps(name: str, ips: list[str], ns: str = "default", port_name: str = "http", ready: bool = True) -> dict:
    return {"kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{name}-abc", "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
            "ports": [{"name": port_name, "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip in ips]}


def backend(name: str, port: int | str = 8080) -> dict:
    return {"service": {"name": name, "port": {"number": port} if isinstance(port, int) else {"name": port}}}


def p(path: str, ptype: str, name: str, port: int | str = 8080) -> dict:
    return {"path": path, "pathType": ptype, "backend": backend(name, port)}


def ing(name: str, rules: list[dict], *, ns: str = "default", created: str = "2024-01-01T00:00:00Z",
        annotations: dict | None = None, **spec: object) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created, "annotations": annotations or {}},
            "spec": {"rules": rules, **spec}}


def rule(host: str | None, *paths: dict) -> dict:
    r: dict = {"http": {"paths": list(paths)}}
    if host is not None:
        r["host"] = host
    return r


def world(*ingresses: dict, extra_services: tuple[str, ...] = ()) -> model.Config:
    names = {pp["backend"]["service"]["name"] for i in ingresses for r in i["spec"].get("rules", [])
             for pp in r.get("http", {}).get("paths", [])}
    names |= {i["spec"]["defaultBackend"]["service"]["name"] for i in ingresses if i["spec"].get("defaultBackend")}
    names |= set(extra_services)
    services = [svc(n) for n in sorted(names)]
    slices = [eps(n, [f"10.244.0.{i + 2}"]) for i, n in enumerate(sorted(names))]
    return build(list(ingresses), [NGINX_CLASS], services, slices, [])


def served(cfg: model.Config, url: str) -> str:
    host, _, path = url.partition("/")
    got = route_of(cfg, host, "/" + path)
    return got.split("/")[1].split(":")[0] if "/" in got else got


# --- the Ingress API documentation's table --------------------------------------------------------

DOC_TABLE = [
    # (kind, paths, request, expected)
    ("Prefix", ["/"], "/anything/at/all", "/"),
    ("Exact", ["/foo"], "/foo", "/foo"),
    ("Exact", ["/foo"], "/bar", None),
    ("Exact", ["/foo"], "/foo/", None),
    ("Exact", ["/foo/"], "/foo", None),
    ("Prefix", ["/foo"], "/foo", "/foo"),
    ("Prefix", ["/foo"], "/foo/", "/foo"),
    ("Prefix", ["/foo/"], "/foo", "/foo/"),
    ("Prefix", ["/foo/"], "/foo/", "/foo/"),
    ("Prefix", ["/aaa/bb"], "/aaa/bbb", None),
    ("Prefix", ["/aaa/bbb"], "/aaa/bbb", "/aaa/bbb"),
    ("Prefix", ["/aaa/bbb/"], "/aaa/bbb", "/aaa/bbb/"),
    ("Prefix", ["/aaa/bbb"], "/aaa/bbb/", "/aaa/bbb"),
    ("Prefix", ["/aaa/bbb"], "/aaa/bbb/ccc", "/aaa/bbb"),
    ("Prefix", ["/aaa/bbb"], "/aaa/bbbxyz", None),
    ("Prefix", ["/", "/aaa"], "/aaa/ccc", "/aaa"),
    ("Prefix", ["/", "/aaa", "/aaa/bbb"], "/aaa/bbb", "/aaa/bbb"),
    ("Prefix", ["/", "/aaa", "/aaa/bbb"], "/ccc", "/"),
    ("Prefix", ["/aaa"], "/ccc", None),
]


@pytest.mark.parametrize(("kind", "paths", "request_path", "want"), DOC_TABLE,
                         ids=[f"{k}-{'+'.join(ps)}-{r}" for k, ps, r, _ in DOC_TABLE])
def test_documentation_table(kind: str, paths: list[str], request_path: str, want: str | None) -> None:
    names = {pth: f"svc-{i}" for i, pth in enumerate(paths)}
    cfg = world(ing("t", [rule("h", *(p(pth, kind, names[pth]) for pth in paths))]))
    assert route_of(cfg, "h", request_path) == (f"default/{names[want]}:8080" if want else "404")


def test_mixed_prefers_exact() -> None:
    cfg = world(ing("t", [rule("h", p("/foo", "Prefix", "prefix"), p("/foo", "Exact", "exact"))]))
    assert route_of(cfg, "h", "/foo") == "default/exact:8080"
    assert route_of(cfg, "h", "/foo/") == "default/prefix:8080"


# --- ingress-controller-conformance: path_rules.feature ----------------------------------------------


def conformance_paths() -> model.Config:
    return world(ing("path-rules", [
        rule("exact-path-rules", p("/foo", "Exact", "foo-exact")),
        rule("prefix-path-rules", p("/foo", "Prefix", "foo-prefix"), p("/aaa/bbb", "Prefix", "aaa-slash-bbb-prefix"),
             p("/aaa", "Prefix", "aaa-prefix")),
        rule("mixed-path-rules", p("/foo", "Prefix", "foo-prefix"), p("/foo", "Exact", "foo-exact")),
        rule("trailing-slash-path-rules", p("/aaa/bbb/", "Prefix", "aaa-slash-bbb-slash-prefix"),
             p("/foo/", "Exact", "foo-slash-exact")),
    ]))


PATH_RULES = [
    ("exact-path-rules/foo", "foo-exact"), ("exact-path-rules/foo/", "404"), ("exact-path-rules/FOO", "404"),
    ("exact-path-rules/bar", "404"), ("prefix-path-rules/foo", "foo-prefix"), ("prefix-path-rules/foo/", "foo-prefix"),
    ("prefix-path-rules/FOO", "404"), ("prefix-path-rules/aaa/bbb", "aaa-slash-bbb-prefix"),
    ("prefix-path-rules/aaa/bbb/ccc", "aaa-slash-bbb-prefix"), ("prefix-path-rules/aaa/ccc", "aaa-prefix"),
    ("prefix-path-rules/aaaccc", "404"), ("mixed-path-rules/foo", "foo-exact"),
    ("trailing-slash-path-rules/aaa/bbb", "aaa-slash-bbb-slash-prefix"),
    ("trailing-slash-path-rules/aaa/bbb/", "aaa-slash-bbb-slash-prefix"), ("trailing-slash-path-rules/foo", "404"),
    ("trailing-slash-path-rules/foo/", "foo-slash-exact"),
]


@pytest.mark.parametrize(("url", "want"), PATH_RULES)
def test_conformance_path_rules(url: str, want: str) -> None:
    assert served(conformance_paths(), url) == want


def test_no_redirect_for_a_path_named_with_a_trailing_slash() -> None:
    """nginx would 301 /foo to /foo/ for a proxying location "= /foo/": the model writes /foo down."""
    cfg = conformance_paths()
    s = model.select_server(cfg, "trailing-slash-path-rules")
    assert {loc.match: loc.kind for loc in s.locations}["= /foo"] == "no-redirect"
    assert "= /aaa/bbb" in {loc.match for loc in s.locations}  # Prefix /aaa/bbb/ -> = /aaa/bbb (a real path)
    cfg = world(ing("t", [rule("h", p("/", "Prefix", "root"), p("/x/", "ImplementationSpecific", "x"))]))
    assert route_of(cfg, "h", "/x") == "default/root:8080"  # what /x matches without the /x/ location
    assert route_of(cfg, "h", "/x/y") == "default/x:8080"


# --- host_rules.feature ------------------------------------------------------------------------------


HOST_RULES = [("foo.bar.com/", "foo-bar-com"), ("FOO.BAR.com/", "foo-bar-com"), ("foo.bar.com:8080/", "foo-bar-com"),
              ("subdomain.bar.com/", "404"), ("bar.foo.com/", "wildcard-foo-com"), ("baz.bar.foo.com/", "404"),
              ("foo.com/", "404"), ("other/", "404")]


@pytest.mark.parametrize(("url", "want"), HOST_RULES)
def test_conformance_host_rules(url: str, want: str) -> None:
    cfg = world(ing("host-rules", [rule("*.foo.com", p("/", "Prefix", "wildcard-foo-com")),
                                   rule("foo.bar.com", p("/", "Prefix", "foo-bar-com"))],
                    tls=[{"hosts": ["foo.bar.com"], "secretName": "conformance-tls"}]))
    assert served(cfg, url) == want


def test_exact_host_beats_wildcard_and_rules_without_host_go_to_the_catch_all() -> None:
    cfg = world(ing("a", [rule("*.foo.com", p("/", "Prefix", "wild")), rule("x.foo.com", p("/", "Prefix", "exact")),
                          rule(None, p("/any", "Prefix", "anyhost"))]))
    assert served(cfg, "x.foo.com/") == "exact"
    assert served(cfg, "y.foo.com/") == "wild"
    assert served(cfg, "unknown.example/any/x") == "anyhost"
    assert served(cfg, "x.foo.com/any") == "exact"  # a host's own server answers for it (ingress-nginx)


# --- default_backend.feature, defaultBackend with rules ----------------------------------------------


def test_default_backend_without_rules_is_the_catch_all() -> None:
    cfg = world(ing("default-backend", [], defaultBackend=backend("echo-service")))
    for url in ("my-host/", "my-host/sub-path", "some-host/", "/resource"):
        assert served(cfg, url) == "echo-service"


def test_default_backend_with_rules_serves_that_ingress_hosts_unmatched_paths() -> None:
    cfg = world(ing("a", [rule("h", p("/api", "Prefix", "api"))], defaultBackend=backend("fallback")),
                ing("b", [rule("other", p("/x", "Prefix", "x"))], created="2025-01-01T00:00:00Z"))
    assert served(cfg, "h/api/1") == "api"
    assert served(cfg, "h/else") == "fallback"
    assert served(cfg, "other/else") == "404"
    assert served(cfg, "nohost/") == "fallback"  # no Ingress without rules: the oldest defaultBackend


# --- merging Ingresses, precedence ------------------------------------------------------------------


def test_same_path_in_two_ingresses_oldest_wins() -> None:
    old = ing("old", [rule("h", p("/a", "Prefix", "old"))], created="2024-01-01T00:00:00Z")
    new = ing("new", [rule("h", p("/a", "Prefix", "new"), p("/b", "Prefix", "b"))], created="2025-01-01T00:00:00Z")
    cfg = world(new, old)
    assert served(cfg, "h/a") == "old" and served(cfg, "h/b") == "b"
    assert any("shadowed" in msg and "default/new" in msg for msg in cfg.problems)


def test_exact_from_a_newer_ingress_still_beats_prefix() -> None:
    cfg = world(ing("old", [rule("h", p("/a", "Prefix", "prefix"))]),
                ing("new", [rule("h", p("/a", "Exact", "exact"))], created="2025-01-01T00:00:00Z"))
    assert served(cfg, "h/a") == "exact" and served(cfg, "h/a/b") == "prefix"


def test_implementation_specific_is_a_string_prefix() -> None:
    cfg = world(ing("t", [rule("h", p("/foo", "ImplementationSpecific", "impl"))]))
    assert served(cfg, "h/foo") == "impl" and served(cfg, "h/foobar") == "impl" and served(cfg, "h/fo") == "404"


def test_regex_paths_with_use_regex_are_case_sensitive_and_lose_to_plain_paths() -> None:
    cfg = world(ing("r", [rule("h", p("/api/v[0-9]+", "ImplementationSpecific", "versioned"))],
                    annotations={"nginx.ingress.kubernetes.io/use-regex": "true"}),
                ing("plain", [rule("h", p("/api/v2", "Prefix", "v2"), p("/", "Prefix", "root"))]))
    assert served(cfg, "h/api/v1/x") == "versioned"
    assert served(cfg, "h/api/v2/x") == "v2"
    assert served(cfg, "h/API/v1") == "root"


def test_invalid_paths_are_reported_not_rendered() -> None:
    cfg = world(ing("t", [rule("h", p("relative", "Prefix", "a"), p("/a//b", "Exact", "a"), p('/q"x', "Prefix", "a"),
                               p("/ok", "Mixed", "a"))]))
    assert served(cfg, "h/ok") == "404"
    assert len(cfg.problems) == 4


# --- backends and endpoints -------------------------------------------------------------------------


def test_upstreams_are_ready_endpoints_of_the_named_service_port() -> None:
    services = [{"kind": "Service", "metadata": {"name": "web", "namespace": "n"},
                 "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web"},
                                    {"name": "admin", "port": 9000, "targetPort": 9000}]}}]
    slices = [{"kind": "EndpointSlice", "addressType": "IPv4",
               "metadata": {"name": "web-1", "namespace": "n", "labels": {"kubernetes.io/service-name": "web"}},
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "admin", "port": 9000}],
               "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}},
                             {"addresses": ["10.244.0.9"], "conditions": {}},
                             {"addresses": ["10.244.2.7"], "conditions": {"ready": False, "terminating": True}}]}]
    i = ing("t", [rule("h", p("/", "Prefix", "web", "http"), p("/admin", "Prefix", "web", 9000))], ns="n")
    cfg = build([i], [NGINX_CLASS], services, slices, [])
    assert cfg.upstreams["n-web-http"].endpoints == ("10.244.0.9:8080", "10.244.1.5:8080")
    assert cfg.upstreams["n-web-9000"].endpoints == ("10.244.0.9:9000", "10.244.1.5:9000")


def test_missing_service_port_or_endpoints_answer_503() -> None:
    i = ing("t", [rule("h", p("/nosvc", "Prefix", "ghost"), p("/noport", "Prefix", "web", 81),
                       p("/noeps", "Prefix", "idle"))])
    cfg = build([i], [NGINX_CLASS], [svc("web"), svc("idle")], [eps("web", ["10.244.0.2"])], [])
    assert {u: route_of(cfg, "h", u) for u in ("/nosvc", "/noport", "/noeps")} == \
        {"/nosvc": "503", "/noport": "503", "/noeps": "503"}
    assert cfg.upstreams["default-ghost-8080"].why_empty == 'service "default/ghost" not found'


# --- ingress classes (ingress_class.feature, the default class) ------------------------------------


def test_ingress_classes() -> None:
    other = {"kind": "IngressClass", "metadata": {"name": "traefik"}, "spec": {"controller": "traefik.io/ingress-controller"}}
    classes = classes_of([NGINX_CLASS, other])
    assert classes.names == {"nginx"} and classes.default == "nginx"
    assert owns(ing("a", [], ingressClassName="nginx"), classes)
    assert not owns(ing("b", [], ingressClassName="some-invalid-class-name"), classes)
    assert not owns(ing("c", [], ingressClassName="traefik"), classes)
    assert owns(ing("d", []), classes)  # no class: the default IngressClass
    assert owns(ing("e", [], annotations={"kubernetes.io/ingress.class": "nginx"}), classes)
    assert not owns(ing("f", [], annotations={"kubernetes.io/ingress.class": "traefik"}), classes)
    not_default = {**NGINX_CLASS, "metadata": {"name": "nginx"}}
    assert not owns(ing("g", []), classes_of([not_default]))
    two_defaults = {**other, "metadata": {"name": "traefik", "annotations": dict(NGINX_CLASS["metadata"]["annotations"])}}
    assert classes_of([NGINX_CLASS, two_defaults]).default is None  # admission would refuse class-less Ingresses


def test_only_owned_ingresses_are_served() -> None:
    cfg = world(ing("mine", [rule("a", p("/", "Prefix", "a"))]),
                ing("theirs", [rule("b", p("/", "Prefix", "b"))], ingressClassName="some-invalid-class-name"))
    assert cfg.ingresses == [("default", "mine")]
    assert served(cfg, "b/") == "404"
