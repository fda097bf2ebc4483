"""iptables-restore, conntrack and nfacct inside a node's namespace: payloads fed from memory."""

from __future__ import annotations

from kubewire.kernel.run import in_netns, run


def restore(netns: str, payload: str, noflush: bool = True, timeout: float = 300, legacy: bool = False) -> None:
    """Atomic per table, as kube-proxy applies it; without noflush the tables named are replaced.
    legacy: iptables-legacy-restore (x_tables, one table blob per commit) instead of the host's
    default, iptables-nft."""
    flags = ["--noflush", "--counters"] if noflush else []
    tool = "iptables-legacy-restore" if legacy else "iptables-restore"
    run(in_netns(netns, [tool, *flags, "-w", "5"]), stdin=payload, timeout=timeout)


def save(netns: str, table: str | None = None) -> str:
    return run(in_netns(netns, ["iptables-save"] + (["-t", table] if table else []))).stdout


def chain_exists(netns: str, table: str, chain: str) -> bool:
    """As kube-proxy's ChainExists (`iptables -n -L CHAIN`): lists one chain, whatever the table holds."""
    return run(in_netns(netns, ["iptables", "-w", "5", "-t", table, "-n", "-L", chain]), check=False).code == 0


def nat_chains(netns: str) -> list[str]:
    return [line[1:].split()[0] for line in save(netns, "nat").splitlines() if line.startswith(":")]


def ensure_jumps(netns: str, rules: list[tuple[str, str, list[str]]]) -> None:
    """The jumps from the built-in chains (inserted once, as kube-proxy's EnsureRule does) and the
    KUBE-PROXY-CANARY chains, in one restore without flushing."""
    existing = {t: save(netns, t) for t in ("filter", "nat", "mangle")}
    payload: list[str] = []
    for table in ("mangle", "filter", "nat"):
        lines = [] if ":KUBE-PROXY-CANARY" in existing[table] else [":KUBE-PROXY-CANARY - [0:0]"]
        targets = {args[args.index("-j") + 1] for t, _c, args in rules if t == table}
        lines += [f":{c} - [0:0]" for c in sorted(targets) if f":{c} " not in existing[table]]
        for t, chain, args in reversed([r for r in rules if r[0] == table]):
            text = " ".join(_quote(a) for a in args)
            if f"-A {chain} {text}" not in existing[t]:
                lines.append(f"-I {chain} {text}")
        if lines:
            payload += [f"*{table}", *lines, "COMMIT"]
    if payload:
        run(in_netns(netns, ["iptables-restore", "--noflush", "-w", "5"]), stdin="\n".join(payload) + "\n")


def _quote(a: str) -> str:
    return f'"{a}"' if " " in a else a


def conntrack_delete(netns: str, args: list[str]) -> int:
    """Returns how many entries were deleted (conntrack exits 1 when none matched)."""
    r = run(in_netns(netns, ["conntrack", "-D", *args]), check=False)
    for line in (r.stderr + r.stdout).splitlines():
        if "flow entries have been deleted" in line:
            return int(line.split()[-6]) if line.split()[-6].isdigit() else 0
    return 0


def nfacct_ensure(netns: str, names: list[str]) -> bool:
    for n in names:
        r = run(in_netns(netns, ["nfacct", "add", n]), check=False)
        if r.code != 0 and "File exists" not in r.stderr:
            return False
    return True
