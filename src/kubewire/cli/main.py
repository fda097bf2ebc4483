"""The `kubewire` command: kubectl-shaped, thin over the store and the cluster lifecycle."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import typer

from kubewire.api.errors import ManifestError, ManifestPathError
from kubewire.cli import objects as objcmd
from kubewire.cli.context import fail, need_root, out_console, state

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="kubewire: the Kubernetes networking datapath, built for real in Linux network namespaces.",
    pretty_exceptions_enable=False,
)

DEMO_DIR = Path(__file__).resolve().parent.parent / "manifests" / "demo"


@app.callback()
def _global(name: str = typer.Option(os.environ.get("KUBEWIRE_CLUSTER", "kubewire"), "--name",
                                     help="Cluster name (env KUBEWIRE_CLUSTER).")) -> None:
    state.name = name


@app.command()
def up(
    config: str | None = typer.Option(None, "--config", help="A Cluster document (kubewire.io/v1alpha1)."),
    files: list[str] = typer.Option([], "-f", "--filename", help="Manifests to apply (file, directory or -)."),
    proxy_mode: str | None = typer.Option(None, "--proxy-mode", help="iptables | nftables | ebpf"),
    wait: float = typer.Option(60.0, "--wait", help="Seconds to wait for every pod to be Ready (0: don't)."),
    demo: bool = typer.Option(True, "--demo/--no-demo", help="Without -f, deploy the built-in demo."),
) -> None:
    """Create the cluster (or converge an existing one) and apply manifests."""
    from kubewire.cli.up import run_up

    need_root()
    run_up(state.name, config, files, proxy_mode, wait, demo, DEMO_DIR)


@app.command()
def down(all_clusters: bool = typer.Option(False, "--all", help="Every kubewire cluster on this machine.")) -> None:
    """Remove the cluster: processes, namespaces, files."""
    from kubewire.daemon import lifecycle

    need_root()
    names = lifecycle.list_clusters() if all_clusters else [state.name]
    for n in names:
        removed = lifecycle.down(n)
        out_console.print(f'Deleted cluster "{n}" ({len(removed)} network namespaces removed)')


@app.command()
def clusters() -> None:
    """List the clusters on this machine."""
    from kubewire.daemon import lifecycle

    for n in lifecycle.list_clusters():
        print(n)


@app.command()
def apply(files: list[str] = typer.Option(..., "-f", "--filename"),
          namespace: str | None = typer.Option(None, "-n", "--namespace")) -> None:
    """Create or update objects from manifests: all of them or, on any error, none."""
    objcmd.apply(files, namespace)


@app.command()
def delete(
    args: list[str] = typer.Argument(None),
    files: list[str] = typer.Option([], "-f", "--filename"),
    namespace: str | None = typer.Option(None, "-n", "--namespace"),
    grace_period: int | None = typer.Option(None, "--grace-period"),
    force: bool = typer.Option(False, "--force"),
    all_: bool = typer.Option(False, "--all"),
    wait: bool = typer.Option(True, "--wait/--no-wait"),
    ignore_not_found: bool = typer.Option(False, "--ignore-not-found", help="An object already gone is not an error."),
) -> None:
    """Delete objects named by manifests or by TYPE NAME..."""
    objcmd.delete(args or [], files, namespace, 0 if force and grace_period is None else grace_period, all_, wait,
                  ignore_not_found)


def _go_bool(value: str, flag: str) -> bool:
    """A kubectl boolean flag's value (`--allow-missing-template-keys=false`), as strconv.ParseBool reads it."""
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    fail(f'invalid argument "{value}" for "{flag}" flag: strconv.ParseBool: parsing "{value}": invalid syntax')


@app.command()
def get(
    args: list[str] = typer.Argument(..., help="TYPE[,TYPE...] [NAME...] or TYPE/NAME..."),
    namespace: str | None = typer.Option(None, "-n", "--namespace"),
    all_namespaces: bool = typer.Option(False, "-A", "--all-namespaces"),
    output: str | None = typer.Option(
        None, "-o", "--output",
        help="wide | yaml | json | name | jsonpath=TEMPLATE | jsonpath-as-json=TEMPLATE | jsonpath-file=FILE | "
             "custom-columns=HEADER:PATH,... | custom-columns-file=FILE"),
    selector: str | None = typer.Option(None, "-l", "--selector"),
    show_labels: bool = typer.Option(False, "--show-labels"),
    allow_missing_template_keys: str = typer.Option(
        "true", "--allow-missing-template-keys", metavar="BOOL",
        help="false: a key a jsonpath template names but the object lacks is an error (default: prints nothing)."),
    no_headers: bool = typer.Option(False, "--no-headers", help="No header row (tables, custom-columns)."),
    sort_by: str | None = typer.Option(None, "--sort-by", metavar="JSONPATH",
                                       help="Order the list by a field, e.g. .lastTimestamp or .metadata.name."),
    watch: bool = typer.Option(False, "-w", "--watch", help="After listing, print each change (one type; until Ctrl-C)."),
    watch_only: bool = typer.Option(False, "--watch-only", help="Print each change, without listing first."),
    output_watch_events: bool = typer.Option(
        False, "--output-watch-events", help="With -w: the event type too (EVENT column, or {type, object})."),
    request_timeout: str = typer.Option("0", "--request-timeout", metavar="DURATION",
                                        help="With -w: stop watching after this long (5, 30s, 2m; 0: never)."),
) -> None:
    """Display objects, as kubectl get does; with -w, then every change to them."""
    allow = _go_bool(allow_missing_template_keys, "--allow-missing-template-keys")
    watching = objcmd.WatchFlags(watch, watch_only, output_watch_events, request_timeout)
    objcmd.get(args, namespace, all_namespaces, output, selector, show_labels, allow, no_headers, watching, sort_by)


@app.command()
def events(
    namespace: str | None = typer.Option(None, "-n", "--namespace"),
    all_namespaces: bool = typer.Option(False, "-A", "--all-namespaces"),
    for_: str | None = typer.Option(None, "--for", metavar="TYPE/NAME", help="Only the events of this object."),
    types: str | None = typer.Option(None, "--types", help="Normal, Warning or both (comma-separated)."),
    no_headers: bool = typer.Option(False, "--no-headers"),
) -> None:
    """Events in the order they happened, as kubectl events shows them."""
    from kubewire.cli.events_cmd import events as show

    show(namespace, all_namespaces, for_, types, no_headers)


@app.command()
def describe(args: list[str] = typer.Argument(...), namespace: str | None = typer.Option(None, "-n", "--namespace")) -> None:
    """Show an object in detail."""
    objcmd.describe(args, namespace)


@app.command()
def label(
    args: list[str] = typer.Argument(..., help="TYPE NAME KEY=VAL... KEY-"),
    namespace: str | None = typer.Option(None, "-n", "--namespace"),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Add, change or remove labels."""
    objcmd.label(args, namespace, overwrite)


@app.command()
def scale(
    args: list[str] = typer.Argument(..., help="deployment/NAME or deployment NAME"),
    replicas: int = typer.Option(..., "--replicas"),
    namespace: str | None = typer.Option(None, "-n", "--namespace"),
) -> None:
    """Set the replica count of a Deployment or ReplicaSet."""
    objcmd.scale(args, replicas, namespace)


@app.command()
def logs(
    target: str = typer.Argument(..., help="POD, deploy/NAME or pod/NAME"),
    namespace: str | None = typer.Option(None, "-n", "--namespace"),
    container: str | None = typer.Option(None, "-c", "--container"),
    previous: bool = typer.Option(False, "-p", "--previous"),
    follow: bool = typer.Option(False, "-f", "--follow"),
    tail: int = typer.Option(-1, "--tail"),
) -> None:
    """Print a container's output."""
    objcmd.logs(target, namespace, container, previous, follow, tail)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec(  # noqa: A001 - the kubectl verb
    ctx: typer.Context,
    pod: str = typer.Argument(...),
    namespace: str | None = typer.Option(None, "-n", "--namespace"),
    container: str | None = typer.Option(None, "-c", "--container"),
) -> None:
    """Run a command in a pod's namespaces: kubewire exec -n NS POD -- CMD..."""
    need_root()
    objcmd.exec_in(pod, namespace, container, list(ctx.args))


@app.command()
def curl(
    url: str = typer.Argument(...),
    from_: str | None = typer.Option(None, "--from", help="[NS/]POD to send from (default: the internet client)."),
    namespace: str | None = typer.Option(None, "-n", "--namespace", help="The namespace of a --from POD."),
    header: list[str] = typer.Option([], "-H", "--header"),
    method: str | None = typer.Option(None, "-X", "--request"),
    data: str | None = typer.Option(None, "-d", "--data"),
    insecure: bool = typer.Option(False, "-k", "--insecure"),
    http2: bool = typer.Option(False, "--http2"),
    include: bool = typer.Option(False, "-i", "--include"),
    max_time: float = typer.Option(10.0, "--max-time"),
    output: str | None = typer.Option(None, "-o", "--output", help="json: status, headers, body and timings"),
) -> None:
    """Send an HTTP request from the internet client or from a pod, with curl, for real."""
    from kubewire.cli.curl import run_curl

    need_root()
    run_curl(url, from_, header, method, data, insecure, http2, include, max_time, output, namespace)


@app.command()
def dig(
    name: str = typer.Argument(...),
    qtype: str = typer.Argument("A"),
    from_: str | None = typer.Option(None, "--from", help="[NS/]POD to ask from (default: the internet client)."),
    namespace: str | None = typer.Option(None, "-n", "--namespace", help="The namespace of a --from POD."),
    short: bool = typer.Option(False, "--short"),
) -> None:
    """A DNS query as that pod would make it: its resolv.conf, its search list, its nameserver."""
    from kubewire.cli.curl import where
    from kubewire.cli.objects import handle
    from kubewire.kernel.run import run_in_pod

    need_root()
    pid = where(handle(), from_, namespace)
    argv = ["dig", "+search", name, qtype]
    if short:
        argv.append("+short")
    r = run_in_pod(pid, argv, check=False, timeout=30)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    sys.exit(r.code)


dns_app = typer.Typer(help="Cluster DNS: query counters from the servers' query logs.", no_args_is_help=True)
app.add_typer(dns_app, name="dns")


@dns_app.command("stats")
def dns_stats(output: str | None = typer.Option(None, "-o", "--output", help="json"),
              server: str = typer.Option("coredns", "--server", help="coredns | node-local | internet")) -> None:
    """Queries counted per type and per rcode (CoreDNS's coredns_dns_requests_total /
    coredns_dns_responses_total), from the JSON query logs of the chosen servers."""
    import glob
    import json as _json

    from kubewire.cli.objects import handle

    h = handle()
    if server == "coredns":
        names = {p["metadata"]["name"] for p in h.store.list("Pod", "kube-system")
                 if p["metadata"].get("labels", {}).get("k8s-app") == "kube-dns"}
        files = [f for f in glob.glob(f"{h.dir}/dns/*.jsonl") if f.rsplit("/", 1)[1][:-6] in names]
    else:
        files = glob.glob(f"{h.dir}/dns/{'node-local-*' if server == 'node-local' else 'internet-queries'}.jsonl")
    by_type: dict[str, int] = {}
    by_rcode: dict[str, int] = {}
    hits = total = 0
    for f in files:
        with open(f, errors="replace") as fh:
            for line in fh:
                try:
                    q = _json.loads(line)
                except ValueError:
                    continue
                total += 1
                by_type[q["type"]] = by_type.get(q["type"], 0) + 1
                by_rcode[q["rcode"]] = by_rcode.get(q["rcode"], 0) + 1
                hits += bool(q.get("cache_hit"))
    if output == "json":
        print(_json.dumps({"server": server, "queries": total, "cache_hits": hits, "by_type": by_type,
                           "by_rcode": by_rcode}, indent=2))
        return
    print(f"{server}: {total} queries, {hits} cache hits")
    for title, d in (("TYPE", by_type), ("RCODE", by_rcode)):
        print(f"{title:<10} COUNT")
        for k, v in sorted(d.items(), key=lambda kv: -kv[1]):
            print(f"{k:<10} {v}")


@app.command()
def rules(node: str = typer.Option(..., "--node", help="Node name."),
          table: str | None = typer.Option(None, "-t", "--table")) -> None:
    """What is live on a node: its iptables (iptables-save), its kube-proxy nftables table in
    nftables mode, and the socket load balancer's maps in eBPF mode."""
    from kubewire.cli.objects import handle, node_of
    from kubewire.cli.proxy_cmd import live_datapath
    from kubewire.kernel.netfilter import save

    need_root()
    tables = ("filter", "nat", "mangle", "raw", "security")
    if table is not None and table not in (*tables, "kube-proxy"):
        fail(f'table "{table}" does not exist (iptables: {", ".join(tables)}; nftables mode: kube-proxy)')
    h = handle()
    n = node_of(h, node)
    if h.cfg.proxy_mode == "nftables" and table in (None, "kube-proxy"):
        sys.stdout.write(live_datapath(h, n, "nftables"))
        return
    sys.stdout.write(save(n.netns, table))
    if h.cfg.proxy_mode == "ebpf" and table is None:
        sys.stdout.write(live_datapath(h, n, "ebpf"))


@app.command()
def doctor() -> None:
    """Check the kernel features and tools kubewire needs."""
    from kubewire.cli.doctor import run_doctor

    sys.exit(run_doctor())


def _mount_subapps() -> None:
    from kubewire.cli.proxy_cmd import proxy_app

    app.add_typer(proxy_app, name="proxy")
    try:  # NetworkPolicy commands: `kubewire probe`, `kubewire policy explain`
        from kubewire.cli import policy_cmd
    except ImportError:
        return
    policy_cmd.register(app)


_mount_subapps()
try:
    from kubewire.cli.bench_cmd import bench_app

    app.add_typer(bench_app, name="bench")
except ImportError:
    pass


def global_flags_first(argv: list[str]) -> list[str]:
    """--name NAME anywhere before a `--` (kubectl takes its global flags anywhere: `kubewire up
    --name x` as `kubewire --name x up`)."""
    head, rest, i = [], [], 0
    end = argv.index("--") if "--" in argv else len(argv)
    while i < end:
        if argv[i] == "--name" and i + 1 < end:
            head += argv[i:i + 2]
            i += 2
            continue
        (head if argv[i].startswith("--name=") else rest).append(argv[i])
        i += 1
    return head + rest + argv[end:]


def main() -> None:
    try:
        app(args=global_flags_first(sys.argv[1:]))
    except ManifestError as e:
        fail(str(e))
    except ManifestPathError as e:
        fail(f"error: {e.message}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
    time.sleep(0)
