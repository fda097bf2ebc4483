"""`kubewire proxy render`: print what kube-proxy would program on a node, from manifests alone.

Needs no root and no cluster: it reads Services, EndpointSlices and an optional
KubeProxyConfiguration from YAML and runs the same planner the node agent uses.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
import yaml

from kubewire.proxy.iptables import render_full
from kubewire.proxy.model import KubeProxyConfig, parse_cidr_sloppy
from kubewire.proxy.nftables import render_full as render_nftables
from kubewire.proxy.nftables import service_cidrs_from_objects

proxy_app = typer.Typer(
    help="kube-proxy planners: show the exact rules kube-proxy writes for given manifests.",
    no_args_is_help=True,
)

# libyaml's parser when PyYAML has it: the pure-Python one takes ~25 s for 10k Services + slices.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_KINDS = ("Service", "EndpointSlice", "KubeProxyConfiguration", "ServiceCIDR")
_SUFFIXES = (".yaml", ".yml", ".json")


def _die(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _sources(spec: str) -> Iterator[tuple[str, str]]:
    """(name, text) for "-", a file, or every manifest file under a directory (sorted)."""
    if spec == "-":
        yield "<stdin>", sys.stdin.read()
        return
    path = Path(spec)
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _SUFFIXES):
            yield str(child), child.read_text()
    elif path.is_file():
        yield str(path), path.read_text()
    else:
        raise _die(f"{spec}: no such file or directory")


def _documents(name: str, text: str) -> Iterator[dict[str, Any]]:
    try:
        docs = list(yaml.load_all(text, Loader=_LOADER))  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise _die(f"{name}: invalid YAML: {exc}") from exc
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "List":  # as `kubectl get -o yaml` writes
            yield from (item for item in doc.get("items") or [] if isinstance(item, dict))
        else:
            yield doc


def load_objects(specs: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every Service, EndpointSlice, KubeProxyConfiguration and ServiceCIDR document, by kind;
    others dropped."""
    found: dict[str, list[dict[str, Any]]] = {kind: [] for kind in _KINDS}
    for spec in specs:
        for name, text in _sources(spec):
            for doc in _documents(name, text):
                if doc.get("kind") in found:
                    found[doc["kind"]].append(doc)
    return found


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
        config_docs = [
            d for _, text in _sources(str(config_file)) for d in _documents(str(config_file), text)
        ]
        config_docs = [
            d for d in config_docs if d.get("kind", "KubeProxyConfiguration") == "KubeProxyConfiguration"
        ]
        if not config_docs:
            raise _die(f"{config_file}: no KubeProxyConfiguration document")
    if len(config_docs) > 1:
        raise _die("more than one KubeProxyConfiguration given")
    config = KubeProxyConfig.from_dict(config_docs[0] if config_docs else None)
    overrides: dict[str, bool] = {}
    if random_fully is not None:
        overrides["random_fully"] = random_fully
    if nfacct is not None:
        overrides["nfacct_ct_state_invalid"] = nfacct
        overrides["nfacct_localhost_nodeports"] = nfacct
    if overrides:
        config = dataclasses.replace(config, **overrides)

    if mode == "nftables":
        cidrs = list(service_cidrs) + service_cidrs_from_objects(objects["ServiceCIDR"])
        text = render_nftables(
            objects["Service"],
            objects["EndpointSlice"],
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
        objects["Service"],
        objects["EndpointSlice"],
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
