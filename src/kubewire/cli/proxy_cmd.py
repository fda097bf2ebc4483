"""`kubewire proxy render`: print what kube-proxy would program on a node, from manifests alone.

Needs no root and no cluster: it reads Services, EndpointSlices and an optional
KubeProxyConfiguration from YAML and runs the same planner the node agent uses.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import typer

from kubewire.api.errors import ManifestError, ManifestPathError
from kubewire.api.loader import Document, load_paths
from kubewire.proxy.iptables import render_full
from kubewire.proxy.kpconfig import check as check_config
from kubewire.proxy.model import KubeProxyConfig, parse_cidr_sloppy
from kubewire.proxy.nftables import render_full as render_nftables
from kubewire.proxy.nftables import service_cidrs_from_objects

proxy_app = typer.Typer(
    help="kube-proxy planners: show the exact rules kube-proxy writes for given manifests.",
    no_args_is_help=True,
)

_KINDS = ("Service", "EndpointSlice", "KubeProxyConfiguration", "ServiceCIDR")


def _die(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def _load(specs: list[str]) -> list[Document]:
    """The documents of files, directories or - (stdin), read as `kubewire apply` reads them (and
    its errors: file, document, line; every unreadable document, one error line each)."""
    try:
        return load_paths(specs, sys.stdin)
    except ManifestPathError as e:
        raise _die(e.message) from e
    except ManifestError as e:
        typer.echo(str(e), err=True)  # each line already starts with "error: "
        raise typer.Exit(1) from e


def load_objects(specs: list[str]) -> dict[str, list[Document]]:
    """Every Service, EndpointSlice, KubeProxyConfiguration and ServiceCIDR document, by kind;
    others dropped. Services kube-proxy would skip for want of a cluster IP are named on stderr:
    hand-written manifests lack the one the API server would allocate."""
    found: dict[str, list[Document]] = {kind: [] for kind in _KINDS}
    for doc in _load(specs):
        kind = doc.obj.get("kind")
        if kind not in found:
            continue
        found[kind].append(doc)
        spec = doc.obj.get("spec") if isinstance(doc.obj.get("spec"), dict) else {}
        if kind == "Service" and not spec.get("clusterIP") and spec.get("type") != "ExternalName":
            meta = doc.obj.get("metadata") if isinstance(doc.obj.get("metadata"), dict) else {}
            _warn(f"{doc.source}: document {doc.index}: Service {meta.get('namespace') or 'default'}/"
                  f"{meta.get('name')} has no spec.clusterIP, so kube-proxy writes no rules for it (an API "
                  "server would have allocated one: set spec.clusterIP to render it)")
    return found


def _is_cidr(text: str) -> bool:
    return "/" in text and parse_cidr_sloppy(text.strip()) is not None


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _die(f"--node-label takes KEY=VALUE, got {pair!r}", 2)
        labels[key] = value
    return labels


@proxy_app.command("render")
def render(
    files: list[str] = typer.Option(..., "-f", "--filename", help="Manifests: file, directory or - (stdin)."),
    more_files: list[str] | None = typer.Argument(
        None, metavar="FILE", show_default=False,
        help="More manifests after -f's (so `-f a.yaml b.yaml` and `-f dir/*.yaml` work).",
    ),
    node: str = typer.Option(..., "--node", help="Name of the node kube-proxy runs on."),
    node_ips: list[str] = typer.Option(
        [], "--node-ip", help="The node's IPs (repeatable; first of a family is primary)."
    ),
    mode: str = typer.Option("iptables", "--mode", help="iptables | nftables"),
    config_file: Path | None = typer.Option(
        None, "--config", help="A KubeProxyConfiguration (v1alpha1) file."
    ),
    random_fully: bool | None = typer.Option(
        None,
        "--random-fully/--no-random-fully",
        help="Whether the host's iptables has --random-fully (default: yes).",
    ),
    nfacct: bool | None = typer.Option(
        None, "--nfacct/--no-nfacct", help="Whether kube-proxy's nfacct counters exist (default: yes)."
    ),
    node_labels: list[str] = typer.Option(
        [], "--node-label", help="KEY=VALUE label of the node, e.g. its zone."
    ),
    cluster_cidr: str | None = typer.Option(
        None, "--cluster-cidr",
        help="kube-proxy's --cluster-cidr (overrides the configuration's clusterCIDR; a kubewire cluster's "
             "kube-proxy runs with its podSubnet, 10.244.0.0/16 by default).",
    ),
    pod_cidrs: list[str] = typer.Option(
        [], "--pod-cidr", help="The node's pod CIDRs (detectLocalMode NodeCIDR)."
    ),
    ip_family: str = typer.Option("IPv4", "--ip-family", help="IPv4 (iptables) or IPv6 (ip6tables)."),
    service_cidrs: list[str] = typer.Option(
        [],
        "--service-cidr",
        help="nftables: a service CIDR (repeatable; added to the spec.cidrs of ServiceCIDR objects in the input).",
    ),
) -> None:
    """Print what kube-proxy writes for a full sync on NODE: the iptables-restore payload, or with
    --mode nftables the `nft -f` input."""
    if mode not in ("iptables", "nftables"):
        raise _die(f"unknown --mode {mode!r} (iptables | nftables)", 2)
    if service_cidrs and mode != "nftables":
        raise _die("--service-cidr applies to --mode nftables only", 2)
    for cidr in service_cidrs:
        if parse_cidr_sloppy(cidr) is None:
            raise _die(f"--service-cidr: not a CIDR: {cidr!r}", 2)
    if ip_family not in ("IPv4", "IPv6"):
        raise _die(f"unknown --ip-family {ip_family!r} (IPv4 | IPv6)", 2)

    objects = load_objects(list(files) + list(more_files or []))
    config_docs = objects["KubeProxyConfiguration"]
    if config_file is not None:
        config_docs = [d for d in _load([str(config_file)]) if d.obj.get("kind") == "KubeProxyConfiguration"]
        if not config_docs:
            raise _die(f"{config_file}: no KubeProxyConfiguration document")
    if len(config_docs) > 1:
        raise _die("more than one KubeProxyConfiguration given")
    if config_docs:
        where = f"{config_docs[0].source}: document {config_docs[0].index}: KubeProxyConfiguration"
        errors, warnings = check_config(config_docs[0].obj)
        for w in warnings:
            _warn(f"{where}: {w}")
        if errors:
            raise _die(f"{where}: " + "; ".join(errors))
    config = KubeProxyConfig.from_dict(config_docs[0].obj if config_docs else None)
    overrides: dict[str, bool | str] = {}
    if random_fully is not None:
        overrides["random_fully"] = random_fully
    if cluster_cidr is not None:
        if not all(_is_cidr(c) for c in cluster_cidr.split(",")):
            raise _die(f"--cluster-cidr: not a CIDR (or two, comma-separated): {cluster_cidr!r}", 2)
        overrides["cluster_cidr"] = cluster_cidr
    if nfacct is not None:
        overrides["nfacct_ct_state_invalid"] = nfacct
        overrides["nfacct_localhost_nodeports"] = nfacct
    if overrides:
        config = dataclasses.replace(config, **overrides)

    if mode == "nftables":
        cidrs = list(service_cidrs) + service_cidrs_from_objects([d.obj for d in objects["ServiceCIDR"]])
        text = render_nftables(
            [d.obj for d in objects["Service"]],
            [d.obj for d in objects["EndpointSlice"]],
            config,
            node,
            list(node_ips),
            _labels(node_labels),
            ip_family=ip_family,  # type: ignore[arg-type]
            service_cidrs=cidrs,
            node_pod_cidrs=list(pod_cidrs),
        )
        sys.stdout.write(text)
        sys.stdout.flush()
        return

    payload = render_full(
        [d.obj for d in objects["Service"]],
        [d.obj for d in objects["EndpointSlice"]],
        config,
        node,
        list(node_ips),
        _labels(node_labels),
        ip_family=ip_family,  # type: ignore[arg-type]
        node_pod_cidrs=list(pod_cidrs),
    )
    sys.stdout.write(payload)
    sys.stdout.flush()


def live_datapath(h: Any, node: Any, mode: str) -> str:  # noqa: ANN401 - a cluster handle and a NodePlan
    """The live kube-proxy state of a node beyond iptables: the nftables tables, or the eBPF socket
    load balancer's services (VIP:port/protocol -> backend slots), read from the kernel's maps."""
    if mode == "nftables":
        from kubewire.kernel.nft import list_table

        out = []
        for t in ("kube-proxy", "kube-proxy-flat"):
            try:
                out.append(list_table(node.netns, "ip", t))
            except Exception:  # noqa: BLE001,S112 - a layout not in use on this node
                continue
        return "".join(out)
    from kubewire.kernel import bpf
    from kubewire.kernel.cgroup import node_dir
    from kubewire.proxy.ebpf.maps import decode_backend, decode_svc_key

    path = node_dir(h.cfg.name, node.name) or ""
    try:
        maps = bpf.attached_maps(path, bpf.CGROUP_INET4_CONNECT)
    except OSError as e:
        return f"# eBPF socket load balancer: nothing attached at {path} ({e.strerror})\n"
    svc_map = next((m for n, m in maps.items() if n.startswith("kw_svc_")), None)
    be_map = next((m for n, m in maps.items() if n.startswith("kw_be_")), None)
    if svc_map is None or be_map is None:
        return f"# eBPF socket load balancer: no kubewire maps at {path}\n"
    backends: dict[int, dict[int, tuple[str, int]]] = {}
    for k, v in be_map.items():
        sid, slot = int.from_bytes(k[:4], "little"), int.from_bytes(k[4:8], "little")
        backends.setdefault(sid, {})[slot] = decode_backend(v)
    lines = [f"# eBPF socket load balancer (cgroup/connect4, sendmsg4, getpeername4, recvmsg4 at {path})"]
    rows = []
    for k, v in svc_map.items():
        vip, port, proto = decode_svc_key(k)
        slots, sid, affinity = (int.from_bytes(v[i:i + 4], "little") for i in (0, 4, 8))
        bes = ",".join(f"{ip}:{p}" for _, (ip, p) in sorted(backends.get(sid, {}).items())[:slots])
        rows.append(f"{vip}:{port}/{proto} -> {bes}" + (f" affinity=ClientIP/{affinity}s" if affinity else ""))
    return "\n".join(lines + sorted(rows)) + "\n"
