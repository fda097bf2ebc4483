"""`kubewire doctor`: what this machine's kernel and tools can do for kubewire, and how to get the rest."""

from __future__ import annotations

import os
import shutil
import socket

from kubewire.kernel import ip as kip
from kubewire.kernel.run import run

TOOLS = {
    "ip": ("iproute2", True), "nsenter": ("util-linux", True), "iptables-restore": ("iptables", True),
    "nft": ("nftables", True), "conntrack": ("conntrack", True), "curl": ("curl", True), "dig": ("dnsutils", False),
    "nginx": ("nginx-light", False), "iperf3": ("iperf3", False),
}


def _probe_kernel() -> list[tuple[str, bool, str]]:
    out: list[tuple[str, bool, str]] = []
    ns = f"kw-doctor-{os.getpid()}"
    try:
        kip.batch([f"netns add {ns}"])
    except Exception as e:  # noqa: BLE001
        return [("network namespaces", False, f"cannot create one: {e}")]
    try:
        out.append(("network namespaces", True, ""))
        for what, line in (("veth", "link add kwd0 type veth peer name kwd1"), ("bridge", "link add kwdbr type bridge"),
                           ("vxlan", "link add kwdvx type vxlan id 42 dstport 4789 local 127.0.0.1")):
            try:
                kip.batch([line], ns)
                out.append((what, True, ""))
            except Exception as e:  # noqa: BLE001
                out.append((what, False, str(e).splitlines()[-1][:120]))
        r = run(["nsenter", f"--net=/run/netns/{ns}", "--", "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"], check=False)
        out.append(("br_netfilter (per namespace)", r.code == 0, "" if r.code == 0 else "modprobe br_netfilter"))
        r = run(["nsenter", f"--net=/run/netns/{ns}", "--", "nft", "add", "table", "inet", "kwdoctor"], check=False)
        out.append(("nf_tables", r.code == 0, r.stderr.strip()[:120]))
        r = run(["nsenter", f"--net=/run/netns/{ns}", "--", "iptables-restore", "--test"], stdin="*nat\nCOMMIT\n", check=False)
        out.append(("iptables (nat)", r.code == 0, r.stderr.strip()[:120]))
    finally:
        kip.delete_netns([ns])
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
        out.append(("SCTP sockets", True, ""))
    except OSError:
        out.append(("SCTP sockets", False, "CONFIG_IP_SCTP is off: SCTP rules can be written, but no process can open an "
                                           "SCTP socket, so SCTP traffic cannot be exercised (tests that need it are skipped with this reason)"))
    from kubewire.kernel.ebpfcheck import unsupported

    why = unsupported()
    out.append(("eBPF socket load balancing (cgroup v2 + cgroup/connect4 programs; --proxy-mode ebpf)", not why, why))
    return out


def run_doctor() -> int:
    bad = 0
    print(f"kernel {os.uname().release}")
    if os.geteuid() != 0:
        print("[!!] not root: kubewire needs root (sudo) to create network namespaces")
        bad += 1
    for tool, (pkg, required) in TOOLS.items():
        ok = shutil.which(tool) is not None
        if not ok and required:
            bad += 1
        print(f"[{'ok' if ok else ('!!' if required else '--')}] {tool}" + ("" if ok else f"  (apt-get install {pkg})"))
    if os.geteuid() == 0:
        for what, ok, note in _probe_kernel():
            optional = what.startswith("SCTP") or what.startswith("vxlan") or what.startswith("eBPF")
            if not ok and not optional:
                bad += 1
            print(f"[{'ok' if ok else ('--' if optional else '!!')}] {what}" + (f"  ({note})" if note and not ok else ""))
    print("all required features present" if not bad else f"{bad} required feature(s) missing")
    return 1 if bad else 0
