"""The node agent's own bookkeeping for each pod: PIDs, restart counts, wiring. Persisted in the
store's runtime table so a restarted agent adopts its containers instead of starting them twice."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ContainerRT:
    name: str
    pid: int = 0
    ticks: int | None = None
    restarts: int = 0
    started_at: str = ""
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    exit_code: int | None = None
    finished_at: str = ""
    last: dict | None = None  # lastState.terminated as the API shows it
    next_start: float = 0.0
    ready: bool = False
    probe_ok: int = 0
    probe_fail: int = 0
    live_fail: int = 0
    next_probe: float = 0.0
    next_live: float = 0.0
    run_started: float = 0.0  # monotonic-ish wall time of the current run, for back-off reset


@dataclass
class PodRT:
    uid: str
    namespace: str
    name: str
    node: str
    netns: str
    ip: str
    veth: str
    wired: bool = False
    containers: dict[str, ContainerRT] = field(default_factory=dict)
    terminating_since: float | None = None
    killed: bool = False
    config_error: str = ""
    start_time: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PodRT:
        d = dict(d)
        d["containers"] = {k: ContainerRT(**v) for k, v in d.get("containers", {}).items()}
        return cls(**d)


def runtime_key(node: str, uid: str) -> str:
    return f"pod/{node}/{uid}"
