"""The peer job queues (saq, arq, dramatiq) beside wireframe: measured live, or as recorded.

The peers' own harness lives in ``../shared/peers-bench`` (read-only here);
its ``setup.sh`` builds ``/tmp/peerbench`` — a venv with the peers and a
private redis-server on 127.0.0.1:6399 that the harness FLUSHALLs.
:func:`measure` runs that harness's ``bench.py`` for each peer spec, in
``live`` mode (N jobs enqueued one call at a time while one warmed-up worker
process drains them) and ``latency`` mode (sequential round trips through the
library's result API), and returns one :class:`PeerRow` per spec.
:data:`REFERENCE` holds the medians ``RESULTS.md`` recorded on this kind of
machine, for runs without ``--peers``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

#: Where the peers' harness is (the shared folder beside the repository).
PEERS_DIR = Path(
    os.environ.get(
        "WIREFRAME_PEERS_BENCH", Path(__file__).resolve().parents[2] / "shared" / "peers-bench"
    )
)
#: Where ``setup.sh`` puts the peers' venv and private Redis.
PEERBENCH = Path(os.environ.get("PEERBENCH", "/tmp/peerbench"))
#: The peer variants run side by side: one worker process each.
SPECS = ("saq:default", "arq:tuned", "dramatiq:p1")
#: The port of the peers' private Redis (their harness FLUSHALLs it).
PEER_REDIS_PORT = 6399


@attrs.frozen
class PeerRow:
    """One peer's figures: end-to-end jobs/s and round-trip p50/p99 in ms (None if not run)."""

    spec: str
    jobs_per_s: float | None
    p50_ms: float | None
    p99_ms: float | None
    note: str


#: RESULTS.md (2026-11-22, medians of 3 on this machine kind, Redis 7.0 on :6399).
REFERENCE = (
    PeerRow("saq:default", 1209, 1.78, 3.23, "RESULTS.md; concurrency 10"),
    PeerRow("arq:tuned", 1064, 5.97, 7.55, "RESULTS.md; polls 5 ms/1 ms"),
    PeerRow("dramatiq:p1", 1370, 8.47, 11.73, "RESULTS.md; 8 threads"),
    PeerRow("rq:default", 64, 15.29, 18.88, "RESULTS.md; fork per job"),
)


def answers(port: int = PEER_REDIS_PORT) -> bool:
    """True when a Redis on 127.0.0.1:``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def private_redis(port: int = PEER_REDIS_PORT) -> Iterator[None]:
    """Make sure the peers' private Redis answers on ``port`` for the block.

    If none does, start one like ``setup.sh`` does (loopback, no persistence) and
    stop it afterwards; without a ``redis-server`` binary, do nothing (the
    callers then report the peers as not run).
    """
    exe = shutil.which("redis-server")
    if answers(port) or exe is None:
        yield
        return
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not answers(port) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def python() -> Path:
    """The peers' venv interpreter."""
    return PEERBENCH / "venv" / "bin" / "python"


def available() -> str | None:
    """``None`` when the peers can run here, else why not."""
    if not (PEERS_DIR / "bench.py").exists():
        return f"no peers harness at {PEERS_DIR}"
    if not python().exists():
        return f"no peers venv at {PEERBENCH} (run bash {PEERS_DIR / 'setup.sh'})"
    return None


def _run(spec: str, mode: str, n: int, out: Path, timeout: float) -> dict[str, object]:
    peer, _, variant = spec.partition(":")
    cmd = [str(python()), str(PEERS_DIR / "bench.py"), "--peer", peer]
    cmd += ["--variant", variant or "default", "--mode", mode, "--n", str(n), "--out", str(out)]
    cmd += ["--deadline", str(timeout)]
    env = dict(os.environ, BENCH_REDIS_PORT=str(PEER_REDIS_PORT))
    env.pop("BENCH_ACCT_PORT", None)
    proc = subprocess.run(
        cmd,
        cwd=PEERS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout + 60,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    rec: dict[str, object] = json.loads(lines[-1])
    return rec


def measure(n: int, rtt: int, specs: tuple[str, ...] = SPECS) -> list[PeerRow]:
    """Run each peer's live (n jobs) and latency (rtt round trips) measurement now."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="wf-peers-") as tmp:
        out = Path(tmp) / "raw.jsonl"
        for spec in specs:
            live = _run(spec, "live", n, out, 300)
            lat = _run(spec, "latency", rtt, out, 300)
            errors = [str(r.get("error")) for r in (live, lat) if not r.get("ok")]
            rows.append(
                PeerRow(
                    spec,
                    _num(live.get("e2e_throughput")),
                    _num(lat.get("lat_median_ms")),
                    _num(lat.get("lat_p99_ms")),
                    "measured now" + (f"; FAILED: {'; '.join(errors)}" if errors else ""),
                )
            )
    return rows


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
