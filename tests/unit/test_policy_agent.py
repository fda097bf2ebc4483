"""The per-node policy agent with the kernel replaced by a recorder: what it sends, when it sends
nothing, how it recovers from a failed transaction and how it backs off."""

from __future__ import annotations

import pytest
from policy_world import ALL, NAMESPACES, namespace_object, pod_object, policy

from kubewire.cluster.addressing import NodePlan
from kubewire.controllers.types import Snapshot
from kubewire.kernel.run import CommandError
from kubewire.netpol import agent as agent_mod
from kubewire.netpol.agent import PolicyAgent

NODE = NodePlan("n0", 0, "z", 0, "r", "kw-t-node-n0", "172.18.1.10", "172.18.1.1", "10.244.0.0/24", "10.244.0.1", "p0")
DENY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
"""


def snapshot(*policies: str, labels: dict | None = None) -> Snapshot:
    objs = [pod_object(k) for k in ALL] + [namespace_object(n, labels) for n in NAMESPACES]
    for i, text in enumerate(policies):
        p = policy(text)
        p["metadata"]["resourceVersion"] = str(i + 1)
        objs.append(p)
    return Snapshot.of(objs)


class Kernel:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.fail: list[bool] = []

    def apply(self, netns: str, payload: str) -> None:
        assert netns == "kw-t-node-n0"
        self.sent.append(payload)
        if self.fail and self.fail.pop(0):
            raise CommandError(["nft", "-f", "-"], 1, "Error: No such file or directory")


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Kernel:
    k = Kernel()
    monkeypatch.setattr(agent_mod.nft, "apply", k.apply)
    return k


def test_first_sync_replaces_then_only_differences_are_sent(kernel: Kernel) -> None:
    a = PolicyAgent(NODE)
    assert a.sync(snapshot()) is True  # whatever an earlier run left is cleared, and nothing is left
    assert kernel.sent == ["add table inet kubewire-policy\ndelete table inet kubewire-policy\n"]
    assert a.sync(snapshot()) is False  # same state: no transaction at all
    assert a.sync(snapshot(DENY)) is True
    assert kernel.sent[-1].startswith("add table inet kubewire-policy\ndelete table inet kubewire-policy\ntable inet")
    assert a.last_kind == "update"
    assert a.sync(snapshot(DENY, labels={"team": "blue"})) is False  # nothing this node enforces changed
    assert len(kernel.sent) == 2
    assert a.sync(snapshot()) is True
    assert kernel.sent[-1] == "delete table inet kubewire-policy\n"


def test_a_failed_update_falls_back_to_a_full_replace(kernel: Kernel) -> None:
    a = PolicyAgent(NODE)
    a.sync(snapshot(DENY))
    kernel.fail = [True, False]  # the table was removed by hand: the update fails, the replace works
    a.sync(snapshot(DENY, DENY.replace("name: deny", "name: deny2")))
    assert kernel.sent[-2].startswith("add chain inet kubewire-policy ingress-rules-")  # the update, refused
    assert kernel.sent[-1].startswith("add table inet kubewire-policy\ndelete table inet kubewire-policy\n")
    assert a.last_kind == "replace" and a.failures == 0


def test_failures_back_off_instead_of_retrying_every_step(kernel: Kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(agent_mod.time, "monotonic", lambda: now[0])
    a = PolicyAgent(NODE)
    kernel.fail = [True, True, False]
    with pytest.raises(CommandError):
        a.sync(snapshot(DENY))
    assert a.sync(snapshot(DENY)) is False and len(kernel.sent) == 1  # within the pause: not retried
    now[0] += agent_mod.RETRY_FIRST
    with pytest.raises(CommandError):
        a.sync(snapshot(DENY))
    now[0] += agent_mod.RETRY_FIRST  # the pause doubled: still waiting
    assert a.sync(snapshot(DENY)) is False and len(kernel.sent) == 2
    now[0] += agent_mod.RETRY_FIRST
    assert a.sync(snapshot(DENY)) is True
    assert a.failures == 0 and a.applied is not None and not a.applied.empty
