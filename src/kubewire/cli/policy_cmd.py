"""`kubewire probe` and `kubewire policy ...`: NetworkPolicy checked with real connections, and
explained from the rules live in each node's kernel.

    kubewire probe [-n NS]... [-A] [-l SELECTOR] [--port 80/TCP]... [--via pod-ip|service]
                   [--timeout 1] [-o json] [--expect FILE]
    kubewire policy explain --from NS/POD --to NS/POD --port 80/TCP [-o json]
    kubewire policy render --node NODE     # what the planner would program on that node
    kubewire policy show --node NODE       # what that node's kernel holds now (nft list table)
"""

from __future__ import annotations

import json
import os
import sys
import time

import typer

from kubewire.cli.context import fail, need_root, out_console
from kubewire.policy.model import ClusterView, build_view
from kubewire.policy.plan import FAMILY, TABLE

policy_app = typer.Typer(help="NetworkPolicy: explain a connection from the kernel's rules, show a node's rules.",
                         no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
    app.add_typer(policy_app, name="policy")


def _view(h) -> ClusterView:  # noqa: ANN001
    nodes = {n.name: (n.ip, n.bridge_ip) for n in h.topo.nodes}
    return build_view(h.store.list("Pod"), h.store.list("Namespace"), h.store.list("NetworkPolicy"), nodes)


# --- probe -------------------------------------------------------------------------------------------


def probe(
    namespace: list[str] = typer.Option([], "-n", "--namespace", help="Namespaces to take pods from (repeatable)."),
    all_namespaces: bool = typer.Option(False, "-A", "--all-namespaces"),
    selector: str | None = typer.Option(None, "-l", "--selector", help="Only pods with these labels."),
    port: list[str] = typer.Option([], "--port", help="PORT[/TCP|UDP|SCTP] or NAME/PROTO (repeatable); "
                                   "default: every port the selected pods declare."),
    via: str = typer.Option("pod-ip", "--via", help="pod-ip | service (each pod's own Service)"),
    timeout: float = typer.Option(1.0, "--timeout", help="Seconds each connection may take."),
    output: str | None = typer.Option(None, "-o", "--output", help='json: {"ns/pod": {"ns/pod": true|false}}'),
    expect: str | None = typer.Option(None, "--expect", help="A matrix in the -o json shape: exit 1 on any difference."),
) -> None:
    """Real connections from every selected pod to every selected pod, concurrently, from inside the
    source pods' network namespaces. TCP: the handshake completed; UDP/SCTP: an echo came back."""
    from kubewire.cli.objects import _selector_match, handle
    from kubewire.kernel.connect import Attempt, connect_all
    from kubewire.policy.probe import (
        VIA,
        Matrix,
        Outcome,
        compare,
        parse_expectation,
        parse_target,
        plan_cells,
    )

    need_root()
    if via not in VIA:
        fail(f"--via must be one of: {', '.join(VIA)}")
    if output not in (None, "json"):
        fail("-o takes json")
    expected = None
    if expect:
        try:
            with open(expect) as f:
                expected = parse_expectation(f.read())
        except (OSError, ValueError) as e:
            fail(f"--expect {expect}: {e}")
    h = handle()
    view = _view(h)
    namespaces = None if all_namespaces else set(namespace or ["default"])
    pods = [p for p in view.pods if (namespaces is None or p.namespace in namespaces) and _selector_match(p.labels, selector)]
    if not pods:
        fail("no pods with an address match (check -n / -A / -l)")
    try:
        targets = [parse_target(t) for t in port]
    except ValueError as e:
        fail(str(e))
    if not targets:
        seen = sorted({(cp.port, cp.protocol) for p in pods for cp in p.ports})
        from kubewire.policy.probe import Target

        targets = [Target(n, proto) for n, proto in seen]
        if not targets:
            fail("the selected pods declare no ports: give --port")
    t0 = time.perf_counter()
    cells = plan_cells(pods, targets, via, h.store.list("Service"), h.store.list("EndpointSlice"))
    from kubewire.cluster.addressing import pod_netns

    runnable = [c for c in cells if not c.skip]
    cgroups: dict[str, str] = {}
    if h.cfg.proxy_mode == "ebpf":  # connect from the source pod's node cgroup, as the pod would
        from kubewire.kernel.cgroup import node_dir

        for p in h.store.list("Pod"):
            node = p["spec"].get("nodeName")
            if node:
                cgroups[f"{p['metadata']['namespace']}/{p['metadata']['name']}"] = node_dir(h.cfg.name, node) or ""
    attempts = []
    for c in runnable:
        ns = pod_netns(h.cfg.name, c.src.uid)
        if not os.path.exists(f"/run/netns/{ns}"):
            c.skip = f"{c.src.key} is not wired (no network namespace)"
        attempts.append(Attempt(ns, c.ip, c.port, c.target.protocol, cgroups.get(c.src.key, "")))
    keep = [(c, a) for c, a in zip(runnable, attempts, strict=True) if not c.skip]
    results = connect_all([a for _, a in keep], timeout)
    elapsed = time.perf_counter() - t0
    m = Matrix([p.key for p in pods], targets)
    for c in cells:
        if c.skip:
            m.add(c, Outcome("skipped", c.skip))
    for (c, _), r in zip(keep, results, strict=True):
        m.add(c, Outcome(r.status, r.detail, r.seconds))
    if output == "json":
        print(json.dumps(m.as_json(), indent=2))
    else:
        sys.stdout.write(m.text(via))
        print(f"{len(keep)} connections in {elapsed:.2f}s (timeout {timeout:g}s)")
    if expected is not None:
        diffs, skipped = compare(m, expected)
        for d in skipped:
            print(f"not checked: {d.src} -> {d.dst} {d.target}: {d.got.detail if d.got else ''}", file=sys.stderr)
        if diffs:
            print(f"{len(diffs)} cells differ from {expect}:", file=sys.stderr)
            for d in diffs:
                print(f"  {d}", file=sys.stderr)
            sys.exit(1)
        print(f"matches {expect}" + (f" ({len(skipped)} expected cells skipped)" if skipped else ""), file=sys.stderr)


# --- explain -----------------------------------------------------------------------------------------


@policy_app.command("explain")
def explain(
    from_: str = typer.Option(..., "--from", help="NS/POD (or an address)"),
    to: str = typer.Option(..., "--to", help="NS/POD (or an address): for Service traffic, the backend pod"),
    port: str = typer.Option(..., "--port", help="PORT[/TCP|UDP|SCTP], or a port NAME/PROTO of the destination pod"),
    output: str | None = typer.Option(None, "-o", "--output", help="json"),
) -> None:
    """Allowed or denied, which policies select each side and which rule decided: answered by walking
    the packet through the rules live in each node's kernel, and checked against the API objects."""
    from kubewire.cli.objects import handle
    from kubewire.kernel.nftread import table_json
    from kubewire.policy.explain import NotUnderstood, Packet, walk_node
    from kubewire.policy.probe import parse_target
    from kubewire.policy.semantics import endpoint, evaluate

    need_root()
    h = handle()
    view = _view(h)
    try:
        src, dst = endpoint(view, from_), endpoint(view, to)
        target = parse_target(port)
    except (KeyError, ValueError) as e:
        fail(str(e).strip("'\""))
    if src.pod is None and dst.pod is None:
        fail("neither end is a pod: NetworkPolicy only ever applies to pods (give --from or --to as NS/POD)")
    number = target.port
    if isinstance(number, str):
        found = dst.pod.named_ports(number, target.protocol) if dst.pod else []
        if not found:
            fail(f"{dst} has no port named {number}/{target.protocol}")
        number = found[0]
    api = evaluate(view, src, dst, number, target.protocol)
    pkt = Packet(src.ip, dst.ip, target.protocol, number)
    nodes = []
    for ep in (src, dst):
        if ep.pod is not None and ep.pod.node not in nodes:
            nodes.append(ep.pod.node)
    walks = []
    error = ""
    for name in nodes:
        try:
            n = h.topo.node(name)
        except KeyError:
            continue
        try:
            w = walk_node(table_json(n.netns, FAMILY, TABLE), name, pkt)
        except (NotUnderstood, RuntimeError) as e:
            error = str(e)
            break
        walks.append(w)
        if w.verdict == "drop":
            break
    allowed = bool(walks) and all(w.verdict == "accept" for w in walks) and not error
    steps = [s for w in walks for s in w.steps]
    result = {
        "from": {"name": str(src), "ip": src.ip, "node": src.pod.node if src.pod else None},
        "to": {"name": str(dst), "ip": dst.ip, "node": dst.pod.node if dst.pod else None},
        "port": number, "protocol": target.protocol,
        "allowed": allowed,
        "kernel": [{"node": w.node, "verdict": w.verdict, "note": w.note,
                    "chains": [s.__dict__ | {"allowed": s.allowed} for s in w.steps]} for w in walks],
        "api": api.as_dict(),
        "agree": allowed == api.allowed and not error,
        "error": error or None,
    }
    if output == "json":
        print(json.dumps(result, indent=2))
        return
    out = out_console
    out.print(f"{src} ({src.ip}{', node ' + src.pod.node if src.pod else ''}) -> {dst} ({dst.ip}"
              f"{', node ' + dst.pod.node if dst.pod else ''}) port {number}/{target.protocol}", markup=False)
    out.print(f"kernel: {'ALLOWED' if allowed else 'DENIED'}", markup=False)
    for side, pod in (("egress", src), ("ingress", dst)):
        api_side = api.egress if side == "egress" else api.ingress
        step = next((s for s in steps if s.direction == side), None)
        if pod.pod is None:
            out.print(f"  {side}: {pod} is not a pod: no policy applies", markup=False)
            continue
        if step is None:
            walked = any(w.node == pod.pod.node for w in walks)
            why = ("no chain for it on node " + pod.pod.node + ": no policy isolates it for " + side) if walked \
                else "not reached (denied before)"
            out.print(f"  {side} of {pod}: {why}", markup=False)
        else:
            verb = "allowed" if step.allowed else "DROPPED"
            out.print(f"  {side} of {pod} on node {step.node}: {' -> '.join(step.path)}: {verb} by", markup=False)
            out.print(f"      {step.rule}", markup=False)
        if api_side.policies:
            out.print(f"    selected for {side} by: {', '.join(api_side.policies)}", markup=False)
    for w in walks:
        if w.note and not w.steps:
            out.print(f"  node {w.node}: {w.note}", markup=False)
    out.print(f"API objects say: {'allowed' if api.allowed else 'denied'} "
              f"(egress: {api.egress.reason}; ingress: {api.ingress.reason})", markup=False)
    if error:
        out.print(f"could not read the kernel's rules: {error}", markup=False)
    elif allowed != api.allowed:
        out.print("the kernel and the API objects disagree: the node has not applied the latest change yet, "
                  "or its rules were changed by hand", markup=False)
    if error:
        sys.exit(2)


@policy_app.command("render")
def render(node: str = typer.Option(..., "--node", help="Node name.")) -> None:
    """The node's table as the planner computes it from the cluster's state (what the agent programs)."""
    from kubewire.cli.objects import handle, node_of
    from kubewire.policy.nftables import render_table
    from kubewire.policy.plan import plan_node, resolve

    h = handle()
    n = node_of(h, node)
    rs = plan_node(resolve(_view(h)), n.name, (n.ip, n.bridge_ip))
    if rs.empty:
        print(f"# no pod on {node} is isolated by a NetworkPolicy: no table")
        return
    sys.stdout.write(render_table(rs))


@policy_app.command("show")
def show(node: str = typer.Option(..., "--node", help="Node name.")) -> None:
    """The node's policy table as its kernel holds it now, counters included (nft list table)."""
    from kubewire.cli.objects import handle, node_of
    from kubewire.kernel.nftread import table_text

    need_root()
    h = handle()
    n = node_of(h, node)
    text = table_text(n.netns, FAMILY, TABLE)
    if text is None:
        print(f"# no {FAMILY} {TABLE} table on {node}: no local pod is isolated")
        return
    sys.stdout.write(text)
