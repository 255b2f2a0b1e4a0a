"""The service: wire the layers, run the tasks under one stop signal, shut down in order.

A run has four phases, and each has one rule:

1. **wiring** — layers are wired in dependency order; every failure of every
   layer is collected, and any failure ends the run with :class:`WiringError`
   before a single task starts.
2. **running** — preconditions and unconstrained tasks start at once; Task and
   OneshotTask wait for the barrier (every precondition returned). The first
   Task/UnconstrainedTask to return, the first task to raise, ``stop()`` or a
   signal sends the one stop signal.
3. **stopping** — tasks get ``graceful_shutdown_timeout`` seconds to return,
   then are cancelled and reported timed out. A second stop request skips the
   rest of the grace period.
4. **shutting down** — shutdown hooks run in registration order, then layer
   lifetimes close in reverse wiring order, each under its own timeout, even
   when tasks failed.

The service handles SIGINT and SIGTERM itself (when ``handle_signals`` and on
the main thread); whoever shows the run follows the stop requests through
:meth:`Service.add_stop_listener` instead of installing handlers of its own,
so there is one place that decides what a signal does.
"""

from __future__ import annotations

import inspect
import math
import signal
import threading
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

import attrs
import trio

from wireframe.service.graph import PortRole, WiringError, WiringPlan, WiringProblem, plan_wiring
from wireframe.service.health import HealthCheck
from wireframe.service.layers import ShutdownHook, WiringLayer
from wireframe.service.lifetime import Lifetime
from wireframe.service.report import (
    ErrorInfo,
    HookReport,
    ServiceError,
    ServiceReport,
    TaskReport,
    TaskState,
    describe,
)
from wireframe.service.status import ServiceStatus
from wireframe.service.stop import StopRequest, StopSignal
from wireframe.service.supervision import Restarts, restart_policy_of
from wireframe.service.tasks import AnyTask, TaskKind

__all__ = ["Service", "ServiceBuilder", "run"]

StateListener = Callable[[TaskReport], None]
StopListener = Callable[[StopRequest], None]


class ServiceBuilder:
    """Collects layers and settings; :meth:`build` checks the wiring and makes a :class:`Service`.

    Adding a second layer with the same ``name`` keeps the first — which is how
    a test puts its own layer in place of an application's: add it first. Use
    :meth:`replace_layer` to replace one explicitly.
    """

    def __init__(
        self, *, graceful_shutdown_timeout: float = 30.0, handle_signals: bool = True
    ) -> None:
        if not graceful_shutdown_timeout >= 0:
            raise ValueError(
                f"graceful_shutdown_timeout must be >= 0 seconds, got {graceful_shutdown_timeout!r}"
            )
        self.graceful_shutdown_timeout = graceful_shutdown_timeout
        self.handle_signals = handle_signals
        self._layers: dict[str, WiringLayer[Any, Any]] = {}

    @property
    def layers(self) -> tuple[WiringLayer[Any, Any], ...]:
        """The layers in the order they were added."""
        return tuple(self._layers.values())

    def add_layer(self, layer: WiringLayer[Any, Any]) -> ServiceBuilder:
        """Add ``layer`` unless one of the same name is already there (the first wins)."""
        if not isinstance(layer, WiringLayer):
            raise TypeError(f"add_layer() takes a WiringLayer, got {layer!r}")
        self._layers.setdefault(layer.name, layer)
        return self

    def replace_layer(self, layer: WiringLayer[Any, Any]) -> ServiceBuilder:
        """Put ``layer`` in place of the layer of the same name, keeping its position."""
        if layer.name not in self._layers:
            known = ", ".join(repr(n) for n in self._layers) or "none"
            raise KeyError(f"no layer named {layer.name!r} to replace; layers: {known}")
        self._layers[layer.name] = layer
        return self

    def plan(self) -> WiringPlan:
        """The wiring plan, without wiring anything; raises :class:`WiringError`."""
        return plan_wiring(self.layers)

    def build(self) -> Service:
        """Validate the wiring graph and return a service ready to :meth:`Service.run`."""
        return Service(
            self.plan(),
            graceful_shutdown_timeout=self.graceful_shutdown_timeout,
            handle_signals=self.handle_signals,
        )


@attrs.define(eq=False)
class _TaskRecord:
    task: AnyTask
    layer: str
    id: str
    kind: TaskKind
    state: TaskState = TaskState.PENDING
    started_at: float | None = None
    ended_at: float | None = None
    error: ErrorInfo | None = None
    timed_out: bool = False
    #: Restart bookkeeping when the task carries a restart policy, else None.
    restarts: Restarts | None = None
    last_error: ErrorInfo | None = None
    #: The kind's ``gated`` and ``stops_service_on_return``, read once (hot at start and stop).
    gated: bool = attrs.field(init=False)
    stops_service: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.gated = self.kind.gated
        self.stops_service = self.kind.stops_service_on_return

    def report(self) -> TaskReport:
        return TaskReport(
            id=self.id,
            kind=self.kind,
            layer=self.layer,
            state=self.state,
            started_at=self.started_at,
            ended_at=self.ended_at,
            error=self.error,
            restarts=self.restarts.count if self.restarts is not None else 0,
            last_error=self.last_error,
        )


class Service:
    """A wired set of layers, run once with :meth:`run`.

    Make one with :meth:`ServiceBuilder.build`. ``status()`` and
    :meth:`add_listener` let a status view follow the run.
    """

    def __init__(
        self,
        plan: WiringPlan,
        *,
        graceful_shutdown_timeout: float = 30.0,
        handle_signals: bool = True,
    ) -> None:
        self.plan = plan
        self.graceful_shutdown_timeout = graceful_shutdown_timeout
        self.handle_signals = handle_signals
        self._stop = StopSignal()
        self._stop_receiver = self._stop.receiver()
        self._force = trio.Event()
        self._records: dict[str, _TaskRecord] = {}
        self._shutdown: list[HookReport] = []
        self._checks: list[HealthCheck] = []
        self._listeners: list[StateListener] = []
        self._stop_listeners: list[StopListener] = []
        self._stop_requests = 0
        self._barrier = trio.Event()
        self._gate = trio.Event()  # set when the barrier lifts or the stop arrives
        self._tasks_scope: trio.CancelScope | None = None
        self._phase = "new"
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._grace_deadline: float | None = None

    # -- control -------------------------------------------------------------------
    def stop(self, reason: str = "stop requested") -> None:
        """Ask the service to stop; a second call skips the rest of the grace period."""
        self._request_stop(reason, None)

    @property
    def stop_requests(self) -> int:
        """How many times the service was asked to stop (``stop()`` calls and signals)."""
        return self._stop_requests

    def add_stop_listener(self, listener: StopListener) -> Callable[[], None]:
        """Call ``listener(request)`` on every stop request, once the service acted on it.

        A caller that shows the run (the ``wireframe`` command) learns here that
        SIGINT arrived and whether it forced the stop, while the service keeps
        handling the signals itself. Returns an unsubscriber; listeners run
        synchronously on the service's trio thread (or in the caller of
        ``stop()``): keep them quick.
        """
        self._stop_listeners.append(listener)
        return lambda: self._stop_listeners.remove(listener)

    def _request_stop(self, reason: str, signal_name: str | None) -> None:
        """Send the stop, or force it when it was sent already; tell the stop listeners."""
        self._stop_requests += 1
        forced = not self._stop.send(reason)
        if forced:
            self._force.set()
        request = StopRequest(reason, self._stop_requests, forced, signal_name)
        for listener in list(self._stop_listeners):
            listener(request)

    @property
    def phase(self) -> str:
        """``new``, ``wiring``, ``running``, ``stopping``, ``shutting_down`` or ``done``."""
        return self._phase

    @property
    def grace_deadline(self) -> float | None:
        """Trio time at which tasks still running are cancelled, once stopping."""
        return self._grace_deadline

    @property
    def barrier_open(self) -> bool:
        """Whether every precondition has returned (gated tasks may run)."""
        return self._barrier.is_set()

    @property
    def health_checks(self) -> tuple[HealthCheck, ...]:
        """The health checks the layers gave, in wiring order (see :mod:`~wireframe.service.health`)."""
        return tuple(self._checks)

    def status(self) -> ServiceReport:
        """A snapshot of every task's state, safe to call at any time."""
        return ServiceReport(
            tasks={r.id: r.report() for r in self._records.values()},
            shutdown=tuple(self._shutdown),
            stop_reason=self._stop.reason,
            started_at=self._started_at,
            ended_at=self._ended_at,
        )

    def add_listener(self, listener: StateListener) -> Callable[[], None]:
        """Call ``listener(task_report)`` on every task state change; returns an unsubscriber.

        Listeners run synchronously on the service's trio thread: keep them
        quick (e.g. put the report on a channel with ``send_nowait``).
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def run_sync(self) -> ServiceReport:
        """Run the service under ``trio.run``, for scripts."""
        return trio.run(self.run)

    # -- the run -------------------------------------------------------------------
    async def run(self) -> ServiceReport:
        """Wire, run and shut down; return the report or raise.

        Raises :class:`WiringError` if a layer cannot be wired, and
        :class:`ServiceError` (carrying the report) if the service has no tasks
        or any task or shutdown step failed or timed out.
        """
        if self._phase != "new":
            raise RuntimeError("a Service runs once; build another from its ServiceBuilder")
        self._phase = "wiring"
        self._started_at = trio.current_time()
        error: WiringError | ServiceError | None = None
        async with trio.open_nursery() as system:
            if self.handle_signals and threading.current_thread() is threading.main_thread():
                await system.start(self._watch_signals)
            try:
                await self._run_phases(system)
            except (WiringError, ServiceError) as exc:
                error = exc  # raised below, outside the nursery, so not wrapped in a group
            finally:
                self._ended_at = trio.current_time()
                self._phase = "done"
                system.cancel_scope.cancel()
        if error is not None:
            raise error
        report = self.status()
        if not report.ok:
            raise ServiceError.from_report(report)
        return report

    async def _run_phases(self, system: trio.Nursery) -> None:
        lifetimes: list[Lifetime] = []
        hooks: list[ShutdownHook] = []
        error: WiringError | ServiceError | None = None
        async with trio.open_nursery() as held:  # each layer lifetime is a task in here
            try:
                with self._stop.receiver().cancel_on_stop():
                    await self._wire(held, lifetimes, hooks)
                if self._stop.is_set:  # stopped while wiring: nothing starts
                    for record in self._records.values():
                        self._set_state(record, TaskState.STOPPED)
                if not self._records and not self._stop.is_set:
                    raise ServiceError(
                        "no tasks: the layers gave no task to run "
                        f"(layers: {', '.join(n.name for n in self.plan.layers) or 'none'})",
                        self.status(),
                    )
                if self._records and not self._stop.is_set:
                    self._phase = "running"
                    system.start_soon(self._watch_grace)
                    await self._run_tasks()
            except (WiringError, ServiceError) as exc:
                error = exc  # raised below, outside the nursery, so not wrapped in a group
            finally:
                self._phase = "shutting_down"
                await self._shut_down(lifetimes, hooks)
        if error is not None:
            raise error

    async def _wire(
        self, held: trio.Nursery, lifetimes: list[Lifetime], hooks: list[ShutdownHook]
    ) -> None:
        resources: dict[Any, Any] = {ServiceStatus: ServiceStatus(self)}
        problems: list[WiringProblem] = []
        failed: set[str] = set()
        for node in self.plan.layers:
            blocked = sorted(
                {self.plan.providers[p.type] for p in node.inputs if p.type in self.plan.providers}
                & failed
            )
            if blocked:
                failed.add(node.name)
                problems.append(
                    WiringProblem(
                        node.name, f"not wired: it takes resources from failed layer(s) {blocked}"
                    )
                )
                continue
            try:
                args = {p.field: resources.get(p.type) for p in node.inputs}
                value = node.input_type(**args) if node.input_type is not None else None
                output = await self._call_wire(node.name, node.layer, value, held, lifetimes)
                self._check_output(node.name, node.output_type, output)
            except WiringError as exc:
                failed.add(node.name)
                problems.extend(exc.problems)
                continue
            except Exception as exc:
                failed.add(node.name)
                problems.append(
                    WiringProblem(
                        node.name,
                        f"wire() raised {describe(exc)}",
                        error=ErrorInfo.from_exception(exc),
                    )
                )
                continue
            for port in node.outputs:
                item = getattr(output, port.field)
                if item is None and port.optional:
                    continue
                if port.role is PortRole.RESOURCE:
                    resources[port.type] = item
                elif port.role is PortRole.HOOK:
                    hooks.append(item)
                elif port.role is PortRole.HOOKS:
                    hooks.extend(item)
                elif port.role is PortRole.CHECK:
                    self._checks.append(item)
                elif port.role is PortRole.CHECKS:
                    self._checks.extend(item)
                else:
                    for task in [item] if port.role is PortRole.TASK else list(item):
                        problem = self._add_task(node.name, port.field, task)
                        if problem:
                            problems.append(problem)
        if problems:
            raise WiringError(problems)

    async def _call_wire(
        self,
        name: str,
        layer: WiringLayer[Any, Any],
        value: Any,
        held: trio.Nursery,
        lifetimes: list[Lifetime],
    ) -> Any:
        result: Any = layer.wire(value)
        if inspect.isasyncgen(result):
            lifetime = Lifetime(
                name, cast(AsyncGenerator[Any, None], result), self._lifetime_failed
            )
            ok, output = await held.start(lifetime.hold, self._stop, name=f"lifetime {name}")
            if not ok:
                if output is None:  # the stop cancelled it: let our own scope see that
                    await trio.lowlevel.checkpoint()
                    raise RuntimeError("wiring was cancelled")
                raise output
            lifetimes.append(lifetime)
            return output
        if inspect.isawaitable(result):
            return await result
        raise WiringError(
            [
                WiringProblem(
                    name,
                    f"wire() must be `async def` (or an async generator), it returned {result!r}",
                )
            ]
        )

    def _lifetime_failed(self, name: str, exc: BaseException) -> None:
        self._stop.send(f"layer {name!r} failed while running: {describe(exc)}")

    @staticmethod
    def _check_output(name: str, output_type: type | None, output: Any) -> None:
        if output_type is None:
            if output is not None:
                raise WiringError(
                    [
                        WiringProblem(
                            name, f"wire() returned {output!r}, but the layer declares no output"
                        )
                    ]
                )
        elif not isinstance(output, output_type):
            raise WiringError(
                [
                    WiringProblem(
                        name,
                        f"wire() returned {type(output).__name__}, expected {output_type.__qualname__}",
                    )
                ]
            )

    def _add_task(self, layer: str, field: str, task: Any) -> WiringProblem | None:
        task_id = getattr(task, "id", None)
        if not isinstance(task_id, str) or not task_id:
            return WiringProblem(layer, f"task in field {field!r} has no string id ({task!r})")
        other = self._records.get(task_id)
        if other is not None:
            return WiringProblem(
                layer,
                f"gives task id {task_id!r}, which layer {other.layer!r} also gives; task ids are unique",
            )
        try:
            policy = restart_policy_of(task)
        except TypeError as exc:
            return WiringProblem(layer, str(exc))
        record = _TaskRecord(task, layer, task_id, task.kind)
        if policy is not None and policy.max_restarts > 0:
            record.restarts = Restarts(policy)
        self._records[task_id] = record
        return None

    async def _run_tasks(self) -> None:
        preconditions = [r for r in self._records.values() if r.kind is TaskKind.PRECONDITION]
        remaining = len(preconditions)
        if remaining == 0:
            self._barrier.set()

        def precondition_done() -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                self._barrier.set()

        async with trio.open_nursery() as nursery:
            # one scope for all tasks: cancelling it at the end of the grace period is cheaper
            # than a scope per task, and the records say which tasks it caught
            self._tasks_scope = nursery.cancel_scope
            nursery.start_soon(self._open_gate)
            for record in self._records.values():
                nursery.start_soon(self._run_task, record, precondition_done, name=record.id)

    async def _open_gate(self) -> None:
        with self._stop.receiver().cancel_on_stop():
            await self._barrier.wait()
        self._gate.set()

    def _set_state(self, record: _TaskRecord, state: TaskState) -> None:
        # identity tests, not ``state.is_final``: this runs once per task at every
        # start and end, and an Enum's hash is a Python call
        record.state = state
        if state is TaskState.RUNNING:
            record.started_at = trio.current_time()
        elif state is not TaskState.WAITING and state is not TaskState.PENDING:
            record.ended_at = trio.current_time()
        self._notify(record)

    async def _run_task(self, record: _TaskRecord, precondition_done: Callable[[], None]) -> None:
        if record.gated:
            self._set_state(record, TaskState.WAITING)
            await self._gate.wait()
        if self._stop.is_set:  # never started: the service stopped first
            self._set_state(record, TaskState.STOPPED)
            return
        self._set_state(record, TaskState.RUNNING)
        while True:
            try:
                await record.task.run(self._stop_receiver)
            except BaseException as exc:
                if _only_cancelled(exc):  # cancelled: by the stop, the grace period or our caller
                    self._end(
                        record, TaskState.STOPPED if self._stop.is_set else TaskState.FAILED, None
                    )
                    if trio.current_effective_deadline() == -math.inf:
                        raise  # a scope around us is cancelled: let it catch its Cancelled
                    return
                if (
                    record.restarts is not None
                    and isinstance(exc, Exception)
                    and not self._stop.is_set  # failing while stopping is failing
                ):
                    if await self._back_off(record, exc):
                        continue  # restart it
                    if self._stop.is_set:  # the stop ended the backoff
                        self._end(record, TaskState.STOPPED, None)
                        return
                self._end(record, TaskState.FAILED, ErrorInfo.from_exception(exc))
                self._stop.send(f"task {record.id!r} failed: {describe(exc)}")
                if not isinstance(exc, Exception):
                    raise  # KeyboardInterrupt, SystemExit: not ours to swallow
                return
            break
        if record.timed_out:
            self._end(record, TaskState.TIMED_OUT, record.error)
        elif record.stops_service and self._stop.is_set:
            # a long-running task returning after the stop is the normal way to stop; a oneshot
            # or precondition that returns was done, whatever else was happening
            self._end(record, TaskState.STOPPED, None)
        else:
            self._end(record, TaskState.FINISHED, None)
            if record.kind is TaskKind.PRECONDITION:
                precondition_done()
            elif record.stops_service:
                self._stop.send(f"task {record.id!r} returned")

    async def _back_off(self, record: _TaskRecord, exc: Exception) -> bool:
        """Wait out the restart backoff after ``exc``; whether to run the task again.

        False when the policy gives up (too many failures within its window) or
        the stop arrives during the backoff.
        """
        assert record.restarts is not None
        record.last_error = ErrorInfo.from_exception(exc)
        delay = record.restarts.failed(trio.current_time())
        if delay is None:
            return False
        self._notify(record)
        with trio.move_on_after(delay):
            await self._stop_receiver.wait()
        return not self._stop.is_set

    def _notify(self, record: _TaskRecord) -> None:
        if self._listeners:
            report = record.report()
            for listener in list(self._listeners):
                listener(report)

    def _end(self, record: _TaskRecord, state: TaskState, error: ErrorInfo | None) -> None:
        if record.timed_out and state is not TaskState.FAILED:
            state = TaskState.TIMED_OUT
        record.error = error if error is not None else record.error
        self._set_state(record, state)

    async def _watch_grace(self) -> None:
        await self._stop.receiver().wait()
        if self._phase == "running":
            self._phase = "stopping"
        self._grace_deadline = trio.current_time() + self.graceful_shutdown_timeout
        with trio.move_on_at(self._grace_deadline):
            await self._force.wait()
        forced = self._force.is_set()
        for record in self._records.values():
            if record.state is TaskState.RUNNING:
                record.timed_out = True
                why = (
                    "was cancelled by a second stop request"
                    if forced
                    else (
                        f"did not return within the {self.graceful_shutdown_timeout:g} s grace period"
                    )
                )
                record.error = ErrorInfo("TimeoutError", f"task {record.id!r} {why}", "")
        if self._tasks_scope is not None:
            self._tasks_scope.cancel()

    async def _shut_down(self, lifetimes: list[Lifetime], hooks: list[ShutdownHook]) -> None:
        for hook in hooks:
            await self._shutdown_step(hook.name, "hook", hook.timeout, hook.fn)
        for lifetime in reversed(lifetimes):
            state, error = await lifetime.close(self.graceful_shutdown_timeout)
            self._shutdown.append(HookReport(lifetime.name, "teardown", state, error))

    async def _shutdown_step(
        self, name: str, what: str, timeout: float, fn: Callable[[], Any]
    ) -> None:
        error: ErrorInfo | None = None
        with trio.CancelScope(shield=True), trio.move_on_after(timeout) as scope:
            try:
                await fn()
            except Exception as exc:
                error = ErrorInfo.from_exception(exc)
        if scope.cancelled_caught:
            state = TaskState.TIMED_OUT
            error = ErrorInfo(
                "TimeoutError", f"{what} {name!r} did not finish within {timeout:g} s", ""
            )
        else:
            state = TaskState.FAILED if error else TaskState.FINISHED
        self._shutdown.append(HookReport(name, what, state, error))

    async def _watch_signals(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                self._request_stop(f"received {name}", name)


def _only_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_cancelled(e) for e in exc.exceptions)
    return isinstance(exc, trio.Cancelled)


def run(target: ServiceBuilder | Service) -> ServiceReport:
    """Build (if needed) and run a service under ``trio.run``; for scripts' ``__main__``."""
    service = target.build() if isinstance(target, ServiceBuilder) else target
    return service.run_sync()
