"""What can go wrong in a durable orchestration, each error saying what and where."""

from __future__ import annotations

from wireframe.jobs.errors import RemoteError

__all__ = [
    "ActivityFailed",
    "ChildFailed",
    "DurableError",
    "EventTimeout",
    "NonDeterminismError",
    "OrchestratorError",
]


class DurableError(Exception):
    """The base of the errors of :mod:`wireframe.durable`."""


class NonDeterminismError(DurableError):
    """Replay diverged from history: the code now takes another action than it did.

    ``action`` is the action's number; ``recorded`` and ``replayed`` describe the
    two sides (``"nothing"`` when one side took no action there). The instance
    fails with this error instead of retrying forever: running the changed code
    against the old history can only diverge again.
    """

    def __init__(self, action: int, recorded: str, replayed: str) -> None:
        self.action, self.recorded, self.replayed = action, recorded, replayed
        super().__init__(
            f"non-deterministic orchestrator: history has action {action} as {recorded}, "
            f"but the replay now takes {replayed}. An orchestrator must take the same "
            "actions in the same order on every replay: branch only on its input, on "
            "what its awaitables returned and on ctx.now()/ctx.uuid(); give a changed "
            "orchestrator a new name (or check ctx.version) so running instances keep "
            "the old code"
        )


class ActivityFailed(DurableError):
    """An activity awaited with ``ctx.call`` failed; ``error`` is the remote error.

    Raised inside the orchestrator, which may catch it.
    """

    def __init__(self, name: str, error: RemoteError) -> None:
        self.name, self.error = name, error
        super().__init__(f"activity {name!r} failed: {error.type_name}: {error.message}")


class ChildFailed(DurableError):
    """A sub-orchestration awaited with ``ctx.call_orchestrator`` failed or was terminated."""

    def __init__(self, name: str, instance_id: str, error: str) -> None:
        self.name, self.instance_id, self.error = name, instance_id, error
        super().__init__(f"sub-orchestration {name!r} ({instance_id}) failed: {error}")


class EventTimeout(DurableError):
    """``ctx.wait_for_event(name, timeout=...)`` saw no such event in time."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name, self.timeout = name, timeout
        super().__init__(f"no event {name!r} arrived within {timeout:g} s")


class OrchestratorError(DurableError):
    """An orchestrator misused its context (awaited something else, bad arguments)."""
