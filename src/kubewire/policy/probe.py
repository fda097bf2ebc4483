"""`kubewire probe`, the pure half: which connections to try (every selected pod to every selected
pod, per port), how to print the matrix, and how it compares with an expected one.

The connections themselves are made by kubewire.kernel.connect, from inside each source pod's
network namespace. A cell is connected when the TCP handshake completed, or when a UDP/SCTP echo
came back; anything else (dropped: timeout; refused: nothing listens; skipped: cannot be tried
here, with the reason) is not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from kubewire.controllers.podutil import map_selector_matches
from kubewire.policy.model import PROTOCOLS, Pod

VIA = ("pod-ip", "service")


@dataclass(frozen=True)
class Target:
    port: int | str  # a number, or a port name resolved on each destination pod
    protocol: str = "TCP"

    @property
    def label(self) -> str:
        return f"{self.port}/{self.protocol}"


def parse_target(text: str) -> Target:
    """80, 80/TCP, 53/udp, http/TCP."""
    port, _, proto = text.partition("/")
    proto = (proto or "TCP").upper()
    if proto not in PROTOCOLS:
        raise ValueError(f"bad port {text!r}: protocol must be one of {', '.join(PROTOCOLS)}")
    if port.isdigit():
        n = int(port)
        if not 0 < n < 65536:
            raise ValueError(f"bad port {text!r}: must be between 1 and 65535")
        return Target(n, proto)
    if not port:
        raise ValueError(f"bad port {text!r}")
    return Target(port, proto)


@dataclass
class Cell:
    src: Pod
    dst: Pod
    target: Target
    ip: str = ""
    port: int = 0
    via: str = "pod-ip"  # or "service ns/name"
    skip: str = ""  # why it is not tried (then ip/port may be empty)


@dataclass
class Outcome:
    status: str  # connected | refused | timeout | unreachable | error | skipped
    detail: str = ""
    seconds: float = 0.0

    @property
    def connected(self) -> bool | None:
        if self.status == "skipped":
            return None
        return self.status == "connected"


def _service_for(dst: Pod, port: int, target: Target, services: list[dict], slices: list[dict]) -> tuple[str, int, str, str]:
    """(clusterIP, service port, "service ns/name", skip reason) of a Service whose only endpoint is dst."""
    why = f"no Service in {dst.namespace} selects {dst.name} on {port}/{target.protocol}"
    for svc in services:
        meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        if meta.get("namespace") != dst.namespace or not spec.get("selector"):
            continue
        if not map_selector_matches(spec["selector"], dst.labels):
            continue
        for sp in spec.get("ports") or []:
            if (sp.get("protocol") or "TCP") != target.protocol:
                continue
            tp = sp.get("targetPort", sp.get("port"))
            if tp != port and not (isinstance(tp, str) and port in dst.named_ports(tp, target.protocol)):
                continue
            ip = spec.get("clusterIP") or ""
            name = f"service {meta.get('namespace')}/{meta.get('name')}"
            if not ip or ip == "None":
                why = f"{name} is headless: no virtual IP to go through"
                continue
            addrs = {a for s in slices
                     if (s.get("metadata") or {}).get("namespace") == dst.namespace
                     and ((s.get("metadata") or {}).get("labels") or {}).get("kubernetes.io/service-name") == meta.get("name")
                     for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready", True)
                     for a in e.get("addresses") or []}
            if addrs - {dst.ip}:
                why = (f"{name} has {len(addrs)} ready endpoints: a handshake cannot tell which pod answered "
                       "(give each probed pod its own Service)")
                continue
            if dst.ip not in addrs:
                why = f"{dst.key} is not a ready endpoint of {name}"
                continue
            return ip, int(sp["port"]), name, ""
    return "", 0, "", why


def plan_cells(pods: list[Pod], targets: list[Target], via: str = "pod-ip", services: list[dict] | None = None,
               slices: list[dict] | None = None) -> list[Cell]:
    cells: list[Cell] = []
    for src in pods:
        for dst in pods:
            for t in targets:
                c = Cell(src, dst, t, via=via)
                if isinstance(t.port, int):
                    number = t.port
                else:
                    found = dst.named_ports(t.port, t.protocol)
                    if not found:
                        c.skip = f"{dst.key} has no port named {t.port}/{t.protocol}"
                        cells.append(c)
                        continue
                    number = found[0]
                if via == "service":
                    c.ip, c.port, c.via, c.skip = _service_for(dst, number, t, services or [], slices or [])
                else:
                    c.ip, c.port = dst.ip, number
                cells.append(c)
    return cells


# --- results -------------------------------------------------------------------------------------------

MARKS = {"connected": ".", "timeout": "X", "refused": "R", "unreachable": "U", "error": "E", "skipped": "-"}
LEGEND = (". connected   X no answer within the timeout (dropped)   R refused (nothing listening)   "
          "U unreachable   E error   - skipped")


@dataclass
class Matrix:
    pods: list[str]
    targets: list[Target]
    results: dict[tuple[str, str, str], tuple[Cell, Outcome]] = field(default_factory=dict)

    def add(self, cell: Cell, out: Outcome) -> None:
        self.results[(cell.src.key, cell.dst.key, cell.target.label)] = (cell, out)

    def as_json(self) -> dict:
        """{"ns/pod": {"ns/pod": true|false|null}}; with several ports the inner keys are
        "ns/pod:PORT/PROTO". null: skipped (the reason is in the text output)."""
        single = len(self.targets) == 1
        out: dict[str, dict[str, bool | None]] = {}
        for src in self.pods:
            row = out.setdefault(src, {})
            for dst in self.pods:
                for t in self.targets:
                    _, o = self.results[(src, dst, t.label)]
                    row[dst if single else f"{dst}:{t.label}"] = o.connected
        return out

    def skipped(self) -> dict[str, int]:
        reasons: dict[str, int] = {}
        for _, o in self.results.values():
            if o.status == "skipped":
                reasons[o.detail] = reasons.get(o.detail, 0) + 1
        return reasons

    def text(self, via: str = "pod-ip") -> str:
        width = max([len(p) for p in self.pods] + [4])
        iw = len(str(len(self.pods) - 1))  # row numbers
        cw = max(2, iw)  # columns
        lines = []
        for t in self.targets:
            lines.append(f"{t.label} via {via}: rows are sources, columns destinations")
            lines.append(" " * (width + iw + 2) + " ".join(f"{i:>{cw}}" for i in range(len(self.pods))))
            for i, src in enumerate(self.pods):
                marks = [MARKS[self.results[(src, dst, t.label)][1].status] for dst in self.pods]
                lines.append(f"{src:<{width}} {i:>{iw}} " + " ".join(f"{m:>{cw}}" for m in marks))
            lines.append("")
        lines.append(LEGEND)
        n = sum(1 for _, o in self.results.values() if o.status == "connected")
        lines.append(f"{n}/{len(self.results)} connected")
        for reason, count in sorted(self.skipped().items()):
            lines.append(f"skipped {count}: {reason}")
        return "\n".join(lines) + "\n"


def parse_expectation(text: str) -> dict[str, dict[str, bool]]:
    """The -o json shape (JSON or YAML): {"ns/pod": {"ns/pod": bool}} or inner "ns/pod:PORT/PROTO" keys."""
    import yaml

    data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError('expected {"ns/pod": {"ns/pod": true|false}}')
    for row in data.values():
        for v in row.values():
            if not isinstance(v, bool):
                raise ValueError(f"expected true or false, got {v!r}")
    return data


@dataclass
class Difference:
    src: str
    dst: str
    target: str
    expected: bool
    got: Outcome | None

    def __str__(self) -> str:
        want = "connected" if self.expected else "blocked"
        if self.got is None:
            return f"{self.src} -> {self.dst} {self.target}: expected {want}, but this cell was not probed"
        got = self.got.status + (f" ({self.got.detail})" if self.got.detail else "")
        return f"{self.src} -> {self.dst} {self.target}: expected {want}, got {got}"


def compare(m: Matrix, expected: dict[str, dict[str, bool]]) -> tuple[list[Difference], list[Difference]]:
    """(differences, skipped cells the expectation covers). A key without ":PORT/PROTO" covers every port."""
    diffs: list[Difference] = []
    skipped: list[Difference] = []
    for src, row in expected.items():
        for key, want in row.items():
            dst, _, label = key.partition(":")
            labels = [label] if label else [t.label for t in m.targets]
            for lab in labels:
                hit = m.results.get((src, dst, lab))
                if hit is None:
                    diffs.append(Difference(src, dst, lab, want, None))
                    continue
                out = hit[1]
                if out.connected is None:
                    skipped.append(Difference(src, dst, lab, want, out))
                elif out.connected != want:
                    diffs.append(Difference(src, dst, lab, want, out))
    return diffs, skipped
