"""`kubewire curl`: a real curl, run in the internet client's namespaces or in a pod's.

With -o json it prints what a script wants: status, headers, body and curl's own timings.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from kubewire.cli.context import fail
from kubewire.cli.objects import _container, _pod_for, handle, running_pid
from kubewire.daemon import lifecycle
from kubewire.kernel.run import run_in_pod


def from_pod(from_: str, namespace: str | None) -> tuple[str, str]:
    """--from NS/POD, or --from POD in -n's namespace ("default" without -n), as kubectl exec reads -n."""
    ns, sep, pod_name = from_.partition("/")
    if not sep:
        return namespace or "default", from_
    if not ns or not pod_name:
        fail("--from takes [NS/]POD (or 'internet')")
    return ns, pod_name


def where(h: lifecycle.Handle, from_: str | None, namespace: str | None = None) -> int:
    if from_ is None or from_ in ("internet", "internet-client"):
        pid = lifecycle.host_pid(h, "internet-client")
        if pid is None:
            fail("the internet client is not running (run `kubewire up` again)")
        return pid
    ns, pod_name = from_pod(from_, namespace)
    pod = _pod_for(h, pod_name, ns)
    return running_pid(h, pod, _container(pod, None))


def run_curl(url: str, from_: str | None, headers: list[str], method: str | None, data: str | None, insecure: bool,
             http2: bool, include: bool, max_time: float, output: str | None, namespace: str | None = None) -> None:
    h = handle()
    pid = where(h, from_, namespace)
    tmp = f"{h.dir}/tmp"
    os.makedirs(tmp, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    body_path, hdr_path = f"{tmp}/{tag}.body", f"{tmp}/{tag}.headers"
    argv = ["curl", "-sS", "--max-time", str(max_time),
            "-o", body_path, "-D", hdr_path, "-w", "%{json}"]
    ca = f"{h.dir}/pki/ca.crt"
    if os.path.exists(ca):
        argv += ["--cacert", ca]
    for hd in headers:
        argv += ["-H", hd]
    if method:
        argv += ["-X", method]
    if data is not None:
        argv += ["--data-binary", data]
    if insecure:
        argv.append("-k")
    if http2:
        argv.append("--http2")
    argv.append(url)
    try:
        res = run_in_pod(pid, argv, check=False, timeout=max_time + 5)
        if res.code == 124:  # our own watchdog fired: report it as curl's "operation timed out"
            res.code = 28
        body = Path(body_path).read_bytes() if os.path.exists(body_path) else b""
        raw_headers = Path(hdr_path).read_text(errors="replace") if os.path.exists(hdr_path) else ""
    finally:
        for p in (body_path, hdr_path):
            if os.path.exists(p):
                os.unlink(p)
    try:
        info = json.loads(res.stdout or "{}")
    except json.JSONDecodeError:
        info = {}
    if output == "json":
        blocks = [b for b in raw_headers.replace("\r\n", "\n").split("\n\n") if b.strip()]
        last = blocks[-1].split("\n") if blocks else []
        hdrs: dict[str, str] = {}
        for line in last[1:]:
            k, _, v = line.partition(":")
            if k:
                hdrs[k.strip().lower()] = v.strip()
        text = body.decode(errors="replace")
        try:
            parsed: object = json.loads(text)
        except ValueError:
            parsed = text
        out = {
            "url": url,
            "status": info.get("http_code", 0),
            "httpVersion": info.get("http_version", ""),
            "remote": f"{info.get('remote_ip', '')}:{info.get('remote_port', '')}",
            "headers": hdrs,
            "body": parsed,
            "timings": {k: info.get(f"time_{k}") for k in
                        ("namelookup", "connect", "appconnect", "pretransfer", "starttransfer", "total")},
            "error": res.stderr.strip() or None,
            "exitCode": res.code,
        }
        print(json.dumps(out, indent=2))
    else:
        if include:
            sys.stdout.write(raw_headers)
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
        if res.stderr:
            sys.stderr.write(res.stderr)
    if from_ is None and res.code in (7, 28):
        hint = unreachable_hint(url, h.cfg.service_subnet, h.cfg.pod_subnet)
        if hint:
            print(hint, file=sys.stderr)
    sys.exit(res.code)


def unreachable_hint(url: str, service_subnet: str, pod_subnet: str) -> str | None:
    """Why the internet client cannot reach a ClusterIP or a pod IP, as in a real cluster."""
    host = urlsplit(url if "//" in url else f"http://{url}").hostname or ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    for subnet, what in ((service_subnet, "a ClusterIP (service CIDR"), (pod_subnet, "a pod IP (pod CIDR")):
        try:
            net = ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            continue
        if ip.version == net.version and ip in net:
            return (f"hint: {ip} is {what} {net}), which only pods and nodes reach, as in a real cluster: "
                    "send from a pod with --from [NS/]POD, or from the internet to a NodePort, "
                    "a LoadBalancer address or the ingress")
    return None
