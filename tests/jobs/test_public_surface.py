"""The public surface: users' names in ``wireframe.jobs``, broker authors' in ``wireframe.jobs.brokers``.

DESIGN.md ("Names that stay in ``wireframe.jobs``") fixes the names tests outside
the repository use; they stay whatever else moves. The runtime's internals are
not part of ``wireframe.jobs.__all__``.
"""

from __future__ import annotations

import wireframe
from wireframe import jobs
from wireframe.jobs import broker, brokers

#: The names DESIGN.md fixes in ``wireframe.jobs`` (and those its sections name).
DESIGN_NAMES = {
    "open_broker",
    "Broker",
    "Message",
    "Delivery",
    "Reply",
    "DeadLetter",
    "QueueStats",
    "BrokerError",
    "BrokerUnavailable",
    "BrokerURLError",
    "LockLost",
    "mask_password",
    "registered_operations",
    "lookup_operation",
    "Runtime",
    "Worker",
    "connect",
    "Operation",
    "Monoid",
    "Transient",
    "Fatal",
    "Terminate",
    "Ignore",
    "RetryPolicy",
    "JobFailed",
    "RemoteError",
    "ErrorKind",
    "from_iter",
    "literal",
    "JobRuntimeLayer",
    "WorkerLayer",
}

INTERNALS = {
    "Run",
    "RuntimeCounters",
    "WorkerCounters",
    "JobRuntimeOutput",
    "WorkerOutput",
    "MapStream",
    "ResultChannel",
    "JobResult",
}

BROKER_AUTHOR_NAMES = {
    "Broker",
    "BrokerConnection",
    "WorkQueue",
    "ReplyChannels",
    "Broadcast",
    "Presence",
    "BrokerAdmin",
    "BrokerURL",
    "parse_broker_url",
    "seconds_option",
    "count_option",
    "WorkerInfo",
    "ChannelLost",
    "DEAD_CHANNEL_RETENTION",
    "count_workers",
    "ENTRY_POINT_GROUP",
}


def test_the_names_design_fixes_are_the_users_api() -> None:
    assert set(jobs.__all__) >= DESIGN_NAMES, DESIGN_NAMES - set(jobs.__all__)
    assert all(getattr(jobs, name) is not None for name in jobs.__all__)
    assert wireframe.plan_wiring is not None


def test_internals_are_not_in_the_users_api() -> None:
    assert not INTERNALS & set(jobs.__all__), INTERNALS & set(jobs.__all__)


def test_broker_authors_find_their_api_in_wireframe_jobs_brokers() -> None:
    assert set(brokers.__all__) >= BROKER_AUTHOR_NAMES, BROKER_AUTHOR_NAMES - set(brokers.__all__)
    for name in brokers.__all__:
        assert getattr(brokers, name) is getattr(broker, name), name


def test_broker_author_names_once_in_wireframe_jobs_are_still_importable_there() -> None:
    from wireframe.jobs import BrokerURL, WorkerInfo, parse_broker_url

    assert (BrokerURL, WorkerInfo, parse_broker_url) == (
        brokers.BrokerURL,
        brokers.WorkerInfo,
        brokers.parse_broker_url,
    )
    assert not {"BrokerURL", "WorkerInfo", "parse_broker_url"} & set(jobs.__all__)


def members(protocol: type) -> set[str]:
    """The names a protocol class itself declares (methods and annotated attributes)."""
    own = vars(protocol)
    return {n for n in own if not n.startswith("_")} | set(own.get("__annotations__", {}))


def test_broker_is_the_union_of_its_roles_and_lost_no_method_in_the_split() -> None:
    roles = (
        broker.BrokerConnection,
        broker.WorkQueue,
        broker.ReplyChannels,
        broker.Broadcast,
        broker.Presence,
        broker.JobStore,
        broker.BrokerAdmin,
    )
    assert all(role in broker.Broker.__mro__ for role in roles)
    assert members(broker.Broker) == set(), "Broker adds nothing to its roles"
    by_role = [members(role) for role in roles]
    assert sum(map(len, by_role)) == len(set().union(*by_role)), "a name in two roles"
    assert set().union(*by_role) == BROKER_BEFORE_THE_SPLIT | JOB_STORE | LATER
    assert members(broker.BrokerAdmin) == {
        "stats",
        "dead_letters",
        "requeue_dead",
        "purge",
        "find_jobs",
    }


#: The job store role, added after the split.
JOB_STORE = {"submit", "job", "wait_job", "abort_job"}

#: Added after the split too: schedules (presence), limits (work queue), job pages (admin).
LATER = {"announce_schedule", "schedules", "define_limit", "find_jobs"}

#: Every member of the one ``Broker`` protocol before it was cut into roles.
BROKER_BEFORE_THE_SPLIT = {
    "url",
    "clock",
    "ping",
    "aclose",
    "declare_queue",
    "delete_queue",
    "publish",
    "consume",
    "complete",
    "abandon",
    "extend",
    "dead_letter",
    "receive_replies",
    "delete_channel",
    "open_channel",
    "keep_channel",
    "close_channel",
    "heartbeat",
    "workers",
    "broadcast",
    "subscribe",
    "stats",
    "dead_letters",
    "requeue_dead",
    "purge",
}
