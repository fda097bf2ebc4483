"""The node agent (kubelet): makes the pods bound to its node real, and reports what it sees.

It sees only the API (a snapshot) and its own node. Each `sync` wires new pods in batches, starts
and restarts containers, runs probes, ends deleted pods gracefully and returns status writes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubewire.cluster.addressing import NodePlan, pod_netns, pod_veth
from kubewire.cni.plan import PodWiring, plan_add, plan_delete
from kubewire.controllers.events import KUBELET, Event, SpamFilter, event_ops
from kubewire.controllers.types import Op, Snapshot
from kubewire.kernel import ip as kip
from kubewire.kernel import probe as kprobe
from kubewire.kernel import process as kproc
from kubewire.kernel import rtnl, sockdiag
from kubewire.kubelet.env import EnvError, build_env
from kubewire.kubelet.files import NodeDNS, render_hosts, render_resolv, resolv_settings
from kubewire.kubelet.runtime import ContainerRT, PodRT, runtime_key
from kubewire.kubelet.status import pod_status
from kubewire.store.db import Store, now_rfc3339

MAX_BACKOFF = 300.0
BACKOFF_RESET = 600.0
_AGNHOST_PORT = re.compile(r"^--(http|udp|sctp)-port=(\d+)$")


@dataclass
class AgentConfig:
    cluster: str
    state_dir: str
    domain: str
    cluster_dns: list[str]
    node_dns: NodeDNS
    zone: str
    backoff: float = 10.0
    cgroup: str = ""  # eBPF mode: the node's cgroup, where every container runs


def container_ports(c: dict) -> list[tuple[int, str]]:
    ports = [(int(p["containerPort"]), p.get("protocol", "TCP")) for p in c.get("ports") or []]
    for a in c.get("args") or []:  # agnhost netexec-style flags
        m = _AGNHOST_PORT.match(str(a))
        if m:
            ports.append((int(m.group(2)), {"http": "TCP", "udp": "UDP", "sctp": "SCTP"}[m.group(1)]))
    return ports or [(8080, "TCP")]


_VAR = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """kubelet's $(VAR) expansion of command and args: a defined variable is replaced, an unknown
    reference stays as written, and $$ is a literal $."""
    return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def command_of(c: dict) -> list[str] | None:
    """A container whose command exists on this machine runs it; any other image is the echo server."""
    cmd = [str(x) for x in (c.get("command") or [])]
    if cmd and (shutil.which(cmd[0]) or (os.path.isabs(cmd[0]) and os.access(cmd[0], os.X_OK))):
        return cmd + [str(x) for x in (c.get("args") or [])]
    return None


class NodeAgent:
    def __init__(self, store: Store, cfg: AgentConfig, node: NodePlan,
                 workload: Callable[[list[tuple[int, str]]], Callable[[], object]]) -> None:
        self.store, self.cfg, self.node = store, cfg, node
        self.workload = workload
        self.pods: dict[str, PodRT] = {}
        self.dirty: set[str] = set()
        self.probing: set[tuple[str, str, str]] = set()
        self.wake: Callable[[], None] = lambda: None
        self.last_listen_check: dict[tuple[str, str], float] = {}
        self.adopted: list[int] = []
        self.stopping: dict[str, set[str]] = {}  # uid -> containers already sent SIGTERM
        self.last_ip: int = 0  # host-local IPAM: hand out addresses round-robin, not lowest-free
        self.exited: set[int] = set()  # PIDs whose pidfd turned readable since the last look
        self.next_visit: dict[str, float] = {}  # uid -> when the pod next needs a look without news
        self.seen_rv: dict[str, str] = {}  # uid -> resourceVersion whose status we last checked
        self.events: list[Event] = []  # recorded since the last step (probes record from their tasks)
        self.spam = SpamFilter()
        self.announced = False  # the node's start events, once per agent
        self.restart_policy: dict[str, str] = {}  # uid -> the pod's restartPolicy, for what probes say
        self._load()

    def _announce(self, snap: Snapshot) -> None:
        """What a kubelet records on its Node when it starts (describe node shows them)."""
        node = snap.get("Node", "", self.node.name)
        if node is None:
            return
        self.announced = True
        name = self.node.name
        self.events.append(Event(node, "Normal", "Starting", "Starting kubelet.", KUBELET, host=name))
        self.events.append(Event(node, "Normal", "NodeAllocatableEnforced", "Updated Node Allocatable limit across pods",
                                 KUBELET, host=name))  # fmt: skip
        for status in ("NodeHasSufficientMemory", "NodeHasNoDiskPressure", "NodeHasSufficientPID", "NodeReady"):
            self.events.append(Event(node, "Normal", status, f"Node {name} status is now: {status}", KUBELET, host=name))

    def _event(self, rt: PodRT, c: ContainerRT | None, type_: str, reason: str, message: str) -> None:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": rt.name, "namespace": rt.namespace, "uid": rt.uid}}
        e = Event(pod, type_, reason, message, KUBELET, field_path=f"spec.containers{{{c.name}}}" if c else "",
                  host=self.node.name)
        if self.spam.allow(e, time.time()):
            self.events.append(e)

    # ---- persistence -----------------------------------------------------------------------
    def _load(self) -> None:
        """Adopt what a previous agent left: live containers are kept, half-wired pods redone."""
        for _k, d in self.store.runtime_items(f"pod/{self.node.name}/").items():
            rt = PodRT.from_dict(d)
            if not rt.wired:
                self._teardown([rt], rewire=True)
                self.store.runtime_put({runtime_key(rt.node, rt.uid): None})
                continue
            for c in rt.containers.values():
                if c.state == "running" and not kproc.alive(c.pid, c.ticks):
                    self._exited(rt, c, 255, "Unknown", "container exited while its node agent was down")
                elif c.state == "running":
                    self.adopted.append(c.pid)
            self.pods[rt.uid] = rt
            self.dirty.add(rt.uid)

    def _save(self, uids: set[str]) -> None:
        items: dict[str, dict | None] = {}
        for uid in uids:
            rt = self.pods.get(uid)
            items[runtime_key(self.node.name, uid)] = rt.to_dict() if rt else None
        self.store.runtime_put(items)

    def known_netns(self) -> set[str]:
        return {rt.netns for rt in self.pods.values() if rt.veth}

    # ---- the loop step ---------------------------------------------------------------------
    def sync(self, snap: Snapshot) -> list[Op]:
        now = time.time()
        while self.adopted:
            self._watch(self.adopted.pop())
        mine = {p["metadata"]["uid"]: p for p in snap.list("Pod") if p.get("spec", {}).get("nodeName") == self.node.name}
        changed: set[str] = set()
        ops: list[Op] = []

        # pods that vanished from the API (force-deleted, or their namespace went): end them now
        gone = [rt for uid, rt in self.pods.items() if uid not in mine]
        if gone:
            for rt in gone:
                for c in rt.containers.values():
                    kproc.signal_group(c.pid, c.ticks, signal.SIGKILL)
                    kproc.reap([c.pid])
            self._teardown(gone)
            for rt in gone:
                del self.pods[rt.uid]
                changed.add(rt.uid)

        new = [p for uid, p in mine.items() if uid not in self.pods and "deletionTimestamp" not in p["metadata"]
               and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
        if new:
            changed |= self._create(new, snap)
        for uid, pod in mine.items():
            rt = self.pods.get(uid)
            if rt is None:
                if "deletionTimestamp" in pod["metadata"]:
                    ops.append(Op("delete", pod))  # never started here: nothing to end
                continue
            if "deletionTimestamp" in pod["metadata"]:
                if self._terminate(rt, pod, now):
                    ops.append(Op("delete", pod))
                    self._teardown([rt])
                    del self.pods[uid]
                    changed.add(uid)
                    self._remove_files(rt)
                    continue
            elif rt.wired and self._needs_visit(rt, now) and self._run(rt, pod, snap, now):
                changed.add(uid)
            rv = pod["metadata"].get("resourceVersion", "")
            if uid in changed or uid in self.dirty or self.seen_rv.get(uid) != rv:
                self.seen_rv[uid] = rv
                st = pod_status(pod, rt, self.node.ip, now_rfc3339())
                if pod.get("status", {}) != st:
                    ops.append(Op("status", {**pod, "status": st}))
        if not self.announced:
            self._announce(snap)
        if self.events:
            ops += event_ops(snap, self.events, now)
            self.events = []
        self._save(changed | (self.dirty & set(self.pods)))
        self.dirty.clear()
        for uid in [u for u in self.next_visit if u not in self.pods]:
            del self.next_visit[uid]
            self.seen_rv.pop(uid, None)
            self.restart_policy.pop(uid, None)
            self.spam.forget(uid)
        return ops

    def _needs_visit(self, rt: PodRT, now: float) -> bool:
        """Only pods with news get a look each step: an exit, a container not yet running or ready,
        a probe due; the rest once a second. A thousand quiet pods cost almost nothing."""
        if now >= self.next_visit.get(rt.uid, 0.0) or rt.uid in self.dirty:
            return True
        return any(c.pid in self.exited or c.state != "running" or not c.ready for c in rt.containers.values())

    # ---- creating pods ---------------------------------------------------------------------
    def _free_ips(self, n: int) -> list[str]:
        """Free addresses after the last one handed out, wrapping around (as the host-local IPAM
        plugin does): a deleted pod's address is not reused at once, so conntrack entries and
        caches still naming it do not reach a new pod."""
        hosts = [str(h) for h in ipaddress.IPv4Network(self.node.pod_cidr).hosts()]
        used = {rt.ip for rt in self.pods.values() if rt.veth} | {self.node.bridge_ip}
        if not self.last_ip and used - {self.node.bridge_ip}:
            self.last_ip = max(hosts.index(ip) for ip in used if ip in hosts)
        order = hosts[self.last_ip + 1:] + hosts[: self.last_ip + 1]
        out = [ip for ip in order if ip not in used][:n]
        if out:
            self.last_ip = hosts.index(out[-1])
        return out

    def _create(self, pods: list[dict], snap: Snapshot) -> set[str]:
        host = [p for p in pods if p["spec"].get("hostNetwork")]
        done = {self._create_host_network(p) for p in host}
        pods = [p for p in pods if not p["spec"].get("hostNetwork")]
        if not pods:
            return done
        return done | self._create_wired(pods, snap)

    def _create_host_network(self, pod: dict) -> str:
        """hostNetwork: the pod shares its node's network namespace and address; nothing to wire."""
        uid = pod["metadata"]["uid"]
        rt = PodRT(uid=uid, namespace=pod["metadata"].get("namespace", "default"), name=pod["metadata"]["name"],
                   node=self.node.name, netns=self.node.netns, ip=self.node.ip, veth="", wired=True,
                   start_time=now_rfc3339())
        for c in pod["spec"].get("containers", []):
            rt.containers[c["name"]] = ContainerRT(name=c["name"])
        self.pods[uid] = rt
        self._write_files(rt, pod)
        return uid

    def _create_wired(self, pods: list[dict], snap: Snapshot) -> set[str]:
        ips = self._free_ips(len(pods))
        pods = pods[: len(ips)]
        rts = []
        for pod, ip in zip(pods, ips, strict=True):
            uid = pod["metadata"]["uid"]
            rt = PodRT(uid=uid, namespace=pod["metadata"].get("namespace", "default"), name=pod["metadata"]["name"],
                       node=self.node.name, netns=pod_netns(self.cfg.cluster, uid), ip=ip, veth=pod_veth(uid),
                       start_time=now_rfc3339())
            for c in pod["spec"].get("containers", []):
                rt.containers[c["name"]] = ContainerRT(name=c["name"])
            self.pods[uid] = rt
            rts.append(rt)
        # recorded before wiring: a crash in between leaves a record that says "not wired", never a stray namespace
        self._save({rt.uid for rt in rts})
        wiring = [PodWiring(rt.netns, rt.veth, rt.ip) for rt in rts]
        try:
            plan = plan_add(self.node, wiring)
            for b in plan.batches:
                kip.batch(b.lines, b.netns)
            for side in plan.pods:
                rtnl.configure_pod(side.netns, side.ip, side.prefix, side.gateway, side.gateway_mac)
        except Exception:
            # Undo and forget: the next sync wires these pods again from a clean slate.
            self._teardown(rts, rewire=True)
            for rt in rts:
                del self.pods[rt.uid]
            self._save({rt.uid for rt in rts})
            raise
        for rt, pod in zip(rts, pods, strict=True):
            rt.wired = True
            self._write_files(rt, pod)
        return {rt.uid for rt in rts}

    def _pod_dir(self, rt: PodRT) -> str:
        return f"{self.cfg.state_dir}/pods/{rt.uid}"

    def _write_files(self, rt: PodRT, pod: dict) -> None:
        d = self._pod_dir(rt)
        os.makedirs(d, exist_ok=True)
        with open(f"{d}/hosts", "w") as f:
            f.write(render_hosts(pod, rt.ip, self.cfg.domain))
        with open(f"{d}/resolv.conf", "w") as f:
            f.write(render_resolv(resolv_settings(pod, self.cfg.cluster_dns, self.cfg.domain, self.cfg.node_dns)))
        with open(f"{d}/hostname", "w") as f:
            f.write((pod["spec"].get("hostname") or rt.name) + "\n")

    def _remove_files(self, rt: PodRT) -> None:
        shutil.rmtree(self._pod_dir(rt), ignore_errors=True)

    def log_path(self, rt: PodRT, c: ContainerRT) -> str:
        d = f"{self.cfg.state_dir}/logs/{rt.namespace}_{rt.name}_{rt.uid}/{c.name}"
        os.makedirs(d, exist_ok=True)
        return f"{d}/{c.restarts}.log"

    def _teardown(self, rts: list[PodRT], rewire: bool = False) -> None:
        rts = [r for r in rts if r.veth]  # hostNetwork pods own no namespace: never delete the node's
        existing = set(kip.list_netns(f"kw-{self.cfg.cluster}-pod-"))
        if rewire:  # a half-made pod may hold a container its crashed agent never recorded
            kproc.kill_netns_processes([r.netns for r in rts if r.netns in existing])
        for b in plan_delete(self.node, [PodWiring(r.netns, r.veth, r.ip) for r in rts], existing, rewire):
            kip.batch(b.lines, b.netns, force=True)

    # ---- running containers ----------------------------------------------------------------
    def _start(self, rt: PodRT, c: ContainerRT, pod: dict, spec: dict, snap: Snapshot) -> None:
        try:
            env = build_env(pod, spec, snap, self.node.ip, rt.ip)
        except EnvError as e:
            c.state, c.reason, c.message = "waiting", "CreateContainerConfigError", str(e)
            self._event(rt, c, "Warning", "Failed", f"Error: {e}")
            return
        argv = command_of(spec)
        if argv is not None:
            argv = [expand(a, env) for a in argv]
        if argv is None:
            env = {**env, "POD_NAME": env.get("POD_NAME", rt.name), "POD_NAMESPACE": env.get("POD_NAMESPACE", rt.namespace),
                   "NODE_NAME": env.get("NODE_NAME", self.node.name), "POD_IP": env.get("POD_IP", rt.ip),
                   "KUBEWIRE_ZONE": self.cfg.zone}
        d = self._pod_dir(rt)
        spec_ = kproc.ContainerSpec(
            netns=rt.netns, hostname=self.node.name if not rt.veth else (pod["spec"].get("hostname") or rt.name),
            log_path=self.log_path(rt, c), env=env,
            files={f"{d}/hosts": "/etc/hosts", f"{d}/resolv.conf": "/etc/resolv.conf", f"{d}/hostname": "/etc/hostname"},
            argv=argv, target=None if argv else self.workload(container_ports(spec)),
            workdir=spec.get("workingDir") or "/", cgroup=self.cfg.cgroup,
            title=f"kubewire-container {rt.namespace}/{rt.name}/{c.name} on {self.node.name}",
        )
        c.pid = kproc.spawn(spec_)
        c.ticks = kproc.start_ticks(c.pid)
        self._watch(c.pid)
        self._event(rt, c, "Normal", "Pulled", f'Container image "{spec.get("image", "")}" already present on machine')
        self._event(rt, c, "Normal", "Created", f"Created container: {c.name}")
        self._event(rt, c, "Normal", "Started", f"Started container {c.name}")
        c.state, c.reason, c.message, c.exit_code = "running", "", "", None
        c.started_at = now_rfc3339()
        c.run_started = time.time()
        c.ready = False
        c.probe_ok = c.probe_fail = c.live_fail = 0
        probe = spec.get("readinessProbe") or {}
        c.next_probe = time.time() + float(probe.get("initialDelaySeconds", 0))
        live = spec.get("livenessProbe") or {}
        c.next_live = time.time() + float(live.get("initialDelaySeconds", 0))

    def _watch(self, pid: int) -> None:
        """Wake the loop the moment this process exits (a pidfd turns readable), without SIGCHLD:
        signals would also fire for every helper program and flood the loop's wake-up pipe."""
        try:
            loop = asyncio.get_running_loop()
            fd = os.pidfd_open(pid)
        except (RuntimeError, OSError):
            return

        def exited() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self.exited.add(pid)
            self.wake()

        loop.add_reader(fd, exited)

    def _exited(self, rt: PodRT, c: ContainerRT, code: int, reason: str | None = None, message: str = "") -> None:
        c.finished_at = now_rfc3339()
        reason = reason or ("Completed" if code == 0 else "Error")
        c.last = {"exitCode": code, "reason": reason, "startedAt": c.started_at, "finishedAt": c.finished_at,
                  "containerID": f"kubewire://{c.pid}"}
        c.state, c.reason, c.exit_code, c.ready, c.message = "terminated", reason, code, False, message

    def _run(self, rt: PodRT, pod: dict, snap: Snapshot, now: float) -> bool:
        """Containers up, restarted per restartPolicy with kubelet's back-off, probed. True if changed."""
        changed = False
        specs = {c["name"]: c for c in pod["spec"].get("containers", [])}
        policy = pod["spec"].get("restartPolicy", "Always")
        self.restart_policy[rt.uid] = policy
        own = [c.pid for c in rt.containers.values() if c.state == "running" and c.pid in self.exited]
        exits = dict(kproc.reap(own))
        soon = now + 1.0
        for name, c in rt.containers.items():
            spec = specs.get(name, {})
            if c.state == "running" and c.pid in self.exited:
                self.exited.discard(c.pid)
                if c.pid in exits:
                    self._exited(rt, c, exits[c.pid])
                    changed = True
                elif not kproc.alive(c.pid, c.ticks):  # adopted: not our child, its status is lost
                    self._exited(rt, c, 255, "Unknown", "exit status not observable (container was adopted)")
                    changed = True
            if c.state == "terminated" and rt.terminating_since is None:
                restart = policy == "Always" or (policy == "OnFailure" and (c.exit_code or 0) != 0)
                if restart:
                    # kubelet: the first restart is immediate, then 10 s doubling to 5 min; a run of
                    # 10 min resets the back-off.
                    steady = c.run_started and now - c.run_started > BACKOFF_RESET
                    delay = 0.0 if c.restarts == 0 or steady else min(MAX_BACKOFF, self.cfg.backoff * 2 ** (c.restarts - 1))
                    c.next_start = now + delay
                    c.state, c.reason = "waiting", "CrashLoopBackOff" if delay else "ContainerCreating"
                    c.message = f"back-off {int(delay)}s restarting failed container={name} pod={rt.name}_{rt.namespace}({rt.uid})" if delay else ""
                    c.restarts += 1
                    changed = True
                    if delay:
                        self._event(rt, c, "Warning", "BackOff",
                                    f"Back-off restarting failed container {name} in pod {rt.name}_{rt.namespace}({rt.uid})")
            if c.state == "waiting" and now >= c.next_start and rt.terminating_since is None:
                self._start(rt, c, pod, spec, snap)
                changed = True
            if c.state == "running":
                changed |= self._probe(rt, c, spec, now)
                for probe, at in ((spec.get("readinessProbe"), c.next_probe), (spec.get("livenessProbe"), c.next_live)):
                    if probe:
                        soon = min(soon, at)
            elif c.state == "waiting":
                soon = min(soon, c.next_start)
        self.next_visit[rt.uid] = soon
        return changed

    def _probe(self, rt: PodRT, c: ContainerRT, spec: dict, now: float) -> bool:
        probe = spec.get("readinessProbe")
        live = spec.get("livenessProbe")
        if live and now >= c.next_live and (rt.uid, c.name, "live") not in self.probing:
            c.next_live = now + float(live.get("periodSeconds", 10))
            self._launch(rt, c, spec, live, "live")
        if probe:
            if now >= c.next_probe and (rt.uid, c.name, "ready") not in self.probing:
                c.next_probe = now + float(probe.get("periodSeconds", 10))
                self._launch(rt, c, spec, probe, "ready")
            return False
        # No probe: ready once every declared port listens in the pod (asked of the kernel via sock_diag).
        key = (rt.uid, c.name)
        if now - self.last_listen_check.get(key, 0) < (2.0 if c.ready else 0.05):
            return False
        self.last_listen_check[key] = now
        ok = sockdiag.listening(rt.netns, container_ports(spec)) if command_of(spec) is None else True
        if ok != c.ready:
            c.ready = ok
            return True
        return False

    def _launch(self, rt: PodRT, c: ContainerRT, spec: dict, probe: dict, which: str) -> None:
        key = (rt.uid, c.name, which)
        self.probing.add(key)
        pid = c.pid

        async def go() -> None:
            errored = False
            try:
                ok, _msg = await self._run_probe(rt, spec, probe, pid)
            except Exception as e:  # noqa: BLE001
                ok, _msg, errored = False, str(e), True
            finally:
                self.probing.discard(key)
            cur = self.pods.get(rt.uid)
            cc = cur.containers.get(c.name) if cur else None
            if cc is None or cc.pid != pid or cc.state != "running":
                return
            if not ok:
                kind = "Readiness" if which == "ready" else "Liveness"
                how = "errored" if errored else "failed"
                self._event(cur, cc, "Warning", "Unhealthy", f"{kind} probe {how}: {_msg}".strip())
            if which == "ready":
                if ok:
                    cc.probe_ok, cc.probe_fail = cc.probe_ok + 1, 0
                    if cc.probe_ok >= int(probe.get("successThreshold", 1)) and not cc.ready:
                        cc.ready = True
                        self.dirty.add(rt.uid)
                else:
                    cc.probe_fail, cc.probe_ok = cc.probe_fail + 1, 0
                    if cc.probe_fail >= int(probe.get("failureThreshold", 3)) and cc.ready:
                        cc.ready = False
                        self.dirty.add(rt.uid)
            else:
                cc.live_fail = 0 if ok else cc.live_fail + 1
                if cc.live_fail >= int(probe.get("failureThreshold", 3)):
                    cc.live_fail = 0
                    restarts = ", will be restarted" if self.restart_policy.get(rt.uid, "Always") != "Never" else ""
                    self._event(cur, cc, "Normal", "Killing", f"Container {cc.name} failed liveness probe{restarts}")
                    kproc.signal_group(cc.pid, cc.ticks, signal.SIGKILL)
            self.wake()

        asyncio.get_running_loop().create_task(go())

    async def _run_probe(self, rt: PodRT, spec: dict, probe: dict, pid: int) -> tuple[bool, str]:
        timeout = float(probe.get("timeoutSeconds", 1))
        named = {p.get("name"): int(p["containerPort"]) for p in spec.get("ports") or [] if p.get("name")}

        def port_of(p: object) -> int:
            return int(p) if str(p).isdigit() else named.get(str(p), 0)

        if "httpGet" in probe:
            h = probe["httpGet"]
            return await kprobe.http_get(self.node.netns, h.get("host") or rt.ip, port_of(h.get("port")),
                                         h.get("path", "/"), h.get("scheme", "HTTP"), h.get("httpHeaders") or [], timeout)
        if "tcpSocket" in probe:
            t = probe["tcpSocket"]
            return await kprobe.tcp(self.node.netns, t.get("host") or rt.ip, port_of(t.get("port")), timeout)
        if "exec" in probe:
            return await kprobe.exec_in(pid, [str(x) for x in probe["exec"].get("command", [])], timeout)
        return True, ""

    # ---- deleting pods ---------------------------------------------------------------------
    def _terminate(self, rt: PodRT, pod: dict, now: float) -> bool:
        """preStop hooks, then SIGTERM, then SIGKILL once the grace period is over (it covers the
        hooks too, as upstream's); True once every container is gone. Readiness keeps being
        reported while the pod terminates (upstream keeps readiness probes running), so
        EndpointSlices can still show a terminating pod as serving."""
        grace = float(pod["metadata"].get("deletionGracePeriodSeconds", 30))
        running = [c for c in rt.containers.values() if c.state == "running"]
        exits = dict(kproc.reap([c.pid for c in running]))
        for c in running:
            if c.pid in exits:
                self._exited(rt, c, exits[c.pid])
        running = [c for c in running if c.pid not in exits and kproc.alive(c.pid, c.ticks)]
        specs = {c["name"]: c for c in pod["spec"].get("containers", [])}
        if rt.terminating_since is None:
            rt.terminating_since = now
            self.dirty.add(rt.uid)
            if grace > 0:
                for c in running:
                    hook = ((specs.get(c.name) or {}).get("lifecycle") or {}).get("preStop")
                    if hook:
                        self._pre_stop(rt, c, specs[c.name], hook)
        if rt.killed:
            return not running
        if now - rt.terminating_since >= grace:
            rt.killed = True
            for c in running:
                kproc.signal_group(c.pid, c.ticks, signal.SIGKILL)
            return not running
        for c in running:
            if c.name not in self.stopping.get(rt.uid, set()) and (rt.uid, c.name, "preStop") not in self.probing:
                self.stopping.setdefault(rt.uid, set()).add(c.name)
                self._event(rt, c, "Normal", "Killing", f"Stopping container {c.name}")
                kproc.signal_group(c.pid, c.ticks, signal.SIGKILL if grace <= 0 else signal.SIGTERM)
        if not running:
            self.stopping.pop(rt.uid, None)
        return not running

    def _pre_stop(self, rt: PodRT, c: ContainerRT, spec: dict, hook: dict) -> None:
        """Run a preStop hook (exec, httpGet, sleep) as kubelet does, before the container's SIGTERM."""
        key = (rt.uid, c.name, "preStop")
        self.probing.add(key)
        pid = c.pid

        async def go() -> None:
            try:
                if "sleep" in hook:
                    await asyncio.sleep(float(hook["sleep"].get("seconds", 0)))
                elif "exec" in hook or "httpGet" in hook:
                    await self._run_probe(rt, spec, {**hook, "timeoutSeconds": 3600}, pid)
            except Exception:  # noqa: BLE001 - a failing hook does not stop termination
                pass
            finally:
                self.probing.discard(key)
                self.wake()

        asyncio.get_running_loop().create_task(go())

    def shutdown_all(self) -> None:
        """For `down`: every container killed now, every pod namespace gone."""
        rts = list(self.pods.values())
        for rt in rts:
            for c in rt.containers.values():
                kproc.signal_group(c.pid, c.ticks, signal.SIGKILL)
        for rt in rts:
            kproc.reap([c.pid for c in rt.containers.values()])
        self._teardown(rts)
        self.pods.clear()

