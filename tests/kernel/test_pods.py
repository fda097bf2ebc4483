"""Pods and workloads on a real cluster: connectivity, readiness, restarts, deletion, scaling,
rolling updates, bad input, and a killed control loop."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from conftest import Cluster, deployment, is_ready, make_cluster


def pod_named(c: Cluster, ns: str, name: str) -> dict:
    return c.json("get", "pod", name, "-n", ns)


def curl_json(c: Cluster, url: str, from_: str | None = None, max_time: float = 3) -> dict:
    args = ["curl", url, "-o", "json", "--max-time", str(max_time)] + (["--from", from_] if from_ else [])
    return json.loads(c.kw(*args, check=False).stdout)


def zone_of(c: Cluster, node: str) -> str:
    return c.json("get", "node", node)["metadata"]["labels"]["topology.kubernetes.io/zone"]


def test_pod_to_pod_across_nodes_and_zones_and_internet_isolation(shared_cluster: Cluster) -> None:
    c = shared_cluster
    c.apply(deployment("spread", replicas=3))
    pods = c.ready_pods("default", "app=spread", 3)
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert len(nodes) == 3, "default scheduling spreads a Deployment over the nodes"
    for src in pods:
        for dst in pods:
            if src is dst:
                continue
            r = curl_json(c, f"http://{dst['status']['podIP']}:8080/hello", f"default/{src['metadata']['name']}")
            assert r["status"] == 200
            assert r["body"]["pod"] == dst["metadata"]["name"]
            assert r["body"]["node"] == dst["spec"]["nodeName"]
            # direct routing, no masquerade: the server sees the client pod's own address
            assert r["body"]["client"].split(":")[0] == src["status"]["podIP"]
    zones = {zone_of(c, n) for n in nodes}
    assert len(zones) == 2, "the three pods cover both zones, so some pairs above crossed zones"
    # the internet client cannot reach pod IPs: the edge has no route to them
    r = curl_json(c, f"http://{pods[0]['status']['podIP']}:8080/", max_time=2)
    assert r["status"] == 0 and r["exitCode"] != 0


def test_pod_sees_its_own_hosts_resolv_conf_hostname_and_env(shared_cluster: Cluster) -> None:
    c = shared_cluster
    c.apply("""
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {MODE: fast}
---
apiVersion: v1
kind: Pod
metadata: {name: shell, labels: {app: shell}}
spec:
  hostname: box
  dnsConfig:
    options: [{name: ndots, value: "2"}]
  containers:
  - name: sh
    image: busybox
    command: ["sh", "-c", "echo name=$POD_NAME ip=$POD_IP node=$NODE_NAME mode=$MODE greeting=$GREETING; exec sleep 3600"]
    env:
    - {name: GREETING, value: hello}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: NODE_NAME
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    - name: MODE
      valueFrom: {configMapKeyRef: {name: settings, key: MODE}}
""")
    p = c.ready_pods("default", "app=shell", 1)[0]
    ip, node = p["status"]["podIP"], p["spec"]["nodeName"]
    resolv = c.kw("exec", "shell", "--", "cat", "/etc/resolv.conf").stdout
    assert resolv == ("search default.svc.cluster.local svc.cluster.local cluster.local\n"
                      "nameserver 10.96.0.10\noptions ndots:2\n")
    hosts = c.kw("exec", "shell", "--", "cat", "/etc/hosts").stdout
    assert hosts.rstrip().endswith(f"{ip}\tbox")
    assert c.kw("exec", "shell", "--", "hostname").stdout.strip() == "box"
    addrs = c.kw("exec", "shell", "--", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert f"inet {ip}/24" in addrs
    c.wait("container output", lambda: "name=" in c.kw("logs", "shell").stdout)
    assert c.kw("logs", "shell").stdout.strip() == f"name=shell ip={ip} node={node} mode=fast greeting=hello"
    # the machine's own files are untouched by the pod's bind mounts
    assert "10.96.0.10" not in Path("/etc/resolv.conf").read_text()


def test_readiness_probes_gate_ready(shared_cluster: Cluster) -> None:
    c = shared_cluster
    probe = """        readinessProbe:
          {kind}
          periodSeconds: 1"""
    c.apply(deployment("ready-http", container_extra=probe.format(kind="httpGet: {path: /healthz, port: 8080}")))
    c.apply(deployment("unready-http", container_extra=probe.format(kind="httpGet: {path: /status/503, port: 8080}")))
    c.apply(deployment("ready-tcp", container_extra=probe.format(kind="tcpSocket: {port: 8080}")))
    c.apply(deployment("unready-tcp", container_extra=probe.format(kind="tcpSocket: {port: 9999}")))
    c.apply(deployment("ready-exec", container_extra=probe.format(kind="exec: {command: [test, -e, /etc/hosts]}")))
    c.apply(deployment("unready-exec", container_extra=probe.format(kind="exec: {command: [test, -e, /nonexistent]}")))
    for name in ("ready-http", "ready-tcp", "ready-exec"):
        c.ready_pods("default", f"app={name}", 1)
    time.sleep(3)  # several probe periods
    for name in ("unready-http", "unready-tcp", "unready-exec"):
        ps = c.pods("default", f"app={name}")
        assert len(ps) == 1 and ps[0]["status"]["phase"] == "Running" and not is_ready(ps[0]), name
    d = c.json("get", "deployment", "unready-http")
    assert d["status"].get("readyReplicas", 0) == 0


def test_killed_container_restarts_with_count(shared_cluster: Cluster) -> None:
    c = shared_cluster
    c.apply(deployment("crashy"))
    p = c.ready_pods("default", "app=crashy", 1)[0]
    pid = int(p["status"]["containerStatuses"][0]["containerID"].split("://")[1])
    os.kill(pid, signal.SIGKILL)

    def restarted() -> dict | None:
        q = pod_named(c, "default", p["metadata"]["name"])
        cs = q["status"]["containerStatuses"][0]
        return q if cs["restartCount"] == 1 and is_ready(q) else None

    q = c.wait("restart", restarted, timeout=15)
    cs = q["status"]["containerStatuses"][0]
    assert cs["lastState"]["terminated"]["exitCode"] == 137
    assert int(cs["containerID"].split("://")[1]) != pid
    assert q["metadata"]["uid"] == p["metadata"]["uid"] and q["status"]["podIP"] == p["status"]["podIP"]


def test_restart_policy_never_and_on_failure(shared_cluster: Cluster) -> None:
    c = shared_cluster
    c.apply("""
apiVersion: v1
kind: Pod
metadata: {name: once-ok}
spec:
  restartPolicy: Never
  containers: [{name: main, image: busybox, command: [sh, -c, "exit 0"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: once-fail}
spec:
  restartPolicy: Never
  containers: [{name: main, image: busybox, command: [sh, -c, "exit 3"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: retry}
spec:
  restartPolicy: OnFailure
  containers: [{name: main, image: busybox, command: [sh, -c, "exit 1"]}]
""")
    c.wait("Succeeded", lambda: pod_named(c, "default", "once-ok")["status"]["phase"] == "Succeeded")
    c.wait("Failed", lambda: pod_named(c, "default", "once-fail")["status"]["phase"] == "Failed")
    st = pod_named(c, "default", "once-fail")["status"]["containerStatuses"][0]
    assert st["state"]["terminated"]["exitCode"] == 3 and st["restartCount"] == 0
    # OnFailure restarts with kubelet's back-off: immediately, then after the back-off
    c.wait("restarted", lambda: pod_named(c, "default", "retry")["status"]["containerStatuses"][0]["restartCount"] >= 1)
    st = pod_named(c, "default", "retry")["status"]
    assert st["phase"] == "Running"


def test_delete_pod_removes_everything_it_had(shared_cluster: Cluster) -> None:
    c = shared_cluster
    c.apply("""
apiVersion: v1
kind: Pod
metadata: {name: doomed, labels: {app: doomed}}
spec:
  containers: [{name: main, image: agnhost, ports: [{containerPort: 8080}]}]
""")
    p = c.ready_pods("default", "app=doomed", 1)[0]
    pid = int(p["status"]["containerStatuses"][0]["containerID"].split("://")[1])
    netns = f"kw-{c.name}-pod-{p['metadata']['uid'][:13]}"
    assert netns in c.netns()
    t0 = time.time()
    c.kw("delete", "pod", "doomed")
    assert time.time() - t0 < 5, "the echo server ends on SIGTERM, well within the grace period"
    assert c.json("get", "pods")["items"] == [] or all(x["metadata"]["name"] != "doomed" for x in c.json("get", "pods")["items"])
    assert netns not in c.netns()
    assert not Path(f"/proc/{pid}/cmdline").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert not Path(f"/run/kubewire/{c.name}/pods/{p['metadata']['uid']}").exists()


def test_graceful_deletion_sigterm_then_sigkill(shared_cluster: Cluster) -> None:
    c = shared_cluster
    c.apply("""
apiVersion: v1
kind: Pod
metadata: {name: stubborn, labels: {app: stubborn}}
spec:
  terminationGracePeriodSeconds: 2
  containers: [{name: main, image: busybox, command: [sh, -c, "trap '' TERM; echo started; sleep 600"]}]
""")
    c.wait("running", lambda: pod_named(c, "default", "stubborn")["status"]["phase"] == "Running")
    c.wait("trap set", lambda: "started" in c.kw("logs", "stubborn").stdout)
    t0 = time.time()
    c.kw("delete", "pod", "stubborn")
    took = time.time() - t0
    assert 1.8 <= took < 6, f"a process ignoring SIGTERM is killed after the 2 s grace period (took {took:.1f}s)"
    assert c.kw("get", "pod", "stubborn", check=False).returncode != 0


def test_scale_up_and_down(shared_cluster: Cluster) -> None:
    c = shared_cluster
    c.apply(deployment("scaled", replicas=2))
    c.ready_pods("default", "app=scaled", 2)
    c.kw("scale", "deployment/scaled", "--replicas", "5")
    pods = c.ready_pods("default", "app=scaled", 5)
    assert len({p["status"]["podIP"] for p in pods}) == 5
    c.kw("scale", "deployment", "scaled", "--replicas", "1")
    c.ready_pods("default", "app=scaled", 1)
    c.wait("terminated pods gone", lambda: len(c.json("get", "pods", "-l", "app=scaled")["items"]) == 1)
    d = c.json("get", "deployment", "scaled")
    assert (d["status"]["replicas"], d["status"]["readyReplicas"]) == (1, 1)


def test_rolling_update_replaces_pods_within_surge_and_unavailability(shared_cluster: Cluster) -> None:
    c = shared_cluster
    strategy = """  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}"""
    probe = """        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1"""
    c.apply(deployment("rolling", replicas=3, strategy=strategy, container_extra=probe))
    old = {p["metadata"]["name"] for p in c.ready_pods("default", "app=rolling", 3)}
    c.apply(deployment("rolling", replicas=3, strategy=strategy, container_extra=probe + """
        env: [{name: VERSION, value: "2"}]"""))
    most, least = 0, 99
    deadline = time.time() + 40
    while time.time() < deadline:
        ps = c.json("get", "pods", "-l", "app=rolling")["items"]
        live = [p for p in ps if "deletionTimestamp" not in p["metadata"]]
        most = max(most, len(live))
        least = min(least, sum(1 for p in live if is_ready(p)))
        names = {p["metadata"]["name"] for p in live}
        if len(live) == 3 and not names & old and all(is_ready(p) for p in live):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("rollout did not finish")
    assert most <= 4, "maxSurge 1: never more than 4 pods"
    assert least >= 3, "maxUnavailable 0: never fewer than 3 ready"
    rss = c.json("get", "replicasets", "-l", "app=rolling")["items"]
    assert sorted(r["spec"]["replicas"] for r in rss) == [0, 3]
    d = c.json("get", "deployment", "rolling")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"


def test_bad_manifests_are_rejected_and_change_nothing(shared_cluster: Cluster, tmp_path: Path) -> None:
    c = shared_cluster
    before = c.json("get", "deployments,pods,configmaps", "-A")
    bad = tmp_path / "bad.yaml"
    bad.write_text("""apiVersion: v1
kind: ConfigMap
metadata: {name: fine}
data: {a: b}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  replicas: 1
  selector: {matchLabels: {app: broken}}
  template:
    metadata: {labels: {app: broken}}
    spec:
      containers:
      - name: main
        image: agnhost
        ports: [{containerPort: 70000}]
""")
    p = c.kw("apply", "-f", str(bad), check=False)
    assert p.returncode != 0
    assert str(bad) in p.stderr and "document 1" in p.stderr
    assert "spec.template.spec.containers[0].ports[0].containerPort" in p.stderr and "70000" in p.stderr
    p = c.kw("apply", "-f", "-", input="apiVersion: v1\nkind: Gadget\nmetadata: {name: x}\n", check=False)
    assert p.returncode != 0 and "Gadget" in p.stderr and "apps/v1" in p.stderr  # lists the supported kinds
    p = c.kw("apply", "-f", "-", input="apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: a, image: b}]}\n", check=False)
    assert p.returncode != 0 and "metadata.name" in p.stderr and "Bad_Name" in p.stderr
    immut = deployment("rolling", replicas=3).replace("matchLabels: {app: rolling}", "matchLabels: {app: rolling, v: x}") \
        .replace("labels: {app: rolling}", "labels: {app: rolling, v: x}")
    p = c.kw("apply", "-f", "-", input=immut, check=False)
    assert p.returncode != 0 and "spec.selector" in p.stderr and "immutable" in p.stderr
    after = c.json("get", "deployments,pods,configmaps", "-A")
    strip = lambda lst: sorted((o["kind"], o["metadata"]["name"], o["metadata"]["resourceVersion"]) for o in lst["items"]  # noqa: E731
                               if o["kind"] != "Pod")
    assert strip(after) == strip(before)
    assert not any(o["metadata"]["name"] == "fine" for o in after["items"])


def test_directory_and_stdin_and_delete_f(shared_cluster: Cluster, tmp_path: Path) -> None:
    c = shared_cluster
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n")
    (tmp_path / "b.yaml").write_text(deployment("web", ns="team-a"))
    out = c.kw("apply", "-f", str(tmp_path)).stdout
    assert "namespace/team-a created" in out and "deployment.apps/web created" in out
    c.ready_pods("team-a", "app=web", 1)
    assert "deployment.apps/web unchanged" in c.kw("apply", "-f", str(tmp_path / "b.yaml")).stdout
    c.kw("delete", "-f", str(tmp_path / "b.yaml"))
    c.wait("pods of a deleted deployment collected", lambda: c.json("get", "pods", "-n", "team-a")["items"] == [])
    c.kw("delete", "namespace", "team-a")
    c.wait("namespace gone", lambda: c.kw("get", "namespace", "team-a", check=False).returncode != 0)


def test_node_selector_and_affinity(shared_cluster: Cluster) -> None:
    c = shared_cluster
    nodes = c.json("get", "nodes")["items"]
    target = nodes[1]["metadata"]["name"]
    zone_b = nodes[1]["metadata"]["labels"]["topology.kubernetes.io/zone"]
    c.apply(deployment("pinned", replicas=2, extra_spec=f"      nodeSelector: {{kubernetes.io/hostname: {target}}}"))
    assert {p["spec"]["nodeName"] for p in c.ready_pods("default", "app=pinned", 2)} == {target}
    aff = f"""      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {{key: topology.kubernetes.io/zone, operator: NotIn, values: [{zone_b}]}}"""
    c.apply(deployment("notb", replicas=3, extra_spec=aff))
    for p in c.ready_pods("default", "app=notb", 3):
        node = next(n for n in nodes if n["metadata"]["name"] == p["spec"]["nodeName"])
        assert node["metadata"]["labels"]["topology.kubernetes.io/zone"] != zone_b
    c.apply(deployment("nowhere", extra_spec="      nodeSelector: {disk: floppy}"))
    c.wait("unschedulable", lambda: any(
        cond.get("reason") == "Unschedulable" for p in c.pods("default", "app=nowhere")
        for cond in p["status"].get("conditions", [])))


def test_controller_sigkill_then_up_converges(tmp_path: Path) -> None:
    c = make_cluster(tmp_path)
    try:
        c.apply(deployment("steady", replicas=3))
        c.ready_pods("default", "app=steady", 3)
        daemon = int(Path(f"/run/kubewire/{c.name}/daemon.pid").read_text())
        c.kw("scale", "deployment/steady", "--replicas", "12")
        time.sleep(0.15)  # mid-way through creating and wiring pods
        os.kill(daemon, signal.SIGKILL)
        time.sleep(0.3)
        c.kw("up", "--no-demo")
        pods = c.ready_pods("default", "app=steady", 12, timeout=40)
        assert len({p["metadata"]["name"] for p in pods}) == 12
        assert len({p["status"]["podIP"] for p in pods}) == 12
        pod_ns = [n for n in c.netns() if "-pod-" in n]
        every_pod = c.json("get", "pods", "-A")["items"]  # the add-on pods too
        assert sorted(pod_ns) == sorted(f"kw-{c.name}-pod-{p['metadata']['uid'][:13]}" for p in every_pod)
        assert len(every_pod) == 12 + 2 + 2  # and the add-ons: cluster DNS, ingress-nginx
        # every pod's echo server answers from its own address
        for p in pods[:4]:
            r = curl_json(c, f"http://{p['status']['podIP']}:8080/", f"default/{pods[-1]['metadata']['name']}")
            assert r["body"]["pod"] == p["metadata"]["name"]
        new_daemon = int(Path(f"/run/kubewire/{c.name}/daemon.pid").read_text())
        assert new_daemon != daemon
    finally:
        c.kw("down")
    assert c.netns() == []


def test_cli_label_describe_logs_curl_and_doctor(shared_cluster: Cluster) -> None:
    c = shared_cluster
    c.apply(deployment("cli"))
    p = c.ready_pods("default", "app=cli", 1)[0]
    name = p["metadata"]["name"]
    assert c.kw("label", "pod", name, "tier=edge").stdout.strip() == f"pod/{name} labeled"
    assert [x["metadata"]["name"] for x in c.pods("default", "tier=edge")] == [name]
    assert c.kw("label", "pod", name, "tier=core", check=False).returncode != 0  # --overwrite needed
    c.kw("label", "pod", name, "tier-")
    assert c.pods("default", "tier=edge") == []
    d = c.kw("describe", "pod", name).stdout
    assert f"IP:             {p['status']['podIP']}" in d and "Controlled By:  ReplicaSet/" in d
    wide = c.kw("get", "pods", "-o", "wide").stdout
    assert p["status"]["podIP"] in wide and p["spec"]["nodeName"] in wide
    # a request from another pod, over HTTP/2 (h2c), with method, body and header, and timings
    other = c.pods("default", "app=spread")[0]["metadata"]["name"] if c.pods("default", "app=spread") else name
    r = json.loads(c.kw("curl", f"http://{p['status']['podIP']}:8080/api", "--from", f"default/{other}", "--http2",
                        "-X", "PUT", "-d", "payload", "-H", "X-Trace: abc", "-o", "json").stdout)
    assert r["status"] == 200 and r["httpVersion"] == "2"
    assert (r["body"]["method"], r["body"]["body"], r["body"]["headers"]["x-trace"]) == ("PUT", "payload", "abc")
    assert r["timings"]["total"] > 0
    logs = c.kw("logs", name).stdout
    assert "PUT /api" in logs  # the echo server's access log, via `kubewire logs`
    assert c.kw("logs", "deploy/cli").stdout == logs
    doc = c.kw("doctor", check=False)
    assert "[ok] network namespaces" in doc.stdout and "SCTP" in doc.stdout
