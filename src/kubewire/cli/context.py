"""What every command needs: which cluster, and a clear error when it is not there."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from rich.console import Console

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)


class State:
    name: str = os.environ.get("KUBEWIRE_CLUSTER", "kubewire")


state = State()


def fail(msg: str, code: int = 1) -> NoReturn:
    err_console.print(msg if msg.lower().startswith("error") else f"error: {msg}", markup=False)
    sys.exit(code)


def need_root() -> None:
    if os.geteuid() != 0:
        fail("kubewire needs root to create network namespaces (run it with sudo)")
