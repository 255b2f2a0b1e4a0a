"""``wireframe flows ...``: durable orchestration instances in a broker.

``list`` and ``show`` (with the history) read; ``start`` (of an orchestrator an
``--import`` module defines), ``raise``, ``suspend``, ``resume``,
``terminate`` and ``purge`` act through :class:`wireframe.durable.Client`.
Values given on the command line (``--input``, ``--data``, ``--output``) are
JSON.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import attrs
import trio
import typer
from rich.table import Table

from wireframe.cli.common import BrokerOpt, JsonOpt, fail, print_json, stdout
from wireframe.cli.target import TargetError, import_module
from wireframe.jobs.broker import mask_password

__all__ = ["flows_app"]

T = TypeVar("T")

flows_app = typer.Typer(
    help="Durable orchestrations: list, show (with history), start, raise, suspend, resume, "
    "terminate, purge.",
    no_args_is_help=True,
)

IdArg = Annotated[str, typer.Argument(help="The instance id.", show_default=False)]


def _with_client(url: str, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``fn(client)`` on the broker ``url`` names; a broker or durable error is one line."""
    from wireframe import durable, jobs

    async def go() -> T:
        async with jobs.open_broker(url, create=False) as broker:
            try:
                client = durable.Client(broker)
            except TypeError as exc:
                raise durable.DurableError(str(exc)) from None
            return await fn(client)

    try:
        return trio.run(go)
    except (durable.UnknownInstance, durable.InstanceExists) as exc:
        raise fail(str(exc), 1) from None
    except (jobs.BrokerError, OSError, durable.DurableError) as exc:
        raise fail(f"broker {mask_password(url)}: {exc}", 1) from None


def _json_value(text: str | None, option: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"{option} {text!r} is not JSON: {exc}") from None


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _instance_json(inst: Any) -> dict[str, Any]:
    data = attrs.asdict(inst)
    data["status"] = inst.status.value
    return data


@flows_app.command("list")
def flows_list(
    broker: BrokerOpt,
    status: Annotated[
        str | None, typer.Option("--status", help="Only this status (running, failed, ...).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Instances, most recently updated first."""
    from wireframe import durable

    try:
        wanted = durable.Status(status) if status else None
    except ValueError:
        names = ", ".join(s.value for s in durable.Status)
        raise fail(f"--status {status!r} is not a status; one of: {names}") from None
    found = _with_client(broker, lambda c: c.list(wanted, limit))
    if as_json:
        print_json([_instance_json(i) for i in found])
        return
    table = Table("id", "name", "status", "updated", "error", title=f"{len(found)} instance(s)")
    for inst in found:
        table.add_row(
            inst.id, inst.name, inst.status.value, _when(inst.updated_at), inst.error or ""
        )
    stdout().print(table)


@flows_app.command("show")
def flows_show(instance_id: IdArg, broker: BrokerOpt, as_json: JsonOpt = False) -> None:
    """One instance and its history, event by event."""
    from wireframe import durable

    async def show(client: Any) -> tuple[Any, list[Any]]:
        inst = await client.get(instance_id)
        if inst is None:
            raise durable.UnknownInstance(f"no orchestration instance has id {instance_id!r}")
        return inst, await client.history(instance_id)

    inst, history = _with_client(broker, show)
    if as_json:
        events = [{"type": type(e).__name__, **_plain(attrs.asdict(e))} for e in history]
        print_json({**_instance_json(inst), "history": events})
        return
    out = stdout()
    out.print(f"{inst.id}  {inst.name}  [bold]{inst.status.value}[/bold]", highlight=False)
    for label, value in (("input", inst.input), ("output", inst.output)):
        out.print(f"{label}: {value!r}", markup=False)
    if inst.error:
        out.print(f"error: {inst.error}", markup=False)
    table = Table("#", "event", "details", title="history")
    for i, event in enumerate(history, 1):
        fields = _plain(attrs.asdict(event))
        table.add_row(
            str(i), type(event).__name__, ", ".join(f"{k}={v!r}" for k, v in fields.items())
        )
    out.print(table)


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields for display: job bodies and results as their size."""
    return {k: (f"<{len(v)} bytes>" if isinstance(v, bytes) else v) for k, v in fields.items()}


@flows_app.command("start")
def flows_start(
    name: Annotated[str, typer.Argument(help="The orchestrator's registered name.")],
    broker: BrokerOpt,
    imports: Annotated[
        list[str],
        typer.Option("--import", "-i", help="Module defining the orchestrator; repeatable."),
    ],
    input: Annotated[str | None, typer.Option("--input", help="Its input, as JSON.")] = None,
    instance_id: Annotated[str | None, typer.Option("--id", help="The instance id.")] = None,
) -> None:
    """Start an orchestrator an imported module defines; prints the instance id."""
    from wireframe.durable.registry import spec_named

    for module in imports:
        try:
            import_module(module)
        except TargetError as exc:
            raise fail(f"--import {module}: {exc}") from None
    from wireframe import durable

    try:
        fn = spec_named(name).fn
    except durable.OrchestratorError as exc:
        raise fail(str(exc)) from None
    value = _json_value(input, "--input")
    iid = _with_client(broker, lambda c: c.start(fn, value, instance_id=instance_id))
    stdout().print(iid, markup=False)


@flows_app.command("raise")
def flows_raise(
    instance_id: IdArg,
    event: Annotated[str, typer.Argument(help="The event's name.")],
    broker: BrokerOpt,
    data: Annotated[str | None, typer.Option("--data", help="Its data, as JSON.")] = None,
) -> None:
    """Raise an event on an instance."""
    value = _json_value(data, "--data")
    _with_client(broker, lambda c: c.raise_event(instance_id, event, value))


@flows_app.command("suspend")
def flows_suspend(
    instance_id: IdArg,
    broker: BrokerOpt,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the history.")] = "",
) -> None:
    """Suspend an instance: events wait, nothing runs, until it resumes."""
    _with_client(broker, lambda c: c.suspend(instance_id, reason))


@flows_app.command("resume")
def flows_resume(instance_id: IdArg, broker: BrokerOpt) -> None:
    """Resume a suspended instance."""
    _with_client(broker, lambda c: c.resume(instance_id))


@flows_app.command("terminate")
def flows_terminate(
    instance_id: IdArg,
    broker: BrokerOpt,
    output: Annotated[str | None, typer.Option("--output", help="Its output, as JSON.")] = None,
    recursive: Annotated[bool, typer.Option(help="Terminate its children too.")] = True,
) -> None:
    """Terminate an instance (and its unfinished children)."""
    value = _json_value(output, "--output")
    _with_client(broker, lambda c: c.terminate(instance_id, value, recursive=recursive))


@flows_app.command("purge")
def flows_purge(
    instance_id: IdArg,
    broker: BrokerOpt,
    recursive: Annotated[bool, typer.Option(help="Purge its children too.")] = True,
) -> None:
    """Remove a finished instance and its history."""
    _with_client(broker, lambda c: c.purge(instance_id, recursive=recursive))
