"""Probes as kubelet runs them: from the node's network namespace to the pod's IP, or a command run
inside the container's namespaces."""

from __future__ import annotations

import asyncio
import socket
import ssl

from kubewire.kernel.cgroup import join_like
from kubewire.kernel.nsswitch import entered
from kubewire.kernel.run import in_pod

USER_AGENT = "kube-probe/1.33"


def _socket_in(netns: str) -> socket.socket:
    with entered(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    return s


async def tcp(netns: str, ip: str, port: int, timeout: float) -> tuple[bool, str]:
    s = _socket_in(netns)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.sock_connect(s, (ip, port)), timeout)
        return True, ""
    except (OSError, TimeoutError) as e:
        return False, f"dial tcp {ip}:{port}: {e or 'i/o timeout'}"
    finally:
        s.close()


async def http_get(netns: str, ip: str, port: int, path: str, scheme: str, headers: list[dict],
                   timeout: float) -> tuple[bool, str]:
    s = _socket_in(netns)
    loop = asyncio.get_running_loop()
    writer = None
    try:
        async def go() -> tuple[bool, str]:
            nonlocal writer
            await loop.sock_connect(s, (ip, port))
            ctx = None
            if scheme.upper() == "HTTPS":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            reader, writer = await asyncio.open_connection(sock=s, ssl=ctx, server_hostname=ip if ctx else None)
            hdrs = {"Host": f"{ip}:{port}", "User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"}
            for h in headers or []:
                hdrs[h["name"]] = h["value"]
            req = f"GET {path or '/'} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
            writer.write(req.encode())
            await writer.drain()
            line = await reader.readline()
            parts = line.decode(errors="replace").split()
            code = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
            if 200 <= code < 400:
                return True, ""
            return False, f"HTTP probe failed with statuscode: {code}"

        return await asyncio.wait_for(go(), timeout)
    except (OSError, TimeoutError, ValueError) as e:
        return False, f'Get "{scheme.lower()}://{ip}:{port}{path}": {e or "context deadline exceeded"}'
    finally:
        if writer is not None:
            writer.close()
        else:
            s.close()


async def exec_in(pid: int, argv: list[str], timeout: float) -> tuple[bool, str]:
    proc = await asyncio.create_subprocess_exec(
        *in_pod(pid, argv),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        preexec_fn=lambda: join_like(pid))  # the pod's cgroup: its Service traffic as the pod's
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False, f"command timed out after {timeout}s"
    return proc.returncode == 0, out.decode(errors="replace")[:1024]
