"""Job bodies, results and orchestration values as text a page can show.

The dashboard never runs an operation and needs none of them imported: it
reads a body's envelope (operation name and parameters, input, attempt) and a
result's parts as plain data, the way the codec lays them out, and prints them
as indented JSON. Whatever does not decode is shown as what it is (the reason,
and the first bytes in hex), never raised: one damaged dead letter must not take
its page down. Every string returned here is still untrusted text: the templates
escape it (autoescaping is on for every template).
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from wireframe.jobs.codec import _unpackb, decode_envelope, decode_result
from wireframe.jobs.errors import RemoteError

__all__ = ["BodyView", "ResultView", "body_view", "pretty", "result_view"]

#: Longest text shown for one value; the rest is cut (a page stays small).
MAX_TEXT = 20_000


def pretty(value: Any) -> str:
    """``value`` as indented JSON (bytes and other odd values by ``repr``), cut at MAX_TEXT."""
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, default=repr, sort_keys=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"\n… ({len(text)} characters)"


def _hex(data: bytes, n: int = 64) -> str:
    more = f" … ({len(data)} bytes)" if len(data) > n else ""
    return data[:n].hex(" ") + more


@attrs.frozen
class BodyView:
    """A job body as shown: its operation and input, or why it does not decode."""

    operation: str = ""
    params: str = ""
    input: str = ""
    attempt: int | None = None
    run_id: str = ""
    problem: str | None = None  # why the body does not decode
    raw: str = ""  # the first bytes, in hex, when it does not


def body_view(body: bytes) -> BodyView:
    """What a job body holds, as far as it decodes."""
    try:
        env = decode_envelope(body)
    except Exception as exc:
        return BodyView(problem=str(exc), raw=_hex(body))
    try:
        op = _unpackb(env.op)
        name, params = (str(op[0]), op[1]) if isinstance(op, list) and len(op) == 2 else ("?", op)
    except Exception as exc:
        name, params = "?", f"(the operation does not decode: {exc})"
    return BodyView(
        operation=name,
        params=pretty(params),
        input=pretty(env.input),
        attempt=env.attempt,
        run_id=env.run_id,
    )


@attrs.frozen
class ResultView:
    """A job's result as shown: a value, a skip, an error with its remote traceback."""

    outcome: str  # "succeeded", "skipped", "failed" or "undecodable"
    value: str = ""
    error: RemoteError | None = None


def result_view(body: bytes | None) -> ResultView | None:
    """What a result body holds; None when there is none (the job did not finish)."""
    if body is None:
        return None
    try:
        result = decode_result(body)
    except Exception as exc:
        return ResultView("undecodable", f"{exc}\n{_hex(body)}")
    if result.error is not None:
        return ResultView("failed", error=result.error)
    if result.skipped:
        return ResultView("skipped")
    return ResultView("succeeded", pretty(result.value))
