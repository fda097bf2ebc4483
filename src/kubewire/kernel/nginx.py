"""Real nginx: the container entry point of ingress-nginx controller pods, config tests and reloads.

`python -m kubewire.kernel.nginx --conf FILE` is what the controller pod's container runs: it waits
for the controller to have rendered FILE (a fresh pod starts before its first configuration exists,
as ingress-nginx's image starts with a placeholder), then becomes nginx in the foreground
(`nginx -g 'daemon off;' -c FILE`), keeping its PID: the container's PID is nginx's master process,
which the controller signals (SIGHUP) to reload gracefully.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from kubewire.kernel.run import run

NGINX = "/usr/sbin/nginx"


def argv(conf: str) -> list[str]:
    return [NGINX, "-g", "daemon off;", "-c", conf]


def test_config(conf: str) -> tuple[bool, str]:
    """`nginx -t`: the configuration parses, certificates load (what ingress-nginx checks before
    every reload). Returns (ok, nginx's message)."""
    r = run([NGINX, "-t", "-q", "-g", "daemon off;", "-c", conf], check=False, timeout=30)
    return r.code == 0, (r.stderr or r.stdout).strip()


def is_master(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except OSError:
        return False
    # nginx retitles its master only after installing its signal handlers: before that, a SIGHUP
    # would end it (or the launcher it replaces) instead of reloading it.
    return bool(cmd) and cmd[0].startswith(b"nginx: master process")


def reload(pid: int) -> bool:
    """SIGHUP to the master: it re-reads the configuration, starts new workers and lets the old ones
    finish their in-flight requests (graceful). False if `pid` is not an nginx master."""
    if not is_master(pid):
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(prog="kubewire-nginx")
    ap.add_argument("--conf", required=True)
    ap.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the configuration")
    args = ap.parse_args()
    deadline = time.time() + args.wait
    while not os.path.exists(args.conf):
        if time.time() > deadline:
            print(f"kubewire-nginx: {args.conf} did not appear within {args.wait:.0f}s", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.02)
    sys.stdout.flush()
    os.execv(NGINX, argv(args.conf))


if __name__ == "__main__":
    main()
