"""Benchmark: wireframe's brokers end to end, beside raw floors and the peer job queues.

Every row is measured in this one run (issue 4, "Performance"):

* **floor: Redis** — a raw LPUSH -> BRPOP loop between two processes (plain
  sockets, RESP, one command at a time, no pipelining): messages/s one way,
  and p50/p99 of an LPUSH/BRPOP request-reply round trip.
* **floor: SQLite** — raw ``sqlite3`` between two processes on one WAL file:
  the producer INSERTs one row per transaction, the consumer SELECTs and
  DELETEs up to 100 rows per transaction.
* **wireframe <broker>** — ``from_iter(range(N)).map(Inc()).collect()`` on
  the broker, ONE worker process (``bench/_bench_ops.py worker URL``: a
  :class:`wireframe.jobs.Worker` of default concurrency) started and warmed
  up first; jobs/s = N / wall time of the directive. Then the single-job
  round trip, ``literal(x).then(Inc()).run(rt)`` one at a time, RTT times:
  p50/p99, and the CPU the orchestrator and the worker process spent per
  map+collect job (from /proc). Each broker twice: an ``async def`` no-op
  and a plain ``def`` one (``SyncInc``, run on the worker's threads), as most
  users write them. ``memory://`` is the in-process reference (an emulated worker of
  the same concurrency: no process boundary).
* **peers** — with ``--peers``, saq / arq (tuned) / dramatiq (one process)
  measured now by their own harness (``shared/peers-bench/bench.py``) on the
  same Redis (the peers' private one on :6399, which that harness FLUSHALLs;
  ``setup.sh`` there builds it; one is started for the run if none answers);
  without, the medians RESULTS.md recorded.

Targets on the 2-core machine: Redis >= 5,000 jobs/s and p50 <= 1 ms;
SQLite >= 3,000 jobs/s.

Usage: ``python bench/jobs_brokers.py [--n 10000] [--rtt 1000] [--peers]
[--redis URL] [--brokers memory,sqlite,redis] [--cli]``. Redis defaults to
WIREFRAME_TEST_REDIS_URL (redis://127.0.0.1:6379/0; redis://127.0.0.1:6399/0
with ``--peers``), each run under its own key prefix, removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import attrs
import trio
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _bench_ops  # noqa: E402
import _peers  # noqa: E402
from _bench_ops import Inc, Resp, SyncInc  # noqa: E402

from wireframe import jobs  # noqa: E402
from wireframe.jobs.broker import parse_broker_url  # noqa: E402

OPS = str(HERE / "_bench_ops.py")
WARMUP = 200
#: The benchmark's no-op job written both ways: ``async def`` and a plain ``def``.
OPS_BY_KIND: tuple[tuple[str, jobs.Operation[int, int]], ...] = (
    ("async def", Inc()),
    ("def", SyncInc()),
)


@attrs.frozen
class Measured:
    """One broker's figures: map+collect jobs/s, round trips (ms), CPU us per map job."""

    rate: float
    lat: list[float]
    orch_cpu_us: float
    worker_cpu_us: float | None


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) the process ``pid`` used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@attrs.frozen
class Row:
    """One line of the table (numbers are None where they do not apply)."""

    name: str
    jobs_per_s: float | None
    p50_ms: float | None
    p99_ms: float | None
    floor_note: str = ""
    cpu: str = ""
    target: str = ""
    verdict: str = ""


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of ``values`` (nearest rank)."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, OPS, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE.parent,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- floors --------------------------------------------------------------------------
def redis_floor(host: str, port: int, n: int, rtt: int) -> tuple[float, float, list[float]]:
    """(one-way msgs/s, push msgs/s, round trips in ms) of raw LPUSH/BRPOP, 2 processes."""
    key = f"wf-bench-floor-{uuid.uuid4().hex}"
    r = Resp(host, port)
    try:
        pop = _spawn("redis-pop", host, str(port), key, str(n))
        try:
            r.call("BRPOP", f"{key}:ready", 30)
            msg = b"x" * 64
            t0 = time.time()
            for _ in range(n):
                r.call("LPUSH", key, msg)
            t1 = time.time()
            out, _ = pop.communicate(timeout=120)
        finally:
            _stop(pop)
        last = float(out.strip().splitlines()[-1])
        rate, push = n / (last - t0), n / (t1 - t0)
        echo = _spawn("redis-echo", host, str(port), key, str(rtt))
        try:
            r.call("BRPOP", f"{key}:ready", 30)
            lat = []
            for _ in range(rtt):
                s = time.perf_counter()
                r.call("LPUSH", f"{key}:req", b"x")
                r.call("BRPOP", f"{key}:rep", 30)
                lat.append((time.perf_counter() - s) * 1000)
            echo.wait(timeout=30)
        finally:
            _stop(echo)
        r.call("DEL", key, f"{key}:req", f"{key}:rep", f"{key}:ready")
    finally:
        r.close()
    return rate, push, lat


def sqlite_floor(tmp: Path, n: int) -> float:
    """Messages/s of raw sqlite3: insert (one per transaction) -> select+delete, 2 processes."""
    path = str(tmp / "floor.db")
    conn = _bench_ops.sqlite_connect(path)
    conn.execute("CREATE TABLE q (seq INTEGER PRIMARY KEY, body BLOB)")
    take = _spawn("sqlite-take", path, str(n))
    try:
        assert take.stdout is not None
        take.stdout.readline()  # "ready"
        msg = b"x" * 64
        t0 = time.time()
        for _ in range(n):
            conn.execute("INSERT INTO q (body) VALUES (?)", (msg,))
        out, _ = take.communicate(timeout=120)
    finally:
        _stop(take)
        conn.close()
    return n / (float(out.strip().splitlines()[-1]) - t0)


# -- wireframe -----------------------------------------------------------------------
async def _measure(
    url: str,
    n: int,
    rtt: int,
    workers: int = 0,
    proc: subprocess.Popen[str] | None = None,
    op: jobs.Operation[int, int] = Inc(),  # noqa: B008 (frozen)
) -> Measured:
    """Map+collect jobs/s (and CPU per job), single-job round trips in ms, on ``url``."""
    extra = {"workers": workers} if workers else {}
    async with jobs.connect(url, **extra) as rt:  # type: ignore[arg-type]
        with trio.fail_after(60):  # the worker process is up and warm
            while True:
                with trio.move_on_after(5):
                    await jobs.literal(0).then(op).run(rt)
                    break
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"worker process exited with {proc.returncode}")
            await jobs.from_iter(range(WARMUP)).map(op).collect().run(rt)
        w0 = proc_cpu(proc.pid) if proc is not None else None
        c0 = time.process_time()
        t = time.perf_counter()
        out = await jobs.from_iter(range(n)).map(op).collect().run(rt)
        rate = n / (time.perf_counter() - t)
        orch_cpu = (time.process_time() - c0) / n * 1e6
        w1 = proc_cpu(proc.pid) if proc is not None else None
        worker_cpu = (w1 - w0) / n * 1e6 if w0 is not None and w1 is not None else None
        if list(out) != [x + 1 for x in range(n)]:
            raise AssertionError("map+collect returned wrong results")
        lat = []
        for i in range(rtt):
            t = time.perf_counter()
            got = await jobs.literal(i).then(op).run(rt)
            lat.append((time.perf_counter() - t) * 1000)
            if got != i + 1:
                raise AssertionError(f"literal({i}).then(op) returned {got!r}")
    return Measured(rate, lat, orch_cpu, worker_cpu)


def wireframe_row(
    url: str,
    n: int,
    rtt: int,
    cli: bool,
    op: jobs.Operation[int, int] = Inc(),  # noqa: B008
) -> Measured:
    """Measure ``url`` with one worker subprocess (in-process emulated for memory://)."""
    if url.startswith("memory:"):
        return trio.run(_measure, url, n, rtt, 1, None, op)
    if cli:
        cmd = [sys.executable, "-m", "wireframe", "worker", "--broker", url]
        cmd += ["--import", OPS, "--plain"]
        proc = subprocess.Popen(
            cmd, cwd=HERE.parent, stdout=subprocess.DEVNULL, text=True, start_new_session=True
        )
    else:
        proc = _spawn("worker", url)
    try:
        return trio.run(_measure, url, n, rtt, 0, proc, op)
    finally:
        _stop(proc)


def redis_cleanup(host: str, port: int, db: int, prefix: str) -> None:
    """Delete every key under ``prefix``."""
    r = Resp(host, port)
    try:
        r.call("SELECT", db)
        cursor: bytes = b"0"
        while True:
            reply = r.call("SCAN", cursor, "MATCH", f"{prefix}*", "COUNT", 1000)
            assert isinstance(reply, list)
            cursor, keys = reply[0], reply[1]
            assert isinstance(cursor, bytes) and isinstance(keys, list)
            if keys:
                r.call("DEL", *keys)
            if cursor == b"0":
                break
    finally:
        r.close()


# -- the run -------------------------------------------------------------------------
def run(args: argparse.Namespace, say: Callable[[str], None]) -> list[Row]:
    """Every measurement, in order: floors, wireframe per broker, peers."""
    rows: list[Row] = []
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    redis_url = args.redis or os.environ.get(
        "WIREFRAME_TEST_REDIS_URL",
        f"redis://127.0.0.1:{_peers.PEER_REDIS_PORT}/0"
        if args.peers
        else "redis://127.0.0.1:6379/0",
    )
    parsed = parse_broker_url(redis_url)
    host, port = parsed.host or "127.0.0.1", parsed.port or 6379
    db = int(parsed.path.strip("/") or 0)
    redis_ok: str | None = None
    try:
        Resp(host, port).close()
    except OSError as exc:
        redis_ok = f"no Redis at {host}:{port} ({exc})"

    redis_floor_rate = redis_floor_p50 = sqlite_floor_rate = None
    with tempfile.TemporaryDirectory(prefix="wf-bench-brokers-") as tmpdir:
        tmp = Path(tmpdir)
        if "redis" in brokers and redis_ok is None:
            say(f"floor: raw Redis LPUSH/BRPOP on {host}:{port} ...")
            rate, push, lat = redis_floor(host, port, args.n, args.rtt)
            redis_floor_rate, redis_floor_p50 = rate, statistics.median(lat)
            rows.append(
                Row(
                    "floor: Redis LPUSH->BRPOP, 2 procs",
                    rate,
                    redis_floor_p50,
                    pct(lat, 99),
                    f"push {push:,.0f}/s",
                )
            )
        if "sqlite" in brokers:
            say("floor: raw SQLite insert -> select+delete ...")
            sqlite_floor_rate = sqlite_floor(tmp, args.n)
            rows.append(
                Row("floor: SQLite insert->select, 2 procs", sqlite_floor_rate, None, None, "")
            )
        if "memory" in brokers:
            say("wireframe memory:// ...")
            m = wireframe_row("memory://bench-brokers", args.n, args.rtt, False)
            rows.append(
                Row(
                    "wireframe memory:// (in-process ref.)",
                    m.rate,
                    statistics.median(m.lat),
                    pct(m.lat, 99),
                    cpu=_cpu(m),
                )
            )
        if "sqlite" in brokers:
            for kind, op in OPS_BY_KIND:
                say(f"wireframe sqlite:// with one worker process, {kind} jobs ...")
                url = f"sqlite:///{tmp / f'jobs-{kind}.db'}"
                m = wireframe_row(url, args.n, args.rtt, args.cli, op)
                rows.append(
                    Row(
                        f"wireframe sqlite://, 1 worker proc, {kind}",
                        m.rate,
                        statistics.median(m.lat),
                        pct(m.lat, 99),
                        _ratio(m.rate, sqlite_floor_rate),
                        _cpu(m),
                        ">=3,000/s",
                        "MET" if m.rate >= 3000 else "BELOW",
                    )
                )
    if "redis" in brokers:
        if redis_ok is not None:
            rows.append(Row(f"wireframe redis:// — SKIPPED: {redis_ok}", None, None, None))
        else:
            for kind, op in OPS_BY_KIND:
                say(f"wireframe redis:// on {host}:{port}, one worker process, {kind} jobs ...")
                prefix = f"wf-bench-{uuid.uuid4().hex[:12]}:"
                sep = "&" if "?" in redis_url else "?"
                url = f"{redis_url}{sep}prefix={prefix}"
                try:
                    m = wireframe_row(url, args.n, args.rtt, args.cli, op)
                finally:
                    redis_cleanup(host, port, db, prefix)
                p50 = statistics.median(m.lat)
                note = _redis_note(m.rate, p50, redis_floor_rate, redis_floor_p50)
                verdict = _redis_verdict(m.rate, p50)
                rows.append(
                    Row(
                        f"wireframe redis://, 1 worker proc, {kind}",
                        m.rate,
                        p50,
                        pct(m.lat, 99),
                        note,
                        _cpu(m),
                        ">=5,000/s, p50<=1ms",
                        verdict,
                    )
                )
    if args.peers:
        why = _peers.available()
        if why is None and not _peers.answers():
            why = f"no peers' Redis on 127.0.0.1:{_peers.PEER_REDIS_PORT}"
        if why is None:
            say(f"peers {', '.join(_peers.SPECS)} on 127.0.0.1:{_peers.PEER_REDIS_PORT} ...")
            for p in _peers.measure(args.n, args.rtt):
                rows.append(Row(f"peer {p.spec}", p.jobs_per_s, p.p50_ms, p.p99_ms, p.note))
        else:
            rows.append(Row(f"peers — NOT RUN: {why}", None, None, None))
    if not args.peers or any(r.name.startswith("peers — NOT RUN") for r in rows):
        for p in _peers.REFERENCE:
            rows.append(Row(f"peer {p.spec} (reference)", p.jobs_per_s, p.p50_ms, p.p99_ms, p.note))
    return rows


def _cpu(m: Measured) -> str:
    if m.worker_cpu_us is None:
        return f"{m.orch_cpu_us:.0f}"
    return f"{m.orch_cpu_us:.0f} + {m.worker_cpu_us:.0f}"


def _ratio(rate: float, floor: float | None) -> str:
    return f"{rate / floor * 100:.0f}% of floor" if floor else ""


def merge(rounds: list[list[Row]]) -> list[Row]:
    """Per row: the round with the median jobs/s, with p50/p99 the medians of all rounds."""
    out = []
    for same in zip(*rounds, strict=True):
        ranked = sorted(same, key=lambda r: r.jobs_per_s or 0.0)
        mid = ranked[len(ranked) // 2]
        p50s = [r.p50_ms for r in same if r.p50_ms is not None]
        p99s = [r.p99_ms for r in same if r.p99_ms is not None]
        p50 = statistics.median(p50s) if p50s else None
        verdict = mid.verdict
        if mid.name.startswith("wireframe redis") and mid.jobs_per_s and p50 is not None:
            verdict = _redis_verdict(mid.jobs_per_s, p50)
        out.append(
            attrs.evolve(
                mid,
                p50_ms=p50,
                p99_ms=statistics.median(p99s) if p99s else None,
                verdict=verdict,
            )
        )
    # the ratios against the floors' medians
    floor = {r.name.split(" ")[1]: r for r in out if r.name.startswith("floor: ")}
    for k, r in enumerate(out):
        if r.jobs_per_s is None:
            continue
        if r.name.startswith("wireframe sqlite") and "SQLite" in floor:
            out[k] = attrs.evolve(r, floor_note=_ratio(r.jobs_per_s, floor["SQLite"].jobs_per_s))
        elif r.name.startswith("wireframe redis") and "Redis" in floor and r.p50_ms:
            f = floor["Redis"]
            note = _redis_note(r.jobs_per_s, r.p50_ms, f.jobs_per_s, f.p50_ms)
            out[k] = attrs.evolve(r, floor_note=note)
    return out


def _redis_note(rate: float, p50: float, floor: float | None, floor_p50: float | None) -> str:
    note = _ratio(rate, floor)
    if floor_p50:
        note += f", p50 {p50 / floor_p50:.0f}x"
    return note


def _redis_verdict(rate: float, p50: float) -> str:
    return f"{'MET' if rate >= 5000 else 'BELOW'} / {'MET' if p50 <= 1.0 else 'BELOW'}"


def table(rows: list[Row], title: str) -> Table:
    """The rich table of ``rows``."""
    t = Table(title=title, title_justify="left")
    t.add_column("row")
    t.add_column("jobs/s", justify="right")
    t.add_column("p50 ms", justify="right")
    t.add_column("p99 ms", justify="right")
    t.add_column("vs floor / note")
    t.add_column("CPU us/job", justify="right")
    t.add_column("target")
    t.add_column("")
    for r in rows:

        def num(x: float | None, fmt: str) -> str:
            return "-" if x is None else format(x, fmt)

        verdict = r.verdict.replace("MET", "[green]MET[/]").replace("BELOW", "[red]BELOW[/]")
        t.add_row(
            r.name,
            num(r.jobs_per_s, ",.0f"),
            num(r.p50_ms, ".3f"),
            num(r.p99_ms, ".3f"),
            r.floor_note,
            r.cpu,
            r.target,
            verdict,
        )
    return t


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, measure, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="jobs in the map+collect (10,000)")
    ap.add_argument(
        "n_pos", nargs="?", type=int, metavar="N", help="same as --n (nox -s bench -- N)"
    )
    ap.add_argument("--rtt", type=int, default=1_000, help="single-job round trips (1,000)")
    ap.add_argument(
        "--repeat", type=int, default=1, help="rounds; medians shown (3 on a busy machine)"
    )
    ap.add_argument("--peers", action="store_true", help="run saq/arq/dramatiq now, same Redis")
    ap.add_argument("--redis", default=None, help="Redis URL for the redis rows and floor")
    ap.add_argument("--brokers", default="memory,sqlite,redis", help="comma-separated subset")
    ap.add_argument("--cli", action="store_true", help="start the worker as `wireframe worker`")
    args = ap.parse_args(argv)
    if args.n_pos is not None:
        args.n = args.n_pos
    console = Console(width=None if sys.stdout.isatty() else 170)
    t0 = time.perf_counter()
    rounds = []
    with _peers.private_redis() if args.peers else contextlib.nullcontext():
        for k in range(args.repeat):
            if args.repeat > 1:
                console.print(f"[dim]round {k + 1} of {args.repeat}[/]")
            rounds.append(run(args, lambda s: console.print(f"[dim]{s}[/]")))
    rows = merge(rounds)
    worker = "wireframe worker CLI" if args.cli else "bench/_bench_ops.py worker"
    title = (
        f"wireframe brokers end to end — N={args.n:,} no-op jobs (map+collect), "
        f"{args.rtt:,} single-job round trips"
        + (f", medians of {args.repeat} rounds" if args.repeat > 1 else "")
        + f", one worker process ({worker}, default "
        f"concurrency), {os.cpu_count()} cores, trio {trio.__version__}"
    )
    console.print(table(rows, title))
    console.print(
        "[dim]jobs/s: map+collect of N jobs (peers: N enqueued one call at a time, "
        "their own harness); p50/p99: one job at a time. CPU us/job: orchestrator + "
        "worker process CPU per map+collect job (the Redis server's not counted). "
        f"Total {time.perf_counter() - t0:.0f} s.[/]"
    )


if __name__ == "__main__":
    main()
