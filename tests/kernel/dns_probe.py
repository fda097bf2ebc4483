"""Run inside a pod (`kubewire exec ... -- python dns_probe.py ...`): DNS questions asked with
dnspython to the pod's own nameserver (the first in its /etc/resolv.conf), answers printed as JSON.

    dns_probe.py ask '[["name.", "A"], ["name.", "AAAA", "tcp"], ...]'
        one JSON object per question: rcode, flags, answer/authority/additional as text lines
    dns_probe.py until NAME TYPE RCODE TIMEOUT
        asks every 10 ms until the reply has RCODE; prints {"ts": wall-clock time of that reply}
"""

from __future__ import annotations

import json
import sys
import time

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode


def nameserver() -> str:
    with open("/etc/resolv.conf") as f:
        for line in f:
            parts = line.split()
            if parts[:1] == ["nameserver"]:
                return parts[1]
    raise SystemExit("no nameserver in /etc/resolv.conf")


def ask(server: str, name: str, rdtype: str, tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    for attempt in range(3):
        try:
            if tcp:
                return dns.query.tcp(q, server, timeout=2)
            return dns.query.udp(q, server, timeout=1)
        except dns.exception.Timeout:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def section(rrsets: list) -> list[str]:
    return [line for rrset in rrsets for line in rrset.to_text().splitlines()]


def main() -> None:
    server = nameserver()
    if sys.argv[1] == "ask":
        out = []
        for item in json.loads(sys.argv[2]):
            name, rdtype = item[0], item[1]
            m = ask(server, name, rdtype, tcp=len(item) > 2 and item[2] == "tcp")
            out.append({"name": name, "type": rdtype, "rcode": dns.rcode.to_text(m.rcode()),
                        "flags": dns.flags.to_text(m.flags).split(), "answer": section(m.answer),
                        "authority": section(m.authority), "additional": section(m.additional)})
        print(json.dumps(out))
    elif sys.argv[1] == "until":
        name, rdtype, rcode, timeout = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
        print(json.dumps({"ready": True}), flush=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = ask(server, name, rdtype)
            if dns.rcode.to_text(m.rcode()) == rcode:
                print(json.dumps({"ts": time.time()}), flush=True)
                return
            time.sleep(0.01)
        print(json.dumps({"ts": None}), flush=True)
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]}")


if __name__ == "__main__":
    main()
