"""Kernel tests: real clusters in network namespaces this test run creates and removes.

Each cluster gets a unique name, so its namespaces (kw-<name>-...) are ours alone; teardown removes
that cluster by name (`kubewire down --name`), never by pattern.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Every daemon these tests start compares each of its cached snapshots with a full read of the
# store, and stops if they differ (kubewire.store.db): no agent or controller may modify the
# objects a snapshot shares with the next one.
os.environ["KUBEWIRE_VERIFY_SNAPSHOTS"] = "1"
KW = [sys.executable, "-m", "kubewire.cli.main"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("tests/kernel create network namespaces: run them as root (scripts/test.sh)")


@dataclass
class Cluster:
    name: str
    tmp: Path

    def kw(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        p = subprocess.run([*KW, "--name", self.name, *args], capture_output=True, text=True, input=input,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"kubewire {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        return p

    def json(self, *args: str) -> dict:
        return json.loads(self.kw(*args, "-o", "json").stdout)

    def apply(self, yaml_text: str) -> subprocess.CompletedProcess:
        return self.kw("apply", "-f", "-", input=yaml_text)

    def pods(self, ns: str = "default", selector: str | None = None) -> list[dict]:
        args = ["get", "pods", "-n", ns] + (["-l", selector] if selector else [])
        return [p for p in self.json(*args)["items"] if "deletionTimestamp" not in p["metadata"]]

    def wait(self, what: str, cond, timeout: float = 30.0, interval: float = 0.1):  # noqa: ANN001
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = cond()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")

    def ready_pods(self, ns: str, selector: str, n: int, timeout: float = 30.0) -> list[dict]:
        def ok():  # noqa: ANN202
            ps = self.pods(ns, selector)
            ready = [p for p in ps if is_ready(p)]
            return ready if len(ready) == n and len(ps) == n else None

        return self.wait(f"{n} ready pods {selector} in {ns}", ok, timeout)

    def netns(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir("/run/netns") if n.startswith(f"kw-{self.name}-"))
        except FileNotFoundError:
            return []


def is_ready(p: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))


def new_name() -> str:
    return "t" + uuid.uuid4().hex[:7]


def make_cluster(tmp: Path, config: str | None = None, *up_args: str) -> Cluster:
    c = Cluster(new_name(), tmp)
    args = ["up", "--no-demo"]
    if config:
        cfg = tmp / f"{c.name}-cluster.yaml"
        cfg.write_text(config)
        args += ["--config", str(cfg)]
    c.kw(*args, *up_args)
    return c


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(tmp_path)
    try:
        yield c
    finally:
        c.kw("down", check=False)


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = make_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.kw("down", check=False)


def deployment(name: str, replicas: int = 1, ns: str = "default", port: int = 8080, extra_spec: str = "",
               container_extra: str = "", strategy: str = "") -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
{strategy}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
{extra_spec}
      containers:
      - name: main
        image: agnhost
        ports:
        - containerPort: {port}
{container_extra}
"""
