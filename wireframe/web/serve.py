"""Serving the dashboard with Hypercorn's trio worker (the brokers are trio code).

Hypercorn speaks HTTP/1.1 and HTTP/2 and runs an ASGI app on trio, so the app,
its broker and the server share one event loop: what ``wireframe dashboard``
runs, and what a test starts on port 0 (``task_status`` hands back the bound
addresses).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

__all__ = ["is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def serve(
    application: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    shutdown_trigger: Callable[..., Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``application`` on ``host:port`` until cancelled or ``shutdown_trigger`` returns.

    ``task_status.started`` gets the bound addresses (``http://127.0.0.1:PORT``).
    """
    config = Config()
    bind_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    config.bind = [f"{bind_host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 2.0
    await hypercorn_serve(
        application,
        config,
        shutdown_trigger=shutdown_trigger,
        task_status=task_status,
        mode="asgi",
    )
