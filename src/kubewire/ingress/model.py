"""From Ingress, IngressClass, Service, EndpointSlice and Secret objects to the controller's model:
servers (one per host, plus the catch-all `_`), their locations, and upstreams of ready endpoints.

The shape follows ingress-nginx (internal/ingress/controller/controller.go: createUpstreams,
createServers, getBackendServers, updateServerLocations), the matching follows the Ingress API:

- hosts: exact, or `*.foo.com` matching exactly one label; case-insensitive (nginx lowercases the
  Host header); rules without a host belong to the catch-all server.
- paths: Exact (`= /p`), Prefix element-wise (`= /p` plus `^~ /p/`; a trailing slash in the rule is
  ignored), ImplementationSpecific as a plain string prefix (`^~ /p`), all case-sensitive. With
  nginx's choice (exact first, then the longest prefix) this is "longest match wins, Exact before
  Prefix". Where two paths claim the same nginx location, Exact beats Prefix beats
  ImplementationSpecific, then the oldest Ingress, then rule order — as ingress-nginx, which keeps
  the first location it was given and sorts Ingresses by creation time.
- regular expressions only where asked for (use-regex, or a rewrite-target with $n): those paths
  become `~ "^p"` locations, case-sensitive (ingress-nginx uses `~*`), checked after every
  non-regex path and before the server's root fallback.
- the root fallback of a host is the defaultBackend of the first Ingress that defined the host, of
  the catch-all server the defaultBackend of the oldest Ingress without rules (else of the oldest
  with one); otherwise 404.
- upstreams are the ready endpoints (IP:targetPort) of the EndpointSlices of the Service port the
  backend names, as ingress-nginx balances to pods, not to the ClusterIP.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from kubewire.ingress import annotations as ann
from kubewire.ingress.certs import CertInfo, covers, parse_tls_secret

CONTROLLER = "k8s.io/ingress-nginx"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
CATCH_ALL = "_"
DEFAULT_CERT = "default-fake-certificate"

_HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# RFC 3986 path characters (unreserved, pct-encoded, sub-delims, ":" "@" "/").
_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9\-._~%!$&'()*+,;=:@/]*$")
_REGEX_PATH = re.compile(r'^/[^"\s\x00-\x1f\x7f]*$')
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")
_TYPE_RANK = {"Exact": 0, "Prefix": 1, "ImplementationSpecific": 2}


# --- ingress classes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Classes:
    names: frozenset[str]  # IngressClasses whose spec.controller is ingress-nginx's
    default: str | None  # the one default class, if it is one of ours


def classes_of(ingress_classes: list[dict], controller: str = CONTROLLER) -> Classes:
    ours = frozenset(c["metadata"]["name"] for c in ingress_classes
                     if (c.get("spec") or {}).get("controller") == controller)
    defaults = [c["metadata"]["name"] for c in ingress_classes
                if (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"]
    # Several defaults: the admission plugin refuses class-less Ingresses, so none is ours.
    default = defaults[0] if len(defaults) == 1 and defaults[0] in ours else None
    return Classes(ours, default)


def owns(ing: dict, classes: Classes) -> bool:
    """ingressClassName, else the legacy annotation, else the default IngressClass (what the
    DefaultIngressClass admission plugin would have written into the Ingress)."""
    name = (ing.get("spec") or {}).get("ingressClassName")
    if name:
        return name in classes.names
    legacy = (ing["metadata"].get("annotations") or {}).get(LEGACY_CLASS_ANNOTATION)
    if legacy is not None:
        return legacy in classes.names
    return classes.default is not None


def ingress_order(ing: dict) -> tuple[str, str, str]:
    m = ing["metadata"]
    return (m.get("creationTimestamp") or "", m.get("namespace") or "", m["name"])


# --- backends ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    upstream: str  # ingress-nginx's upstream name: <namespace>-<service>-<port>
    namespace: str
    service: str
    port: str  # the Service port as the Ingress names it (number or name)
    endpoints: tuple[str, ...]  # ready "ip:port", sorted
    why_empty: str = ""


def _slice_ports(slices: list[dict], namespace: str, service: str, port_name: str) -> list[str]:
    out: set[str] = set()
    for s in slices:
        m = s["metadata"]
        if m.get("namespace") != namespace or (m.get("labels") or {}).get("kubernetes.io/service-name") != service:
            continue
        if s.get("addressType", "IPv4") != "IPv4":
            continue
        for p in s.get("ports") or []:
            if (p.get("name") or "") != port_name or (p.get("protocol") or "TCP") != "TCP" or not p.get("port"):
                continue
            for ep in s.get("endpoints") or []:
                cond = ep.get("conditions") or {}
                if cond.get("ready") is False:  # nil means ready (API)
                    continue
                for a in ep.get("addresses") or []:
                    out.add(f"{a}:{p['port']}")
    return sorted(out, key=lambda e: (tuple(int(x) for x in e.split(":")[0].split(".")), int(e.split(":")[1])))


def resolve_backend(namespace: str, backend: dict, services: dict[tuple[str, str], dict],
                    slices: list[dict]) -> Backend | None:
    """None for a backend that is not a Service (a resource backend: ingress-nginx uses its default)."""
    svc_ref = backend.get("service") if isinstance(backend, dict) else None
    if not isinstance(svc_ref, dict) or not svc_ref.get("name"):
        return None
    name = str(svc_ref["name"])
    port_ref = svc_ref.get("port") or {}
    port = str(port_ref.get("number") if port_ref.get("number") else port_ref.get("name") or "")
    upstream = f"{namespace}-{name}-{port}"
    svc = services.get((namespace, name))
    if svc is None:
        return Backend(upstream, namespace, name, port, (), f'service "{namespace}/{name}" not found')
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return Backend(upstream, namespace, name, port, (), "ExternalName services are not proxied by kubewire")
    sp = next((p for p in spec.get("ports") or []
               if (port_ref.get("number") and p.get("port") == port_ref.get("number"))
               or (port_ref.get("name") and p.get("name") == port_ref.get("name"))), None)
    if sp is None:
        return Backend(upstream, namespace, name, port, (), f'service "{namespace}/{name}" has no port {port}')
    eps = _slice_ports(slices, namespace, name, sp.get("name") or "")
    return Backend(upstream, namespace, name, port, tuple(eps), "" if eps else "no ready endpoints")


# --- routes, locations, servers --------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    host: str  # lowercase; "" for rules without a host
    path: str
    path_type: str
    backend: Backend | None
    ingress: tuple[str, str]
    annotations: ann.Annotations
    order: tuple[int, int, int]  # (Ingress, rule, path) position

    @property
    def regex(self) -> bool:
        return self.annotations.regex


@dataclass
class Location:
    """One nginx location. `match` is its matcher as written after `location`."""

    match: str
    kind: str  # exact | prefix | prefix-dir | string | regex | root | no-redirect
    route: Route | None  # None: the server's fallback (default backend or 404)

    @property
    def sort_key(self) -> tuple:
        # Regex locations are tried in file order, longest first (ingress-nginx sorts by length).
        order = {"exact": 0, "prefix": 0, "prefix-dir": 0, "string": 0, "no-redirect": 0, "regex": 1,
                 "root": 2}[self.kind]
        path = self.route.path if self.route else "/"
        return (order, -len(path) if self.kind == "regex" else 0, self.match)


@dataclass
class Server:
    host: str  # "_" is the catch-all
    locations: list[Location] = field(default_factory=list)
    fallback: Backend | None = None  # root fallback when no path claims "/"
    fallback_ingress: tuple[str, str] | None = None
    fallback_annotations: ann.Annotations = field(default_factory=ann.Annotations)
    tls: bool = False  # the host is in some Ingress's TLS section (ssl-redirect applies)
    cert: str = DEFAULT_CERT  # which certificate file serves it

    @property
    def is_wildcard(self) -> bool:
        return self.host.startswith("*.")


@dataclass
class Config:
    servers: list[Server]
    upstreams: dict[str, Backend]
    certs: dict[str, CertInfo]  # cert file name -> certificate (the default one excluded)
    ingresses: list[tuple[str, str]]  # the Ingresses this controller serves, oldest first
    hosts: list[str]  # every host named by those Ingresses (rules and TLS)
    problems: list[str]


def _path_problem(path: str, path_type: str, regex: bool) -> str:
    if not path.startswith("/"):
        return "must be an absolute path"
    if regex:
        return "" if _REGEX_PATH.match(path) else "contains a quote, a space or a control character"
    if not _PLAIN_PATH.match(path):
        return "contains characters outside RFC 3986 paths"
    if path_type in ("Exact", "Prefix"):
        for bad in ("//", "/./", "/../", "%2f", "%2F"):
            if bad in path:
                return f"must not contain '{bad}'"
        if path.endswith("/..") or path.endswith("/."):
            return "must not end with '/..' or '/.'"
    return ""


def _locations_for(r: Route) -> list[tuple[str, str]]:
    if r.regex:
        return [(f'~ "^{r.path}"', "regex")]
    if r.path_type == "Exact":
        return [(f"= {r.path}", "exact")]
    base = r.path.rstrip("/") if r.path_type == "Prefix" else r.path
    if base in ("", "/"):
        return [("/", "root")]
    if r.path_type == "Prefix":
        return [(f"= {base}", "prefix"), (f"^~ {base}/", "prefix-dir")]
    return [(f"^~ {base}", "string")]


def build(ingresses: list[dict], ingress_classes: list[dict], services: list[dict], slices: list[dict],
          secrets: list[dict], controller: str = CONTROLLER) -> Config:
    problems: list[str] = []
    classes = classes_of(ingress_classes, controller)
    ours = sorted((i for i in ingresses if owns(i, classes) and "deletionTimestamp" not in i["metadata"]),
                  key=ingress_order)
    svc_map = {(s["metadata"].get("namespace", ""), s["metadata"]["name"]): s for s in services}
    secret_map = {(s["metadata"].get("namespace", ""), s["metadata"]["name"]): s for s in secrets}
    servers: dict[str, Server] = {CATCH_ALL: Server(CATCH_ALL)}
    upstreams: dict[str, Backend] = {}
    routes: list[Route] = []
    hosts: list[str] = []

    def backend(ns: str, b: dict) -> Backend | None:
        got = resolve_backend(ns, b, svc_map, slices)
        if got is not None:
            upstreams.setdefault(got.upstream, got)
        return got

    catch_all_default: tuple[int, Backend, tuple[str, str], ann.Annotations] | None = None
    for i, ing in enumerate(ours):
        ns, name = ing["metadata"].get("namespace", ""), ing["metadata"]["name"]
        key = (ns, name)
        spec = ing.get("spec") or {}
        a = ann.parse(ing["metadata"].get("annotations"))
        problems += [f"ingress {ns}/{name}: {p}" for p in a.problems]
        default = backend(ns, spec["defaultBackend"]) if spec.get("defaultBackend") else None
        rules = spec.get("rules") or []
        if default is not None:
            rank = 0 if not rules else 1
            if catch_all_default is None or rank < catch_all_default[0]:
                catch_all_default = (rank, default, key, a)
        for ri, rule in enumerate(rules):
            host = str(rule.get("host") or "").lower()
            if host and not _HOST.match(host):
                problems.append(f"ingress {ns}/{name}: host {host!r} is not a DNS name; rule ignored")
                continue
            sname = host or CATCH_ALL
            if sname not in servers:
                servers[sname] = Server(sname, fallback=default, fallback_ingress=key if default else None,
                                        fallback_annotations=a)
            if host and host not in hosts:
                hosts.append(host)
            for pi, p in enumerate(((rule.get("http") or {}).get("paths")) or []):
                path = str(p.get("path") or "")
                ptype = p.get("pathType") or "ImplementationSpecific"
                if ptype not in PATH_TYPES:
                    problems.append(f"ingress {ns}/{name}: pathType {ptype!r} is not one of {', '.join(PATH_TYPES)}")
                    continue
                if not path:
                    if ptype != "ImplementationSpecific":
                        problems.append(f"ingress {ns}/{name}: a {ptype} path must not be empty")
                        continue
                    path = "/"
                why = _path_problem(path, ptype, a.regex)
                if why:
                    problems.append(f"ingress {ns}/{name}: path {path!r} {why}; path ignored")
                    continue
                routes.append(Route(host, path, ptype, backend(ns, p.get("backend") or {}), key, a, (i, ri, pi)))
        for t in spec.get("tls") or []:
            for h in t.get("hosts") or []:
                h = str(h).lower()
                if _HOST.match(h) and h not in hosts:
                    hosts.append(h)
    if catch_all_default is not None:
        _, b, k, a = catch_all_default
        servers[CATCH_ALL].fallback, servers[CATCH_ALL].fallback_ingress = b, k
        servers[CATCH_ALL].fallback_annotations = a

    # Locations: first claimant of each matcher wins, by path type, then age, then rule order.
    claims: dict[tuple[str, str], Location] = {}
    for r in sorted(routes, key=lambda r: (3 if r.regex else _TYPE_RANK[r.path_type], r.order)):
        sname = r.host or CATCH_ALL
        won, lost = 0, None
        for match, kind in _locations_for(r):
            k = (sname, match)
            if k in claims:
                lost = claims[k].route
                continue
            loc = Location(match, kind, r)
            claims[k] = loc
            servers[sname].locations.append(loc)
            won += 1
        if not won and lost is not None and (lost.backend != r.backend or lost.annotations != r.annotations):
            problems.append(f"ingress {r.ingress[0]}/{r.ingress[1]}: {r.path_type} path {r.path!r} of host "
                            f"{sname!r} is shadowed by ingress {lost.ingress[0]}/{lost.ingress[1]} "
                            f"({lost.path_type} {lost.path!r})")
    for s in servers.values():
        if not any(loc.match == "/" for loc in s.locations):
            s.locations.append(Location("/", "root", None))
        s.locations.sort(key=lambda loc: loc.sort_key)
        # nginx answers a request for /p with a 301 to /p/ when a proxying location is named "/p/"
        # (or "= /p/") and nothing is named "= /p". The Ingress API has no such redirect: /p gets
        # whatever it matches without that location, written down as an exact location.
        have = {loc.match for loc in s.locations}
        for loc in list(s.locations):
            text = loc.match.rpartition(" ")[2]
            if loc.kind == "regex" or not text.endswith("/") or text == "/" or f"= {text[:-1]}" in have:
                continue
            chosen = select_location(s, text[:-1])
            s.locations.append(Location(f"= {text[:-1]}", "no-redirect", chosen.route))
            have.add(f"= {text[:-1]}")
        s.locations.sort(key=lambda loc: loc.sort_key)

    # TLS: the first Ingress (oldest) listing a host in its TLS section chooses its certificate.
    certs: dict[str, CertInfo] = {}
    parsed: dict[tuple[str, str], CertInfo] = {}
    for ing in ours:
        ns = ing["metadata"].get("namespace", "")
        for t in (ing.get("spec") or {}).get("tls") or []:
            secret = t.get("secretName")
            for h in t.get("hosts") or []:
                s = servers.get(str(h).lower())
                if s is None or s.tls:
                    continue
                s.tls = True
                if not secret:
                    continue
                k = (ns, str(secret))
                if k not in parsed:
                    parsed[k] = parse_tls_secret(secret_map.get(k))
                info = parsed[k]
                if not info.ok:
                    problems.append(f"ingress {ns}/{ing['metadata']['name']}: secret {ns}/{secret}: {info.error}; "
                                    f"host {s.host} gets the default certificate")
                elif not covers(info.dns_names, s.host):
                    problems.append(f"ingress {ns}/{ing['metadata']['name']}: secret {ns}/{secret} does not cover "
                                    f"host {s.host}; it gets the default certificate")
                else:
                    s.cert = f"{ns}-{secret}"
                    certs[s.cert] = info
    ordered = [servers[CATCH_ALL]] + sorted((s for h, s in servers.items() if h != CATCH_ALL), key=lambda s: s.host)
    used = {loc.route.backend.upstream for s in ordered for loc in s.locations if loc.route and loc.route.backend}
    used |= {s.fallback.upstream for s in ordered if s.fallback}
    return Config(ordered, {k: v for k, v in sorted(upstreams.items()) if k in used}, certs,
                  [(i["metadata"].get("namespace", ""), i["metadata"]["name"]) for i in ours], hosts, problems)


# --- what nginx will do with it (for tests and `explain`) ------------------------------------------


def select_server(cfg: Config, host: str) -> Server:
    """nginx's virtual server choice: exact name, then (our wildcards are regexes) one-label
    wildcard, else the default server. The Host header is compared lowercased, without port."""
    h = host.lower().split(":")[0].rstrip(".")
    for s in cfg.servers:
        if s.host == h and s.host != CATCH_ALL:
            return s
    for s in cfg.servers:
        if s.is_wildcard:
            first, _, rest = h.partition(".")
            if first and rest == s.host[2:]:
                return s
    return cfg.servers[0]


def select_location(server: Server, uri: str) -> Location:
    """nginx's location choice: an `=` match; else the longest prefix, kept if `^~`, otherwise
    the first matching regex wins over it."""
    best: Location | None = None
    for loc in server.locations:
        if loc.kind == "regex":
            continue
        mod, _, text = loc.match.rpartition(" ")
        if mod == "=":
            if uri == text:
                return loc
            continue
        if uri.startswith(text) and (best is None or len(text) > len(best.match.rpartition(" ")[2])):
            best = loc
    if best is not None and best.match.startswith("^~"):
        return best
    for loc in server.locations:
        if loc.kind == "regex" and re.match(loc.match[3:-1], uri):
            return loc
    assert best is not None  # every server has a root location
    return best


def explain(cfg: Config, host: str, uri: str) -> tuple[Server, Location, Backend | None]:
    s = select_server(cfg, host)
    loc = select_location(s, uri)
    b = loc.route.backend if loc.route else s.fallback
    return s, loc, b


def route_of(cfg: Config, host: str, uri: str) -> str:
    """What a request gets, in one word: '<ns>/<service>:<port>', '404' or '503'."""
    _s, loc, b = explain(cfg, host, uri)
    if b is None:
        return "404"
    if not b.endpoints:
        return "503"
    return f"{b.namespace}/{b.service}:{b.port}"


def hosts_of(cfg: Config, dns_name: Callable[[str], bool] = lambda h: not h.startswith("*.")) -> list[str]:
    return [h for h in cfg.hosts if dns_name(h)]
