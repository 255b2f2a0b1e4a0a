"""The ``wireframe`` command: ``run``, ``check``, ``graph``, ``worker`` and ``jobs ...``, on typer.

Exit codes, the same for every command that runs or checks a service:
0 clean stop (or wiring OK), 1 a task or shutdown step failed or timed out,
2 a wiring error or a TARGET that cannot be loaded. Results go to stdout (a
rich table, or JSON with ``--json``); with ``--json`` the status view and the
service's own prints go to stderr so stdout stays parseable.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, TypeVar

import trio
import typer

import wireframe as wf
from wireframe.cli.common import (
    BrokerOpt,
    GraceOpt,
    GraphFormat,
    HealthPortOpt,
    JsonOpt,
    LogFormatOpt,
    LogLevel,
    LogOpt,
    PlainOpt,
    TargetArg,
    fail,
    print_json,
    stderr,
    stdout,
)
from wireframe.cli.dashboard import dashboard
from wireframe.cli.flows import flows_app
from wireframe.cli.graph import plan_dot, plan_json, plan_tree
from wireframe.cli.jobs import jobs_app
from wireframe.cli.logformat import LogFormat, setup_logging
from wireframe.cli.render import (
    problems_json,
    problems_table,
    report_json,
    report_table,
)
from wireframe.cli.runner import EXIT_WIRING, Outcome, run_with_view
from wireframe.cli.target import Target, TargetError, import_module, load_target
from wireframe.jobs.broker import mask_password
from wireframe.jobs.threads import DEFAULT_THREADS
from wireframe.jobs.worker import DEFAULT_CONCURRENCY

__all__ = ["app", "jobs_app", "main"]

T = TypeVar("T")

app = typer.Typer(
    name="wireframe",
    help="Run, check and inspect wireframe services and their job queues.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(jobs_app, name="jobs")
app.add_typer(flows_app, name="flows")
app.command()(dashboard)


def _health_layers(port: int) -> list[wf.WiringLayer[Any, Any]]:
    """``--health-port``: the health layer, and telemetry for ``/metrics`` when installed."""
    layers: list[wf.WiringLayer[Any, Any]] = [wf.HealthLayer(port=port)]
    try:
        from wireframe.telemetry import TelemetryLayer
    except ImportError:  # the telemetry extra is not installed: /metrics says how to add it
        return layers
    return [*layers, TelemetryLayer()]


def _load(spec: str, *, as_json: bool) -> Target:
    """Load TARGET, turning a load failure or a wiring error at import time into exit 2."""
    try:
        return load_target(spec)
    except TargetError as exc:
        if as_json:
            print_json({"ok": False, "exit_code": EXIT_WIRING, "error": str(exc)})
        raise fail(str(exc)) from None
    except wf.WiringError as exc:
        _show_problems(exc.problems, as_json=as_json)
        raise typer.Exit(EXIT_WIRING) from None


def _show_problems(problems: tuple[wf.WiringProblem, ...], *, as_json: bool) -> None:
    if as_json:
        print_json(
            {"ok": False, "exit_code": EXIT_WIRING, "wiring_problems": problems_json(problems)}
        )
    else:
        stdout().print(problems_table(problems))


@contextlib.contextmanager
def _stdout_to_stderr(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _serve(
    target: Target,
    *,
    graceful_timeout: float | None,
    log_level: LogLevel,
    as_json: bool,
    plain: bool,
    health_port: int | None = None,
    log_format: LogFormat = LogFormat.text,
) -> None:
    """Run ``target`` under the status view, print the outcome, exit with its code."""
    from wireframe.cli.queues import broker_urls

    view_console = stderr() if as_json else stdout()
    setup_logging(log_level.value, log_format, view_console)
    extra = _health_layers(health_port) if health_port is not None else []
    try:
        service = target.make_service(
            graceful_shutdown_timeout=graceful_timeout, extra_layers=extra
        )
        urls = broker_urls(service.plan)
    except wf.WiringError as exc:
        _show_problems(exc.problems, as_json=as_json)
        raise typer.Exit(EXIT_WIRING) from None
    except TargetError as exc:
        raise fail(str(exc)) from None
    live = view_console.is_terminal and not plain
    if health_port:
        view_console.print(
            f"health endpoints: http://127.0.0.1:{health_port}/livez, /readyz, /status, /metrics",
            markup=False,
            highlight=False,
        )

    async def main() -> Outcome:
        return await run_with_view(
            service, view_console, title=target.label, live=live, queue_urls=urls
        )

    with _stdout_to_stderr(as_json):
        outcome = trio.run(main)
    if outcome.problems:
        _show_problems(outcome.problems, as_json=as_json)
    elif outcome.report is not None:
        if as_json:
            print_json(
                report_json(
                    outcome.report, exit_code=outcome.exit_code, wall_offset=outcome.wall_offset
                )
            )
        else:
            stdout().print(report_table(outcome.report, exit_code=outcome.exit_code))
    elif outcome.message:
        stderr().print(outcome.message, markup=False)
    raise typer.Exit(outcome.exit_code)


@app.command()
def run(
    target: TargetArg,
    graceful_timeout: GraceOpt = None,
    log_level: LogOpt = LogLevel.warning,
    as_json: JsonOpt = False,
    plain: PlainOpt = False,
    health_port: HealthPortOpt = None,
    log_format: LogFormatOpt = LogFormat.text,
) -> None:
    """Run a service with a live status view; Ctrl-C stops it gracefully, twice forces.

    Exit code 0 on a clean stop, 1 when a task failed or timed out, 2 for a wiring error.
    """
    _serve(
        _load(target, as_json=as_json),
        graceful_timeout=graceful_timeout,
        log_level=log_level,
        as_json=as_json,
        plain=plain,
        health_port=health_port,
        log_format=log_format,
    )


@app.command()
def check(target: TargetArg, as_json: JsonOpt = False) -> None:
    """Check the wiring without running any wire(); list every problem (exit 0 or 2)."""
    loaded = _load(target, as_json=as_json)
    try:
        plan = loaded.plan()
    except wf.WiringError as exc:
        _show_problems(exc.problems, as_json=as_json)
        raise typer.Exit(EXIT_WIRING) from None
    tasks = sum(
        1 for n in plan.layers for p in n.outputs if p.role in (wf.PortRole.TASK, wf.PortRole.TASKS)
    )
    if as_json:
        print_json(
            {
                "ok": True,
                "exit_code": 0,
                "layers": [n.name for n in plan.layers],
                "resources": len(plan.providers),
                "task_fields": tasks,
                "wiring_problems": [],
            }
        )
    else:
        stdout().print(
            f"[green]wiring OK[/]: {loaded.label} — {len(plan.layers)} layer(s) "
            f"({', '.join(n.name for n in plan.layers)}), {len(plan.providers)} resource(s), "
            f"{tasks} task field(s)"
        )


@app.command()
def graph(
    target: TargetArg,
    format: Annotated[
        GraphFormat, typer.Option("--format", "-f", help="tree (rich), dot (Graphviz) or json.")
    ] = GraphFormat.tree,
) -> None:
    """Show the wiring: layers, what each takes and gives, and their tasks by kind."""
    loaded = _load(target, as_json=format is GraphFormat.json)
    try:
        plan = loaded.plan()
    except wf.WiringError as exc:
        _show_problems(exc.problems, as_json=format is GraphFormat.json)
        raise typer.Exit(EXIT_WIRING) from None
    if format is GraphFormat.dot:
        sys.stdout.write(plan_dot(plan, title=loaded.label))
    elif format is GraphFormat.json:
        print_json(plan_json(plan))
    else:
        stdout().print(plan_tree(plan, title=loaded.label))


@app.command()
def worker(
    broker: BrokerOpt,
    imports: Annotated[
        list[str],
        typer.Option(
            "--import",
            "-i",
            help="Module (package.module or path/to/file.py) defining operations, and the "
            "layers giving their resources in WIREFRAME_WORKER_LAYERS; repeatable.",
            show_default=False,
        ),
    ],
    queues: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="Queue to serve; repeatable.", show_default="default"),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Jobs held at once per queue.")
    ] = DEFAULT_CONCURRENCY,
    threads: Annotated[
        int,
        typer.Option("--threads", "-t", min=1, help="Threads for plain def jobs, per queue."),
    ] = DEFAULT_THREADS,
    graceful_timeout: GraceOpt = None,
    log_level: LogOpt = LogLevel.warning,
    as_json: JsonOpt = False,
    plain: PlainOpt = False,
    health_port: HealthPortOpt = None,
    log_format: LogFormatOpt = LogFormat.text,
) -> None:
    """Run a worker service: the worker loop on each queue, under the live status view.

    An imported module may list wiring layers in ``WIREFRAME_WORKER_LAYERS``: they
    run in the worker service, and the resources they give reach the operations
    that take them.
    """
    from wireframe.cli.workers import defines_orchestrators, tune_collector, worker_builder

    layers = _imported_layers(imports)
    try:
        builder, resources = worker_builder(
            broker,
            layers,
            queues=queues or ["default"],
            concurrency=concurrency,
            threads=threads,
            graceful_shutdown_timeout=30.0 if graceful_timeout is None else graceful_timeout,
            orchestrations=defines_orchestrators([import_module(name) for name in imports]),
        )
    except wf.WiringError as exc:
        _show_problems(exc.problems, as_json=as_json)
        raise typer.Exit(EXIT_WIRING) from None
    shown = mask_password(broker)
    _announce_worker(shown, resources)
    tune_collector()
    _serve(
        Target(f"worker {shown}", builder=builder),
        graceful_timeout=graceful_timeout,
        log_level=log_level,
        as_json=as_json,
        plain=plain,
        health_port=health_port,
        log_format=log_format,
    )


def _imported_layers(imports: list[str]) -> list[wf.WiringLayer[Any, Any]]:
    """Import each ``--import`` module (registering its operations); the layers they declare.

    A module that cannot be imported ends the command with exit 2, naming it.
    """
    from wireframe.cli.workers import declared_layers

    layers: list[wf.WiringLayer[Any, Any]] = []
    for name in imports:
        try:
            layers += declared_layers(import_module(name))
        except TargetError as exc:
            raise fail(f"--import {name}: {exc}") from None
    return layers


def _announce_worker(shown: str, resources: Sequence[type]) -> None:
    """Say on stderr what the worker will run: its operations, its resources, what is missing."""
    from wireframe import jobs
    from wireframe.cli.workers import missing_resources

    operations = sorted(jobs.registered_operations())
    stderr().print(
        f"worker on {shown}: {len(operations)} operation(s) registered"
        + (f" ({', '.join(operations)})" if operations else "")
        + (f"; resources: {', '.join(t.__qualname__ for t in resources)}" if resources else ""),
        markup=False,
    )
    for line in missing_resources(resources):
        stderr().print(f"warning: {line}", markup=False)


def main() -> None:
    """The console script's entry point (``wireframe``, ``python -m wireframe``)."""
    app(prog_name="wireframe")
