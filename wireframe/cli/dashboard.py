"""``wireframe dashboard``: the web dashboard of a broker, served until Ctrl-C.

It needs the extra ``wireframe[web]`` (Starlette, Hypercorn, Jinja2) and says so
when it is missing. It is read-only unless ``--allow-actions``; binding an
address other than loopback prints a warning, since the dashboard has no login
of its own (put it behind one).
"""

from __future__ import annotations

import signal
from typing import Annotated

import trio
import typer

from wireframe.cli.common import BrokerOpt, fail, stderr, stdout
from wireframe.jobs.broker import BrokerError, mask_password

__all__ = ["dashboard"]


def dashboard(
    broker: BrokerOpt,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free).")
    ] = 8080,
    allow_actions: Annotated[
        bool,
        typer.Option(
            "--allow-actions",
            help="Allow retry and purge of dead letters, aborting jobs, and raise, suspend, "
            "resume, terminate and purge of orchestrations (POST with a CSRF token).",
        ),
    ] = False,
) -> None:
    """Serve the web dashboard: queues, workers, jobs, dead letters, schedules, orchestrations."""
    try:
        from wireframe.web import app, serve
        from wireframe.web.serve import is_loopback
    except ImportError as exc:
        raise fail(
            f"the dashboard needs the web extra: pip install 'wireframe[web]' ({exc})"
        ) from None
    if not is_loopback(host):
        stderr().print(
            f"[bold yellow]warning:[/] listening on {host}, not loopback: anyone who reaches "
            "this address sees the broker's jobs"
            + (" and can act on them" if allow_actions else "")
            + "; the dashboard has no login (put it behind one)",
            soft_wrap=True,
        )
    application = app(broker, allow_actions=allow_actions)

    async def main() -> None:
        # SIGINT and SIGTERM by trio's receiver, not KeyboardInterrupt: a process started
        # with SIGINT ignored (a background job of a shell) never gets that, and a
        # container stops with SIGTERM
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(lambda task_status: serve(
                    application, host=host, port=port, task_status=task_status))  # fmt: skip
                mode = "actions allowed" if allow_actions else "read-only"
                for where in bound:
                    stdout().print(
                        f"dashboard of {mask_password(broker)} on {where} ({mode})",
                        soft_wrap=True,
                    )
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return
    except (BrokerError, OSError) as exc:
        raise fail(f"broker {mask_password(broker)}: {exc}", 1) from None
