"""Pod status as kubelet reports it, computed from the agent's runtime record."""

from __future__ import annotations

from kubewire.kubelet.runtime import ContainerRT, PodRT


def container_status(c: ContainerRT, spec: dict) -> dict:
    if c.state == "running":
        state = {"running": {"startedAt": c.started_at}}
    elif c.state == "terminated":
        state = {"terminated": {"exitCode": c.exit_code or 0, "reason": c.reason,
                                "startedAt": c.started_at, "finishedAt": c.finished_at,
                                "containerID": f"kubewire://{c.pid}"}}
        if c.message:
            state["terminated"]["message"] = c.message
    else:
        state = {"waiting": {"reason": c.reason}}
        if c.message:
            state["waiting"]["message"] = c.message
    out = {
        "name": c.name,
        "image": spec.get("image", ""),
        "imageID": "",
        "ready": c.ready,
        "restartCount": c.restarts,
        "started": c.state == "running",
        "state": state,
        "lastState": {"terminated": c.last} if c.last else {},
    }
    if c.pid:
        out["containerID"] = f"kubewire://{c.pid}"
    return out


def pod_phase(rt: PodRT, policy: str) -> str:
    cs = list(rt.containers.values())
    if not rt.wired or any(c.state == "waiting" and not c.started_at and c.restarts == 0 for c in cs):
        return "Pending"
    if all(c.state == "terminated" for c in cs):
        failed = any((c.exit_code or 0) != 0 for c in cs)
        if policy == "Never":
            return "Failed" if failed else "Succeeded"
        if policy == "OnFailure" and not failed:
            return "Succeeded"
    return "Running"


def _cond(old: list[dict], ctype: str, ok: bool, now: str, reason: str | None = None) -> dict:
    status = "True" if ok else "False"
    prev = next((c for c in old if c.get("type") == ctype), None)
    ts = prev["lastTransitionTime"] if prev and prev.get("status") == status else now
    c = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": ts}
    if reason and not ok:
        c["reason"] = reason
    return c


def pod_status(pod: dict, rt: PodRT, host_ip: str, now: str) -> dict:
    spec = pod.get("spec", {})
    old = pod.get("status", {}).get("conditions", [])
    policy = spec.get("restartPolicy", "Always")
    phase = pod_phase(rt, policy)
    specs = {c["name"]: c for c in spec.get("containers", [])}
    all_ready = bool(rt.containers) and all(c.ready for c in rt.containers.values())
    done = phase in ("Succeeded", "Failed")
    ready = all_ready and not done
    reason = None if ready else ("PodCompleted" if done else "ContainersNotReady")
    st: dict = {
        "phase": phase,
        "conditions": [
            _cond(old, "PodReadyToStartContainers", rt.wired, now),
            _cond(old, "Initialized", True, now),
            _cond(old, "Ready", ready, now, reason),
            _cond(old, "ContainersReady", ready, now, reason),
            _cond(old, "PodScheduled", True, now),
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "qosClass": "BestEffort",
    }
    if rt.wired:
        st["podIP"] = rt.ip
        st["podIPs"] = [{"ip": rt.ip}]
    if rt.start_time:
        st["startTime"] = rt.start_time
    st["containerStatuses"] = [container_status(c, specs.get(n, {})) for n, c in rt.containers.items()]
    return st
