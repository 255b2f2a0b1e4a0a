"""Durable orchestrations: an onboarding flow whose progress survives any process dying.

The orchestrator ``onboard`` calls activities (ordinary operations, run as jobs),
sleeps on a durable timer, waits for an external event with a timeout and fans
out; every step is recorded in the broker, so a worker that takes over after a
crash replays the history and carries on without running anything twice.

Run it: ``python examples/onboarding.py`` (SQLite file ``onboarding.db``; set
``ONBOARDING_BROKER`` for another URL). Here the job worker and the orchestration
worker run in this process; in production they run in ``wireframe worker
--broker URL --import examples/onboarding.py`` processes, and
``wireframe flows list|show ID --broker URL`` shows the instances.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import attrs
import trio

from wireframe import durable, jobs

URL = os.environ.get("ONBOARDING_BROKER", "sqlite:///onboarding.db")


@attrs.frozen
class CreateAccount(jobs.Operation[str, str], name="onboarding.create-account"):
    def execute(self, user: str) -> str:
        return f"acct-{user}"


@attrs.frozen
class SendWelcome(jobs.Operation[str, str], name="onboarding.send-welcome"):
    def execute(self, address: str) -> str:
        return f"sent to {address}"


@durable.orchestrator(name="onboarding.onboard")
async def onboard(ctx: durable.Context, user: str) -> dict[str, Any]:
    account = await ctx.call(CreateAccount(), user)
    await ctx.sleep(0.5)  # a durable timer: it may as well be a day
    try:
        approved = await ctx.wait_for_event("approved", timeout=3600)
    except durable.EventTimeout:
        approved = False
    sent = await ctx.all([ctx.call(SendWelcome(), f"{user}+{n}@example.com") for n in range(3)])
    ctx.set_status({"step": "done"})
    return {"account": account, "approved": approved, "sent": sent}


async def main() -> None:
    async with durable.connect(URL) as client, trio.open_nursery() as workers:
        await workers.start(jobs.Worker(client.broker).serve)
        await workers.start(durable.OrchestrationWorker(client.broker).serve)
        iid = await client.start(onboard, "ada", instance_id=f"ada-{uuid.uuid4().hex[:8]}")
        await client.wait_started(iid, timeout=10)
        await client.raise_event(iid, "approved", True)
        done = await client.wait_completed(iid, timeout=30)
        print(f"{iid}: {done.status.value} {done.output}", flush=True)
        workers.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
