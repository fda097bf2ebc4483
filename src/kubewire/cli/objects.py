"""The object verbs (apply, delete, get, describe, label, scale, logs, exec) over the store."""

from __future__ import annotations

import glob
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from kubewire.api.errors import ManifestError
from kubewire.api.kinds import KindInfo, lookup_kind, resolve_resource
from kubewire.api.loader import load_paths, read_paths
from kubewire.cli import watch as watchmod
from kubewire.cli.context import fail, out_console, state
from kubewire.cli.printers import as_list, dump, table
from kubewire.cli.sortby import api_order, sort_items
from kubewire.cluster.addressing import NodePlan
from kubewire.controllers.types import Op
from kubewire.daemon.lifecycle import ClusterError, Handle, open_cluster
from kubewire.store.apply import apply_documents, delete_objects

if TYPE_CHECKING:
    from kubewire.cli.jsonpath import Template

ALL = ("pods", "services", "deployments", "replicasets")


def handle() -> Handle:
    try:
        return open_cluster(state.name)
    except ClusterError as e:
        fail(str(e))


def node_of(h: Handle, name: str) -> NodePlan:
    """A node of the cluster by name, or a clear error listing the nodes there are."""
    try:
        return h.topo.node(name)
    except KeyError:
        fail(f'node "{name}" not found (nodes: {", ".join(x.name for x in h.topo.nodes)})')


def _resolve(word: str) -> KindInfo:
    try:
        return resolve_resource(word)
    except (KeyError, ValueError, LookupError) as e:
        fail(str(e.args[0]) if e.args else str(e))  # (a KeyError's str() adds quotes)


def _namespaced(obj: dict) -> bool:
    try:
        return lookup_kind(str(obj.get("apiVersion", "")), str(obj.get("kind", ""))).namespaced
    except (KeyError, ValueError, LookupError):
        return True  # unknown kinds: apply names the error


# what the API server (1.33+) sends with every v1 Endpoints request, and kubectl prints
ENDPOINTS_DEPRECATED = "Warning: v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"


def _ns(namespace: str | None) -> str:
    return namespace or "default"


def apply(files: list[str], namespace: str | None) -> None:
    h = handle()
    docs = read_paths(files, sys.stdin)  # unreadable documents are reported with the invalid ones
    if not docs:
        fail("no objects passed to apply")
    if namespace:  # kubectl: an explicit -n must agree with the manifests' own namespaces
        for d in docs:
            if d.error is not None or not isinstance(d.obj, dict):
                continue
            own = (d.obj.get("metadata") or {}).get("namespace") if isinstance(d.obj.get("metadata"), dict) else None
            if own and own != namespace and _namespaced(d.obj):
                fail(f'{d.source}: document {d.index}: the namespace from the provided object "{own}" does not match '
                     f"the namespace \"{namespace}\". You must pass '--namespace={own}' to perform this operation.")
    if any(isinstance(d.obj, dict) and d.obj.get("kind") == "Endpoints" and d.obj.get("apiVersion") == "v1" for d in docs):
        print(ENDPOINTS_DEPRECATED, file=sys.stderr)
    res = apply_documents(h.store, docs, _ns(namespace), h.cfg.service_subnet)
    for r in res:
        info = _resolve(r.obj["kind"])
        print(f"{_kindword(info)}/{r.obj['metadata']['name']} {r.action}")


def _kindword(info: KindInfo) -> str:
    group = info.api_version.split("/")[0] if "/" in info.api_version else ""
    return f"{info.kind.lower()}.{group}" if group else info.kind.lower()


def _split_targets(args: list[str]) -> list[tuple[KindInfo, str | None]]:
    """kubectl's forms: TYPE[,TYPE...] [NAME...] (several types with names: every TYPE/NAME pair, as
    its normalizeMultipleResourcesArgs does) and TYPE/NAME..."""
    if not args:
        fail("You must specify the type of resource to get.")
    slashed = sum("/" in a for a in args)
    if slashed and slashed != len(args):
        fail("there is no need to specify a resource type as a separate argument when passing arguments in "
             "resource/name form (e.g. 'kubewire get resource/<resource_name>' instead of "
             "'kubewire get resource resource/<resource_name>'")
    if slashed:
        out: list[tuple[KindInfo, str | None]] = []
        for a in args:
            parts = a.split("/")
            if len(parts) != 2:
                fail("arguments in resource/name form may not have more than one slash")
            if not parts[0] or not parts[1]:
                fail("arguments in resource/name form must have a single resource and name")
            out.append((_resolve(parts[0]), parts[1]))
        return out
    words = list(dict.fromkeys(args[0].split(",")))
    names = args[1:]
    if len(words) > 1 and names:
        return [(_resolve(w), n) for w in words for n in names]
    if words == ["all"]:
        if names:
            fail("you must specify only one resource")
        words = list(ALL)
    kinds = [_resolve(w) for w in words]
    if names:
        return [(kinds[0], n) for n in names]
    return [(k, None) for k in kinds]


def _selector_match(labels: dict, selector: str | None) -> bool:
    if not selector:
        return True
    for term in re.split(r",(?![^(]*\))", selector):
        term = term.strip()
        m = re.match(r"^([^\s!=]+)\s+(in|notin)\s+\((.*)\)$", term)
        if m:
            vals = {v.strip() for v in m.group(3).split(",")}
            has = labels.get(m.group(1)) in vals
            if has != (m.group(2) == "in"):
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.split("==" if "==" in term else "=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


FORMATS = "custom-columns,custom-columns-file,json,jsonpath,jsonpath-as-json,jsonpath-file,name,wide,yaml"


def _items(body: dict) -> list[dict]:
    return body["items"] if body.get("kind") == "List" and "items" in body else [body]


def _read_template(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        fail(f"error reading template {path}, {e}")


def _jsonpath_failed(template: str, err: Exception, body: dict) -> NoReturn:
    """kubectl's JSONPathPrinter error, written as is (tabs and all)."""
    from kubewire.cli.goformat import go_json

    sys.stderr.write(f"error: error executing jsonpath {json.dumps(template, ensure_ascii=False)}: Error executing "
                     f"template: {err}. Printing more information for debugging the template:\n"
                     f"\ttemplate was:\n\t\t{template}\n"
                     f"\tobject given to jsonpath engine was:\n\t\t{go_json(body)}\n\n")
    sys.exit(1)


def _custom_columns(fmt: str, arg: str, no_headers: bool) -> tuple[list[tuple[str, Template]], bool]:
    """-o custom-columns=SPEC or custom-columns-file=FILE: the columns, and whether to leave out the
    header (kubectl prints a file's headers whatever --no-headers says)."""
    from kubewire.cli import custom_columns, jsonpath

    if not arg:
        fail("custom-columns format specified but no custom columns given")
    try:
        if fmt == "custom-columns-file":
            return custom_columns.parse_columns_file(_read_template(arg)), False
        return custom_columns.parse_columns(arg), no_headers
    except jsonpath.JSONPathError as e:
        fail(str(e))


def printer(output: str | None, allow_missing_keys: bool = True, no_headers: bool = False) -> Callable[[dict], str] | None:
    """The printer -o names, checked before anything is fetched: None for kubectl's tables (no -o, or
    wide), else what kubectl's printGeneric prints for the object, or for the List of them."""
    from kubewire.cli import custom_columns, jsonpath

    if output and output.startswith("="):  # `-o=json`, as kubectl's flag parser reads it
        output = output[1:]
    if not output or output == "wide":
        return None
    fmt, sep, arg = output.partition("=")
    if fmt in ("json", "yaml") and not sep:
        return lambda body: dump(body, fmt) + "\n"
    if fmt == "name" and not sep:
        return lambda body: "".join(f"{_kindword(_resolve(o['kind']))}/{o['metadata']['name']}\n" for o in _items(body))
    if fmt in ("jsonpath", "jsonpath-file", "jsonpath-as-json"):
        if not arg:
            fail("template format specified but no template given")
        text = _read_template(arg) if fmt == "jsonpath-file" else arg
        try:
            template = jsonpath.parse(text)
        except jsonpath.JSONPathError as e:
            fail(f"error parsing jsonpath {text}, {e}")

        def run(body: dict) -> str:
            try:
                return template.render(body, allow_missing_keys, as_json=fmt == "jsonpath-as-json")
            except jsonpath.JSONPathError as e:
                _jsonpath_failed(text, e, body)
        return run
    if fmt in ("custom-columns", "custom-columns-file"):
        columns, no_headers = _custom_columns(fmt, arg, no_headers)

        def columns_of(body: dict) -> str:
            try:
                return custom_columns.custom_columns(columns, _items(body), no_headers)
            except jsonpath.JSONPathError as e:
                fail(str(e))
        return columns_of
    fail(f'unable to match a printer suitable for the output format "{output}", allowed formats are: {FORMATS}')


@dataclass(frozen=True)
class WatchFlags:
    """-w/--watch, --watch-only, --output-watch-events and --request-timeout, as kubectl takes them."""

    watch: bool = False
    only: bool = False
    events: bool = False
    timeout: str = "0"

    @property
    def on(self) -> bool:
        return self.watch or self.only


def _not_found(info: KindInfo, name: str) -> str:
    group = "." + info.api_version.split("/")[0] if "/" in info.api_version else ""
    return f'Error from server (NotFound): {info.plural}{group} "{name}" not found'


def get(args: list[str], namespace: str | None, all_ns: bool, output: str | None, selector: str | None,
        show_labels: bool, allow_missing_keys: bool = True, no_headers: bool = False,
        watching: WatchFlags | None = None, sort_by: str | None = None) -> None:
    if output and output.startswith("="):
        output = output[1:]
    watching = watching or WatchFlags()
    if watching.events and not watching.on:
        fail("--output-watch-events option can only be used with --watch or --watch-only")
    generic = printer(output, allow_missing_keys, no_headers)
    if watching.on:
        _get_watch(args, namespace, all_ns, output, selector, show_labels, no_headers, generic, watching)
        return
    h = handle()
    targets = _split_targets(args)
    if all_ns and any(name is not None for _, name in targets):
        fail("a resource cannot be retrieved by name across all namespaces")
    if any(info.kind == "Endpoints" for info, _ in targets):
        print(ENDPOINTS_DEPRECATED, file=sys.stderr)
    single = len(targets) == 1 and targets[0][1] is not None  # kubectl's singleItemImplied
    found: list[dict] = []
    errors: list[str] = []
    groups: list[tuple[KindInfo, list[dict]]] = []
    for info, name in targets:
        ns = None if all_ns or not info.namespaced else _ns(namespace)
        if name:
            obj = h.store.get(info.kind, ns or "", name)
            if obj is None:
                errors.append(_not_found(info, name))
                continue
            objs = [obj]
        else:
            objs = [o for o in h.store.list(info.kind, ns) if _selector_match(o["metadata"].get("labels") or {}, selector)]
            objs = api_order(info.kind, objs)
            if sort_by:
                try:
                    objs = sort_items(objs, sort_by)
                except ValueError as e:
                    fail(str(e))
        found += objs
        if groups and groups[-1][0] == info:
            groups[-1][1].extend(objs)
        else:
            groups.append((info, objs))
    if generic is not None:  # one object when one was named, else a List of everything found
        if found or not single:
            sys.stdout.write(generic(found[0] if single else as_list(found)))
            sys.stdout.flush()
    else:
        printed = False
        multi = len(groups) > 1
        for info, objs in groups:
            if not objs:
                continue
            if printed:
                print()
            shown = [{**o, "metadata": {**o["metadata"], "name": f"{_kindword(info)}/{o['metadata']['name']}"}} for o in objs] if multi else objs
            text = table(info.kind, shown, wide=output == "wide", namespaced_all=all_ns and info.namespaced,
                         show_labels=show_labels)
            print(text.split("\n", 1)[1] if no_headers else text)
            printed = True
        if not printed and not errors:
            where = "" if all_ns else f" in {_ns(namespace)} namespace"
            print(f"No resources found{where}.", file=sys.stderr)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        sys.exit(1)


def _watch_kind(args: list[str]) -> tuple[KindInfo, list[str]]:
    """The one kind a watch follows and the names it was given: kubectl's watch builder takes a single
    resource type (SingleResourceType), and its objects must be of one kind (multipleGVKsRequested)."""
    targets = _split_targets(args)
    words = [] if "/" in args[0] else args[0].split(",")
    if (len(words) > 1 and len(args) == 1) or words == ["all"]:
        fail("you may only specify a single resource type")
    if len({info.kind for info, _ in targets}) > 1:
        fail("watch is only supported on individual resources and resource collections - more than 1 resource was found")
    return targets[0][0], [n for _, n in targets if n]


def _watch_format(info: KindInfo, output: str | None, all_ns: bool, show_labels: bool, no_headers: bool,
                  generic: Callable[[dict], str] | None, events: bool) -> watchmod.Format:
    if generic is None:
        return watchmod.table_format(info.kind, output == "wide", all_ns and info.namespaced, show_labels, no_headers,
                                     events)
    fmt, _, arg = (output or "").partition("=")
    if fmt.startswith("custom-columns"):
        columns, no_headers = _custom_columns(fmt, arg, no_headers)
        return watchmod.columns_format(columns, no_headers, events)
    return watchmod.document_format(fmt, generic, events)


def _get_watch(args: list[str], namespace: str | None, all_ns: bool, output: str | None, selector: str | None,
               show_labels: bool, no_headers: bool, generic: Callable[[dict], str] | None, flags: WatchFlags) -> None:
    """kubectl's get.go watch(): the objects (not with --watch-only), then a row or document per change,
    until Ctrl-C (exit 0) or --request-timeout."""
    info, names = _watch_kind(args)
    fmt = _watch_format(info, output, all_ns, show_labels, no_headers, generic, flags.events)
    try:
        timeout = watchmod.request_timeout(flags.timeout)
    except ValueError as e:
        fail(str(e))
    h = handle()
    ns = None if all_ns or not info.namespaced else _ns(namespace)
    found = []
    for name in names:  # kubectl's watch stops at the first object not found
        obj = h.store.get(info.kind, ns or "", name) if ns is not None or not info.namespaced else \
            next((o for o in h.store.list(info.kind) if o["metadata"]["name"] == name), None)
        if obj is None:
            fail(_not_found(info, name))
        found.append(obj)
    if len(names) > 1:  # printed, then refused when the watch starts (one source per name)
        if not flags.only:
            sys.stdout.write(fmt.render([watchmod.Event(watchmod.ADDED, o) for o in found]))
            sys.stdout.flush()
        fail("you may only watch a single resource or type of resource at a time")
    scope = watchmod.Scope(info.kind, ns, names[0] if names else None,
                           lambda labels: _selector_match(labels, selector))
    try:
        watchmod.follow(h.store, scope, fmt, sys.stdout, list_first=not flags.only, timeout=timeout)
    except KeyboardInterrupt:
        pass  # kubectl: an interrupt ends the watch, not the command's success
    except BrokenPipeError:  # `get -w | head`: the reader is gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def describe(args: list[str], namespace: str | None) -> None:
    from kubewire.cli.describe import describe_object

    h = handle()
    first = True
    for info, name in _split_targets(args):
        objs = [h.store.get(info.kind, _ns(namespace) if info.namespaced else "", name)] if name else \
            h.store.list(info.kind, _ns(namespace) if info.namespaced else None)
        for o in objs:
            if o is None:
                fail(f'Error from server (NotFound): {info.plural} "{name}" not found')
            if not first:  # kubectl: a blank line between objects, none after the last
                print("\n")
            first = False
            print(describe_object(o, h.store))


def delete(args: list[str], files: list[str], namespace: str | None, grace: int | None, all_: bool, wait: bool,
           ignore_not_found: bool = False) -> None:
    h = handle()
    keys: list[tuple[str, str, str]] = []
    if files:
        for d in load_paths(files, sys.stdin):
            info = _resolve(d.obj.get("kind", ""))
            meta = d.obj.get("metadata") or {}
            keys.append((info.kind, (meta.get("namespace") or _ns(namespace)) if info.namespaced else "", meta.get("name", "")))
    else:
        targets = _split_targets(args) if args else fail("You must provide one or more resources by argument or filename.")
        for info, name in targets:
            ns = _ns(namespace) if info.namespaced else ""
            if name:
                keys.append((info.kind, ns, name))
            elif all_:
                keys += [(info.kind, ns, o["metadata"]["name"]) for o in h.store.list(info.kind, ns if info.namespaced else None)]
            else:
                fail("resource(s) were provided, but no name was specified")
    res = delete_objects(h.store, keys, grace)
    missing = False
    for r in res:
        word = _kindword(_resolve(r.kind))
        if r.found:
            print(f'{word} "{r.name}" deleted' + (f' from {r.namespace} namespace' if r.namespace and r.kind != "Namespace" else ""))
        elif not ignore_not_found:
            missing = True
            print(f'Error from server (NotFound): {_resolve(r.kind).plural} "{r.name}" not found', file=sys.stderr)
    if wait:
        deadline = time.time() + max([int(grace or 30) for _ in res] + [5]) + 10
        pending = [r for r in res if r.found]
        while pending and time.time() < deadline:
            pending = [r for r in pending if h.store.get(r.kind, r.namespace, r.name) is not None]
            time.sleep(0.05)
    if missing:
        sys.exit(1)


def label(args: list[str], namespace: str | None, overwrite: bool) -> None:
    h = handle()
    if "/" in args[0]:
        t, name = args[0].split("/", 1)
        rest = args[1:]
    else:
        if len(args) < 3:
            fail("one or more resources must be specified as <resource> <name> or <resource>/<name>")
        t, name, rest = args[0], args[1], args[2:]
    info = _resolve(t)
    ns = _ns(namespace) if info.namespaced else ""
    obj = h.store.get(info.kind, ns, name)
    if obj is None:
        fail(f'Error from server (NotFound): {info.plural} "{name}" not found')
    labels = dict(obj["metadata"].get("labels") or {})
    for change in rest:
        if change.endswith("-") and "=" not in change:
            labels.pop(change[:-1], None)
            continue
        k, sep, v = change.partition("=")
        if not sep:
            fail(f"invalid label spec: {change}")
        if k in labels and labels[k] != v and not overwrite:
            fail(f"'{k}' already has a value ({labels[k]}), and --overwrite is false")
        labels[k] = v
    new = {**obj, "metadata": {**obj["metadata"], "labels": labels}}
    from kubewire.api.loader import Document
    from kubewire.api.validation import validate_and_default

    try:
        validate_and_default(Document("<label>", 0, new), obj)
    except ManifestError as e:
        fail(str(e))
    h.store.write([Op("update", new)])
    print(f"{_kindword(info)}/{name} labeled")


def scale(args: list[str], replicas: int, namespace: str | None) -> None:
    h = handle()
    t, name = args[0].split("/", 1) if "/" in args[0] else (args[0], args[1] if len(args) > 1 else "")
    info = _resolve(t)
    if info.kind not in ("Deployment", "ReplicaSet"):
        fail(f"cannot scale {info.plural}")
    if replicas < 0:
        fail("The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0")
    obj = h.store.get(info.kind, _ns(namespace), name)
    if obj is None:
        fail(f'Error from server (NotFound): {info.plural}.apps "{name}" not found')
    new = {**obj, "spec": {**obj["spec"], "replicas": replicas}}
    h.store.write([Op("update", new)])
    print(f"{_kindword(info)}/{name} scaled")


def _pod_for(h: Handle, target: str, namespace: str | None) -> dict:
    ns = _ns(namespace)
    if "/" in target:
        t, name = target.split("/", 1)
        info = _resolve(t)
    else:
        info, name = _resolve("pod"), target
    if info.kind == "Pod":
        pod = h.store.get("Pod", ns, name)
        if pod is None:
            fail(f'Error from server (NotFound): pods "{name}" not found')
        return pod
    owner = h.store.get(info.kind, ns, name)
    if owner is None:
        fail(f'Error from server (NotFound): {info.plural}.apps "{name}" not found')
    from kubewire.controllers.podutil import selector_matches

    pods = [p for p in h.store.list("Pod", ns) if selector_matches(owner["spec"].get("selector") or {}, p["metadata"].get("labels") or {})
            and "deletionTimestamp" not in p["metadata"]]
    if not pods:
        fail(f"no pods found for {target}")
    pods.sort(key=lambda p: (p.get("status", {}).get("phase") != "Running", p["metadata"]["name"]))
    return pods[0]


def _container(pod: dict, container: str | None) -> str:
    names = [c["name"] for c in pod["spec"]["containers"]]
    if container is None:
        return names[0]
    if container not in names:
        fail(f'container {container} is not valid for pod {pod["metadata"]["name"]}')
    return container


def logs(target: str, namespace: str | None, container: str | None, previous: bool, follow: bool, tail: int) -> None:
    h = handle()
    pod = _pod_for(h, target, namespace)
    c = _container(pod, container)
    m = pod["metadata"]
    d = f"{h.dir}/logs/{m['namespace']}_{m['name']}_{m['uid']}/{c}"
    files = sorted(glob.glob(f"{d}/*.log"), key=lambda p: int(os.path.basename(p).split(".")[0]))
    if previous:
        files = files[-2:-1]
        if not files:
            fail(f'previous terminated container "{c}" in pod "{m["name"]}" not found')
    else:
        files = files[-1:]
    if not files:
        return
    with open(files[0], errors="replace") as f:
        lines = f.readlines()
        if tail >= 0:
            lines = lines[-tail:] if tail else []
        sys.stdout.write("".join(lines))
        sys.stdout.flush()
        while follow:
            line = f.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.2)


def running_pid(h: Handle, pod: dict, container: str) -> int:
    rec = h.store.runtime_get(f"pod/{pod['spec'].get('nodeName')}/{pod['metadata']['uid']}")
    c = (rec or {}).get("containers", {}).get(container)
    if not c or c.get("state") != "running":
        fail(f'container "{container}" in pod "{pod["metadata"]["name"]}" is not running')
    return int(c["pid"])


def exec_in(target: str, namespace: str | None, container: str | None, argv: list[str]) -> None:
    from kubewire.kernel.run import exec_in_pod

    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        fail("you must specify at least one command for the container")
    h = handle()
    pod = _pod_for(h, target, namespace)
    pid = running_pid(h, pod, _container(pod, container))
    out_console.file.flush()
    exec_in_pod(pid, argv)
