"""The files a kubelet writes for a pod: /etc/hosts and /etc/resolv.conf, as kubelet writes them.

resolv.conf follows pkg/kubelet/network/dns: ClusterFirst gives the cluster nameserver, the
`<ns>.svc.<domain> svc.<domain> <domain>` search list plus the node's, and ndots:5; dnsConfig is
merged in; kubelet's limits (3 nameservers, 32 search domains, 2048 characters) are applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_NAMESERVERS = 3
MAX_SEARCH = 32
MAX_SEARCH_CHARS = 2048


@dataclass
class NodeDNS:
    """The node's own resolver settings (what kubelet reads from --resolv-conf)."""

    nameservers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


def render_hosts(pod: dict, ip: str, domain: str) -> str:
    spec, meta = pod.get("spec", {}), pod["metadata"]
    hostname = spec.get("hostname") or meta["name"]
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if spec.get("subdomain"):
        fqdn = f"{hostname}.{spec['subdomain']}.{meta.get('namespace', 'default')}.svc.{domain}"
        lines.append(f"{ip}\t{fqdn}\t{hostname}")
    else:
        lines.append(f"{ip}\t{hostname}")
    for alias in spec.get("hostAliases") or []:
        lines.append("")
        lines.append("# Entries added by HostAliases.")
        lines.append(f"{alias['ip']}\t" + "\t".join(alias.get("hostnames", [])))
    return "\n".join(lines) + "\n"


def resolv_settings(pod: dict, cluster_dns: list[str], domain: str, node: NodeDNS) -> NodeDNS:
    spec = pod.get("spec", {})
    ns = pod["metadata"].get("namespace", "default")
    policy = spec.get("dnsPolicy", "ClusterFirst")
    host_net = bool(spec.get("hostNetwork"))
    if policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host_net):
        out = NodeDNS(list(cluster_dns), [f"{ns}.svc.{domain}", f"svc.{domain}", domain] + node.searches,
                      ["ndots:5"])
    elif policy == "None":
        out = NodeDNS()
    else:  # Default, or ClusterFirst on the host network: the node's own settings
        out = NodeDNS(list(node.nameservers), list(node.searches), list(node.options))
    cfg = spec.get("dnsConfig") or {}
    out.nameservers = _dedupe(out.nameservers + list(cfg.get("nameservers") or []))
    out.searches = _dedupe(out.searches + list(cfg.get("searches") or []))
    opts: dict[str, str | None] = {}
    for o in out.options:
        k, _, v = o.partition(":")
        opts[k] = v or None
    for o in cfg.get("options") or []:
        opts[o["name"]] = None if o.get("value") is None else str(o["value"])
    out.options = [k if v is None else f"{k}:{v}" for k, v in opts.items()]
    out.nameservers = out.nameservers[:MAX_NAMESERVERS]
    searches: list[str] = []
    total = 0
    for s in out.searches[:MAX_SEARCH]:
        if total + len(s) + (1 if searches else 0) > MAX_SEARCH_CHARS:
            break
        total += len(s) + (1 if searches else 0)
        searches.append(s)
    out.searches = searches
    return out


def render_resolv(s: NodeDNS) -> str:
    lines = []
    if s.searches:
        lines.append("search " + " ".join(s.searches))
    lines += [f"nameserver {n}" for n in s.nameservers]
    if s.options:
        lines.append("options " + " ".join(s.options))
    return "\n".join(lines) + "\n"


def _dedupe(xs: list[str]) -> list[str]:
    seen: list[str] = []
    for x in xs:
        if x not in seen:
            seen.append(x)
    return seen
