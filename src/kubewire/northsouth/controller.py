"""The ingress-nginx controller: from the API to a real nginx in every controller pod.

As ingress-nginx's controller process does (it runs inside each controller pod; here one agent serves
them all, each pod getting its own files): it watches Ingresses, IngressClasses, Services,
EndpointSlices and Secrets, builds the model (kubewire.ingress.model), renders nginx.conf per pod
(kubewire.ingress.nginxconf) with the certificate files beside it, checks the new file with
`nginx -t`, moves it into place and sends SIGHUP to the pod's nginx master (the container's PID,
from the pod status containerID): a graceful reload, old workers finish their requests. It publishes
the load balancer address of its Service (ingress-nginx's --publish-service) in the status of the
Ingresses it serves, and issues certificates from the cluster CA (kubewire.northsouth.pki).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass

from kubewire.controllers.events import INGRESS_CONTROLLER, Event, event_ops
from kubewire.controllers.types import Cursor, Op, Snapshot
from kubewire.ingress import model, nginxconf
from kubewire.ingress.certs import parse_tls_secret
from kubewire.kernel import nginx
from kubewire.northsouth import pki

NAMESPACE = "ingress-nginx"
PUBLISH_SERVICE = (NAMESPACE, "ingress-nginx-controller")
POD_LABELS = {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"}
CONTAINER = "controller"


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} ingress-nginx: {msg}", file=sys.stderr, flush=True)


@dataclass
class PodFiles:
    hash: str = ""  # of the configuration and certificates now in place
    loaded: tuple[int, str] = (0, "")  # (nginx master PID, hash it has loaded)
    failed: str = ""  # hash of a configuration nginx -t refused (not retried until it changes)


def controller_pods(snap: Snapshot) -> list[dict]:
    return [p for p in snap.list("Pod", NAMESPACE)
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in POD_LABELS.items())
            and "deletionTimestamp" not in p["metadata"] and (p.get("spec") or {}).get("nodeName")]


def container_pid(pod: dict) -> int:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER and "running" in (cs.get("state") or {}):
            cid = str(cs.get("containerID") or "")
            if cid.startswith("kubewire://") and cid[11:].isdigit():
                return int(cid[11:])
    return 0


class IngressController:
    def __init__(self, ctx) -> None:  # noqa: ANN001 - kubewire.daemon.loop.EdgeContext (a layer above)
        self.cluster = ctx.cfg.name
        self.domain = ctx.cfg.dns_domain
        self.dir = f"{ctx.state_dir}/ingress-nginx"
        self.ca = pki.CA.load_or_create(f"{ctx.state_dir}/pki", ctx.cfg.name)
        self.files: dict[str, PodFiles] = {}
        self.default: tuple[tuple[str, ...], str, float] = ((), "", 0.0)  # hosts, pem, not_after
        self.fingerprint = ""
        self.cfg: model.Config | None = None
        self.problems: set[str] = set()
        self.cursor: Cursor | None = None
        self.pod_names: list[str] = []
        self.synced: dict[tuple[str, str], str] = {}  # served Ingress -> the resourceVersion last scheduled for sync

    def sync(self, snap: Snapshot) -> list[Op]:
        pods = controller_pods(snap)
        kinds = ("Ingress", "IngressClass", "Service", "EndpointSlice", "Secret")
        pod_names = [p["metadata"]["name"] for p in pods]
        changes = snap.changes(self.cursor, kinds)
        if changes is not None and not any(changes.values()) and pod_names == self.pod_names:
            fp = self.fingerprint  # nothing it reads was written (fingerprinting 10k Services: 40 ms a step under cProfile)
        else:
            fp = hashlib.sha1(json.dumps([[o["metadata"].get("resourceVersion") for o in snap.list(k)] for k in kinds]
                                         + [pod_names]).encode()).hexdigest()
        ops: list[Op] = []
        if fp != self.fingerprint or self.cfg is None or self._default_expiring():
            self.cfg = model.build(snap.list("Ingress"), snap.list("IngressClass"), snap.list("Service"),
                                   snap.list("EndpointSlice"), snap.list("Secret"))
            for msg in sorted(set(self.cfg.problems) - self.problems):
                log(msg)
            self.problems = set(self.cfg.problems)
            ops += self._sync_events(snap, self.cfg)
            ops += self._issue(snap, self.cfg)
            default_pem = self._default_cert(self.cfg.hosts)
            names = {p["metadata"]["name"] for p in pods}
            for pod in pods:
                self._write(pod["metadata"]["name"], self.cfg, default_pem)
            self._forget(names)
            self.fingerprint = fp
        for pod in pods:
            self._reload_if_needed(pod)
        ops += self._publish(snap, self.cfg)
        self.cursor, self.pod_names = snap.cursor, pod_names  # only once all of it went through
        return ops

    def _sync_events(self, snap: Snapshot, cfg: model.Config) -> list[Op]:
        """ingress-nginx's "Sync: Scheduled for sync" on an Ingress it serves, each time it changes
        (its store's informer records it on add and on every update, status updates included)."""
        events = []
        synced: dict[tuple[str, str], str] = {}
        for key in sorted(cfg.ingresses):
            ing = snap.get("Ingress", *key)
            if ing is None:
                continue
            rv = ing["metadata"].get("resourceVersion", "")
            synced[key] = rv
            if self.synced.get(key) != rv:
                events.append(Event(ing, "Normal", "Sync", "Scheduled for sync", INGRESS_CONTROLLER))
        self.synced = synced
        return event_ops(snap, events, snap.now or time.time())

    # ---- files and reloads -------------------------------------------------------------------
    def pod_dir(self, pod: str) -> str:
        return f"{self.dir}/{pod}"

    def _write(self, pod: str, cfg: model.Config, default_pem: str) -> None:
        d = self.pod_dir(pod)
        paths = nginxconf.Paths(d, f"{d}/ssl")
        text = nginxconf.render(cfg, paths, pod)
        certs = nginxconf.cert_files(cfg, default_pem)
        digest = hashlib.sha256((text + "".join(f"{k}\0{v}" for k, v in sorted(certs.items()))).encode()).hexdigest()
        st = self.files.setdefault(pod, PodFiles())
        if digest in (st.hash, st.failed):
            return
        os.makedirs(f"{d}/ssl", mode=0o700, exist_ok=True)
        os.makedirs(f"{d}/tmp", exist_ok=True)
        for name, pem in certs.items():
            _write_if_changed(paths.cert(name), pem, 0o600)
        for stale in set(os.listdir(f"{d}/ssl")) - {f"{n}.pem" for n in certs}:
            os.unlink(f"{d}/ssl/{stale}")
        conf = f"{d}/nginx.conf"
        _write_if_changed(f"{conf}.new", text, 0o644)
        ok, msg = nginx.test_config(f"{conf}.new")
        if not ok:
            st.failed = digest
            log(f"pod {pod}: new configuration rejected by nginx -t, keeping the running one: {msg}")
            return
        os.replace(f"{conf}.new", conf)
        st.hash = digest

    def _reload_if_needed(self, pod: dict) -> None:
        name = pod["metadata"]["name"]
        st = self.files.get(name)
        pid = container_pid(pod)
        if st is None or not st.hash or not pid or st.loaded == (pid, st.hash):
            return
        d = self.pod_dir(name)
        if self._started_with_current(d, pid):
            st.loaded = (pid, st.hash)
            return
        if nginx.reload(pid):
            st.loaded = (pid, st.hash)
            log(f"pod {name}: configuration changed, nginx master {pid} reloading gracefully")

    @staticmethod
    def _started_with_current(d: str, pid: int) -> bool:
        """nginx writes its pid file once it has read its configuration at start: a pid file of this
        PID newer than nginx.conf means the running master already has this configuration."""
        try:
            with open(f"{d}/nginx.pid") as f:
                written = int(f.read().strip() or 0)
            return written == pid and os.stat(f"{d}/nginx.pid").st_mtime_ns >= os.stat(f"{d}/nginx.conf").st_mtime_ns
        except (OSError, ValueError):
            return False

    def _forget(self, pods: set[str]) -> None:
        for name in list(self.files):
            if name not in pods:
                del self.files[name]
        if os.path.isdir(self.dir):
            for entry in os.listdir(self.dir):
                if entry not in pods and entry not in self.files:
                    shutil.rmtree(f"{self.dir}/{entry}", ignore_errors=True)

    # ---- certificates -------------------------------------------------------------------------
    def _default_expiring(self) -> bool:
        return bool(self.default[1]) and self.default[2] - time.time() < pki.RENEW_BEFORE.total_seconds()

    def _default_cert(self, hosts: list[str]) -> str:
        names = (f"ingress-nginx-controller.{NAMESPACE}.svc.{self.domain}", *sorted(set(hosts)))
        if names == self.default[0] and not self._default_expiring():
            return self.default[1]
        issued = self.ca.issue(list(names), key=self.ca.default_key())
        pem = issued.cert_pem.decode() + issued.key_pem.decode()
        info = parse_tls_secret({"data": pki.tls_secret("", "x", issued, [])["data"]})
        self.default = (names, pem, info.not_after)
        return pem

    def _issue(self, snap: Snapshot, cfg: model.Config) -> list[Op]:
        """cert-manager's ingress-shim with the cluster CA as issuer: each TLS entry of an annotated
        Ingress gets its Secret (created, or renewed when hosts change or expiry is near); Secrets
        the CA did not issue are never touched."""
        ops: list[Op] = []
        served = set(cfg.ingresses)
        for ing in snap.list("Ingress"):
            ns, name = ing["metadata"].get("namespace", ""), ing["metadata"]["name"]
            if (ns, name) not in served or not pki.wants_issuer(ing):
                continue
            for t in (ing.get("spec") or {}).get("tls") or []:
                secret, hosts = t.get("secretName"), [str(h).lower() for h in t.get("hosts") or []]
                if not secret or not hosts:
                    continue
                cur = snap.get("Secret", ns, secret)
                if cur is not None:
                    ann = cur["metadata"].get("annotations") or {}
                    if ann.get(pki.ISSUED_BY_ANNOTATION) != pki.ISSUER_NAME:
                        continue
                    info = parse_tls_secret(cur)
                    fresh = info.ok and info.not_after - time.time() > pki.RENEW_BEFORE.total_seconds()
                    if fresh and sorted(info.dns_names) == sorted(hosts):
                        continue
                obj = pki.tls_secret(ns, secret, self.ca.issue(hosts), hosts)
                log(f"issued a certificate for {', '.join(hosts)} into secret {ns}/{secret} "
                    f"(ingress {ns}/{name}, valid until "
                    f"{(datetime.datetime.now(datetime.UTC) + pki.VALIDITY).date()})")
                if cur is None:
                    ops.append(Op("create", obj))
                else:
                    obj["metadata"]["uid"] = cur["metadata"].get("uid")
                    obj["metadata"]["labels"] = cur["metadata"].get("labels") or {}
                    ops.append(Op("update", obj))
        return ops

    # ---- status -----------------------------------------------------------------------------
    def _publish(self, snap: Snapshot, cfg: model.Config | None) -> list[Op]:
        svc = snap.get("Service", *PUBLISH_SERVICE)
        addrs = [{"ip": i["ip"]} for i in (((svc or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                 if isinstance(i, dict) and i.get("ip")]
        served = set(cfg.ingresses) if cfg else set()
        ops: list[Op] = []
        for ing in snap.list("Ingress"):
            k = (ing["metadata"].get("namespace", ""), ing["metadata"]["name"])
            cur = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if k in served:
                want = addrs
            elif cur and cur == addrs:  # no longer ours (class changed): take our address back
                want = []
            else:
                continue
            if cur != want:
                m = ing["metadata"]
                ops.append(Op("status", {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                         "metadata": {"name": m["name"], "namespace": m.get("namespace"),
                                                      "uid": m.get("uid")},
                                         "status": {"loadBalancer": {"ingress": want} if want else {}}}))
        return ops


def _write_if_changed(path: str, text: str, mode: int) -> None:
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except OSError:
        pass
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
